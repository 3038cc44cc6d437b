"""The spec editor's helpers: where in the text a validation error's ``loc`` points, and the
example specs a user can start from.

YAML is a superset of JSON, so one parser (PyYAML's composer, which keeps each node's line and
column) locates fields in both. A ``loc`` that does not exist in the text (a missing required
field) points at the deepest parent that does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from service.api.schemas import EXAMPLE_SPEC_YAML

#: Where the repository keeps its example specs (absent in an installed wheel: the built-in one stays).
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


def _compose(text: str):
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def locate(text: str, loc: list[Any]) -> dict[str, Any]:
    """``{line, column, path, exact}`` (1-based line/column) of the field ``loc`` names in
    ``text``; ``loc`` may start with ``"body"`` as the API reports it. For a YAML/JSON syntax
    error the parser's own position is used by the caller (see :func:`syntax_error`)."""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    node = _compose(text)
    line, col, depth = 1, 1, 0
    if node is not None:
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
    for part in parts:
        found = None
        if isinstance(node, yaml.MappingNode):
            for key, val in node.value:
                if str(key.value) == str(part):
                    found = (key, val)
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            item = node.value[part]
            found = (item, item)
        if found is None:
            break
        mark, node = found[0].start_mark, found[1]
        line, col, depth = mark.line + 1, mark.column + 1, depth + 1
    return {"line": line, "column": col, "path": ".".join(map(str, parts)) or "(document)",
            "exact": depth == len(parts)}


def syntax_error(text: str) -> dict[str, Any] | None:
    """Line/column and message of a YAML/JSON syntax error, or None when the text parses."""
    try:
        yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        return {"line": mark.line + 1 if mark else 1, "column": mark.column + 1 if mark else 1,
                "msg": str(exc.problem or exc)}
    except yaml.YAMLError as exc:
        return {"line": 1, "column": 1, "msg": str(exc)}
    return None


def annotate(text: str, errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The API's ``detail`` entries with the line and column of their field added."""
    syntax = syntax_error(text)
    out = []
    for e in errors:
        loc = list(e.get("loc") or [])
        where = locate(text, loc)
        if syntax is not None and where["path"] == "(document)":
            where.update(line=syntax["line"], column=syntax["column"])
        out.append({**e, **where})
    return out


def examples() -> dict[str, str]:
    """``name -> YAML text`` of the example specs (the repository's ``examples/`` when present)."""
    found = {"iris-quick (built in)": EXAMPLE_SPEC_YAML}
    if EXAMPLES_DIR.is_dir():
        for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
            found[path.stem] = path.read_text(encoding="utf-8")
    return found
