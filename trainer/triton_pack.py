"""The recurrent families of a whole pack as fused Triton kernels: the CUDA counterpart of
:mod:`trainer.native_pack`.

For every family (the paper's GRU, eq. 2-5, in ``trainer/triton_gru_kernels.py``; the Elman and the
diagonal RNN in ``trainer/triton_elman_kernels.py``; the LSTM in ``trainer/triton_lstm_kernels.py``)
one program per (member, block of rows) runs all T time steps of the forward with h in registers
and the member's weights loaded once; one program per member runs the backward through time over
its rows, accumulating every weight gradient in registers and writing its row of the ``(K, P)``
gradient once: two launches per training step, whatever K and T, no atomics. Matmuls are
``tl.dot`` with ``input_precision="ieee"`` (exact float32; ``"tf32"`` only when the pack asks for
``precision: tf32``); float64 multiplies by broadcast sums (exact, slow: for checking). tanh is
2 sigmoid(2x) - 1. On CPU the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``, set
before ``triton`` is imported), which is how the test suite checks them on a machine without a GPU
(tests/test_triton_pack.py: kernels = autograd through :mod:`trainer.cells`, the engine = the eager
loop, pack = solo runs).

Calling convention of every kernel pair: ``forward(flat, x, out, s0, s1, s2, s3, n, P, x_stride, cap,
o0..o5, T, D, H, C, BB, BD, BH, BC, BIAS, KEEP, PREC, F64)`` and ``backward(flat, x, dout, s0, s1, s2,
s3, grad, n, P, x_stride, cap, o0..o5, ...)``: up to four saved-activation buffers (unused ones are
placeholders), the offsets of up to six parameters in a member's row (``FAMILIES``).
"""

from __future__ import annotations

import importlib
import os
from typing import Optional

import torch

from trainer.models import Family

Tensor = torch.Tensor


#: per family: the kernels' module, the activations the backward needs (name, steps beyond T, width in
#: units of H) and the parameters whose offsets the kernels take, in order
FAMILIES = {
    "gru": ("trainer.triton_gru_kernels", (("hs", 1, 1), ("zr", 0, 2), ("rh", 0, 1), ("cc", 0, 1)),
            ("Wx", "Wh_zr", "Wh_h", "b", "W_out", "b_out")),
    "rnn": ("trainer.triton_elman_kernels", (("hs", 1, 1),), ("Wx", "Wh", "b", "W_out", "b_out")),
    "diag_rnn": ("trainer.triton_elman_kernels", (("hs", 1, 1),), ("U", "w", "W_out")),
    "lstm": ("trainer.triton_lstm_kernels", (("hs", 1, 1), ("gates", 0, 4), ("cs", 1, 1)),
             ("Wx", "Wh", "b", "W_out", "b_out")),
}


def triton_unsupported(family: Family, dtype: torch.dtype, device: torch.device) -> Optional[str]:
    """Why the Triton kernels cannot run this pack (None when they can)."""
    if family.name not in FAMILIES:
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


class TritonPack:
    """Fused forward / backward of a pack of ``K`` members of one family with at most ``B`` rows per step.

    The interface of :class:`trainer.native_pack.NativePack` minus its fused loss and penalty kernels
    (the step's PyTorch tail does those; on CUDA the whole step is captured as one CUDA graph). Every
    buffer is allocated here, so a step allocates nothing but its outputs and can be captured.
    """

    #: the loss and the penalties stay in PyTorch (dE/d out of the padded batch by autograd)
    fuses_loss = False
    #: the activations are sized for the static padded batch (the CUDA graph's one shape)
    static_shape = True
    #: SGD with divergence masking and the trace row is one kernel (trainer/triton_sgd_kernel.py)
    fuses_sgd = True

    def __init__(self, family: Family, K: int, B: int, T: int, dtype: torch.dtype, device: torch.device,
                 precision: str = "float32"):
        why = triton_unsupported(family, dtype, device)
        if why is not None:
            raise RuntimeError(why)
        module, saved, params = FAMILIES[family.name]
        kernels = importlib.import_module(module)
        self._fwd = getattr(kernels, f"{family.name}_forward")
        self._bwd = getattr(kernels, f"{family.name}_backward")
        H, lay = family.H, family.layout
        self.K, self.B, self.T, self.D, self.H, self.C, self.P = K, B, T, family.D, H, family.C, lay.P
        self.bias = family.bias
        self.offsets = [lay.offsets[n][0] if n in lay.offsets else 0 for n in params]
        self.offsets += [0] * (6 - len(self.offsets))
        self.blocks = dict(BD=_pow2(family.D), BH=_pow2(H), BC=_pow2(family.C))
        self.prec = "tf32" if precision == "tf32" else "ieee"
        self.f64 = dtype == torch.float64
        self.acts = [torch.empty(K * (T + extra) * B * width * H, dtype=dtype, device=device)
                      for _, extra, width in saved]
        self.acts += [self.acts[0]] * (4 - len(self.acts))  # placeholders the family's kernels never touch
        self.grad = torch.empty((K, lay.P), dtype=dtype, device=device)  # reused: the step never keeps one
        self._eps = torch.empty(1, dtype=dtype, device=device)
        self._last: tuple = ()

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
        self._fwd[(K, -(-n // consts["BB"]))](flat, x, out, *self.acts, n, self.P,
                                             n * self.T * self.D, self.B, *self.offsets, **consts)
        self._last = (flat, x, n)
        return out

    def backward(self, dout: Tensor) -> Tensor:
        """The (K, P) gradient of sum(dout * out) for the last :meth:`forward_train`."""
        flat, x, n = self._last
        if tuple(dout.shape) != (self.K, n, self.C):
            raise ValueError(f"dout: expected ({self.K}, {n}, {self.C}), got {tuple(dout.shape)}")
        self._bwd[(self.K,)](flat, x, dout.contiguous(), *self.acts, self.grad, n, self.P,
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

    def sgd_step(self, flat: Tensor, grad: Tensor, terms: tuple[Tensor, Tensor, Tensor], lr: Tensor,
                 state: tuple[Tensor, Tensor, Tensor, Tensor], out_cols: slice, weight_share: Tensor,
                 eps: float) -> Tensor:
        """Plain SGD on ``flat`` in place with divergence masking and the trace row (9, K), fused: what
        :meth:`trainer.step.FastStep.step` does for ``optimizer: sgd`` (the same contract as
        :meth:`trainer.native_pack.NativePack.sgd_step`). ``terms``: E, E_data, penalty (K,); ``state``:
        active, diverged (bool), div_step (int64), step_no (int64 scalar), updated in place."""
        from trainer import triton_sgd_kernel

        active, diverged, div_step, step_no = state
        if grad.shape != flat.shape or not all(t.is_contiguous() for t in (flat, grad, *state, weight_share)):
            raise ValueError("sgd_step: gradient, weights and state must be contiguous and of the pack's shape")
        row = torch.empty((9, self.K), dtype=flat.dtype, device=flat.device)
        self._eps.fill_(eps)
        loss, dloss, pen = (t.contiguous() for t in terms)
        triton_sgd_kernel.sgd_step[(self.K,)](
            flat, grad, loss, dloss, pen, lr.contiguous(), active.view(torch.uint8), diverged.view(torch.uint8),
            div_step, step_no, weight_share, self._eps, row, self.K, self.P, out_cols.start, out_cols.stop,
            BLOCK=1024)
        step_no.add_(1)
        return row
