"""The experiment spec reference (docs/spec.md), generated from the pydantic schema.

``python -m search.spec_reference > docs/spec.md`` walks :class:`search.spec.ExperimentSpec`
field by field (nested models become dotted paths such as ``training.lr``, lists of models
``variants[].name``) and prints one markdown table per model: type, default, bounds and
description, all read from the models themselves, never from a hand-kept list.
tests/test_spec_reference.py checks that the committed file equals what this prints.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticUndefined, to_jsonable_python

_SCALARS = {int: "int", float: "float", str: "str", bool: "bool", type(None): "null"}
_BOUNDS = ((annotated_types.Gt, "gt", "> {}"), (annotated_types.Ge, "ge", "≥ {}"),
           (annotated_types.Lt, "lt", "< {}"), (annotated_types.Le, "le", "≤ {}"))

HEADER = """\
# Experiment spec reference

Generated from `search.spec.ExperimentSpec` by `python -m search.spec_reference > docs/spec.md`;
do not edit by hand (`tests/test_spec_reference.py` fails when this file and the schema differ).

A spec is YAML or JSON (`rnnhpo run spec.yaml`, `rnnhpo submit spec.yaml`, or the body of
`POST /api/v1/experiments`); `examples/` has complete ones. Unknown keys are rejected. A path
`a.b` is key `b` inside mapping `a`; `a[].b` is key `b` of every item of list `a`; `<name>` stands
for a key you choose. "required" means the key has no default.
"""


@dataclass
class _Section:
    model: type[BaseModel]
    prefix: str
    title: str
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every pydantic model named anywhere inside a type annotation, in order."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        for m in _models_in(arg):
            if m not in out:
                out.append(m)
    return out


def type_name(annotation: Any) -> str:
    """A short, readable rendering of a type annotation (``int | null``, ``"a" | "b"``, ...)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin in (list, tuple, set, frozenset):
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is dict:
        return f"map[{type_name(args[0])}, {type_name(args[1])}]" if args else "map"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation.__name__
    return getattr(annotation, "__name__", str(annotation))


def bounds_of(info: FieldInfo) -> str:
    """The field's numeric and length constraints, e.g. ``≥ 1, ≤ 20`` or ``length 1–64``."""
    parts = []
    for meta in info.metadata:
        for kind, attr, fmt in _BOUNDS:
            if isinstance(meta, kind):
                parts.append(fmt.format(getattr(meta, attr)))
        if isinstance(meta, annotated_types.MultipleOf):
            parts.append(f"multiple of {meta.multiple_of}")
    lo = next((m.min_length for m in info.metadata if isinstance(m, annotated_types.MinLen)), None)
    hi = next((m.max_length for m in info.metadata if isinstance(m, annotated_types.MaxLen)), None)
    if lo is not None or hi is not None:
        parts.append(f"length {lo if lo is not None else 0}–{hi if hi is not None else '∞'}")
    return ", ".join(parts)


def default_of(info: FieldInfo, nested: bool) -> str:
    if info.is_required():
        return "required"
    if nested:
        return "(see its fields)"
    value = info.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return ""
    return "`" + json.dumps(to_jsonable_python(value), ensure_ascii=False) + "`"


def public_fields(model: type[BaseModel]) -> list[tuple[str, FieldInfo]]:
    """The model's fields minus those kept out of the public schema (``SkipJsonSchema``)."""
    return [(name, info) for name, info in model.model_fields.items()
            if not any(isinstance(m, SkipJsonSchema) for m in info.metadata)]


def _description(info: FieldInfo) -> str:
    return " ".join((info.description or "").split())


