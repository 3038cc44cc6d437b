"""Theorem diagnostics: Thm 1 only in full batch, Thm 2 ratios and trend, Thm 3 tail distance."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.config import MemberConfig, PackConfig
from trainer.diagnostics import convergence_diagnostics, log_slope, tail_start
from trainer.tasks import load_task
from trainer.train import train_pack


def test_closed_form_cases():
    loss = np.array([4.0, 3.0, 3.3, 2.0, 2.1])
    gn = np.array([2.0, 1.0, 0.5, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
    d = convergence_diagnostics(loss, gn, full_batch=True, tail_distance=0.5, final_weight_norm=2.0)
    assert d["monotonicity_violations"] == 2 and d["max_relative_increase"] == pytest.approx(0.1)
    assert d["grad_norm_ratio"] == 128 and d["grad_norm_min_ratio"] == 0.25
    assert d["weight_tail_distance_rel"] == 0.25
    mb = convergence_diagnostics(loss, gn, full_batch=False, tail_distance=None, final_weight_norm=1.0)
    assert mb["monotonicity_violations"] is None and mb["max_relative_increase"] is None
    # the last 10% of 30 steps, doubling each step: the fitted factor across the 3-step tail is 4
    grow = convergence_diagnostics(loss, 2.0 ** np.arange(30), full_batch=False, tail_distance=None,
                                   final_weight_norm=1.0)
    assert grow["grad_norm_tail_trend"] == pytest.approx(4.0)
    assert tail_start(10) == 9 and tail_start(100) == 90


def test_tail_distance_is_the_weight_change_over_the_tail():
    task = load_task("iris", seed=0)
    def run(steps):
        cfg = PackConfig(family="gru", hidden=4, batch_size=None, epochs=None, max_steps=steps, dtype="float64",
                         device="cpu", members=[MemberConfig(lr=0.05, seed=2)])
        return train_pack(task, cfg).members[0]
    w9, w10 = run(9), run(10)  # tail_start(10) == 9
    want = np.sqrt(sum(np.sum((w10.weights[k] - w9.weights[k]) ** 2) for k in w10.weights))
    assert w10.diagnostics["weight_tail_distance"] == pytest.approx(want, rel=1e-9)
    assert w10.diagnostics["monotonicity_violations"] == 0  # small full-batch steps: Thm 1 holds


def test_tikhonov_feasibility_is_visible():
    task = load_task("iris", seed=0)
    members = [MemberConfig(lr=1e-3, reg="tikhonov", lam=1e-3, seed=0)]
    cfg = PackConfig(family="lstm", hidden=32, epochs=None, max_steps=2, dtype="float64", device="cpu", members=members)
    with pytest.warns(UserWarning, match="outside the feasible region"):
        r = train_pack(task, cfg).members[0]
    d = r.diagnostics
    assert d["tikhonov_rho_h_init"] >= 1 and 0 < d["tikhonov_feasible_init_scale"] < 0.5
    inside = cfg.model_copy(update={"init_scale": d["tikhonov_feasible_init_scale"]})
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r2 = train_pack(task, inside).members[0]
    assert r2.diagnostics["tikhonov_rho_h_init"] == pytest.approx(0.9, abs=1e-6)


@pytest.mark.parametrize("n", [3, 4, 40, 401])
def test_log_slope_is_polyfit(n):
    """The closed-form slope behind grad_norm_tail_trend equals numpy's least-squares fit."""
    values = np.exp(np.random.default_rng(n).normal(size=n)) * 1e-3
    assert log_slope(values) == pytest.approx(np.polyfit(np.arange(n), np.log(values), 1)[0], rel=1e-10, abs=1e-14)
