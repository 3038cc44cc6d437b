"""The paper's GRU (eq. 2-5) of a whole pack as fused Triton kernels: the CUDA counterpart of
:mod:`trainer.native_gru`.

One program per (member, block of rows) runs all T time steps of the forward with h in registers
and the member's weights loaded once; one program per member runs the backward through time over
its rows, accumulating every weight gradient in registers and writing its row of the ``(K, P)``
gradient once: two launches per training step, whatever K and T, no atomics. Matmuls are
``tl.dot`` with ``input_precision="ieee"`` (exact float32; ``"tf32"`` only when the pack asks for
``precision: tf32``); float64 multiplies by broadcast sums (exact, slow: for checking). tanh is
2 sigmoid(2x) - 1. On CPU the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``, set
before ``triton`` is imported), which is how the test suite checks them on a machine without a GPU
(tests/test_triton_gru.py: kernels = autograd through :mod:`trainer.cells`, the engine = the eager
loop, pack = solo runs).
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from trainer.models import Family

Tensor = torch.Tensor


def triton_unsupported(family: Family, dtype: torch.dtype, device: torch.device) -> Optional[str]:
    """Why the Triton kernels cannot run this pack (None when they can)."""
    if family.name != "gru":
        return f"no Triton kernel for family {family.name}"
    if dtype not in (torch.float32, torch.float64):
        return f"dtype {dtype}"
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return "the Triton kernels run on CUDA (on CPU only under TRITON_INTERPRET=1)"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    return None


def _pow2(n: int, least: int = 16) -> int:
    """tl.dot wants every block dimension a power of two of at least 16."""
    p = least
    while p < n:
        p *= 2
    return p


class TritonGRU:
    """Fused forward / backward of a GRU pack of ``K`` members with at most ``B`` rows per step.

    The interface of :class:`trainer.native_gru.NativeGRU` minus its fused loss, penalty and SGD
    kernels (``fuses_tail = False``: the step's PyTorch tail does those, and on CUDA the whole step is
    captured as one CUDA graph). Every buffer is allocated here, so a step allocates nothing but its
    outputs and can be captured.
    """

    fuses_tail = False

    def __init__(self, family: Family, K: int, B: int, T: int, dtype: torch.dtype, device: torch.device,
                 precision: str = "float32"):
        why = triton_unsupported(family, dtype, device)
        if why is not None:
            raise RuntimeError(why)
        from trainer import triton_kernels

        self._fwd, self._bwd = triton_kernels.gru_forward, triton_kernels.gru_backward
        H, lay = family.H, family.layout
        off = lambda name: lay.offsets[name][0] if name in lay.offsets else 0  # noqa: E731
        self.K, self.B, self.T, self.D, self.H, self.C, self.P = K, B, T, family.D, H, family.C, lay.P
        self.bias = family.bias
        self.offsets = [off(n) for n in ("Wx", "Wh_zr", "Wh_h", "b", "W_out", "b_out")]
        self.blocks = dict(BD=_pow2(family.D), BH=_pow2(H), BC=_pow2(family.C))
        self.prec = "tf32" if precision == "tf32" else "ieee"
        self.f64 = dtype == torch.float64
        opts = dict(dtype=dtype, device=device)
        self.hs = torch.empty(K * (T + 1) * B * H, **opts)
        self.zr = torch.empty(K * T * B * 2 * H, **opts)
        self.rh = torch.empty(K * T * B * H, **opts)
        self.cc = torch.empty(K * T * B * H, **opts)
        self.grad = torch.empty((K, lay.P), **opts)  # reused: the step never keeps a gradient
        self._saved: tuple = ()

    def _check(self, flat: Tensor, x: Tensor) -> None:
        if not flat.is_contiguous() or tuple(flat.shape) != (self.K, self.P):
            raise ValueError(f"flat: expected a contiguous ({self.K}, {self.P}) buffer, got {tuple(flat.shape)}")
        if tuple(x.shape[-2:]) != (self.T, self.D) or x.dtype != flat.dtype or x.device != flat.device:
            raise ValueError(f"x: expected (..., {self.T}, {self.D}) of {flat.dtype} on {flat.device}, "
                             f"got {tuple(x.shape)} {x.dtype} on {x.device}")

    def _consts(self, n: int, **extra) -> dict:
        rows = 16 if n <= 16 else 32
        return dict(T=self.T, D=self.D, H=self.H, C=self.C, BB=rows, BIAS=self.bias, PREC=self.prec, F64=self.f64,
                    **self.blocks, **extra)

    def forward_train(self, flat: Tensor, x: Tensor) -> Tensor:
        """Outputs (K, n, C) of per-member inputs ``x`` (K, n, T, D), n <= B; keeps the activations."""
        x = x.contiguous()
        self._check(flat, x)
        K, n = x.shape[:2]
        if K != self.K or n > self.B:
            raise ValueError(f"x: expected at most ({self.K}, {self.B}) rows, got {tuple(x.shape[:2])}")
        out = torch.empty((K, n, self.C), dtype=flat.dtype, device=flat.device)
        consts = self._consts(n, KEEP=True)
        self._fwd[(K, -(-n // consts["BB"]))](flat, x, out, self.hs, self.zr, self.rh, self.cc, n, self.P,
                                             n * self.T * self.D, self.B, *self.offsets, **consts)
        self._saved = (flat, x, n)
        return out

    def backward(self, dout: Tensor) -> Tensor:
        """The (K, P) gradient of sum(dout * out) for the last :meth:`forward_train`."""
        flat, x, n = self._saved
        if tuple(dout.shape) != (self.K, n, self.C):
            raise ValueError(f"dout: expected ({self.K}, {n}, {self.C}), got {tuple(dout.shape)}")
        self._bwd[(self.K,)](flat, x, dout.contiguous(), self.hs, self.zr, self.rh, self.cc, self.grad, n, self.P,
                             n * self.T * self.D, self.B, *self.offsets, **self._consts(n))
        return self.grad

    def forward(self, flat: Tensor, x: Tensor) -> Tensor:
        """Outputs (K, N, C) of inputs shared by all members ``x`` (N, T, D), nothing kept."""
        x = x.contiguous()
        self._check(flat, x)
        n = x.shape[0]
        out = torch.empty((self.K, n, self.C), dtype=flat.dtype, device=flat.device)
        consts = self._consts(n, KEEP=False)
        self._fwd[(self.K, -(-n // consts["BB"]))](flat, x, out, out, out, out, out, n, self.P, 0, 0,
                                                  *self.offsets, **consts)
        return out
