"""Validation at the edge, once: a request body or spec file becomes a checked experiment.

``rnnhpo run``, ``rnnhpo submit`` and ``POST /experiments`` all call :func:`spec_from_body`:
parse (JSON/YAML, no aliases, no NUL), schema (pydantic), paths sandboxed in the data directory,
size (trials planned), test hooks refused, then :func:`search.validation.experiment_problems`
(dataset known, files present in *the* data directory, options, every hyperparameter value
within the trainer's limits, csv kind resolved). Every problem is reported at once as a
:class:`SpecError` of pydantic-style ``{loc, msg, type}`` entries, which the API answers with
422 (or 413/415 via ``status``) and the CLI prints one line each -- never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

import yaml

#: Dataset option names treated as file paths (plus anything ending in _path / _file / _dir).
PATH_OPTION_NAMES = {"path", "file", "filename", "csv", "csv_path", "data_path", "root", "dir"}

YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"}
JSON_TYPES = {"application/json"}


class SpecError(Exception):
    def __init__(self, errors: list[dict[str, Any]], status: int = 422):
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors
        self.status = status


def _err(loc: tuple, msg: str, typ: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": typ}


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases: a tiny document cannot expand into a huge one."""

    def compose_node(self, parent, index):  # noqa: D401
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not allowed", event.start_mark)
        return super().compose_node(parent, index)


def body_format(content_type: str | None, text: str) -> Literal["json", "yaml"]:
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype in JSON_TYPES or ctype.endswith("+json"):
        return "json"
    if ctype in YAML_TYPES or ctype.endswith("+yaml"):
        return "yaml"
    if ctype in ("", "application/octet-stream"):
        return "json" if text.lstrip().startswith(("{", "[")) else "yaml"
    raise SpecError([_err(("header", "content-type"),
                          f"unsupported media type {ctype!r}; send application/json or application/yaml",
                          "media_type")], status=415)


def parse_document(raw: bytes, content_type: str | None) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([_err(("body",), f"body is not UTF-8: {exc}", "encoding")]) from None
    if not text.strip():
        raise SpecError([_err(("body",), "empty body: send an experiment spec", "missing")])
    fmt = body_format(content_type, text)
    try:
        data = json.loads(text) if fmt == "json" else yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506
    except (json.JSONDecodeError, yaml.YAMLError, RecursionError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError([_err(("body",), f"spec is not valid {fmt}: {msg}", "parse_error")]) from None
    if not isinstance(data, dict):
        raise SpecError([_err(("body",), "spec must be a mapping at the top level", "type_error")])
    return data


def check_nul(data: Any, loc: tuple = ("body",)) -> None:
    """Refuse NUL characters anywhere (PostgreSQL text and JSONB cannot store them)."""
    errors: list[dict[str, Any]] = []

    def walk(x: Any, where: tuple) -> None:
        if len(errors) >= 10:
            return
        if isinstance(x, str):
            if "\x00" in x:
                errors.append(_err(where, "text must not contain NUL characters", "string_nul"))
        elif isinstance(x, dict):
            for k, v in x.items():
                if isinstance(k, str) and "\x00" in k:
                    errors.append(_err(where, "keys must not contain NUL characters", "string_nul"))
                walk(v, (*where, k))
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, (*where, i))

    try:
        walk(data, loc)
    except RecursionError:
        errors.append(_err(loc, "document nested too deeply", "value_error"))
    if errors:
        raise SpecError(errors)


def validate_spec(data: dict[str, Any]):
    from pydantic import ValidationError

    from search.spec import ExperimentSpec

    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        errors = [_err(("body", *e.get("loc", ())), str(e.get("msg", "invalid")), str(e.get("type", "value_error")))
                  for e in exc.errors(include_url=False, include_context=False, include_input=False)]
        raise SpecError(errors) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise SpecError([_err(("body",), str(exc)[:500], "value_error")]) from None


def _is_path_option(name: str) -> bool:
    n = name.lower()
    return n in PATH_OPTION_NAMES or n.endswith(("_path", "_file", "_dir"))


