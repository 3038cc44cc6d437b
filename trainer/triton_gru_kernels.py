"""Triton kernels of the paper's GRU (eq. 2-5) over a pack: the forward of all T steps and the
backward through time, one program per (member, rows) and per member. Called by
:class:`trainer.triton_pack.TritonPack`, which documents the calling convention.

Layout (trainer/models.py, "x @ W" form): Wx (D, 3H) gates [z, r, h~], Wh_zr (H, 2H), Wh_h (H, H),
b (3H), W_out (H, C), b_out (C). Saved per step: h_t (T + 1 slots), [z, r], r * h, h~.
"""

import triton
import triton.language as tl

from trainer.triton_ops import block, block_t, mm, readout_grad, sigmoid, slot, step_x, tanh, xgrad, xproj


@triton.jit
def gru_forward(flat, x, out, hs, zr, rh, cc, n, P, x_stride, cap,
                o_wx, o_wzr, o_wh, o_b, o_wo, o_bo,
                T: tl.constexpr, D: tl.constexpr, H: tl.constexpr, C: tl.constexpr,
                BB: tl.constexpr, BD: tl.constexpr, BH: tl.constexpr, BC: tl.constexpr,
                BIAS: tl.constexpr, KEEP: tl.constexpr, PREC: tl.constexpr, F64: tl.constexpr):
    """z = s(x Wz + h Wzh + bz), r = s(x Wr + h Wrh + br), h~ = tanh(x Wh + (r h) Wh~ + bh),
    h' = h + z (h~ - h) for all T steps of a block of rows; y = h_T W_out + b_out."""
    k = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BB + tl.arange(0, BB)
    d, j, c = tl.arange(0, BD), tl.arange(0, BH), tl.arange(0, BC)
    rm, dm, jm, cm = rows < n, d < D, j < H, c < C
    w = flat + k * P
    Wxz = block(w + o_wx, d, j, 3 * H, dm, jm)
    Wxr = block(w + o_wx + H, d, j, 3 * H, dm, jm)
    Wxh = block(w + o_wx + 2 * H, d, j, 3 * H, dm, jm)
    Whz = block(w + o_wzr, j, j, 2 * H, jm, jm)
    Whr = block(w + o_wzr + H, j, j, 2 * H, jm, jm)
    Whh = block(w + o_wh, j, j, H, jm, jm)
    Wo = block(w + o_wo, j, c, C, jm, cm)
    h = tl.zeros((BB, BH), dtype=flat.dtype.element_ty)
    xk = x + k * x_stride
    mrj = rm[:, None] & jm[None, :]
    for t in range(T):
        xt = step_x(xk, rows, rm, t, T, D, d)
        az = xproj(xt, Wxz, D, PREC, F64)
        ar = xproj(xt, Wxr, D, PREC, F64)
        ah = xproj(xt, Wxh, D, PREC, F64)
        if BIAS:
            az += tl.load(w + o_b + j, mask=jm, other=0.0)[None, :]
            ar += tl.load(w + o_b + H + j, mask=jm, other=0.0)[None, :]
            ah += tl.load(w + o_b + 2 * H + j, mask=jm, other=0.0)[None, :]
        z = sigmoid(az + mm(h, Whz, PREC, F64))
        r = sigmoid(ar + mm(h, Whr, PREC, F64))
        q = r * h
        cand = tanh(ah + mm(q, Whh, PREC, F64))
        if KEEP:
            tl.store(slot(hs, k, t, T + 1, cap, rows, H, j), h, mask=mrj)
            tl.store(slot(zr, k, t, T, cap, rows, 2 * H, j), z, mask=mrj)
            tl.store(slot(zr, k, t, T, cap, rows, 2 * H, j) + H, r, mask=mrj)
            tl.store(slot(rh, k, t, T, cap, rows, H, j), q, mask=mrj)
            tl.store(slot(cc, k, t, T, cap, rows, H, j), cand, mask=mrj)
        h = h + z * (cand - h)
    if KEEP:
        tl.store(slot(hs, k, T, T + 1, cap, rows, H, j), h, mask=mrj)
    o = mm(h, Wo, PREC, F64)
    if BIAS:
        o += tl.load(w + o_bo + c, mask=cm, other=0.0)[None, :]
    tl.store(out + (k * n + rows[:, None]) * C + c[None, :], o, mask=rm[:, None] & cm[None, :])


