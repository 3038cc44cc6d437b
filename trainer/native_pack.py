"""A whole pack of any family (the paper's GRU, LSTM, Elman RNN, diagonal RNN) through the fused CPU
kernels of ``trainer/csrc/pack_kernels.cpp``.

:class:`NativePack` holds the activation buffers of one pack (sized once, reused every step) and
runs the kernels of its family on the flat ``(K, P)`` parameter buffer, members split between
``torch.get_num_threads()`` OpenMP threads: :meth:`forward_train` keeps what the
backward through time needs, :meth:`backward` turns dE/d out into the whole ``(K, P)`` gradient,
:meth:`forward` evaluates without keeping anything. Numbers match the eager engine and autograd
through :mod:`trainer.cells` (tests/test_native_gru.py, tests/test_native_families.py); each
member's result depends on its own row only.
"""

from __future__ import annotations

import ctypes
from typing import Optional

import torch

from trainer.models import Family
from trainer.native_build import load_library

Tensor = torch.Tensor


#: per family: the parameters whose offsets the kernels take (input weights, recurrent weights, the
#: GRU's Wh_h, gate biases, readout, readout bias; None: absent), and the sizes of the activation
#: buffers kept per member for the backward, as functions of (T, B, H)
KERNELS = {
    "gru": (("Wx", "Wh_zr", "Wh_h", "b", "W_out", "b_out"),
            lambda T, B, H: ((T + 1) * B * H, T * B * 2 * H, T * B * H, T * B * H)),
    "lstm": (("Wx", "Wh", None, "b", "W_out", "b_out"),
             lambda T, B, H: ((T + 1) * B * H, T * B * 4 * H, (T + 1) * B * H, T * B * H)),
    "rnn": (("Wx", "Wh", None, "b", "W_out", "b_out"), lambda T, B, H: ((T + 1) * B * H,)),
    "diag_rnn": (("U", "w", None, None, "W_out", None), lambda T, B, H: ((T + 1) * B * H,)),
}


def native_unsupported(family: Family, dtype: torch.dtype, device: torch.device) -> Optional[str]:
    """Why the native kernels cannot run this pack (None when they can)."""
    if family.name not in KERNELS:
        return f"no native kernel for family {family.name}"
    if device.type != "cpu":
        return "the native kernels run on CPU"
    if dtype not in (torch.float32, torch.float64):
        return f"dtype {dtype}"
    lib, why = load_library()
    return why if lib is None else None


def _ptr(t: Optional[Tensor]) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if t is None else t.data_ptr())


