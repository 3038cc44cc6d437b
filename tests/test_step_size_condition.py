"""Assumption (A2) of the SL1-GRU paper, 0 < eta < 2(1 + D4) / (lambda C + 4 D4 + 2 D5), computed
per trial: checked against the appendix's formulas written out in numpy on a tiny full-batch run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.config import MemberConfig, PackConfig
from trainer.models import make_family
from trainer.tasks import load_task
from trainer.train import train_pack


def _bound_numpy(eta_lam_c: float, N: float, D0: float, D1: float, D2: float) -> float:
    D3 = np.max([D0**3 * D1**2, D0**3 * D1**3 * D2, D0**2 * D1**2, D0 * D1**2, D0**3 * D1,
                 D0**3 * D1**2 * D2, D0**2 * D1])
    D4 = np.max([4 * N * D0 * D2 * D3, 4 * N * D0 * D2**2 * D3**2])
    D5 = 0.5 * D0 * N * (D0**2 + D1 - D0 * D1) ** 2
    return 2 * (1 + D4) / (eta_lam_c + 4 * D4 + 2 * D5)


def _w_out(weights) -> np.ndarray:
    return np.asarray(weights["W_out"], dtype=np.float64)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_bound_matches_the_appendix_formulas(reduction):
    task = load_task("iris", seed=0)
    H, alpha, lam, seed = 3, 0.05, 0.01, 4

    def run(epochs):
        cfg = PackConfig(family="gru", hidden=H, batch_size=None, epochs=epochs, dtype="float64", device="cpu",
                         reduction=reduction, members=[MemberConfig(lr=0.002, reg="sl1", lam=lam, alpha=alpha,
                                                                    seed=seed)])
        return train_pack(task, cfg).members[0]

    runs = [run(e) for e in (1, 2, 3)]
    fam = make_family("gru", task.n_inputs, H, task.n_outputs, True)
    flat0 = fam.init([seed], 0.5, torch.float64, torch.device("cpu"))
    w0 = flat0[0, fam.layout.slice("W_out")].numpy()
    D2 = max([np.linalg.norm(w0)] + [np.linalg.norm(_w_out(r.weights)) for r in runs])
    D0 = max(np.linalg.norm(task.x_train.astype(np.float64), axis=-1).max(), np.sqrt(H))
    N = len(task.y_train) if reduction == "sum" else 1
    want = _bound_numpy(lam / alpha, N, D0, 1.0, D2)
    d = runs[-1].diagnostics
    assert d["step_size_bound"] == pytest.approx(want, rel=1e-9)
    assert d["step_size_ok"] is bool(0.002 < want)
    assert d["step_size_constants"]["D2"] == pytest.approx(D2, rel=1e-12)
    assert "minibatch" not in d["step_size_note"]


def test_bound_is_na_where_the_paper_gives_no_constant():
    iris = load_task("iris", seed=0)
    member = dict(lr=1e-3, lam=1e-3, seed=0)

    def diag(task, family="gru", reg="sl1", **kw):
        cfg = PackConfig(family=family, hidden=4, epochs=1, device="cpu", members=[MemberConfig(reg=reg, **member)],
                         **kw)
        return train_pack(task, cfg).members[0].diagnostics

    for d, why in ((diag(iris, reg="l1"), "Lipschitz"), (diag(iris, family="lstm"), "GRU"),
                   (diag(load_task("funcapprox", seed=0)), "unbounded"),
                   (diag(iris, optimizer="prox_sgd"), "plain gradient descent")):
        assert d["step_size_bound"] is None and d["step_size_ok"] is None
        assert d["step_size_note"].startswith("n/a") and why in d["step_size_note"]
    mb = diag(iris, batch_size=16)
    assert mb["step_size_bound"] > 0 and "minibatches" in mb["step_size_note"]
