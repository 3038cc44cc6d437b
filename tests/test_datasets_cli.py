"""`rnnhpo datasets` and `rnnhpo data export`: every dataset exports the arrays load_task gives."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from trainer.datasets import catalogue, fakes
from trainer.tasks import load_task

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = fakes.write_data_dir(tmp_path_factory.mktemp("cli-data"))
    import pandas as pd

    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=50), "b": rng.normal(size=50),
                  "y": rng.choice(["u", "v"], 50)}).to_csv(d / "own.csv", index=False)
    return d


def test_datasets_lists_catalogue_with_availability(tmp_path):
    empty = tmp_path / "empty"
    res = runner.invoke(app, ["datasets", "--data-dir", str(empty)])
    assert res.exit_code == 0, res.output
    for e in catalogue():
        assert e.name in res.output
    assert "ready" in res.output
    assert f"needs breast-cancer.data in {empty}" in res.output
    assert f"needs kddcup.data_10_percent.gz in {empty}" in res.output


def test_datasets_json_all_ready_with_files(data_dir):
    import json

    res = runner.invoke(app, ["datasets", "--data-dir", str(data_dir), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert all(r["availability"].startswith("ready") for r in rows)
    assert {"name", "kind", "shape", "n_classes", "source", "default_framing", "availability"} <= set(rows[0])


FRAMINGS = {
    "iris": ["features_as_steps", "single_step", "window:5"],
    "wine": ["features_as_steps", "single_step"],
    "breast_cancer_wdbc": ["features_as_steps"],
    "breast_cancer_wisconsin": ["features_as_steps", "single_step"],
    "diabetes": ["features_as_steps", "single_step", "window:4"],
    "boston": ["features_as_steps", "single_step"],
    "digits": ["rows", "features_as_steps", "single_step"],
    "funcapprox": ["single_step", "window:8"],
    "peaks": ["single_step", "features_as_steps"],
    "breast_cancer": ["features_as_steps", "single_step"],
    "kddcup99": ["single_step", "features_as_steps"],
    "mnist": ["rows", "features_as_steps", "single_step"],
    "wine_quality": ["features_as_steps", "single_step"],
    "energy_efficiency": ["features_as_steps", "single_step"],
    "student_performance": ["features_as_steps", "single_step"],
}


def _expected_step_shape(task, framing):
    f = int(np.prod(task.x_train.shape[1:]))
    if framing == "features_as_steps":
        return (f, 1)
    if framing == "single_step":
        return (1, f)
    return None


@pytest.mark.parametrize("name", sorted(FRAMINGS))
def test_export_every_dataset_every_framing(name, data_dir, tmp_path):
    base = load_task(name, seed=0, data_dir=data_dir)
    for framing in FRAMINGS[name]:
        out = tmp_path / f"{name}-{framing.replace(':', '')}.npz"
        res = runner.invoke(app, ["data", "export", name, "--out", str(out), "--seed", "0",
                                  "--framing", framing, "--data-dir", str(data_dir)])
        assert res.exit_code == 0, res.output
        with np.load(out) as z:
            assert sorted(z.files) == ["x_test", "x_train", "y_test", "y_train"]
            task = load_task(name, seed=0, framing=framing, data_dir=data_dir)
            for key in z.files:
                assert np.array_equal(z[key], getattr(task, key)), (name, framing, key)
            assert z["x_train"].ndim == 3
            expected = _expected_step_shape(base, framing)
            if expected:
                assert z["x_train"].shape[1:] == expected
            elif framing == "rows":
                assert z["x_train"].shape[1:] == base.x_train.shape[1:]
            else:  # window:k -> (k, F)
                k = int(framing.split(":")[1])
                assert z["x_train"].shape[1] == k


def test_export_user_csv_with_options_and_fold(data_dir, tmp_path):
    out = tmp_path / "own.npz"
    res = runner.invoke(app, ["data", "export", "csv", "--out", str(out), "--data-dir", str(data_dir),
                              "-O", "path=own.csv", "-O", "target=y", "--fold", "1", "--n-folds", "4"])
    assert res.exit_code == 0, res.output
    with np.load(out) as z:
        assert z["x_train"].shape[1:] == (2, 1) and len(z["y_test"]) + len(z["y_train"]) == 40


@pytest.mark.parametrize("args,needle", [
    (["data", "export", "nope"], "unknown task 'nope'"),
    (["data", "export", "iris", "--framing", "rows"], "framing 'rows' needs images"),
    (["data", "export", "iris", "-O", "bogus"], "is not KEY=VALUE"),
    (["data", "export", "kddcup99", "--data-dir", "/nonexistent/dir"], "needs kddcup.data_10_percent.gz"),
])
def test_export_errors_exit_2_with_one_line(args, needle, tmp_path):
    res = runner.invoke(app, args + ["--out", str(tmp_path / "x.npz")])
    assert res.exit_code == 2
    assert "error: " in res.output and needle in res.output
    assert "Traceback" not in res.output


def test_console_script_subprocess(tmp_path):
    out = tmp_path / "w.npz"
    proc = subprocess.run([sys.executable, "-m", "cli.main", "data", "export", "wine", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as z:
        assert z["x_train"].shape == (125, 13, 1) and z["x_test"].shape == (53, 13, 1)
    bad = subprocess.run([sys.executable, "-m", "cli.main", "data", "export", "mnist", "--out", str(out),
                          "--data-dir", str(tmp_path / "none")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: mnist: needs") and "Traceback" not in bad.stderr
