"""The packed training loop: pack equivalence, divergence, pruning, projected GD, Thm 1, trace."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.config import MemberConfig, PackConfig
from trainer.result import DIAGNOSTIC_KEYS, EPOCH_COLUMNS, FINAL_KEYS, TRACE_COLUMNS
from trainer.models import make_family
from trainer.train import train_pack
from trainer.weights import export_weights

pytestmark = pytest.mark.usefixtures("one_thread")


FOUR_GRUS = [MemberConfig(lr=0.05, reg="none", seed=1),
             MemberConfig(lr=0.08, reg="l1", lam=1e-3, seed=2),
             MemberConfig(lr=0.03, reg="l2", lam=2e-3, seed=3),
             MemberConfig(lr=0.05, reg="sl1", lam=1e-3, alpha=0.05, seed=4)]


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_pack_equals_separate_runs(iris, dtype, tol):
    cfg = PackConfig(family="gru", hidden=8, batch_size=16, epochs=3, dtype=dtype, device="cpu",
                     members=FOUR_GRUS)
    pack = train_pack(iris, cfg)
    assert pack.pack_size == 4
    for k, m in enumerate(FOUR_GRUS):
        alone = train_pack(iris, cfg.model_copy(update={"members": [m]})).members[0]
        mk = pack.members[k]
        assert len(mk.trace["loss"]) == len(alone.trace["loss"]) == 3 * 7
        for col in ("loss", "data_loss", "penalty", "grad_norm", "weight_norm", "update_norm"):
            assert np.max(np.abs(mk.trace[col] - alone.trace[col])) <= tol, col
        for name, w in alone.weights.items():
            assert np.max(np.abs(mk.weights[name] - w)) <= tol, name
    # the members really differ (the check above is not vacuous)
    assert not np.allclose(pack.members[0].trace["loss"], pack.members[3].trace["loss"])
    assert pack.members[0].trace["penalty"].max() == 0 and pack.members[3].trace["penalty"].min() > 0


@pytest.mark.parametrize("family", ["rnn", "lstm", "diag_rnn"])
def test_pack_equivalence_other_families(iris, family):
    members = [MemberConfig(lr=0.05, reg="sl1", lam=1e-3, seed=s) for s in (5, 6)]
    cfg = PackConfig(family=family, hidden=6, batch_size=32, epochs=2, dtype="float64", members=members)
    pack = train_pack(iris, cfg)
    alone = train_pack(iris, cfg.model_copy(update={"members": members[1:]})).members[0]
    assert np.max(np.abs(pack.members[1].trace["loss"] - alone.trace["loss"])) <= 1e-10
    for name, w in alone.weights.items():
        assert np.max(np.abs(pack.members[1].weights[name] - w)) <= 1e-10


def test_result_shapes_and_keys(iris):
    cfg = PackConfig(family="gru", hidden=4, batch_size=50, epochs=2, trace_every=2,
                     members=[MemberConfig(lr=0.1), MemberConfig(lr=0.1, seed=3)])
    seen = []
    res = train_pack(iris, cfg, on_epoch=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [0, 1]
    assert set(seen[0][1]) == set(EPOCH_COLUMNS) and seen[0][1]["train_metric"].shape == (2,)
    m = res.members[0]
    assert set(m.trace) == set(TRACE_COLUMNS) and set(m.epochs) == set(EPOCH_COLUMNS)
    assert set(FINAL_KEYS) <= set(m.final) and set(DIAGNOSTIC_KEYS) <= set(m.diagnostics)
    assert len({len(v) for v in m.trace.values()}) == 1
    assert list(m.trace["step"]) == [0, 2, 4] and list(m.trace["epoch"]) == [0, 0, 1]
    assert m.final["steps"] == 6 and m.final["epochs"] == 2
    assert 0 <= m.final["train_metric"] <= 1 and np.all(m.trace["lr"] == 0.1)
    assert set(m.weights) == {"W_zx", "W_zh", "b_z", "W_rx", "W_rh", "b_r", "W_hx", "W_hh", "b_h", "W_out", "b_out"}
    assert m.weights["W_zx"].shape == (4, 1) and m.weights["W_out"].shape == (3, 4)


def test_max_steps_and_full_batch(funcapprox):
    cfg = PackConfig(family="gru", hidden=4, batch_size=None, epochs=None, max_steps=7,
                     members=[MemberConfig(lr=0.01)])
    m = train_pack(funcapprox, cfg).members[0]
    assert m.final["steps"] == 7 and list(m.trace["step"]) == list(range(7))
    assert list(m.trace["epoch"]) == list(range(7))


def test_weights_recompute_loss_outside(funcapprox):
    """The exported paper-named arrays reproduce E (eq. 11 + 15) in plain numpy."""
    m = MemberConfig(lr=1e-3, reg="sl1", lam=3e-4, alpha=0.01)
    cfg = PackConfig(family="gru", hidden=5, batch_size=None, epochs=3, dtype="float64", members=[m])
    r = train_pack(funcapprox, cfg).members[0]
    w = r.weights
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    x = funcapprox.x_train
    h = np.zeros((len(x), 5))
    for t in range(x.shape[1]):
        xt = x[:, t]
        z = sig(xt @ w["W_zx"].T + h @ w["W_zh"].T + w["b_z"])
        rr = sig(xt @ w["W_rx"].T + h @ w["W_rh"].T + w["b_r"])
        c = np.tanh(xt @ w["W_hx"].T + (rr * h) @ w["W_hh"].T + w["b_h"])
        h = (1 - z) * h + z * c
    y = h @ w["W_out"].T + w["b_out"]
    data = 0.5 * np.sum((y - funcapprox.y_train) ** 2) / len(x)
    a = np.abs(w["W_out"])
    pen = 3e-4 * np.sum(np.where(a >= 0.01, a, a * a / 0.02 + 0.005))
    assert abs(r.final["data_loss"] - data) < 1e-10 and abs(r.final["penalty"] - pen) < 1e-12
    assert abs(r.final["loss"] - (data + pen)) < 1e-10
    assert abs(r.final["train_metric"] - np.mean((y - funcapprox.y_train) ** 2)) < 1e-10


def test_diverging_member_is_marked_and_others_unaffected(funcapprox):
    good = MemberConfig(lr=0.01, reg="sl1", lam=1e-3, seed=1)
    bad = MemberConfig(lr=1e200, seed=2)
    cfg = PackConfig(family="gru", hidden=6, batch_size=16, epochs=3, dtype="float64", members=[good, bad])
    res = train_pack(funcapprox, cfg)
    alone = train_pack(funcapprox, cfg.model_copy(update={"members": [good]})).members[0]
    b = res.members[1]
    assert b.diverged and b.diagnostics["diverged_at_step"] >= 0
    # its trace ends with the step that overflowed (E, gradient or update); that update was not applied
    assert len(b.trace["loss"]) == b.diagnostics["diverged_at_step"] + 1 and b.trace["update_norm"][-1] == 0
    assert all(np.all(np.isfinite(v)) for v in b.weights.values())  # last finite values kept
    assert not res.members[0].diverged and len(res.members[0].trace["loss"]) == 15
    assert b.final["steps"] == b.diagnostics["diverged_at_step"] < 15
    assert np.max(np.abs(res.members[0].trace["loss"] - alone.trace["loss"])) <= 1e-10


def test_on_epoch_prunes_member(iris):
    members = [MemberConfig(lr=0.05, seed=s) for s in range(3)]
    cfg = PackConfig(family="gru", hidden=4, batch_size=32, epochs=4, members=members)
    calls = []

    def on_epoch(epoch, metrics):
        calls.append(epoch)
        return [1] if epoch == 1 else None

    res = train_pack(iris, cfg, on_epoch=on_epoch)
    assert calls == [0, 1, 2, 3]
    p = res.members[1]
    assert p.diagnostics["pruned"] is True and res.members[0].diagnostics["pruned"] is False
    assert len(p.epochs["epoch"]) == 2 and p.final["steps"] == 8 and len(p.trace["loss"]) == 8
    assert len(res.members[0].trace["loss"]) == 16


def test_on_epoch_may_abort(iris):
    cfg = PackConfig(family="rnn", hidden=4, epochs=5, members=[MemberConfig(lr=0.1)])

    def boom(epoch, metrics):
        raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        train_pack(iris, cfg, on_epoch=boom)


def test_all_pruned_stops_early(iris):
    cfg = PackConfig(family="gru", hidden=4, epochs=50, members=[MemberConfig(lr=0.1)])
    res = train_pack(iris, cfg, on_epoch=lambda e, m: [0])
    assert res.members[0].final["epochs"] == 1


@pytest.mark.parametrize("family", ["diag_rnn", "gru"])
def test_projected_gd_stays_in_ball(funcapprox, family):
    members = [MemberConfig(lr=0.5, rho=0.3, rho_u=0.2, seed=s) for s in range(2)]
    cfg = PackConfig(family=family, hidden=8, batch_size=None, epochs=60, optimizer="projected_gd",
                     dtype="float64", members=members)
    res = train_pack(funcapprox, cfg)
    m = 8
    rec = ["w"] if family == "diag_rnn" else ["W_zh", "W_rh", "W_hh"]
    inp = ["U"] if family == "diag_rnn" else ["W_zx", "W_rx", "W_hx"]
    fam = make_family(family, 1, 8, 1)  # the same init as the members' (seeds 0 and 1)
    flat0 = fam.init([0, 1], 0.5, torch.float64, "cpu").numpy()
    for k in range(2):
        w0, w = export_weights(fam, flat0[k]), res.members[k].weights
        hit = False
        for names, radius in ((rec, 0.3 / np.sqrt(m)), (inp, 0.2 / np.sqrt(m))):
            for n in names:
                d = (w[n] - w0[n]).reshape(w[n].shape[0], -1)  # one row per unit
                norms = np.linalg.norm(d, axis=1)
                assert np.all(norms <= radius * (1 + 1e-12)), (n, norms.max(), radius)
                hit |= bool(np.any(norms >= radius * (1 - 1e-9)))
        assert hit  # the constraint was active, so the check is not vacuous


def test_sl1_gru_full_batch_is_monotone(funcapprox):
    cfg = PackConfig(family="gru", hidden=8, batch_size=None, epochs=2000, dtype="float64",
                     members=[MemberConfig(lr=1e-3, reg="sl1", lam=3e-4, alpha=0.01, seed=0)])
    m = train_pack(funcapprox, cfg).members[0]
    assert len(m.trace["loss"]) == 2000
    assert m.diagnostics["monotonicity_violations"] == 0
    assert m.trace["loss"][-1] < m.trace["loss"][0]
    assert m.diagnostics["grad_norm_ratio"] < 1


def test_large_step_violates_monotonicity(funcapprox):
    """The counter can fail: plain GD with a big step oscillates."""
    cfg = PackConfig(family="gru", hidden=8, batch_size=None, epochs=200, dtype="float64",
                     members=[MemberConfig(lr=3.0, seed=0)])
    m = train_pack(funcapprox, cfg).members[0]
    assert m.diagnostics["monotonicity_violations"] > 0


def test_adam_and_lstm_tikhonov_run(funcapprox):
    cfg = PackConfig(family="lstm", hidden=6, batch_size=20, epochs=5, optimizer="adam",
                     members=[MemberConfig(lr=1e-2, reg="tikhonov", lam=1e-3), MemberConfig(lr=1e-2)])
    res = train_pack(funcapprox, cfg)
    a, b = res.members
    assert a.final["penalty"] > 0 and b.final["penalty"] == 0
    assert a.epochs["train_loss"][-1] < a.epochs["train_loss"][0]


def test_diag_rnn_frozen_readout(funcapprox):
    cfg = PackConfig(family="diag_rnn", hidden=6, batch_size=None, epochs=5, train_readout=False,
                     dtype="float64", members=[MemberConfig(lr=0.1)])
    r = train_pack(funcapprox, cfg).members[0]
    assert set(np.unique(r.weights["W_out"])) <= {-1.0, 1.0}
    assert r.trace["grad_norm_out"].max() == 0 and r.trace["loss"][0] == pytest.approx(
        0.5 * np.mean(np.sum(funcapprox.y_train ** 2, 1)))


def test_chunked_evaluation_matches_single_pass(iris, monkeypatch):
    """Large splits are evaluated chunk by chunk; the figures are the same as in one pass."""
    import trainer.train as tt

    cfg = PackConfig(family="gru", hidden=4, batch_size=32, epochs=2, dtype="float64",
                     members=[MemberConfig(lr=0.1, reg="l2", lam=1e-3, seed=s) for s in range(3)])
    one = train_pack(iris, cfg)
    monkeypatch.setattr(tt, "EVAL_CHUNK", 10)
    monkeypatch.setattr(tt, "EVAL_ROWS_LARGE", 40)
    chunked = train_pack(iris, cfg)
    for a, b in zip(one.members, chunked.members):
        for col in ("train_metric", "test_metric", "train_loss"):
            assert np.allclose(a.epochs[col], b.epochs[col], rtol=0, atol=1e-12), col
    assert 0 < one.members[0].epochs["train_metric"][-1] <= 1
