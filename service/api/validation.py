"""Turning a request body into a validated, bounded, sandboxed :class:`ExperimentSpec`.

Every problem is a :class:`SpecError` carrying pydantic-style ``{loc, msg, type}`` entries, which
the API answers with 422 (or 413/415 via ``status``) -- never 500.
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


def spec_from_body(raw: bytes, content_type: str | None, *, data_dir: Path, max_trials: int):
    """Parse, validate, sandbox and size a spec; returns ``(spec, n_trials)`` or raises SpecError."""
    data = parse_document(raw, content_type)
    check_nul(data)
    spec = validate_spec(data)
    check_paths(spec, data_dir)
    return spec, check_size(spec, max_trials)
