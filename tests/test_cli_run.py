"""`rnnhpo run` and the query verbs end to end on the embedded default (SQLite + local Ray)."""

from __future__ import annotations

import json

import matplotlib.image
import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app

pytestmark = pytest.mark.slow

SPEC = {
    "name": "cli-grid",
    "dataset": {"name": "iris"},
    "training": {"epochs": 2, "hidden": 8},
    "variants": [{"name": "GRU", "family": "gru"}, {"name": "SL1-GRU", "family": "gru", "reg": "sl1"}],
    "search": {"algorithm": "grid", "space": {"lr": {"type": "grid", "values": [0.01, 0.05]}}},
    "seeds": 2,
}


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_run_then_query_the_local_database(ray_local, tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("RNNHPO_DATABASE_URL", db)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    plots = tmp_path / "plots"

    out = json.loads(invoke("run", str(spec_file), "--json", "--plots-dir", str(plots)))
    assert out["status"] == "succeeded"
    rows = {r["variant"]: r for r in out["variants"]}
    # per variant: the lr chosen on validation, 2 seeds on the test split
    assert set(rows) == {"GRU", "SL1-GRU"} and all(r["n_completed"] == 2 for r in rows.values())
    for name in ("convergence.png", "sparsity.png", "grid.png"):
        image = matplotlib.image.imread(plots / name)
        assert image.shape[0] > 100 and image.shape[1] > 100

    by_config = json.loads(invoke("compare", out["experiment"], "--json", "--by-config"))
    # selection rows (2 variants x 2 lr) + the chosen lr's test rows (2 variants)
    assert len(by_config) == 6 and {r["params"]["lr"] for r in by_config} == {0.01, 0.05}
    assert sorted(r["role"] for r in by_config) == ["select"] * 4 + ["test"] * 2

    trials = json.loads(invoke("trials", out["experiment"], "--json", "--sort", "test_metric", "--desc"))
    assert len(trials) == 12
    tested = [t["test_metric"] for t in trials if t["test_metric"] is not None]
    assert len(tested) == 4 and tested == sorted(tested, reverse=True)

    test_trial = next(t for t in trials if t["test_metric"] is not None)
    csv = invoke("trace", str(test_trial["id"]), "--csv", "--metrics", "step,loss").splitlines()
    assert csv[0] == "step,loss" and len(csv) == 1 + 2 * 4  # 2 epochs x ceil(105 / 32) steps
    assert [int(line.split(",")[0]) for line in csv[1:]] == list(range(8))


def test_run_rejects_a_malformed_spec_naming_the_field(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNHPO_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    bad = {**SPEC, "variants": [{"name": "x", "family": "transformer"}]}
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(yaml.safe_dump(bad))
    result = CliRunner().invoke(app, ["run", str(spec_file)])
    assert result.exit_code == 2
    assert "variants.0.family" in result.output
