"""One function that checks an experiment completely before anything runs.

:func:`experiment_problems` takes a schema-valid :class:`~search.spec.ExperimentSpec` and returns
every problem with its field path: the dataset (known, options, local files present in *the*
data directory, the task kind of a csv resolved), and every hyperparameter value that can reach
the trainer -- training settings, variant parameters, each end of a searched range and each
searched choice -- checked against the trainer's own typed limits
(:class:`trainer.config.MemberConfig` / :class:`trainer.config.PackConfig`), so there is one
set of limits and it is the one the trainer enforces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from search.spec import Choice, ExperimentSpec, VariantSpec

Loc = tuple[Any, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where (a field path) and what."""

    loc: Loc
    msg: str
    type: str = "value_error"

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


def _space_values(dist: Any) -> list[Any]:
    """The values of a search dimension that bound what the trainer can receive."""
    if isinstance(dist, Choice):
        return list(dist.values)
    return [dist.low, dist.high]


def _config_problems(spec: ExperimentSpec, variant: VariantSpec,
                     params: dict[str, Any]) -> list[tuple[str, str]]:
    """``(field, message)`` of the trainer's validation of one (variant, params) member and pack."""
    from trainer.config import MemberConfig

    out: list[tuple[str, str]] = []
    for build in (lambda: spec.member_config_for(variant, params, spec.seed_list[0]),
                  lambda: spec.pack_config_for(variant, params, [MemberConfig(lr=1.0, reg=variant.reg)])):
        try:
            build()
        except ValidationError as exc:
            for e in exc.errors(include_url=False):
                names = [str(p) for p in e["loc"] if p != "members" and not isinstance(p, int)]
                out.append((names[0] if names else "", e["msg"]))
        except (TypeError, ValueError) as exc:
            out.append(("", str(exc)))
    return out


def _hyperparameter_problems(spec: ExperimentSpec) -> list[Problem]:
    problems: list[Problem] = []
    for i, variant in enumerate(spec.variants):
        for name, msg in _config_problems(spec, variant, {}):
            where = ("variants", i, "params", name) if name in variant.params else ("training", name)
            problems.append(Problem(tuple(p for p in where if p != ""), f"{msg} (variant {variant.name})"))
        for key, dist in spec.space_for(variant).items():
            where = ("variants", i, "space", key) if key in variant.space else ("search", "space", key)
            for value in _space_values(dist):
                if isinstance(value, float) and not math.isfinite(value):
                    problems.append(Problem(where, f"{value!r} is not a finite number"))
                    continue
                for name, msg in _config_problems(spec, variant, {key: value}):
                    if name == key:
                        problems.append(Problem(where, f"value {value!r}: {msg} (variant {variant.name})"))
    unique: dict[tuple, Problem] = {}
    for p in problems:
        unique.setdefault((p.loc, p.msg.rsplit(" (variant", 1)[0]), p)
    return list(unique.values())


def _dataset_problems(spec: ExperimentSpec, data_dir: Path) -> tuple[list[Problem], str | None]:
    from trainer.datasets.checks import check_dataset

    check = check_dataset(spec.dataset.name, dict(spec.dataset.options), data_dir,
                          framing=spec.dataset.framing)
    problems = []
    for option, msg in check.problems:
        if option is None:
            problems.append(Problem(("dataset", "name"), msg, "dataset"))
        elif option == "framing":
            problems.append(Problem(("dataset", "framing"), msg, "dataset"))
        else:
            problems.append(Problem(("dataset", "options", option), msg, "dataset"))
    return problems, check.kind


def experiment_problems(spec: ExperimentSpec, *, data_dir: Path) -> tuple[list[Problem], str | None]:
    """Every problem of a schema-valid spec, and the task kind (classification / regression)
    when the dataset is known. An empty list means the experiment can start."""
    problems, kind = _dataset_problems(spec, Path(data_dir))
    problems += _hyperparameter_problems(spec)
    if kind and "|" in kind and not problems:
        problems.append(Problem(("dataset", "options", "kind"),
                                "say kind=classification or kind=regression", "dataset"))
    if kind == "regression" and spec.training.loss == "cross_entropy":
        problems.append(Problem(("training", "loss"), "cross_entropy needs a classification dataset; "
                                                      f"{spec.dataset.name} is regression"))
    return problems, kind



def dataset_kind(spec: ExperimentSpec, data_dir: Path | None = None) -> str:
    """classification or regression for this experiment's dataset, without loading it (a csv's
    kind is stated in its options once validated); classification when it cannot be told."""
    from trainer.datasets.checks import check_dataset

    kind = check_dataset(spec.dataset.name, dict(spec.dataset.options), data_dir or Path("."),
                         framing=spec.dataset.framing).kind
    stated = spec.dataset.options.get("kind")
    if kind and "|" in kind:
        kind = stated if stated in ("classification", "regression") else None
    return kind or "classification"
