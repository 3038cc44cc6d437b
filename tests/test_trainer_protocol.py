"""Protocol settings (loss, reduction, batch size 1) against an independent numpy computation.

A float64 Elman RNN is re-implemented in numpy from the exported initial weights; its loss is
evaluated in closed form and its gradient by central differences. One SGD step of the trainer
must equal W - eta * grad E of that computation, and the traced E must equal its value.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.config import MemberConfig, PackConfig
from trainer.models import make_family
from trainer.tasks import Task
from trainer.train import train_pack
from trainer.weights import export_weights

N, T, D, H, C = 7, 3, 2, 4, 3


def _task(kind: str) -> Task:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(N, T, D))
    if kind == "classification":
        y = np.array([0, 1, 2, 0, 1, 2, 1])
        return Task("toy", kind, x, y, x[:2], y[:2], C)
    y = rng.normal(size=(N, 2))
    return Task("toy", kind, x, y, x[:2], y[:2], 2)


def _np_loss(w: dict, x: np.ndarray, y: np.ndarray, kind: str, loss: str, reduction: str,
             lam: float, alpha: float) -> float:
    h = np.zeros((len(x), w["W_h"].shape[0]))
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ w["W_x"].T + h @ w["W_h"].T + w["b"])
    o = h @ w["W_out"].T + w["b_out"]
    if kind == "regression":
        per = 0.5 * ((o - y) ** 2).sum(1)
    elif loss == "squared_error":  # eq. 11: sigma_n = 1/2 (sigmoid(o) - T)^2
        onehot = np.eye(o.shape[1])[y]
        per = 0.5 * ((1 / (1 + np.exp(-o)) - onehot) ** 2).sum(1)
    else:
        z = o - o.max(1, keepdims=True)
        per = -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1)))
    data = per.sum() if reduction == "sum" else per.mean()
    a = np.abs(w["W_out"])
    pen = lam * np.where(a >= alpha, a, a * a / (2 * alpha) + alpha / 2).sum()
    return float(data + pen)


def _fd_grad(w: dict, f) -> dict:
    g = {}
    for name, arr in w.items():
        ga = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            wp = {k: v.copy() for k, v in w.items()}
            wm = {k: v.copy() for k, v in w.items()}
            wp[name][i] += 1e-6
            wm[name][i] -= 1e-6
            ga[i] = (f(wp) - f(wm)) / 2e-6
        g[name] = ga
    return g


CASES = [
    ("classification", "cross_entropy", "mean", None),
    ("classification", "cross_entropy", "sum", None),
    ("classification", "squared_error", "mean", 3),
    ("classification", "squared_error", "sum", 1),
    ("classification", "auto", "sum", 1),
    ("regression", "squared_error", "sum", None),
    ("regression", "auto", "mean", 2),
]


@pytest.mark.parametrize("kind,loss,reduction,batch", CASES)
def test_one_sgd_step_matches_numpy(kind, loss, reduction, batch):
    task = _task(kind)
    lr, lam, alpha, seed = 0.05, 0.01, 0.3, 3
    member = MemberConfig(lr=lr, reg="sl1", lam=lam, alpha=alpha, seed=seed)
    cfg = PackConfig(family="rnn", hidden=H, dtype="float64", device="cpu", batch_size=batch,
                     epochs=None, max_steps=1, loss=loss, reduction=reduction, members=[member])
    fam = make_family("rnn", D, H, task.n_outputs, True)
    w0 = export_weights(fam, fam.init([seed], 0.5, torch.float64, "cpu")[0].numpy())
    if batch is None:
        idx = np.arange(N)
    else:  # the trainer's per-member data order: rng([seed, 1]).permutation(N), first B rows
        idx = np.random.default_rng([seed, 1]).permutation(N)[:batch]
    xb, yb = task.x_train[idx], task.y_train[idx]
    f = lambda w: _np_loss(w, xb, yb, kind, loss, reduction, lam, alpha)  # noqa: E731
    grad = _fd_grad(w0, f)
    r = train_pack(task, cfg).members[0]
    assert r.trace["loss"][0] == pytest.approx(f(w0), rel=1e-10)
    for name in w0:
        np.testing.assert_allclose(r.weights[name], w0[name] - lr * grad[name], rtol=0, atol=1e-8)


def test_sum_reduction_is_batch_times_mean_step():
    """Eq. 15 sums the error: at batch B its data step is B times the mean-reduced one."""
    task = _task("classification")
    m = MemberConfig(lr=0.01, seed=1)
    steps = {}
    for red in ("mean", "sum"):
        cfg = PackConfig(family="rnn", hidden=H, dtype="float64", device="cpu", batch_size=None,
                         epochs=None, max_steps=1, reduction=red, members=[m])
        fam = make_family("rnn", D, H, C, True)
        w0 = export_weights(fam, fam.init([1], 0.5, torch.float64, "cpu")[0].numpy())
        w1 = train_pack(task, cfg).members[0].weights
        steps[red] = w1["W_out"] - w0["W_out"]
    np.testing.assert_allclose(steps["sum"], N * steps["mean"], rtol=1e-10)


def test_epoch_loss_uses_the_reduction():
    task = _task("classification")
    out = {}
    for red in ("mean", "sum"):
        cfg = PackConfig(family="rnn", hidden=H, dtype="float64", device="cpu", batch_size=None,
                         epochs=1, reduction=red, members=[MemberConfig(lr=1e-12, seed=0)])
        out[red] = train_pack(task, cfg).members[0].final["data_loss"]
    assert out["sum"] == pytest.approx(N * out["mean"], rel=1e-9)


def test_cross_entropy_on_regression_is_refused():
    cfg = PackConfig(family="rnn", hidden=H, epochs=1, loss="cross_entropy", members=[MemberConfig(lr=0.1)])
    with pytest.raises(ValueError, match="cross_entropy"):
        train_pack(_task("regression"), cfg)


def _np_prox(v, t, kind, alpha):
    if kind == "l1":
        return np.sign(v) * np.maximum(np.abs(v) - t, 0)
    if kind == "l2":
        return v / (1 + 2 * t)
    return np.where(np.abs(v) >= alpha + t, v - t * np.sign(v), v / (1 + t / alpha))


@pytest.mark.parametrize("reg", ["l1", "sl1", "l2"])
def test_prox_sgd_step_matches_numpy(reg):
    """prox_sgd (beyond the papers): data-loss SGD step, then the prox of eta*lambda*R on W_out."""
    task = _task("classification")
    lr, lam, alpha, seed = 0.5, 0.2, 0.3, 4
    cfg = PackConfig(family="rnn", hidden=H, dtype="float64", device="cpu", batch_size=None, epochs=None,
                     max_steps=1, optimizer="prox_sgd", reduction="sum",
                     members=[MemberConfig(lr=lr, reg=reg, lam=lam, alpha=alpha, seed=seed)])
    fam = make_family("rnn", D, H, C, True)
    w0 = export_weights(fam, fam.init([seed], 0.5, torch.float64, "cpu")[0].numpy())
    f = lambda w: _np_loss(w, task.x_train, task.y_train, "classification", "auto", "sum", 0.0, alpha)  # noqa: E731
    grad = _fd_grad(w0, f)
    r = train_pack(task, cfg).members[0]
    for name in w0:
        want = w0[name] - lr * grad[name]
        if name == "W_out":
            want = _np_prox(want, lr * lam, reg, alpha)
        np.testing.assert_allclose(r.weights[name], want, rtol=0, atol=1e-8)
    if reg == "l1":  # soft-thresholding at eta*lambda = 0.1 leaves exact zeros
        assert np.sum(r.weights["W_out"] == 0) > 0
