"""Plain SGD (eq. 17) with divergence masking and the step's trace row, fused: the Triton counterpart
of the native ``sgd_step`` (trainer/csrc/gru_pack.cpp), called by
:meth:`trainer.triton_pack.TritonPack.sgd_step`. One program per member, two passes over its row of
the ``(K, P)`` buffers instead of the ~25 whole-pack passes of the step's PyTorch tail.
"""

import triton
import triton.language as tl


@triton.jit
def _finite(x):
    return tl.abs(x) < float("inf")  # False for inf and NaN


@triton.jit
def sgd_step(flat, grad, loss, dloss, pen, lr, active, diverged, div_step, step_no, share, eps, row,
             K, P, lo, hi, BLOCK: tl.constexpr):
    """||g||, ||g_out||, ||w||, ||delta|| (delta = -lr g), the sparsity of W_out (columns [lo, hi)) and
    of all weights (``share``: each weight's share, 0 for biases), |w| < eps (eq. 42); a member whose
    E, ||g|| or ||delta|| is not finite becomes inactive (diverged at step ``step_no``); active members
    take w += delta. row (9, K): E, E_data, penalty, ||g||, ||g_out||, ||w||, ||update||, sparsity_out,
    sparsity_all."""
    k = tl.program_id(0).to(tl.int64)
    w_row, g_row = flat + k * P, grad + k * P
    step = -tl.load(lr + k)
    small_below = tl.load(eps)
    dt = flat.dtype.element_ty
    gv = tl.zeros((BLOCK,), dtype=dt)
    wv = tl.zeros((BLOCK,), dtype=dt)
    dv = tl.zeros((BLOCK,), dtype=dt)
    sv = tl.zeros((BLOCK,), dtype=dt)
    gov = tl.zeros((BLOCK,), dtype=dt)
    sov = tl.zeros((BLOCK,), dtype=dt)
    for j0 in range(0, P, BLOCK):
        j = j0 + tl.arange(0, BLOCK)
        m = j < P
        g = tl.load(g_row + j, mask=m, other=0.0)
        w = tl.load(w_row + j, mask=m, other=0.0)
        d = step * g
        gv += g * g
        wv += w * w
        dv += d * d
        small = (tl.abs(w) < small_below) & m
        sv += tl.where(small, tl.load(share + j, mask=m, other=0.0), 0.0)
        out = (j >= lo) & (j < hi)
        gov += tl.where(out, g * g, 0.0)
        sov += tl.where(out & small, 1.0, 0.0)
    gnorm = tl.sqrt(tl.sum(gv))
    dnorm = tl.sqrt(tl.sum(dv))
    e = tl.load(loss + k)
    was = tl.load(active + k) != 0
    ok = _finite(e) & _finite(gnorm) & _finite(dnorm)
    newly = was & (ok == 0)
    tl.store(diverged + k, ((tl.load(diverged + k) != 0) | newly).to(tl.uint8))
    tl.store(div_step + k, tl.where(newly, tl.load(step_no), tl.load(div_step + k)))
    now = was & ok
    tl.store(active + k, now.to(tl.uint8))
    for j0 in range(0, P, BLOCK):
        j = j0 + tl.arange(0, BLOCK)
        m = (j < P) & now
        w = tl.load(w_row + j, mask=m, other=0.0)
        tl.store(w_row + j, w + step * tl.load(g_row + j, mask=m, other=0.0), mask=m)
    tl.store(row + k, e)
    tl.store(row + K + k, tl.load(dloss + k))
    tl.store(row + 2 * K + k, tl.load(pen + k))
    tl.store(row + 3 * K + k, gnorm)
    tl.store(row + 4 * K + k, tl.sqrt(tl.sum(gov)))
    tl.store(row + 5 * K + k, tl.sqrt(tl.sum(wv)))
    tl.store(row + 6 * K + k, tl.where(now, dnorm, 0.0))
    tl.store(row + 7 * K + k, tl.sum(sov) / (hi - lo))
    tl.store(row + 8 * K + k, tl.sum(sv))
