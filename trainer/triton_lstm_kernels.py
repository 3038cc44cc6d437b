"""Triton kernels of the LSTM over a pack: the forward of all T steps and the backward through
time (one program per (member, rows) and per member), in the calling convention of
:class:`trainer.triton_pack.TritonPack`.

Gates [i, f, c~, o]: a = x Wx + h Wh + b, i, f, o = sigmoid(a_i, a_f, a_o), g = tanh(a_c~),
c' = f c + i g, h' = o tanh(c'), y = h_T W_out + b_out (h_0 = c_0 = 0); Wx (D, 4H), Wh (H, 4H),
b (4H). Saved: h_t and c_t (T + 1 slots each) and the four gates of every step. The Tikhonov
regularizer is not here: the step adds it (autograd) to the gradient these kernels give.
"""

import triton
import triton.language as tl

from trainer.triton_ops import block, block_t, mm, readout_grad, sigmoid, slot, step_x, tanh, xgrad, xproj


@triton.jit
def lstm_forward(flat, x, out, hs, gates, cs, s3, n, P, x_stride, cap,
                 o_wx, o_wh, o_b, o_wo, o_bo, o_5,
                 T: tl.constexpr, D: tl.constexpr, H: tl.constexpr, C: tl.constexpr,
                 BB: tl.constexpr, BD: tl.constexpr, BH: tl.constexpr, BC: tl.constexpr,
                 BIAS: tl.constexpr, KEEP: tl.constexpr, PREC: tl.constexpr, F64: tl.constexpr):
    """i, f, o = sigmoid(.), g = tanh(.) of a = x Wx + h Wh + b; c' = f c + i g, h' = o tanh(c') for
    all T steps of a block of rows; y = h_T W_out + b_out."""
    k = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BB + tl.arange(0, BB)
    d, j, c = tl.arange(0, BD), tl.arange(0, BH), tl.arange(0, BC)
    rm, dm, jm, cm = rows < n, d < D, j < H, c < C
    p = flat + k * P
    Wxi = block(p + o_wx, d, j, 4 * H, dm, jm)
    Wxf = block(p + o_wx + H, d, j, 4 * H, dm, jm)
    Wxg = block(p + o_wx + 2 * H, d, j, 4 * H, dm, jm)
    Wxo = block(p + o_wx + 3 * H, d, j, 4 * H, dm, jm)
    Whi = block(p + o_wh, j, j, 4 * H, jm, jm)
    Whf = block(p + o_wh + H, j, j, 4 * H, jm, jm)
    Whg = block(p + o_wh + 2 * H, j, j, 4 * H, jm, jm)
    Who = block(p + o_wh + 3 * H, j, j, 4 * H, jm, jm)
    Wo = block(p + o_wo, j, c, C, jm, cm)
    h = tl.zeros((BB, BH), dtype=flat.dtype.element_ty)
    cell = tl.zeros((BB, BH), dtype=flat.dtype.element_ty)
    xk = x + k * x_stride
    mrj = rm[:, None] & jm[None, :]
    for t in range(T):
        xt = step_x(xk, rows, rm, t, T, D, d)
        ai = xproj(xt, Wxi, D, PREC, F64)
        af = xproj(xt, Wxf, D, PREC, F64)
        ag = xproj(xt, Wxg, D, PREC, F64)
        ao = xproj(xt, Wxo, D, PREC, F64)
        if BIAS:
            ai += tl.load(p + o_b + j, mask=jm, other=0.0)[None, :]
            af += tl.load(p + o_b + H + j, mask=jm, other=0.0)[None, :]
            ag += tl.load(p + o_b + 2 * H + j, mask=jm, other=0.0)[None, :]
            ao += tl.load(p + o_b + 3 * H + j, mask=jm, other=0.0)[None, :]
        gi = sigmoid(ai + mm(h, Whi, PREC, F64))
        gf = sigmoid(af + mm(h, Whf, PREC, F64))
        gg = tanh(ag + mm(h, Whg, PREC, F64))
        go = sigmoid(ao + mm(h, Who, PREC, F64))
        if KEEP:
            tl.store(slot(hs, k, t, T + 1, cap, rows, H, j), h, mask=mrj)
            tl.store(slot(cs, k, t, T + 1, cap, rows, H, j), cell, mask=mrj)
            at = slot(gates, k, t, T, cap, rows, 4 * H, j)
            tl.store(at, gi, mask=mrj)
            tl.store(at + H, gf, mask=mrj)
            tl.store(at + 2 * H, gg, mask=mrj)
            tl.store(at + 3 * H, go, mask=mrj)
        cell = gf * cell + gi * gg
        h = go * tanh(cell)
    if KEEP:
        tl.store(slot(hs, k, T, T + 1, cap, rows, H, j), h, mask=mrj)
        tl.store(slot(cs, k, T, T + 1, cap, rows, H, j), cell, mask=mrj)
    o = mm(h, Wo, PREC, F64)
    if BIAS:
        o += tl.load(p + o_bo + c, mask=cm, other=0.0)[None, :]
    tl.store(out + (k * n + rows[:, None]) * C + c[None, :], o, mask=rm[:, None] & cm[None, :])


