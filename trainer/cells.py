"""Functional forwards of the four families, written for autograd, ``torch.func`` and compilation.

Each function maps the parameter views of a pack (``Layout.views(flat)``, shapes ``(K, ...)``) and
inputs ``x`` — shared ``(B, T, D)`` or per member ``(K, B, T, D)`` — to the linear output
``(K, B, C)``. They compute the same functions as the eager families in :mod:`trainer.models`
(the paper's GRU with W_h~ (r * h), eq. 2-5; LSTM gates [i, f, c~, o]; Elman tanh RNN; the diagonal
RNN with its two-halves readout) but are pure: no in-place writes, no ``out=`` buffers, no
data-dependent Python branches. The backward is autograd's; under ``torch.compile`` the
elementwise gate math and its backward are fused into a few kernels per time step
(C++/OpenMP on CPU, Triton on CUDA).

h_0 = 0 (and c_0 = 0) in every family, so step 0 skips its recurrent matmuls: h_0 W is an
exact zero, as in the eager forward.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def _per_member(x: Tensor, K: int) -> Tensor:
    """(B, T, D) shared by all members or (K, B, T, D) -> (K, B, T, D) (a view when shared)."""
    return x if x.dim() == 4 else x.unsqueeze(0).expand(K, -1, -1, -1)


def input_projection(x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
    """x W + b for every time step at once: x (K, B, T, D), W (K, D, G), b (K, G) -> (K, B, T, G)."""
    K, B, T, D = x.shape
    G = W.shape[-1]
    if D == 1:  # an outer product
        out = x * W.view(K, 1, 1, G)
        return out + b.view(K, 1, 1, G) if b is not None else out
    xf = x.reshape(K, B * T, D)
    out = torch.baddbmm(b.unsqueeze(1), xf, W) if b is not None else torch.bmm(xf, W)
    return out.view(K, B, T, G)


def step_projection(xt: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
    """x_t W + b of one time step: xt (K, B, D), W (K, D, G), b (K, G) -> (K, B, G).

    Per step rather than all steps at once: the backward then reduces each step's gradient over
    the batch as it goes, instead of scattering into a (K, B, T, G) buffer (which the CPU compiler
    turned into one slow strided reduction)."""
    K, B, D = xt.shape
    if D == 1:
        out = xt * W
        return out + b.unsqueeze(1) if b is not None else out
    return torch.baddbmm(b.unsqueeze(1), xt, W) if b is not None else torch.bmm(xt, W)


def readout(p: dict[str, Tensor], h: Tensor, bias: bool) -> Tensor:
    return torch.baddbmm(p["b_out"].unsqueeze(1), h, p["W_out"]) if bias else torch.bmm(h, p["W_out"])


def gru_forward(p: dict[str, Tensor], x: Tensor, H: int, bias: bool) -> Tensor:
    """z = s(x Wz + h Wzh + bz), r = s(x Wr + h Wrh + br), h~ = tanh(x Wh + (r*h) Wh~ + bh),
    h' = (1 - z) h + z h~ (eq. 2-5, Algorithm 1)."""
    K = p["Wx"].shape[0]
    x = _per_member(x, K)
    b = p["b"] if bias else None
    a = step_projection(x[:, :, 0], p["Wx"], b)
    h = torch.sigmoid(a[..., :H]) * torch.tanh(a[..., 2 * H:])
    for t in range(1, x.shape[2]):
        a = step_projection(x[:, :, t], p["Wx"], b)
        zr = torch.sigmoid(a[..., :2 * H] + torch.bmm(h, p["Wh_zr"]))
        z, r = zr[..., :H], zr[..., H:]
        c = torch.tanh(a[..., 2 * H:] + torch.bmm(r * h, p["Wh_h"]))
        h = h + z * (c - h)
    return readout(p, h, bias)


def lstm_forward(p: dict[str, Tensor], x: Tensor, H: int, bias: bool) -> Tensor:
    """Gates [i, f, c~, o]: c' = f c + i c~, h' = o tanh(c')."""
    K = p["Wx"].shape[0]
    xp = input_projection(_per_member(x, K), p["Wx"], p["b"] if bias else None)
    T = xp.shape[2]
    h = c = None
    for t in range(T):
        a = xp[:, :, t] if h is None else xp[:, :, t] + torch.bmm(h, p["Wh"])
        i, f = torch.sigmoid(a[..., :H]), torch.sigmoid(a[..., H:2 * H])
        g, o = torch.tanh(a[..., 2 * H:3 * H]), torch.sigmoid(a[..., 3 * H:])
        c = i * g if c is None else f * c + i * g
        h = o * torch.tanh(c)
    return readout(p, h, bias)


def rnn_forward(p: dict[str, Tensor], x: Tensor, H: int, bias: bool) -> Tensor:
    """Elman: h' = tanh(x Wx + h Wh + b)."""
    K = p["Wx"].shape[0]
    xp = input_projection(_per_member(x, K), p["Wx"], p["b"] if bias else None)
    h = torch.tanh(xp[:, :, 0])
    for t in range(1, xp.shape[2]):
        h = torch.tanh(xp[:, :, t] + torch.bmm(h, p["Wh"]))
    return readout(p, h, bias)


def diag_rnn_forward(p: dict[str, Tensor], x: Tensor, H: int, bias: bool) -> Tensor:
    """h' = tanh(w * h + x U), y = h_T W_out / sqrt(m), the two halves of the readout summed apart
    (so the symmetric initialisation gives an exact 0, as in the eager family)."""
    K = p["U"].shape[0]
    xp = input_projection(_per_member(x, K), p["U"], None)
    w = p["w"].unsqueeze(1)
    h = torch.tanh(xp[:, :, 0])
    for t in range(1, xp.shape[2]):
        h = torch.tanh(xp[:, :, t] + w * h)
    m2 = H // 2
    Wo = p["W_out"]
    out = torch.bmm(h[..., :m2], Wo[:, :m2]) + torch.bmm(h[..., m2:], Wo[:, m2:])
    return out * (1.0 / H ** 0.5)


FORWARDS = {"gru": gru_forward, "lstm": lstm_forward, "rnn": rnn_forward, "diag_rnn": diag_rnn_forward}


def forward(family, p: dict[str, Tensor], x: Tensor) -> Tensor:
    """The functional forward of ``family`` (a :class:`trainer.models.Family`)."""
    return FORWARDS[family.name](p, x, family.H, family.bias)
