"""`rnnhpo reproduce` end to end on a reduced setting, and the report's verdict logic on known data."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from search.planning import TEST_NUMBER_BASE
from search.reference import reproduction_spec
from service.reports.reproduction import reproduction_report


@pytest.mark.slow
def test_reproduce_table3_iris_json(ray_local, tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = CliRunner().invoke(app, ["reproduce", "table3", "--dataset", "iris", "--seeds", "2", "--splits", "3",
                                      "--epochs", "3", "--json", "--db", db], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    (rep,) = out["reports"]
    rows = {r["variant"]: r for r in rep["rows"]}
    assert list(rows) == ["RNN", "LSTM", "GRU", "L1-GRU", "L2-GRU", "SL1-GRU"]
    assert all(r["n"] == 6 for r in rows.values())
    assert rows["SL1-GRU"]["paper_test"] == pytest.approx(0.9656) and rows["SL1-GRU"]["reference"] == "GRU"
    assert rows["SL1-GRU"]["paired"]["n"] == 6
    verdicts = {c["claim"]: c["verdict"] for c in rep["claims"]}
    assert set(verdicts.values()) <= {"reproduced", "not reproduced", "not testable"}
    sparsity = next(c for c in rep["claims"] if c["variant"] == "SL1-GRU" and "sparsity" in c["claim"])
    assert sparsity["verdict"] == "not testable" and sparsity["steps_needed"] > 50_000


def _trials(diffs: dict[str, float], n_seeds=4, n_splits=3, steps=100):
    out, number = [], TEST_NUMBER_BASE
    for v, d in diffs.items():
        for s in range(n_seeds):
            for sp in range(n_splits):
                acc = 0.9 + 0.01 * ((s * 7 + sp * 3) % 5) + d + 0.001 * ((s + sp) % 2) * (d != 0)
                out.append({"number": number, "variant": v, "status": "completed", "seed": s, "fold": sp,
                            "train_metric": acc, "test_metric": acc, "sparsity_out": 0.0, "wall_time": 1.0,
                            "final": {"steps": steps}, "diagnostics": {"steps_to_sparsity": 10.0,
                                                                         "median_abs_w_out_init": 0.25}})
                number += 1
    out.append({**out[0], "number": 5, "test_metric": 0.0})  # a selection trial: ignored
    return out


def test_verdicts_on_known_differences():
    spec = reproduction_spec("table3", "iris", seeds=4, splits=3)
    trials = _trials({"RNN": 0, "LSTM": 0, "GRU": 0, "L1-GRU": 0.03, "L2-GRU": 0.0, "SL1-GRU": -0.03})
    rep = reproduction_report(spec, trials, task_kind="classification")
    v = {c["variant"]: c for c in rep["claims"] if "on test" in c["claim"]}
    assert v["L1-GRU"]["verdict"] == "reproduced"
    assert v["L2-GRU"]["verdict"] == "not reproduced" and "identical" in v["L2-GRU"]["reason"]
    assert v["SL1-GRU"]["verdict"] == "not reproduced" and "opposite" in v["SL1-GRU"]["reason"]
    sp = next(c for c in rep["claims"] if c["variant"] == "SL1-GRU" and "sparsity" in c["claim"])
    # the closed form (10 steps) is below the steps taken (100): testable, and 0 < half the paper's
    assert sp["verdict"] == "not reproduced"
    assert rep["rows"][2]["n"] == 12  # the selection trial (number 5) is not counted