class NativePack:
    """Fused forward / backward of a pack of ``K`` members of ``family`` with at most ``B`` rows per step."""

    #: the softmax cross-entropy and the closed-form penalties are kernels too
    fuses_loss = True
    #: a step computes only its real rows (no static shape: the short last batch is not padded)
    static_shape = False
    #: SGD with divergence masking and the trace row is one kernel
    fuses_sgd = True

    def __init__(self, family: Family, K: int, B: int, T: int, dtype: torch.dtype, device: torch.device):
        lib, why = load_library()
        if lib is None:
            raise RuntimeError(why)
        suffix = "f64" if dtype == torch.float64 else "f32"
        names, sizes = KERNELS[family.name]
        self._fwd = getattr(lib, f"{family.name}_forward_{suffix}")
        self._bwd = getattr(lib, f"{family.name}_backward_{suffix}")
        self._sgd = getattr(lib, f"sgd_step_{suffix}")
        self._ce = getattr(lib, f"cross_entropy_{suffix}")
        self._pen = getattr(lib, f"penalty_{suffix}")
        H, lay = family.H, family.layout
        off = lambda name: lay.offsets[name][0] if name in lay.offsets else 0  # noqa: E731
        self.K, self.T, self.D, self.H, self.C = K, T, family.D, H, family.C
        self.head = [int(family.bias), lay.P] + [off(n) for n in names]
        opts = dict(dtype=dtype, device=device)
        self.buffers = tuple(torch.empty(K * n, **opts) for n in sizes(T, B, H))
        self.B = B
        self.grad = torch.empty((K, lay.P), **opts)  # reused: the step never keeps a gradient
        self._saved: tuple = ()

    def _check(self, flat: Tensor, x: Tensor, rows: int) -> None:
        """The kernels trust their shapes: a mismatch would read or write out of bounds."""
        if not flat.is_contiguous() or flat.shape[0] != self.K or flat.shape[1] != self.head[1]:
            raise ValueError(f"flat: expected a contiguous ({self.K}, {self.head[1]}) buffer, got {tuple(flat.shape)}")
        if tuple(x.shape[-2:]) != (self.T, self.D) or x.dtype != flat.dtype:
            raise ValueError(f"x: expected (..., {self.T}, {self.D}) of {flat.dtype}, got {tuple(x.shape)} {x.dtype}")
        if rows > self.B and x.dim() == 4:
            raise ValueError(f"{rows} rows per member: the buffers hold {self.B}")

    def _dims(self, rows: int, x_member_stride: int):
        return (ctypes.c_int64 * 16)(self.K, rows, self.T, self.D, self.H, self.C, *self.head, x_member_stride,
                                     torch.get_num_threads())

    def forward_train(self, flat: Tensor, x: Tensor) -> Tensor:
        """Outputs (K, n, C) of per-member inputs ``x`` (K, n, T, D), n <= B; keeps the activations."""
        x = x.contiguous()
        K, n = x.shape[:2]
        self._check(flat, x, n)
        if K != self.K:
            raise ValueError(f"x: {K} members, the pack has {self.K}")
        out = torch.empty((K, n, self.C), dtype=flat.dtype, device=flat.device)
        dims = self._dims(n, n * self.T * self.D)
        self._fwd(_ptr(flat), _ptr(x), _ptr(out), *(_ptr(b) for b in self.buffers), dims)
        self._saved = (flat, x, dims)
        return out

    def backward(self, dout: Tensor) -> Tensor:
        """The (K, P) gradient of sum(dout * out) for the last :meth:`forward_train`."""
        flat, x, dims = self._saved
        if tuple(dout.shape) != (self.K, x.shape[1], self.C):
            raise ValueError(f"dout: expected ({self.K}, {x.shape[1]}, {self.C}), got {tuple(dout.shape)}")
        dout = dout.contiguous()
        self._bwd(_ptr(flat), _ptr(x), _ptr(dout), *(_ptr(b) for b in self.buffers), _ptr(self.grad), dims)
        return self.grad

    def forward(self, flat: Tensor, x: Tensor) -> Tensor:
        """Outputs (K, N, C) of inputs shared by all members ``x`` (N, T, D), nothing kept."""
        x = x.contiguous()
        n = x.shape[0]
        self._check(flat, x, n)
        out = torch.empty((self.K, n, self.C), dtype=flat.dtype, device=flat.device)
        self._fwd(_ptr(flat), _ptr(x), _ptr(out), *(_ptr(None) for _ in self.buffers), self._dims(n, 0))
        return out

    def sgd_step(self, flat: Tensor, grad: Tensor, terms: tuple[Tensor, Tensor, Tensor], lr: Tensor,
                 state: tuple[Tensor, Tensor, Tensor, Tensor], out_cols: slice, weight_share: Tensor,
                 eps: float) -> Tensor:
        """Plain SGD on ``flat`` in place with divergence masking and the trace row (9, K), fused: what
        :meth:`trainer.step.FastStep.step` does for ``optimizer: sgd``. ``terms``: E, E_data, penalty
        (K,); ``state``: active, diverged (bool), div_step (int64), step_no (int64 scalar), updated in
        place."""
        active, diverged, div_step, step_no = state
        if grad.shape != flat.shape or not all(t.is_contiguous() for t in (flat, *state, weight_share)):
            raise ValueError("sgd_step: gradient, weights and state must be contiguous and of the pack's shape")
        row = torch.empty((9, self.K), dtype=flat.dtype, device=flat.device)
        dims = (ctypes.c_int64 * 5)(self.K, flat.shape[1], out_cols.start, out_cols.stop, torch.get_num_threads())
        loss, dloss, pen = (t.contiguous() for t in terms)
        self._sgd(_ptr(flat), _ptr(grad.contiguous()), _ptr(loss), _ptr(dloss), _ptr(pen), _ptr(lr.contiguous()),
                  _ptr(active), _ptr(diverged), _ptr(div_step), _ptr(step_no), _ptr(weight_share), _ptr(row), dims,
                  ctypes.c_double(eps))
        return row

    def cross_entropy(self, out: Tensor, y: Tensor, scale: float) -> tuple[Tensor, Tensor]:
        """(data loss (K,), dE_data/d out (K, n, C)) of softmax cross-entropy for class indices ``y``
        (K, n), or (n,) shared by all members: :func:`trainer.train.data_loss`'s default loss, fused in one
        pass."""
        out = out.contiguous()
        K, n, C = out.shape
        y = y.to(torch.int64).expand(K, n).contiguous()  # a label outside [0, C) adds nothing: never read
        value = torch.empty(K, dtype=out.dtype, device=out.device)
        dout = torch.empty_like(out)
        dims = (ctypes.c_int64 * 4)(K, n, C, torch.get_num_threads())
        self._ce(_ptr(out), _ptr(y), _ptr(value), _ptr(dout), dims, ctypes.c_double(scale))
        return value, dout

    def penalty(self, flat: Tensor, grad: Tensor, penalty) -> Tensor:
        """The closed-form penalties of ``penalty`` (a :class:`trainer.regularizers.Penalty`; its
        Tikhonov term is not computed here): returns their value (K,) and adds their gradient to
        ``grad`` in place."""
        cols = penalty.cols
        coefs = [penalty.c_l1, penalty.c_l2, penalty.c_sl1]
        if grad.shape != flat.shape or not (flat.is_contiguous() and grad.is_contiguous()):
            raise ValueError("penalty: gradient and weights must be contiguous and of the pack's shape")
        if any(c is not None and (c.shape != (flat.shape[0], cols.stop - cols.start) or not c.is_contiguous())
               for c in coefs):
            raise ValueError("penalty: coefficients must be contiguous (K, penalised columns)")
        pen = torch.empty(flat.shape[0], dtype=flat.dtype, device=flat.device)
        dims = (ctypes.c_int64 * 5)(flat.shape[0], flat.shape[1], cols.start, cols.stop, torch.get_num_threads())
        alpha = penalty.alpha.contiguous()
        self._pen(_ptr(flat), _ptr(grad), _ptr(pen), *(_ptr(c) for c in coefs), _ptr(alpha), dims)
        return pen