@triton.jit
def lstm_backward(flat, x, dout, hs, gates, cs, s3, grad, n, P, x_stride, cap,
                  o_wx, o_wh, o_b, o_wo, o_bo, o_5,
                  T: tl.constexpr, D: tl.constexpr, H: tl.constexpr, C: tl.constexpr,
                  BB: tl.constexpr, BD: tl.constexpr, BH: tl.constexpr, BC: tl.constexpr,
                  BIAS: tl.constexpr, PREC: tl.constexpr, F64: tl.constexpr):
    """With tc = tanh(c_{t+1}): do = dh tc, dc += dh o (1 - tc^2), di = dc g, dg = dc i,
    df = dc c_t, dc <- dc f; da = (di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)); dWh += h_t^T da,
    dWx += x_t^T da, db += sum da, dh_t = da Wh^T."""
    k = tl.program_id(0).to(tl.int64)
    d, j, c, b = tl.arange(0, BD), tl.arange(0, BH), tl.arange(0, BC), tl.arange(0, BB)
    dm, jm, cm = d < D, j < H, c < C
    p = flat + k * P
    WiT = block_t(p + o_wh, j, j, 4 * H, jm, jm)
    WfT = block_t(p + o_wh + H, j, j, 4 * H, jm, jm)
    WgT = block_t(p + o_wh + 2 * H, j, j, 4 * H, jm, jm)
    WoTg = block_t(p + o_wh + 3 * H, j, j, 4 * H, jm, jm)
    WoT = block_t(p + o_wo, c, j, C, cm, jm)
    dt = flat.dtype.element_ty
    gWxi = tl.zeros((BD, BH), dtype=dt)
    gWxf = tl.zeros((BD, BH), dtype=dt)
    gWxg = tl.zeros((BD, BH), dtype=dt)
    gWxo = tl.zeros((BD, BH), dtype=dt)
    gWhi = tl.zeros((BH, BH), dtype=dt)
    gWhf = tl.zeros((BH, BH), dtype=dt)
    gWhg = tl.zeros((BH, BH), dtype=dt)
    gWho = tl.zeros((BH, BH), dtype=dt)
    gbi = tl.zeros((BH,), dtype=dt)
    gbf = tl.zeros((BH,), dtype=dt)
    gbg = tl.zeros((BH,), dtype=dt)
    gbo_ = tl.zeros((BH,), dtype=dt)
    gWo = tl.zeros((BH, BC), dtype=dt)
    gbout = tl.zeros((BC,), dtype=dt)
    xk = x + k * x_stride
    for start in range(0, n, BB):
        rows = start + b
        rm = rows < n
        mrj = rm[:, None] & jm[None, :]
        g, h_last = readout_grad(dout, hs, k, rows, n, T, cap, H, C, j, c)
        gWo += mm(tl.trans(h_last), g, PREC, F64)
        gbout += tl.sum(g, axis=0)
        dh = mm(g, WoT, PREC, F64)
        dc = tl.zeros((BB, BH), dtype=dt)
        for tt in range(T):
            t = T - 1 - tt
            h = tl.load(slot(hs, k, t, T + 1, cap, rows, H, j), mask=mrj, other=0.0)
            cprev = tl.load(slot(cs, k, t, T + 1, cap, rows, H, j), mask=mrj, other=0.0)
            cnew = tl.load(slot(cs, k, t + 1, T + 1, cap, rows, H, j), mask=mrj, other=0.0)
            at = slot(gates, k, t, T, cap, rows, 4 * H, j)
            gi = tl.load(at, mask=mrj, other=0.0)
            gf = tl.load(at + H, mask=mrj, other=0.0)
            gg = tl.load(at + 2 * H, mask=mrj, other=0.0)
            go = tl.load(at + 3 * H, mask=mrj, other=0.0)
            xt = step_x(xk, rows, rm, t, T, D, d)
            tc = tanh(cnew)
            dc += dh * go * (1.0 - tc * tc)
            dai = dc * gg * gi * (1.0 - gi)
            daf = dc * cprev * gf * (1.0 - gf)
            dag = dc * gi * (1.0 - gg * gg)
            dao = dh * tc * go * (1.0 - go)
            dc = dc * gf
            hT_ = tl.trans(h)
            gWhi += mm(hT_, dai, PREC, F64)
            gWhf += mm(hT_, daf, PREC, F64)
            gWhg += mm(hT_, dag, PREC, F64)
            gWho += mm(hT_, dao, PREC, F64)
            gWxi += xgrad(xt, dai, D, PREC, F64)
            gWxf += xgrad(xt, daf, D, PREC, F64)
            gWxg += xgrad(xt, dag, D, PREC, F64)
            gWxo += xgrad(xt, dao, D, PREC, F64)
            if BIAS:
                gbi += tl.sum(dai, axis=0)
                gbf += tl.sum(daf, axis=0)
                gbg += tl.sum(dag, axis=0)
                gbo_ += tl.sum(dao, axis=0)
            dh = (mm(dai, WiT, PREC, F64) + mm(daf, WfT, PREC, F64) + mm(dag, WgT, PREC, F64)
                  + mm(dao, WoTg, PREC, F64))
    gk = grad + k * P
    mdj = dm[:, None] & jm[None, :]
    mjj = jm[:, None] & jm[None, :]
    wx = gk + o_wx + d[:, None] * (4 * H) + j[None, :]
    wh = gk + o_wh + j[:, None] * (4 * H) + j[None, :]
    tl.store(wx, gWxi, mask=mdj)
    tl.store(wx + H, gWxf, mask=mdj)
    tl.store(wx + 2 * H, gWxg, mask=mdj)
    tl.store(wx + 3 * H, gWxo, mask=mdj)
    tl.store(wh, gWhi, mask=mjj)
    tl.store(wh + H, gWhf, mask=mjj)
    tl.store(wh + 2 * H, gWhg, mask=mjj)
    tl.store(wh + 3 * H, gWho, mask=mjj)
    tl.store(gk + o_wo + j[:, None] * C + c[None, :], gWo, mask=jm[:, None] & cm[None, :])
    if BIAS:
        tl.store(gk + o_b + j, gbi, mask=jm)
        tl.store(gk + o_b + H + j, gbf, mask=jm)
        tl.store(gk + o_b + 2 * H + j, gbg, mask=jm)
        tl.store(gk + o_b + 3 * H + j, gbo_, mask=jm)
        tl.store(gk + o_bo + c, gbout, mask=cm)
