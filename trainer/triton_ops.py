"""Shared Triton device functions of the pack kernels (trainer/triton_*_kernels.py)."""

import triton
import triton.language as tl


@triton.jit
def mm(a, b, PREC: tl.constexpr, F64: tl.constexpr):
    """a @ b: tl.dot at PREC ("ieee": exact float32; "tf32"), or for float64 a broadcast sum (exact on
    every GPU; slow, for checking)."""
    if F64:
        return tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    return tl.dot(a, b, input_precision=PREC)


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    """2 sigmoid(2x) - 1, as the eager engine and the native kernels compute it."""
    return 2.0 * sigmoid(2.0 * x) - 1.0


@triton.jit
def xproj(xt, W, D: tl.constexpr, PREC: tl.constexpr, F64: tl.constexpr):
    """x_t W for inputs ``xt`` (BB, BD) and a weight block ``W`` (BD, BH) whose rows >= D are 0; with
    D = 1 an outer product (the padded matmul would do 16 times the work)."""
    if D == 1:
        return tl.sum(xt, axis=1)[:, None] * tl.sum(W, axis=0)[None, :]
    return mm(xt, W, PREC, F64)


@triton.jit
def xgrad(xt, da, D: tl.constexpr, PREC: tl.constexpr, F64: tl.constexpr):
    """x_t^T da as a (BD, BH) block (rows >= D are 0); with D = 1 a sum over the rows."""
    if D == 1:
        g = tl.sum(tl.sum(xt, axis=1)[:, None] * da, axis=0)
        return tl.where((tl.arange(0, xt.shape[1]) == 0)[:, None], g[None, :], 0.0)
    return mm(tl.trans(xt), da, PREC, F64)


@triton.jit
def block(p, rows, cols, ld, rmask, cmask):
    """The (rows, cols) block of the row-major matrix at ``p`` (row stride ``ld``), 0 outside the masks."""
    return tl.load(p + rows[:, None] * ld + cols[None, :], mask=rmask[:, None] & cmask[None, :], other=0.0)


@triton.jit
def block_t(p, rows, cols, ld, rmask, cmask):
    """The transpose of a block of the matrix at ``p``: element (a, i) is M[i, a], 0 outside the masks."""
    return tl.load(p + cols[None, :] * ld + rows[:, None], mask=rmask[:, None] & cmask[None, :], other=0.0)


@triton.jit
def step_x(xk, rows, rm, t, T: tl.constexpr, D: tl.constexpr, d):
    """x_t of a block of rows of one member's inputs ``xk`` (rows, T, D): (rows, BD), 0 outside."""
    return tl.load(xk + rows[:, None] * (T * D) + t * D + d[None, :], mask=rm[:, None] & (d < D)[None, :],
                   other=0.0)


@triton.jit
def slot(buf, k, t, steps, cap, rows, width, cols):
    """Pointers to (rows, cols) of time slot ``t`` of member ``k`` in a saved buffer (K, steps, cap, width)."""
    return buf + ((k * steps + t) * cap + rows[:, None]) * width + cols[None, :]


@triton.jit
def readout_grad(dout, hs, k, rows, n, T: tl.constexpr, cap, H: tl.constexpr, C: tl.constexpr, j, c):
    """dE/dy (rows, BC) and h_T (rows, BH) of a block of rows, 0 past the last row (``hs``: the saved
    h_0..h_T, (K, T + 1, cap, H))."""
    rm = rows < n
    g = tl.load(dout + (k * n + rows[:, None]) * C + c[None, :], mask=rm[:, None] & (c < C)[None, :], other=0.0)
    h_last = tl.load(slot(hs, k, T, T + 1, cap, rows, H, j), mask=rm[:, None] & (j < H)[None, :], other=0.0)
    return g, h_last
