"""`rnnhpo train`: JSON summary, trace CSV, paper-named weights, one-line errors naming the option."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from trainer.result import TRACE_COLUMNS

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, ["train", *args])


def test_train_json_trace_and_weights(tmp_path):
    trace, weights = tmp_path / "t.csv", tmp_path / "w.npz"
    r = _run("--task", "funcapprox", "--model", "gru", "--reg", "sl1", "--lr", "0.001", "--lam", "3e-4",
             "--alpha", "0.01", "--epochs", "3", "--full-batch", "--seed", "2", "--dtype", "float64",
             "--trace-out", str(trace), "--weights-out", str(weights), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    f = out["final"]
    assert f["steps"] == 3 and abs(f["loss"] - (f["data_loss"] + f["penalty"])) < 1e-12 and f["penalty"] > 0
    assert out["diagnostics"]["monotonicity_violations"] == 0 and out["wall_time"] > 0
    rows = list(csv.DictReader(trace.open()))
    assert list(rows[0]) == list(TRACE_COLUMNS) and len(rows) == 3
    w = np.load(weights)
    assert set(w.files) == {"W_zx", "W_zh", "b_z", "W_rx", "W_rh", "b_r", "W_hx", "W_hh", "b_h", "W_out", "b_out"}
    assert w["W_zh"].shape == (32, 32) and w["W_out"].shape == (1, 32)


@pytest.mark.parametrize("args,option", [
    (["--model", "transformer"], "--model"),
    (["--alpha", "-1"], "--alpha"),
    (["--alpha", "0"], "--alpha"),
    (["--lam", "-0.5"], "--lam"),
    (["--lr", "-1"], "--lr"),
    (["--reg", "tikhonov"], "--reg"),
    (["--reg", "l3"], "--reg"),
    (["--model", "diag_rnn", "--hidden", "7"], "--hidden"),
    (["--beta", "wide"], "--beta"),
    (["--task", "no-such-task"], "--task"),
    (["--device", "gpu"], "--device"),
    *([(["--device", "cuda"], "--device"), (["--engine", "fast", "--fast-backend", "triton"], "--fast-backend"),
       (["--engine", "fast", "--fast-backend", "cuda_graph"], "--fast-backend")] if not torch.cuda.is_available() else []),
])
def test_bad_input_exits_nonzero_naming_option(args, option, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # a user's machine: Triton on CPU is refused
    base = {"--task": "iris"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    flat = [x for kv in base.items() for x in kv] + ["--epochs", "1"]
    r = _run(*flat)
    assert r.exit_code != 0
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {option}"), r.output


def test_tikhonov_on_lstm_accepted():
    r = _run("--task", "funcapprox", "--model", "lstm", "--reg", "tikhonov", "--lam", "1e-3", "--beta", "bound",
             "--epochs", "1", "--hidden", "4", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["final"]["penalty"] > 0
