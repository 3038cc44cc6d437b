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
