"""Triton kernels of the Elman RNN and the diagonal RNN over a pack: the forward of all T steps and
the backward through time (one program per (member, rows) and per member), in the calling
convention of :class:`trainer.triton_pack.TritonPack` (four saved buffers and six parameter offsets;
these families save only h_t, the rest are placeholders).

* ``rnn``: h' = tanh(x Wx + h Wh + b), y = h_T W_out + b_out; Wx (D, H), Wh (H, H), b (H).
* ``diag_rnn`` (rnn-gd-convergence paper): h' = tanh(w * h + x U), y = (h_T[:m] W_out[:m] +
  h_T[m:] W_out[m:]) / sqrt(H) with m = H / 2; U (D, H), w (H), W_out (H, C), no biases.
"""

import triton
import triton.language as tl

from trainer.triton_ops import block, block_t, mm, readout_grad, slot, step_x, tanh, xgrad, xproj


@triton.jit
def rnn_forward(flat, x, out, hs, s1, s2, s3, n, P, x_stride, cap,
                o_wx, o_wh, o_b, o_wo, o_bo, o_5,
                T: tl.constexpr, D: tl.constexpr, H: tl.constexpr, C: tl.constexpr,
                BB: tl.constexpr, BD: tl.constexpr, BH: tl.constexpr, BC: tl.constexpr,
                BIAS: tl.constexpr, KEEP: tl.constexpr, PREC: tl.constexpr, F64: tl.constexpr):
    """h' = tanh(x Wx + h Wh + b) for all T steps of a block of rows; y = h_T W_out + b_out."""
    k = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BB + tl.arange(0, BB)
    d, j, c = tl.arange(0, BD), tl.arange(0, BH), tl.arange(0, BC)
    rm, dm, jm, cm = rows < n, d < D, j < H, c < C
    w = flat + k * P
    Wx = block(w + o_wx, d, j, H, dm, jm)
    Wh = block(w + o_wh, j, j, H, jm, jm)
    Wo = block(w + o_wo, j, c, C, jm, cm)
    h = tl.zeros((BB, BH), dtype=flat.dtype.element_ty)
    xk = x + k * x_stride
    mrj = rm[:, None] & jm[None, :]
    for t in range(T):
        xt = step_x(xk, rows, rm, t, T, D, d)
        a = xproj(xt, Wx, D, PREC, F64)
        if BIAS:
            a += tl.load(w + o_b + j, mask=jm, other=0.0)[None, :]
        if KEEP:
            tl.store(slot(hs, k, t, T + 1, cap, rows, H, j), h, mask=mrj)
        h = tanh(a + mm(h, Wh, PREC, F64))
    if KEEP:
        tl.store(slot(hs, k, T, T + 1, cap, rows, H, j), h, mask=mrj)
    o = mm(h, Wo, PREC, F64)
    if BIAS:
        o += tl.load(w + o_bo + c, mask=cm, other=0.0)[None, :]
    tl.store(out + (k * n + rows[:, None]) * C + c[None, :], o, mask=rm[:, None] & cm[None, :])


@triton.jit
def rnn_backward(flat, x, dout, hs, s1, s2, s3, grad, n, P, x_stride, cap,
                 o_wx, o_wh, o_b, o_wo, o_bo, o_5,
                 T: tl.constexpr, D: tl.constexpr, H: tl.constexpr, C: tl.constexpr,
                 BB: tl.constexpr, BD: tl.constexpr, BH: tl.constexpr, BC: tl.constexpr,
                 BIAS: tl.constexpr, PREC: tl.constexpr, F64: tl.constexpr):
    """da_t = dh_{t+1} (1 - h_{t+1}^2); dWh += h_t^T da_t, dWx += x_t^T da_t, db += sum da_t,
    dh_t = da_t Wh^T."""
    k = tl.program_id(0).to(tl.int64)
    d, j, c, b = tl.arange(0, BD), tl.arange(0, BH), tl.arange(0, BC), tl.arange(0, BB)
    dm, jm, cm = d < D, j < H, c < C
    w = flat + k * P
    WhT = block_t(w + o_wh, j, j, H, jm, jm)
    WoT = block_t(w + o_wo, c, j, C, cm, jm)
    dt = flat.dtype.element_ty
    gWx = tl.zeros((BD, BH), dtype=dt)
    gWh = tl.zeros((BH, BH), dtype=dt)
    gb = tl.zeros((BH,), dtype=dt)
    gWo = tl.zeros((BH, BC), dtype=dt)
    gbo = tl.zeros((BC,), dtype=dt)
    xk = x + k * x_stride
    for start in range(0, n, BB):
        rows = start + b
        rm = rows < n
        mrj = rm[:, None] & jm[None, :]
        g, hn = readout_grad(dout, hs, k, rows, n, T, cap, H, C, j, c)
        gWo += mm(tl.trans(hn), g, PREC, F64)
        gbo += tl.sum(g, axis=0)
        dh = mm(g, WoT, PREC, F64)
        for tt in range(T):
            t = T - 1 - tt
            h = tl.load(slot(hs, k, t, T + 1, cap, rows, H, j), mask=mrj, other=0.0)
            xt = step_x(xk, rows, rm, t, T, D, d)
            da = dh * (1.0 - hn * hn)
            gWh += mm(tl.trans(h), da, PREC, F64)
            gWx += xgrad(xt, da, D, PREC, F64)
            if BIAS:
                gb += tl.sum(da, axis=0)
            dh = mm(da, WhT, PREC, F64)
            hn = h
    gk = grad + k * P
    tl.store(gk + o_wx + d[:, None] * H + j[None, :], gWx, mask=dm[:, None] & jm[None, :])
    tl.store(gk + o_wh + j[:, None] * H + j[None, :], gWh, mask=jm[:, None] & jm[None, :])
    tl.store(gk + o_wo + j[:, None] * C + c[None, :], gWo, mask=jm[:, None] & cm[None, :])
    if BIAS:
        tl.store(gk + o_b + j, gb, mask=jm)
        tl.store(gk + o_bo + c, gbo, mask=cm)