def check_paths(spec, data_dir: Path) -> None:
    """Reject dataset options naming a file outside ``data_dir`` (absolute, ``~`` or ``..`` escapes)."""
    root = Path(data_dir).resolve()
    errors = []
    for key, value in (spec.dataset.options or {}).items():
        if not isinstance(value, str) or not _is_path_option(key):
            continue
        loc = ("body", "dataset", "options", key)
        if "\x00" in value:
            errors.append(_err(loc, "path contains a NUL byte", "path_invalid"))
            continue
        if value.startswith("~") or PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute() \
                or PureWindowsPath(value).drive:
            errors.append(_err(loc, "absolute paths are not allowed: give a path relative to the data "
                                    "directory", "path_outside_data_dir"))
            continue
        target = (root / value).resolve()
        if target != root and root not in target.parents:
            errors.append(_err(loc, "path escapes the data directory", "path_outside_data_dir"))
    if errors:
        raise SpecError(errors)


def check_size(spec, max_trials: int) -> int:
    try:
        n = int(spec.count_trials())
    except (ValueError, OverflowError, MemoryError) as exc:
        raise SpecError([_err(("body", "search"), f"cannot size the search: {exc}", "value_error")]) from None
    if n > max_trials:
        raise SpecError([_err(("body", "search", "space"),
                              f"the search plans {n} trials (configurations x seeds x folds); the "
                              f"limit is {max_trials} (RNNHPO_MAX_TRIALS_PER_EXPERIMENT)", "too_many_trials")])
    return n


def check_experiment(spec, data_dir: Path, *, allow_test_hooks: bool = False) -> str | None:
    """The search layer's complete check (dataset, files, limits) plus the refusal of test hooks;
    returns the task kind. Raises SpecError with every problem."""
    from search.validation import experiment_problems

    problems, kind = experiment_problems(spec, data_dir=data_dir)
    errors = [_err(("body", *p.loc), p.msg, p.type) for p in problems]
    if spec.execution.inject_failure is not None and not allow_test_hooks:
        errors.append(_err(("body", "execution", "inject_failure"),
                           "extra inputs are not permitted (a test hook)", "extra_forbidden"))
    if errors:
        raise SpecError(errors)
    return kind


def check_fits(spec, nodes: list[dict[str, float]] | None) -> None:
    """Refuse a pack resource request no node of a known cluster (``nodes``) can ever hold
    (:func:`search.resources.resource_problem`, the rule the driver applies before running);
    ``nodes`` None: the cluster is unknown, and the driver's check is left to fail it."""
    from search.resources import resource_problem

    if nodes is None:
        return
    ex = spec.execution
    problem = resource_problem(nodes, cpus_per_pack=ex.cpus_per_pack, gpus_per_pack=ex.gpus_per_pack,
                               cuda_only=spec.training.cuda_only)
    if problem is not None:
        raise SpecError([_err(("body", *problem.field.split(".")), problem.message, "resources_unsatisfiable")])


def spec_from_body(raw: bytes, content_type: str | None, *, data_dir: Path, max_trials: int,
                   allow_test_hooks: bool = False):
    """Parse, validate, sandbox, size and check a spec completely; returns ``(spec, n_trials)``
    or raises SpecError listing every problem found. A csv dataset's inferred task kind is
    written into the returned spec (``dataset.options.kind``), so it is stated, not guessed again."""
    data = parse_document(raw, content_type)
    check_nul(data)
    spec = validate_spec(data)
    errors: list[dict[str, Any]] = []
    n_trials, kind = 0, None
    try:
        check_paths(spec, data_dir)
    except SpecError as exc:
        errors += exc.errors
    try:
        n_trials = check_size(spec, max_trials)
    except SpecError as exc:
        errors += exc.errors
    try:
        kind = check_experiment(spec, data_dir, allow_test_hooks=allow_test_hooks)
    except SpecError as exc:
        errors += exc.errors
    if errors:
        raise SpecError(errors)
    if spec.dataset.name == "csv" and spec.dataset.options.get("kind", "auto") == "auto":
        options = {**spec.dataset.options, "kind": kind}
        spec = spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"options": options})})
    return spec, n_trials


def format_errors(errors: list[dict[str, Any]]) -> list[str]:
    """One line per problem: ``field.path: message`` (the leading ``body`` dropped)."""
    lines = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", [])]
        if loc[:1] == ["body"]:
            loc = loc[1:]
        lines.append(f"{'.'.join(loc) or 'spec'}: {e.get('msg', 'invalid')}")
    return lines