def _cell(text: str) -> str:
    """Escape a table cell for CommonMark (pipes; no newlines)."""
    return " ".join(text.split()).replace("|", "\\|")


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, str]:
    """The model a field nests directly (optionally or as a list of it), with its path suffix."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _nested_model(args[0])
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation, ""
    if origin in (Union, types.UnionType):
        non_null = [a for a in args if a is not type(None)]
        if len(non_null) == 1:
            return _nested_model(non_null[0])
    if origin is list and args:
        model, suffix = _nested_model(args[0])
        if model is not None:
            return model, "[]" + suffix
    return None, ""


def sections(root: type[BaseModel], root_title: str | None = None,
             described_by: dict[type[BaseModel], tuple[type[BaseModel], ...]] | None = None) -> list[_Section]:
    """One section per model reachable from ``root``: nested models under each dotted path
    where they stand, then models that are values of maps or members of unions (e.g. search-space
    distributions), each once, naming every path where it may stand.

    ``described_by`` lends descriptions: a field without one takes the description of the
    same-named field of the models listed for its model (the spec's training defaults are
    documented where the trainer declares them)."""
    described_by = described_by or {}
    out: list[_Section] = []
    seen: set[tuple[type[BaseModel], str]] = set()
    values: dict[type[BaseModel], list[str]] = {}
    queue: list[tuple[type[BaseModel], str, str]] = [(root, "", root_title or root.__name__)]
    while queue:
        model, prefix, title = queue.pop(0)
        if (model, prefix) in seen or prefix.count(".") > 8:  # a recursive model stops somewhere
            continue
        seen.add((model, prefix))
        section = _Section(model, prefix, title)
        out.append(section)
        follow: list[tuple[type[BaseModel], str, str]] = []
        for name, info in public_fields(model):
            path = f"{prefix}{info.alias or name}"
            nested, suffix = _nested_model(info.annotation)
            description = _description(info) or next(
                (_description(src.model_fields[name]) for src in described_by.get(model, ())
                 if name in src.model_fields and src.model_fields[name].description), "")
            section.rows.append((f"`{path}{suffix}`", type_name(info.annotation),
                                 default_of(info, nested is not None), bounds_of(info), description))
            if nested is not None:
                follow.append((nested, f"{path}{suffix}.", f"`{path}{suffix}` — {nested.__name__}"))
                continue
            key = ".<name>" if _is_map(info.annotation) else ""
            for inner in _models_in(info.annotation):
                values.setdefault(inner, []).append(f"`{path}{key}`")
        queue[:0] = follow
    documented = {model for model, _ in seen}
    for model, paths in values.items():
        if model not in documented:
            documented.add(model)
            section = _Section(model, "", f"{model.__name__} (a value of {' or '.join(paths)})")
            for name, info in public_fields(model):
                section.rows.append((f"`{info.alias or name}`", type_name(info.annotation),
                                     default_of(info, False), bounds_of(info), _description(info)))
            out.append(section)
    return out


def _is_map(annotation: Any) -> bool:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return typing.get_origin(annotation) is dict


def _doc(model: type[BaseModel]) -> str:
    doc = model.__doc__ or ""
    if not doc or doc == BaseModel.__doc__ or doc.startswith("!!! abstract"):
        return ""
    return " ".join(inspect.cleandoc(doc).split())


def render(root: type[BaseModel], header: str = HEADER,
           described_by: dict[type[BaseModel], tuple[type[BaseModel], ...]] | None = None) -> str:
    """The whole reference as markdown text (``described_by``: see :func:`sections`)."""
    lines = [header.rstrip("\n"), ""]
    for sec in sections(root, described_by=described_by):
        lines += [f"## {sec.title}", ""]
        doc = _doc(sec.model)
        if doc:
            lines += [doc, ""]
        lines += ["| field | type | default | bounds | description |", "|---|---|---|---|---|"]
        for row in sec.rows:
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    sys.stdout.write(spec_reference())


def spec_reference() -> str:
    """docs/spec.md as it should read for the current schema."""
    from search.spec import ExperimentSpec, TrainingSpec
    from trainer.config import MemberConfig, PackConfig

    return render(ExperimentSpec, described_by={TrainingSpec: (MemberConfig, PackConfig)})


if __name__ == "__main__":
    main()