@triton.jit
def gru_backward(flat, x, dout, hs, zr, rh, cc, grad, n, P, x_stride, cap,
                 o_wx, o_wzr, o_wh, o_b, o_wo, o_bo,
                 T: tl.constexpr, D: tl.constexpr, H: tl.constexpr, C: tl.constexpr,
                 BB: tl.constexpr, BD: tl.constexpr, BH: tl.constexpr, BC: tl.constexpr,
                 BIAS: tl.constexpr, PREC: tl.constexpr, F64: tl.constexpr):
    """Through time, per step: dz = dh (h~ - h), da~ = dh z (1 - h~^2), dh_prev = dh (1 - z)
    + (da~ Wh~^T) r + dza Wzh^T + dra Wrh^T with dza = dz z (1 - z), dra = (da~ Wh~^T) h r (1 - r);
    dWh~ += (r h)^T da~, dWzh += h^T dza, dWrh += h^T dra, dWx += x^T [dza, dra, da~]."""
    k = tl.program_id(0).to(tl.int64)
    d, j, c, b = tl.arange(0, BD), tl.arange(0, BH), tl.arange(0, BC), tl.arange(0, BB)
    dm, jm, cm = d < D, j < H, c < C
    w = flat + k * P
    WhzT = block_t(w + o_wzr, j, j, 2 * H, jm, jm)
    WhrT = block_t(w + o_wzr + H, j, j, 2 * H, jm, jm)
    WhhT = block_t(w + o_wh, j, j, H, jm, jm)
    WoT = block_t(w + o_wo, c, j, C, cm, jm)
    dt = flat.dtype.element_ty
    gWxz = tl.zeros((BD, BH), dtype=dt)
    gWxr = tl.zeros((BD, BH), dtype=dt)
    gWxh = tl.zeros((BD, BH), dtype=dt)
    gWhz = tl.zeros((BH, BH), dtype=dt)
    gWhr = tl.zeros((BH, BH), dtype=dt)
    gWhh = tl.zeros((BH, BH), dtype=dt)
    gbz = tl.zeros((BH,), dtype=dt)
    gbr = tl.zeros((BH,), dtype=dt)
    gbh = tl.zeros((BH,), dtype=dt)
    gWo = tl.zeros((BH, BC), dtype=dt)
    gbo = tl.zeros((BC,), dtype=dt)
    xk = x + k * x_stride
    for start in range(0, n, BB):
        rows = start + b
        rm = rows < n
        mrj = rm[:, None] & jm[None, :]
        g, h_last = readout_grad(dout, hs, k, rows, n, T, cap, H, C, j, c)
        gWo += mm(tl.trans(h_last), g, PREC, F64)
        gbo += tl.sum(g, axis=0)
        dh = mm(g, WoT, PREC, F64)
        for tt in range(T):
            t = T - 1 - tt
            h = tl.load(slot(hs, k, t, T + 1, cap, rows, H, j), mask=mrj, other=0.0)
            z = tl.load(slot(zr, k, t, T, cap, rows, 2 * H, j), mask=mrj, other=0.0)
            r = tl.load(slot(zr, k, t, T, cap, rows, 2 * H, j) + H, mask=mrj, other=0.0)
            q = tl.load(slot(rh, k, t, T, cap, rows, H, j), mask=mrj, other=0.0)
            cand = tl.load(slot(cc, k, t, T, cap, rows, H, j), mask=mrj, other=0.0)
            xt = step_x(xk, rows, rm, t, T, D, d)
            dz = dh * (cand - h)
            dac = dh * z * (1.0 - cand * cand)
            dhp = dh * (1.0 - z)
            gWhh += mm(tl.trans(q), dac, PREC, F64)
            dq = mm(dac, WhhT, PREC, F64)
            dhp += dq * r
            daz = dz * z * (1.0 - z)
            dar = dq * h * r * (1.0 - r)
            gWhz += mm(tl.trans(h), daz, PREC, F64)
            gWhr += mm(tl.trans(h), dar, PREC, F64)
            dhp += mm(daz, WhzT, PREC, F64) + mm(dar, WhrT, PREC, F64)
            gWxz += xgrad(xt, daz, D, PREC, F64)
            gWxr += xgrad(xt, dar, D, PREC, F64)
            gWxh += xgrad(xt, dac, D, PREC, F64)
            if BIAS:
                gbz += tl.sum(daz, axis=0)
                gbr += tl.sum(dar, axis=0)
                gbh += tl.sum(dac, axis=0)
            dh = dhp
    gk = grad + k * P
    mdj = dm[:, None] & jm[None, :]
    mjj = jm[:, None] & jm[None, :]
    tl.store(gk + o_wx + d[:, None] * (3 * H) + j[None, :], gWxz, mask=mdj)
    tl.store(gk + o_wx + d[:, None] * (3 * H) + H + j[None, :], gWxr, mask=mdj)
    tl.store(gk + o_wx + d[:, None] * (3 * H) + 2 * H + j[None, :], gWxh, mask=mdj)
    tl.store(gk + o_wzr + j[:, None] * (2 * H) + j[None, :], gWhz, mask=mjj)
    tl.store(gk + o_wzr + j[:, None] * (2 * H) + H + j[None, :], gWhr, mask=mjj)
    tl.store(gk + o_wh + j[:, None] * H + j[None, :], gWhh, mask=mjj)
    tl.store(gk + o_wo + j[:, None] * C + c[None, :], gWo, mask=jm[:, None] & cm[None, :])
    if BIAS:
        tl.store(gk + o_b + j, gbz, mask=jm)
        tl.store(gk + o_b + H + j, gbr, mask=jm)
        tl.store(gk + o_b + 2 * H + j, gbh, mask=jm)
        tl.store(gk + o_bo + c, gbo, mask=cm)
