"""Packed families: manual BPTT vs autograd/gradcheck, vs torch.nn modules, symmetric init."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.models import make_family
from trainer.train import data_loss

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = ["gru", "rnn", "lstm", "diag_rnn"]


def _setup(name, K=2, B=3, T=3, D=2, H=4, C=3, bias=True, shared=False, seed=0):
    fam = make_family(name, D, H, C, bias)
    flat = fam.init(list(range(seed, seed + K)), 0.5, torch.float64, "cpu")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((B, T, D) if shared else (K, B, T, D), generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (K, B), generator=g)
    return fam, flat, x, y


class _ManualLoss(torch.autograd.Function):
    """Data loss of a pack whose backward is the family's hand-written BPTT."""

    @staticmethod
    def forward(ctx, flat, fam, x, y):
        p = fam.layout.views(flat)
        out, cache = fam.forward(p, x, keep=True)
        loss, dout = data_loss(out, y, "classification")
        ctx.save_for_backward(fam.layout.flatten(fam.backward(p, x, cache, dout)))
        return loss

    @staticmethod
    def backward(ctx, gl):
        (g,) = ctx.saved_tensors
        return gl[:, None] * g, None, None, None


def _autograd_grad(fam, flat, x, y):
    leaf = flat.clone().requires_grad_(True)
    out, _ = fam.forward(fam.layout.views(leaf), x)
    loss, _ = data_loss(out, y, "classification", need_dout=False)
    (g,) = torch.autograd.grad(loss.sum(), leaf)
    return loss.detach(), g


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shared", [False, True])
def test_gradcheck_float64(name, bias, shared):
    fam, flat, x, y = _setup(name, bias=bias, shared=shared)
    if fam.manual:
        f = lambda w: _ManualLoss.apply(w, fam, x, y)  # noqa: E731
        _, g_auto = _autograd_grad(fam, flat, x, y)
        out, cache = fam.forward(fam.layout.views(flat), x, keep=True)
        _, dout = data_loss(out, y, "classification")
        g_manual = fam.layout.flatten(fam.backward(fam.layout.views(flat), x, cache, dout))
        assert torch.allclose(g_manual, g_auto, atol=1e-12, rtol=1e-10)
    else:
        f = lambda w: data_loss(fam.forward(fam.layout.views(w), x)[0], y, "classification", False)[0]  # noqa: E731
    w = flat.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (w,), eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.parametrize("T", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_short_sequences(T, bias):
    """The GRU skips the recurrent matmuls of step 0 (h_0 = 0); check the T = 1 and T = 2 paths."""
    fam, flat, x, y = _setup("gru", T=T, bias=bias)
    p = fam.layout.views(flat)
    out, cache = fam.forward(p, x, keep=True)
    with torch.no_grad():
        assert torch.allclose(out, fam.forward(p, x)[0], rtol=0, atol=1e-14)  # training and evaluation forward
    _, dout = data_loss(out, y, "classification")
    g_manual = fam.layout.flatten(fam.backward(p, x, cache, dout))
    _, g_auto = _autograd_grad(fam, flat, x, y)
    assert torch.allclose(g_manual, g_auto, atol=1e-12, rtol=1e-10)
    w = flat.clone().requires_grad_(True)
    f = lambda v: _ManualLoss.apply(v, fam, x, y)  # noqa: E731
    assert torch.autograd.gradcheck(f, (w,), eps=1e-6, atol=1e-7, fast_mode=True)


def test_manual_backward_regression_loss():
    fam, flat, x, _ = _setup("gru", K=2, C=2)
    y = torch.randn(2, 3, 2, dtype=torch.float64)
    p = fam.layout.views(flat)
    out, cache = fam.forward(p, x, keep=True)
    loss, dout = data_loss(out, y, "regression")
    g = fam.layout.flatten(fam.backward(p, x, cache, dout))
    leaf = flat.clone().requires_grad_(True)
    l2, _ = data_loss(fam.forward(fam.layout.views(leaf), x)[0], y, "regression", False)
    (g2,) = torch.autograd.grad(l2.sum(), leaf)
    assert torch.allclose(g, g2, atol=1e-12)
    # eq. 11: E = 1/(2N) sum ||y_hat - t||^2
    assert torch.allclose(loss, 0.5 * ((out - y) ** 2).sum((1, 2)) / 3)


def _run_nn(mod, head, x):
    _, h = mod(x)
    if isinstance(h, tuple):
        h = h[0]
    return head(h[-1])


@pytest.mark.parametrize("name", ["gru", "lstm", "rnn"])
def test_matches_torch_nn(name):
    D, H, C, B, T = 2, 5, 3, 4, 6
    fam = make_family(name, D, H, C, True)
    flat = fam.init([7], 0.5, torch.float64, "cpu")
    p = {k: v[0] for k, v in fam.layout.views(flat).items()}
    x = torch.randn(B, T, D, dtype=torch.float64)
    head = torch.nn.Linear(H, C).double()
    with torch.no_grad():
        head.weight.copy_(p["W_out"].T)
        head.bias.copy_(p["b_out"])
        if name == "gru":
            # nn.GRU rows [r, z, n]; its z is 1 - (paper z), so the paper's z weights enter negated.
            # Its candidate uses r * (W_hn h + b_hn), the paper W_h~ (r * h): they agree only when
            # r = 1, so the reset gate is saturated here (b_r = 50 -> r == 1.0 in float64). The reset
            # gate itself is checked against a numpy transcription of eq. 2-5 below.
            Hs = slice(H, 2 * H)
            fam.layout.views(flat)["Wx"][0][:, Hs] = 0
            fam.layout.views(flat)["Wh_zr"][0][:, Hs] = 0
            fam.layout.views(flat)["b"][0][Hs] = 50.0
            mod = torch.nn.GRU(D, H, batch_first=True).double()
            Wx, Wh = p["Wx"].T, torch.cat([p["Wh_zr"], p["Wh_h"]], 1).T
            z, r, n = slice(0, H), slice(H, 2 * H), slice(2 * H, 3 * H)
            mod.weight_ih_l0.copy_(torch.cat([Wx[r], -Wx[z], Wx[n]]))
            mod.weight_hh_l0.copy_(torch.cat([Wh[r], -Wh[z], Wh[n]]))
            mod.bias_ih_l0.copy_(torch.cat([p["b"][r], -p["b"][z], p["b"][n]]))
            mod.bias_hh_l0.zero_()
        elif name == "lstm":
            mod = torch.nn.LSTM(D, H, batch_first=True).double()
            mod.weight_ih_l0.copy_(p["Wx"].T)
            mod.weight_hh_l0.copy_(p["Wh"].T)
            mod.bias_ih_l0.copy_(p["b"])
            mod.bias_hh_l0.zero_()
        else:
            mod = torch.nn.RNN(D, H, batch_first=True).double()
            mod.weight_ih_l0.copy_(p["Wx"].T)
            mod.weight_hh_l0.copy_(p["Wh"].T)
            mod.bias_ih_l0.copy_(p["b"])
            mod.bias_hh_l0.zero_()
        ref = _run_nn(mod, head, x)
        ours, _ = fam.forward(fam.layout.views(flat), x)
    assert torch.allclose(ours[0], ref, atol=1e-12), (ours[0] - ref).abs().max()


def test_gru_matches_paper_equations_numpy():
    D, H, C, B, T = 3, 4, 2, 5, 4
    fam = make_family("gru", D, H, C, True)
    flat = fam.init([11], 0.5, torch.float64, "cpu")
    x = np.random.default_rng(0).normal(size=(B, T, D))
    ours, _ = fam.forward(fam.layout.views(flat), torch.as_tensor(x))
    w = {k: v for k, v in __import__("trainer.weights", fromlist=["x"]).export_weights(fam, flat[0].numpy()).items()}
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    h = np.zeros((B, H))
    for t in range(T):
        xt = x[:, t]
        z = sig(xt @ w["W_zx"].T + h @ w["W_zh"].T + w["b_z"])
        r = sig(xt @ w["W_rx"].T + h @ w["W_rh"].T + w["b_r"])
        c = np.tanh(xt @ w["W_hx"].T + (r * h) @ w["W_hh"].T + w["b_h"])
        h = (1 - z) * h + z * c
    ref = h @ w["W_out"].T + w["b_out"]
    assert np.allclose(ours[0].numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("C", [1, 3])
def test_diag_rnn_symmetric_init_output_is_zero(C):
    fam = make_family("diag_rnn", 3, 8, C)
    flat = fam.init([0, 1, 2], 0.5, torch.float64, "cpu")
    p = fam.layout.views(flat)
    assert torch.equal(p["w"][:, :4], p["w"][:, 4:]) and torch.equal(p["W_out"][:, :4], -p["W_out"][:, 4:])
    assert set(np.unique(p["W_out"].numpy())) <= {-1.0, 1.0}
    x = torch.randn(3, 10, 5, 3, dtype=torch.float64)
    out, _ = fam.forward(p, x)
    assert torch.count_nonzero(out) == 0
    # and not trivially zero: one asymmetric perturbation makes it nonzero
    flat[:, fam.layout.slice("w")][:, 0] += 0.3
    out2, _ = fam.forward(fam.layout.views(flat), x)
    assert out2.abs().max() > 0


def test_init_same_alone_or_in_pack():
    fam = make_family("gru", 2, 4, 3)
    pack = fam.init([3, 9, 4], 0.5, torch.float64, "cpu")
    alone = fam.init([9], 0.5, torch.float64, "cpu")
    assert torch.equal(pack[1], alone[0])
    assert pack.abs().max() <= 0.5 and not torch.equal(pack[0], pack[1])