@triton.jit
def _readout_scale(H: tl.constexpr, dt: tl.constexpr):
    """1 / sqrt(H) in the pack's dtype (a Python float argument would arrive as float32)."""
    return 1.0 / tl.sqrt(tl.full((1,), H, dt))


@triton.jit
def diag_rnn_forward(flat, x, out, hs, s1, s2, s3, n, P, x_stride, cap,
                     o_u, o_w, o_wo, o_3, o_4, o_5,
                     T: tl.constexpr, D: tl.constexpr, H: tl.constexpr, C: tl.constexpr,
                     BB: tl.constexpr, BD: tl.constexpr, BH: tl.constexpr, BC: tl.constexpr,
                     BIAS: tl.constexpr, KEEP: tl.constexpr, PREC: tl.constexpr, F64: tl.constexpr):
    """h' = tanh(w * h + x U) for all T steps of a block of rows; y = (h_T[:m] W_out[:m] +
    h_T[m:] W_out[m:]) / sqrt(H), m = H / 2 (the two halves summed apart, as the eager family)."""
    k = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BB + tl.arange(0, BB)
    d, j, c = tl.arange(0, BD), tl.arange(0, BH), tl.arange(0, BC)
    rm, dm, jm, cm = rows < n, d < D, j < H, c < C
    p = flat + k * P
    U = block(p + o_u, d, j, H, dm, jm)
    wd = tl.load(p + o_w + j, mask=jm, other=0.0)[None, :]
    Wo = block(p + o_wo, j, c, C, jm, cm)
    h = tl.zeros((BB, BH), dtype=flat.dtype.element_ty)
    xk = x + k * x_stride
    mrj = rm[:, None] & jm[None, :]
    for t in range(T):
        xt = step_x(xk, rows, rm, t, T, D, d)
        if KEEP:
            tl.store(slot(hs, k, t, T + 1, cap, rows, H, j), h, mask=mrj)
        h = tanh(xproj(xt, U, D, PREC, F64) + wd * h)
    if KEEP:
        tl.store(slot(hs, k, T, T + 1, cap, rows, H, j), h, mask=mrj)
    first = (j < H // 2)[None, :]
    o = mm(tl.where(first, h, 0.0), Wo, PREC, F64) + mm(tl.where(first, 0.0, h), Wo, PREC, F64)
    o = o * _readout_scale(H, flat.dtype.element_ty)[None, :]
    tl.store(out + (k * n + rows[:, None]) * C + c[None, :], o, mask=rm[:, None] & cm[None, :])


@triton.jit
def diag_rnn_backward(flat, x, dout, hs, s1, s2, s3, grad, n, P, x_stride, cap,
                      o_u, o_w, o_wo, o_3, o_4, o_5,
                      T: tl.constexpr, D: tl.constexpr, H: tl.constexpr, C: tl.constexpr,
                      BB: tl.constexpr, BD: tl.constexpr, BH: tl.constexpr, BC: tl.constexpr,
                      BIAS: tl.constexpr, PREC: tl.constexpr, F64: tl.constexpr):
    """g = dy / sqrt(H): dW_out = h_T^T g, dh_T = g W_out^T; da_t = dh_{t+1} (1 - h_{t+1}^2),
    dw += sum over rows of da_t * h_t, dU += x_t^T da_t, dh_t = da_t * w."""
    k = tl.program_id(0).to(tl.int64)
    d, j, c, b = tl.arange(0, BD), tl.arange(0, BH), tl.arange(0, BC), tl.arange(0, BB)
    dm, jm, cm = d < D, j < H, c < C
    p = flat + k * P
    wd = tl.load(p + o_w + j, mask=jm, other=0.0)[None, :]
    WoT = block_t(p + o_wo, c, j, C, cm, jm)
    dt = flat.dtype.element_ty
    scale = _readout_scale(H, dt)[None, :]
    gU = tl.zeros((BD, BH), dtype=dt)
    gw = tl.zeros((BH,), dtype=dt)
    gWo = tl.zeros((BH, BC), dtype=dt)
    xk = x + k * x_stride
    for start in range(0, n, BB):
        rows = start + b
        rm = rows < n
        mrj = rm[:, None] & jm[None, :]
        g, hn = readout_grad(dout, hs, k, rows, n, T, cap, H, C, j, c)
        g = g * scale
        gWo += mm(tl.trans(hn), g, PREC, F64)
        dh = mm(g, WoT, PREC, F64)
        for tt in range(T):
            t = T - 1 - tt
            h = tl.load(slot(hs, k, t, T + 1, cap, rows, H, j), mask=mrj, other=0.0)
            xt = step_x(xk, rows, rm, t, T, D, d)
            da = dh * (1.0 - hn * hn)
            gw += tl.sum(da * h, axis=0)
            gU += xgrad(xt, da, D, PREC, F64)
            dh = da * wd
            hn = h
    gk = grad + k * P
    tl.store(gk + o_u + d[:, None] * H + j[None, :], gU, mask=dm[:, None] & jm[None, :])
    tl.store(gk + o_w + j, gw, mask=jm)
    tl.store(gk + o_wo + j[:, None] * C + c[None, :], gWo, mask=jm[:, None] & cm[None, :])
