"""Validation at the edge: every problem of a spec, with its field path, before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.validation import SpecError, format_errors, spec_from_body


def check(doc: dict, data_dir: Path, **kw) -> list[str]:
    try:
        spec_from_body(json.dumps(doc).encode(), "application/json", data_dir=data_dir,
                       max_trials=kw.pop("max_trials", 10_000), **kw)
    except SpecError as exc:
        return format_errors(exc.errors)
    return []


def base(**over) -> dict:
    doc = {"name": "t", "dataset": {"name": "iris"}, "variants": [{"name": "GRU", "family": "gru"}]}
    doc.update(over)
    return doc


def test_a_valid_spec_has_no_problems(tmp_path):
    assert check(base(), tmp_path) == []


def test_unknown_dataset_is_named_with_a_suggestion(tmp_path):
    (line,) = check(base(dataset={"name": "irs"}), tmp_path)
    assert line.startswith("dataset.name: unknown dataset 'irs'") and "did you mean 'iris'" in line


def test_missing_local_file_names_the_file_and_the_data_directory(tmp_path):
    (line,) = check(base(dataset={"name": "mnist"}), tmp_path)
    assert line.startswith("dataset.name: mnist: needs ") and str(tmp_path) in line


def test_unknown_dataset_option_is_named(tmp_path):
    (line,) = check(base(dataset={"name": "iris", "options": {"colour": "red"}}), tmp_path)
    assert line.startswith("dataset.options.colour: unknown option for iris")


def test_every_problem_is_reported_at_once(tmp_path):
    doc = base(dataset={"name": "irs"},
               variants=[{"name": "G", "family": "gru", "reg": "sl1",
                          "params": {"hidden": 4096, "epochs": 1_000_000_000}},
                         {"name": "L", "family": "gru", "reg": "tikhonov"}],
               search={"algorithm": "grid",
                       "space": {"lr": {"type": "grid", "values": [-1, 0.1]},
                                 "hidden": {"type": "grid", "values": [1_000_000]}}})
    lines = check(doc, tmp_path)
    joined = "\n".join(lines)
    assert "dataset.name: unknown dataset 'irs'" in joined
    assert "variants.0.params.hidden: Input should be less than or equal to 1024" in joined
    assert "variants.0.params.epochs: Input should be less than or equal to 100000" in joined
    assert "search.space.lr: value -1: Input should be greater than 0" in joined
    assert "search.space.hidden: value 1000000: Input should be less than or equal to 1024" in joined
    assert "tikhonov is defined for the lstm family only" in joined


@pytest.mark.parametrize("space, needle", [
    ({"lr": {"type": "log", "low": 1e-9, "high": 1e-1}}, None),
    ({"hidden": {"type": "int", "low": 8, "high": 5000}}, "search.space.hidden: value 5000"),
    ({"lam": {"type": "uniform", "low": -1.0, "high": 1.0}}, "search.space.lam: value -1.0"),
    ({"epochs": {"type": "choice", "values": [10, 1e9]}}, "search.space.epochs: value 1000000000.0"),
])
def test_searched_values_are_checked_against_the_trainer_limits(tmp_path, space, needle):
    doc = base(variants=[{"name": "S", "family": "gru", "reg": "sl1"}],
               search={"algorithm": "random", "n_trials": 2, "space": space})
    lines = check(doc, tmp_path)
    assert (lines == []) if needle is None else any(line.startswith(needle) for line in lines), lines


@pytest.mark.parametrize("text, field", [
    (b'{"name": "t", "dataset": {"name": "iris"}, "variants": [{"name": "G", "family": "gru"}],'
     b' "training": {"lr": Infinity}}', "training.lr: Input should be a finite number"),
    (b'{"name": "t", "dataset": {"name": "iris"}, "variants": [{"name": "G", "family": "gru"}],'
     b' "seeds": [0, 4294967296]}', "seeds"),
    (b'{"name": "t", "dataset": {"name": "iris", "split_seed": 4294967296},'
     b' "variants": [{"name": "G", "family": "gru"}]}', "dataset.split_seed"),
])
def test_non_finite_and_unbounded_numbers_are_refused(tmp_path, text, field):
    with pytest.raises(SpecError) as info:
        spec_from_body(text, "application/json", data_dir=tmp_path, max_trials=100)
    assert any(field in line for line in format_errors(info.value.errors)), info.value.errors


def test_test_hooks_are_refused_unless_allowed(tmp_path):
    doc = base(execution={"inject_failure": {"pack": 0, "times": 1}})
    assert check(doc, tmp_path) == ["execution.inject_failure: extra inputs are not permitted (a test hook)"]
    assert check(doc, tmp_path, allow_test_hooks=True) == []
    lines = check(base(execution={"inject_failure": {"pack": True, "times": 1}}), tmp_path,
                  allow_test_hooks=True)
    assert lines and lines[0].startswith("execution.inject_failure.pack")


def test_test_hooks_are_not_in_the_public_schema():
    from search.spec import ExperimentSpec

    assert "inject_failure" not in json.dumps(ExperimentSpec.model_json_schema())


def _csv(tmp_path: Path, target_values: list) -> None:
    rows = ["a,b,y"] + [f"{i},{i * 2},{v}" for i, v in enumerate(target_values)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize("values, kind", [([0, 1, 2] * 10, "classification"),
                                          ([0.5 * i + 0.01 for i in range(30)], "regression"),
                                          (["a", "b"] * 15, "classification")])
def test_csv_kind_is_inferred_and_stated_in_the_spec(tmp_path, values, kind):
    _csv(tmp_path, values)
    doc = base(dataset={"name": "csv", "options": {"path": "d.csv", "target": "y"}})
    spec, _ = spec_from_body(json.dumps(doc).encode(), "application/json", data_dir=tmp_path,
                             max_trials=100)
    assert spec.dataset.options["kind"] == kind
    from search.driver import task_kind

    assert task_kind(spec) == kind


def test_csv_needs_a_file_inside_the_data_directory(tmp_path):
    lines = check(base(dataset={"name": "csv", "options": {"path": "nope.csv", "target": "y"}}), tmp_path)
    assert lines == [f"dataset.options.path: no file nope.csv in the data directory {tmp_path.resolve()}"]
    lines = check(base(dataset={"name": "csv", "options": {"target": "y"}}), tmp_path)
    assert lines[0].startswith("dataset.options.path: csv needs path=FILE")
