"""docs/spec.md is generated from the pydantic schema (search.spec_reference) and cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from search.spec_reference import render, spec_reference

ROOT = Path(__file__).resolve().parents[1]


def _rows(text: str) -> dict[str, list[str]]:
    """field path -> its table cells (type, default, bounds, description), unescaped."""
    out = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [c.strip().replace("\\|", "|") for c in line.strip("|").replace("\\|", "\0").split("|")]
            cells = [c.replace("\0", "|") for c in cells]
            out[cells[0].strip("`")] = cells[1:]
    return out


def test_committed_reference_matches_the_schema():
    committed = (ROOT / "docs" / "spec.md").read_text()
    assert committed == spec_reference(), (
        "docs/spec.md is stale: regenerate it with `python -m search.spec_reference > docs/spec.md`")


def test_module_prints_the_reference():
    out = subprocess.run([sys.executable, "-m", "search.spec_reference"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out == spec_reference()


def test_every_spec_field_is_documented_with_its_constraints():
    from search.spec import ExecutionSpec, ExperimentSpec, TrainingSpec

    rows = _rows(spec_reference())
    for name in TrainingSpec.model_fields:
        assert f"training.{name}" in rows
    for name in ExperimentSpec.model_fields:
        assert any(p == name or p.startswith(name + "[]") for p in rows), name
    public = ExecutionSpec.model_json_schema()["properties"]
    assert {p.split(".", 1)[1] for p in rows if p.startswith("execution.") and p.count(".") == 1} == set(public)
    assert rows["training.lr"][:3] == ["float", "`0.001`", "> 0"]
    assert rows["training.lr"][3].startswith("learning rate")  # lent by trainer.config.MemberConfig
    assert rows["dataset.cv_folds"][:3] == ["int | null", "`null`", "≥ 2, ≤ 20"]
    assert rows["variants[].family"][:2] == ['"rnn" | "lstm" | "gru" | "diag_rnn"', "required"]
    from search.spec import Objective

    assert rows["search.objectives[].metric"][1] == f'`"{Objective.model_fields["metric"].default}"`'
    assert rows["execution.asha.reduction_factor"][:3] == ["int", "`3`", "≥ 2"]
    assert rows["values"][2] == "length 1–1000"  # Choice, a value of search.space.<name>


class _Leaf(BaseModel):
    """A leaf."""

    k: int = Field(3, ge=1, lt=10, description="a | piped description")


class _Entry(BaseModel):
    label: str = Field(min_length=2)


class _Root(BaseModel):
    leaf: _Leaf = Field(default_factory=_Leaf)
    maybe: _Leaf | None = None
    entries: list[_Entry] = Field(default_factory=list, max_length=5)
    table: dict[str, _Entry | int] = Field(default_factory=dict)
    mode: Literal["a", "b"] = "a"
    ratio: float = Field(description="no default")
    hook: SkipJsonSchema[int | None] = None


def test_generator_walks_any_model():
    text = render(_Root, header="# test")
    rows = _rows(text)
    assert rows["leaf"][:2] == ["_Leaf", "(see its fields)"]
    assert rows["leaf.k"] == ["int", "`3`", "≥ 1, < 10", "a | piped description"]
    assert rows["maybe.k"][0] == "int"
    assert rows["entries[]"][2] == "length 0–5"
    assert rows["entries[].label"] == ["str", "required", "length 2–∞", ""]
    assert rows["table"][0] == "map[str, _Entry | int]"
    assert rows["mode"][:2] == ['"a" | "b"', '`"a"`']
    assert rows["ratio"][:2] == ["float", "required"]
    assert "hook" not in rows  # kept out of the public schema, so out of the reference
    assert "## _Entry (a value of `table.<name>`)" not in text  # _Entry is already documented
    assert "A leaf." in text
    assert "a \\| piped description" in text  # pipes escaped: a valid CommonMark table cell


def test_reference_fields_equal_the_json_schema():
    """Every model the reference documents lists exactly the properties of its JSON schema
    (the public schema the API serves), a second reading of the same models."""
    from search.spec import ExperimentSpec
    from search.spec_reference import sections

    schema = ExperimentSpec.model_json_schema()
    by_title = {d.get("title"): d for d in schema["$defs"].values()} | {schema["title"]: schema}
    documented = sections(ExperimentSpec)
    assert len({s.model for s in documented}) == len(by_title)
    for sec in documented:
        fields = {row[0].strip("`").removeprefix(sec.prefix).removesuffix("[]") for row in sec.rows}
        assert fields == set(by_title[sec.model.__name__]["properties"]), sec.title


def test_reference_tables_parse_as_commonmark_tables():
    """Every row of docs/spec.md is a table row to a CommonMark parser with tables (GFM), with
    five cells (escaped pipes in types and descriptions do not split cells)."""
    from markdown_it import MarkdownIt

    text = spec_reference()
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    rows = [t for t in tokens if t.type == "tr_open"]
    cells = [t for t in tokens if t.type in ("th_open", "td_open")]
    n_rows = sum(1 for line in text.splitlines() if line.startswith("| ") and not line.startswith("|---"))
    assert len(rows) == n_rows and len(cells) == 5 * n_rows
    inline = [t.content for t in tokens if t.type == "inline"]
    assert '"grid" | "random" | "tpe" | "cmaes" | "nsga2"' in inline
