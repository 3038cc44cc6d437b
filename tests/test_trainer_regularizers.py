"""h_alpha, per-member penalties, the Tikhonov regularizer vs a numpy transcription."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.config import MemberConfig
from trainer.models import make_family
from trainer.regularizers import (TIKHONOV_DENOM_FLOOR, Penalty, h_alpha, h_alpha_grad, tikhonov_terms)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_h_alpha_closed_form():
    alpha = 0.1
    w = torch.tensor([-0.3, -0.1, -0.05, 0.0, 0.02, 0.1, 0.5], dtype=torch.float64)
    expected = [0.3, 0.1, 0.05 ** 2 / 0.2 + 0.05, 0.05, 0.02 ** 2 / 0.2 + 0.05, 0.1, 0.5]
    assert torch.allclose(h_alpha(w, alpha), torch.tensor(expected, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(h_alpha_grad(w, alpha),
                          torch.tensor([-1, -1, -0.5, 0, 0.2, 1, 1], dtype=torch.float64), atol=1e-15)


def test_h_alpha_continuous_at_alpha_and_derivative_matches_autograd():
    alpha = 0.03
    for s in (1.0, -1.0):
        inside = torch.tensor(s * alpha * (1 - 1e-12), dtype=torch.float64)
        outside = torch.tensor(s * alpha, dtype=torch.float64)
        assert abs(h_alpha(inside, alpha) - h_alpha(outside, alpha)) < 1e-12
        assert abs(h_alpha_grad(inside, alpha) - h_alpha_grad(outside, alpha)) < 1e-10
    w = torch.linspace(-0.1, 0.1, 101, dtype=torch.float64).requires_grad_(True)
    (g,) = torch.autograd.grad(h_alpha(w, alpha).sum(), w)
    assert torch.allclose(g, h_alpha_grad(w.detach(), alpha), atol=1e-14)


def test_h_alpha_tends_to_abs():
    w = torch.linspace(-1, 1, 201, dtype=torch.float64)
    errs = [float((h_alpha(w, a) - w.abs()).abs().max()) for a in (1e-1, 1e-2, 1e-4)]
    assert errs[0] > errs[1] > errs[2] and errs[2] <= 1e-4 / 2 + 1e-15


def test_penalty_mixes_kinds_per_member_and_scopes():
    fam = make_family("gru", 2, 4, 3)
    members = [MemberConfig(lr=0.1), MemberConfig(lr=0.1, reg="l1", lam=0.1),
               MemberConfig(lr=0.1, reg="l2", lam=0.2), MemberConfig(lr=0.1, reg="sl1", lam=0.3, alpha=0.05),
               MemberConfig(lr=0.1, reg="sl1", lam=0.3, alpha=0.05, scope="all")]
    flat = fam.init(list(range(5)), 0.5, torch.float64, "cpu")
    pen = Penalty(fam, members, torch.float64, "cpu")
    val, parts = pen.value_and_grad(flat)
    wout = fam.layout.views(flat)["W_out"]
    allw = torch.cat([fam.layout.views(flat)[n].reshape(5, -1) for n in ("Wx", "Wh_zr", "Wh_h", "W_out")], 1)
    expected = [0.0, 0.1 * wout[1].abs().sum(), 0.2 * (wout[2] ** 2).sum(),
                0.3 * h_alpha(wout[3], 0.05).sum(), 0.3 * h_alpha(allw[4], 0.05).sum()]
    assert torch.allclose(val, torch.stack([torch.as_tensor(e, dtype=torch.float64) for e in expected]))
    g = torch.zeros_like(flat)
    for sl, part in parts:
        g[:, sl] += part
    ref = torch.zeros_like(flat)
    # autograd reference of each member's own penalty
    for k, e in enumerate(expected):
        if k == 0:
            continue
        leaf = flat.clone().requires_grad_(True)
        p = fam.layout.views(leaf)
        if k == 1:
            r = 0.1 * p["W_out"][1].abs().sum()
        elif k == 2:
            r = 0.2 * (p["W_out"][2] ** 2).sum()
        elif k == 3:
            r = 0.3 * h_alpha(p["W_out"][3], 0.05).sum()
        else:
            r = 0.3 * sum(h_alpha(p[n][4], 0.05).sum() for n in ("Wx", "Wh_zr", "Wh_h", "W_out"))
        (gk,) = torch.autograd.grad(r, leaf)
        ref[k] = gk[k]
    assert torch.allclose(g, ref, atol=1e-14)
    assert float(g[0].abs().sum()) == 0.0 and float(g[4, fam.layout.slice("b")].abs().sum()) == 0.0


def _np_tikhonov(Wx, Wh, Wout, H, beta, lamS, lam1, lam2, norm):
    n = (lambda W: np.linalg.norm(W, 2)) if norm == "spectral" else (lambda W: np.linalg.norm(W, "fro"))
    gate = lambda W, k: W[:, k * H:(k + 1) * H]  # noqa: E731  gates [i, f, c~, o]
    a = 0.25
    gx = a * n(gate(Wx, 1)) + beta * (n(gate(Wx, 0)) + n(gate(Wx, 2)))
    gh = a * n(gate(Wh, 1)) + beta * (n(gate(Wh, 0)) + n(gate(Wh, 2)))
    Woh, Wox = n(gate(Wh, 3)), n(gate(Wx, 3))
    rx = math.sqrt(2) * (gx + math.sqrt(2) * (beta * gx * Woh + Wox) / math.exp(1 - beta * Woh))
    rh = math.sqrt(2) * (gh + beta * gh * Woh / math.exp(1 - beta * Woh))
    R = lamS * n(Wout) ** 2 * rx ** 2 / max(1 - rh ** 2, TIKHONOV_DENOM_FLOOR)
    return R + lam1 * max(rh ** 2 - 1, 0) + lam2 * max(beta * Woh - 1, 0)


@pytest.mark.parametrize("scale", [0.05, 0.5])
@pytest.mark.parametrize("norm", ["spectral", "frobenius"])
def test_tikhonov_matches_numpy(scale, norm):
    H = 4
    fam = make_family("lstm", 3, H, 2)
    members = [MemberConfig(lr=0.1, reg="tikhonov", lam=0.7, tikhonov_beta=b, tikhonov_norm=norm,
                            tikhonov_lambda1=0.3, tikhonov_lambda2=0.2) for b in ("paper", "bound", 0.4)]
    flat = fam.init([1, 2, 3], scale, torch.float64, "cpu")
    pen = Penalty(fam, members, torch.float64, "cpu")
    val, parts = pen.value_and_grad(flat)
    for k, beta in enumerate((17 / 161, 1.0, 0.4)):
        p = {n: v[k].numpy() for n, v in fam.layout.views(flat).items()}
        ref = _np_tikhonov(p["Wx"], p["Wh"], p["W_out"], H, beta, 0.7, 0.3, 0.2, norm)
        assert abs(float(val[k]) - ref) <= 1e-10 * max(1.0, abs(ref))
    assert len(parts) == 1 and torch.isfinite(parts[0][1]).all()
    # the guard: a large init leaves the feasible region and the penalty stays finite
    if scale == 0.5:
        assert torch.isfinite(val).all()


def test_tikhonov_gradient_vs_finite_differences():
    fam = make_family("lstm", 2, 3, 2)
    members = [MemberConfig(lr=0.1, reg="tikhonov", lam=0.5)]
    flat = fam.init([5], 0.1, torch.float64, "cpu")
    pen = Penalty(fam, members, torch.float64, "cpu")
    _, parts = pen.value_and_grad(flat)
    g = parts[0][1][0]
    i = fam.layout.slice("Wh").start + 1
    e = torch.zeros_like(flat)
    e[0, i] = 1e-6
    fd = (pen.value_and_grad(flat + e, need_grad=False)[0] - pen.value_and_grad(flat - e, need_grad=False)[0]) / 2e-6
    assert abs(float(fd[0]) - float(g[i])) < 1e-6
    assert tikhonov_terms  # public helper exists
