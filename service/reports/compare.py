"""Comparison rows: the paper's Table 3/5 layout computed from the store's trial finals.

Aggregation (numpy): means over *completed* trials only (NULL/NaN skipped); ``std`` is the sample
standard deviation (ddof=1), ``None`` with fewer than two values.

Roles: a search's *selection* trials are scored on validation data carved from the training
split; the selected configuration(s) are then trained once more per (seed, split) and evaluated
on the test split (*test* trials, see ``search.planning``). Rows per variant report the test
trials only (an experiment without test trials, from before the roles, reports all its trials);
rows per configuration keep the roles apart (``role``).

Paired statistics (:mod:`.paired`): each per-variant row of a regularized variant is compared with
its reference (default: the unregularized variant of the same family; ``reference=`` names one
for all), paired over (seed, split), on the test metric; Holm-adjusted within an experiment.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from search.planning import is_test_number
from service.reports.paired import default_references, paired_comparisons

#: Metrics whose mean and std a comparison row reports.
COMPARE_METRICS: tuple[str, ...] = (
    "train_metric", "test_metric", "sparsity_out", "sparsity_all", "wall_time", "loss")
#: Diagnostics whose mean a comparison row reports.
DIAGNOSTIC_METRICS: tuple[str, ...] = ("monotonicity_violations", "grad_norm_ratio")


class VariantSummary(BaseModel):
    """One (experiment, variant[, configuration]) row; means over completed trials."""

    model_config = ConfigDict(from_attributes=True)

    experiment_id: str
    experiment_name: str
    variant: str
    params: dict[str, Any] | None = None  # the configuration, when compared by configuration
    n_trials: int
    n_completed: int
    n_diverged: int
    n_failed: int
    train_metric_mean: float | None = None
    train_metric_std: float | None = None
    test_metric_mean: float | None = None
    test_metric_std: float | None = None
    sparsity_out_mean: float | None = None
    sparsity_out_std: float | None = None
    sparsity_all_mean: float | None = None
    sparsity_all_std: float | None = None
    wall_time_mean: float | None = None
    wall_time_std: float | None = None
    loss_mean: float | None = None
    loss_std: float | None = None
    monotonicity_violations_mean: float | None = None
    grad_norm_ratio_mean: float | None = None
    role: str = "test"                  # "test" (evaluated on the test split) or "select" (validation)
    val_metric_mean: float | None = None
    val_metric_std: float | None = None
    # paired comparison with the reference variant over (seed, split), test metric
    reference: str | None = None
    n_pairs: int | None = None
    diff_mean: float | None = None
    diff_ci_low: float | None = None
    diff_ci_high: float | None = None
    p_wilcoxon: float | None = None
    p_t: float | None = None
    p_holm: float | None = None
    effect_size: float | None = None
    verdict: str | None = None


def _roles(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each trial with its ``role`` and ``split`` (the fold column of a test trial); experiments
    without test trials (older runs) count every trial as a test trial."""
    has_test = {r["experiment_id"] for r in trials if is_test_number(int(r["number"]))}
    out = []
    for r in trials:
        test = r["experiment_id"] not in has_test or is_test_number(int(r["number"]))
        out.append({**r, "role": "test" if test else "select", "split": r.get("fold"),
                    "val_metric": (r.get("final") or {}).get("val_metric")})
    return out


def summarize(names: dict[str, str], trials: list[dict[str, Any]], exp_ids: list[str], *,
              by_config: bool = False, specs: dict[str, dict] | None = None,
              reference: str | None = None) -> list[VariantSummary]:
    """Group trial finals per (experiment, variant[, configuration, role]) in the order of
    ``exp_ids`` then variant name, aggregate each group, and add the paired comparison with the
    reference to per-variant rows (``specs``: experiment id -> spec, for default references)."""
    trials = _roles(trials)
    if not by_config:
        trials = [r for r in trials if r["role"] == "test"]
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in trials:
        key = json.dumps(r["params"] or {}, sort_keys=True, default=str) if by_config else ""
        groups.setdefault((r["experiment_id"], r["variant"], key, r["role"]), []).append(r)
    order = {e: i for i, e in enumerate(dict.fromkeys(exp_ids))}
    paired = {} if by_config else _paired(trials, exp_ids, specs or {}, reference)
    out = []
    for exp_id, variant, key, role in sorted(groups, key=lambda k: (order[k[0]], k[1], k[2], k[3] != "select")):
        g = groups[(exp_id, variant, key, role)]
        done = [r for r in g if r["status"] == "completed"]
        row: dict[str, Any] = dict(
            experiment_id=exp_id, experiment_name=names[exp_id], variant=variant,
            params=json.loads(key) if by_config else None, n_trials=len(g), n_completed=len(done),
            n_diverged=sum(r["status"] == "diverged" for r in g),
            n_failed=sum(r["status"] == "failed" for r in g), role=role)
        for c in COMPARE_METRICS + DIAGNOSTIC_METRICS + ("val_metric",):
            vals = np.array([float(r[c]) for r in done if r[c] is not None], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            row[f"{c}_mean"] = float(vals.mean()) if vals.size else None
            if c in COMPARE_METRICS + ("val_metric",):
                row[f"{c}_std"] = float(vals.std(ddof=1)) if vals.size >= 2 else None
        p = paired.get((exp_id, variant))
        if p is not None:
            ref, res = p
            row.update(reference=ref, n_pairs=res.n, diff_mean=res.mean_diff, diff_ci_low=res.ci_low,
                       diff_ci_high=res.ci_high, p_wilcoxon=res.p_wilcoxon, p_t=res.p_t, p_holm=res.p_holm,
                       effect_size=res.effect_size if res.effect_size is None or np.isfinite(res.effect_size)
                       else None, verdict=res.verdict)
        out.append(VariantSummary.model_validate(row))
    return out


def _paired(trials, exp_ids, specs, reference):
    """(experiment, variant) -> (reference name, PairedResult) on the test metric."""
    out = {}
    for exp_id in dict.fromkeys(exp_ids):
        mine = [r for r in trials if r["experiment_id"] == exp_id]
        names = sorted({r["variant"] for r in mine})
        if reference is not None:
            refs = {v: reference for v in names if v != reference} if reference in names else {}
        else:
            refs = default_references((specs.get(exp_id) or {}).get("variants", []))
            refs = {v: r for v, r in refs.items() if v in names and r in names}
        for variant, res in paired_comparisons(mine, refs, "test_metric").items():
            out[(exp_id, variant)] = (refs[variant], res)
    return out


def compare(store, exp_ids: list[str], *, by_config: bool = False,
            reference: str | None = None) -> list[VariantSummary]:
    """Comparison rows of these experiments (raises the store's ``NotFound`` naming unknown ids).

    ``by_config`` splits each variant by its searched parameters and role, so a grid search gives
    one row per grid point (mean ± std over that point's seeds, splits and folds). Per-variant rows
    carry the paired comparison with ``reference`` (default: see the module docstring)."""
    exp_ids = list(dict.fromkeys(exp_ids))
    names, trials = store.trial_finals(exp_ids)
    specs = {}
    for e in exp_ids:
        view = store.get_experiment(e)
        specs[e] = getattr(view, "spec", None) or {}
    return summarize(names, trials, exp_ids, by_config=by_config, specs=specs, reference=reference)
