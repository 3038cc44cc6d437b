"""Packed recurrent models: K members of one architecture, parameters stacked on a leading axis.

All parameters of a pack live in ONE flat buffer of shape ``(K, P)``; every named parameter is
a view ``(K, *shape)`` into it (see :class:`Layout`). Norms, penalties and updates are then one
operation each on the whole pack, and each member's math only ever touches its own row, so a
pack gives the same numbers as K separate runs.

Conventions (internal, "x @ W" form; ``trainer.weights`` exports the paper's ``W x`` form):

* ``gru``  - ``Wx (D, 3H)`` gates [z, r, h~], ``Wh_zr (H, 2H)``, ``Wh_h (H, H)``, ``b (3H)``,
  ``W_out (H, C)``, ``b_out (C)``.  z = s(x Wz + h Wzh + bz), r = s(x Wr + h Wrh + br),
  h~ = tanh(x Wh + (r*h) Wh~ + bh), h' = (1-z) h + z h~  (paper eq. 2-5 / Algorithm 1).
* ``lstm`` - ``Wx (D, 4H)``, ``Wh (H, 4H)`` gates [i, f, c~, o], ``b (4H)``, ``W_out``, ``b_out``.
* ``rnn``  - ``Wx (D, H)``, ``Wh (H, H)``, ``b (H)``, ``W_out``, ``b_out``; h' = tanh(x Wx + h Wh + b).
* ``diag_rnn`` - ``U (D, H)``, ``w (H)`` (diagonal recurrence), ``W_out (H, C)``; no biases;
  h' = tanh(w*h + x U), y = h_T W_out / sqrt(H).

``bias=False`` drops the gate biases and ``b_out`` (eq. 7-10). Output is linear; the softmax of
classification lives in the loss. ``gru``, ``rnn`` and ``diag_rnn`` have a hand-written backward
through time (checked against autograd in the tests); ``lstm`` uses autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    kind: str  # "in" | "rec" | "bias" | "out" | "out_bias"

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


class Layout:
    """Where each named parameter lives in the flat ``(K, P)`` buffer."""

    def __init__(self, specs: list[ParamSpec]):
        self.specs = specs
        self.offsets: dict[str, tuple[int, int]] = {}
        off = 0
        for s in specs:
            self.offsets[s.name] = (off, off + s.numel)
            off += s.numel
        self.P = off

    def views(self, flat: Tensor) -> dict[str, Tensor]:
        K = flat.shape[0]
        return {s.name: flat[:, a:b].view(K, *s.shape)
                for s in self.specs for (a, b) in [self.offsets[s.name]]}

    def flatten(self, grads: dict[str, Tensor]) -> Tensor:
        K = next(iter(grads.values())).shape[0]
        return torch.cat([grads[s.name].reshape(K, -1) for s in self.specs], dim=1)

    def mask(self, kinds: tuple[str, ...]) -> np.ndarray:
        m = np.zeros(self.P, dtype=bool)
        for s in self.specs:
            if s.kind in kinds:
                a, b = self.offsets[s.name]
                m[a:b] = True
        return m

    def slice(self, name: str) -> slice:
        a, b = self.offsets[name]
        return slice(a, b)


def _tanh(x: Tensor) -> Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1: the CPU kernel of torch.sigmoid is ~10x faster than torch.tanh."""
    return torch.sigmoid(x * 2) * 2 - 1


def _tanh_inplace(x: Tensor) -> Tensor:
    """_tanh in place on a fresh intermediate (only where autograd is not recording)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _tanh(x)
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)


def _zeros(x: Tensor, K: int, B: int, H: int) -> Tensor:
    return torch.zeros(K, B, H, dtype=x.dtype, device=x.device)


def _input_projection(x: Tensor, W: Tensor, b: Tensor | None = None) -> Tensor:
    """x (B,T,D) shared or (K,B,T,D) per member, W (K,D,G), b (K,G) -> x W + b, (K,B,T,G), one op."""
    K, D, G = W.shape
    B, T = x.shape[-3], x.shape[-2]
    xf = x.reshape(-1, B * T, D)
    if xf.shape[0] != K:
        xf = xf.expand(K, B * T, D)
    if D == 1:  # an outer product: elementwise beats a matmul with inner size 1
        out = torch.addcmul(b.unsqueeze(1), xf, W) if b is not None else xf * W
    else:
        out = torch.baddbmm(b.unsqueeze(1), xf, W) if b is not None else torch.bmm(xf, W)
    return out.view(K, B, T, G)


def _input_projection_tm(x: Tensor, W: Tensor, b: Tensor | None = None) -> Tensor:
    """As _input_projection but laid out (K, T, B, G), so that [:, t] has contiguous rows."""
    K, D, G = W.shape
    B, T = x.shape[-3], x.shape[-2]
    xt = x.transpose(-3, -2)  # (.., T, B, D)
    if xt.dim() == 3:
        xt = xt.unsqueeze(0)
    if D == 1:
        Wb = W.unsqueeze(1)
        return torch.addcmul(b[:, None, None, :], xt, Wb) if b is not None else xt * Wb
    xf = xt.expand(K, T, B, D).reshape(K, T * B, D)
    out = torch.baddbmm(b.unsqueeze(1), xf, W) if b is not None else torch.bmm(xf, W)
    return out.view(K, T, B, G)


def _input_grad(x: Tensor, dA: Tensor) -> Tensor:
    """dW for the input projection: x^T dA, (K,D,G)."""
    K, B, T, G = dA.shape
    D = x.shape[-1]
    xf = x.reshape(-1, B * T, D)
    if xf.shape[0] != K:
        xf = xf.expand(K, B * T, D)
    return torch.bmm(xf.transpose(1, 2), dA.reshape(K, B * T, G))


class Family:
    name = ""
    manual = True
    n_gates = 1

    def __init__(self, n_in: int, hidden: int, n_out: int, bias: bool = True):
        self.D, self.H, self.C, self.bias = n_in, hidden, n_out, bias
        self.layout = Layout(self.specs())

    def specs(self) -> list[ParamSpec]:
        D, H, C, G = self.D, self.H, self.C, self.n_gates
        s = [ParamSpec("Wx", (D, G * H), "in"), ParamSpec("Wh", (H, G * H), "rec")]
        if self.bias:
            s.append(ParamSpec("b", (G * H,), "bias"))
        s.append(ParamSpec("W_out", (H, C), "out"))
        if self.bias:
            s.append(ParamSpec("b_out", (C,), "out_bias"))
        return s

    # -- initialisation ---------------------------------------------------------------------
    def init_member(self, seed: int, a: float) -> np.ndarray:
        """All P parameters of one member, U[-a, a], drawn in layout order from its own seed."""
        g = torch.Generator().manual_seed(int(seed))
        return ((torch.rand(self.layout.P, generator=g, dtype=torch.float64) * 2 - 1) * a).numpy()

    def init(self, seeds: list[int], a: float, dtype: torch.dtype, device) -> Tensor:
        flat = torch.empty((len(seeds), self.layout.P), dtype=dtype)  # no pack-sized float64 temporary
        for k, s in enumerate(seeds):
            flat[k] = torch.from_numpy(self.init_member(s, a))
        return flat.to(device)

    # -- forward / backward -----------------------------------------------------------------
    def _readout(self, p: dict[str, Tensor], h: Tensor) -> Tensor:
        if self.bias:
            return torch.baddbmm(p["b_out"].unsqueeze(1), h, p["W_out"])
        return torch.bmm(h, p["W_out"])

    def _readout_backward(self, p, hT, dout, grads) -> Tensor:
        grads["W_out"] = torch.bmm(hT.transpose(1, 2), dout)
        if self.bias:
            grads["b_out"] = dout.sum(1)
        return torch.bmm(dout, p["W_out"].transpose(1, 2))

    def forward(self, p: dict[str, Tensor], x: Tensor, keep: bool = False):
        raise NotImplementedError

    def backward(self, p: dict[str, Tensor], x: Tensor, cache, dout: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError


class GRU(Family):
    name = "gru"
    n_gates = 3

    def specs(self):
        D, H, C = self.D, self.H, self.C
        s = [ParamSpec("Wx", (D, 3 * H), "in"), ParamSpec("Wh_zr", (H, 2 * H), "rec"),
             ParamSpec("Wh_h", (H, H), "rec")]
        if self.bias:
            s.append(ParamSpec("b", (3 * H,), "bias"))
        s.append(ParamSpec("W_out", (H, C), "out"))
        if self.bias:
            s.append(ParamSpec("b_out", (C,), "out_bias"))
        return s

    def forward(self, p, x, keep=False):
        if keep and not (torch.is_grad_enabled() and p["Wx"].requires_grad):
            return self._forward_train(p, x)
        H = self.H
        xp = _input_projection_tm(x, p["Wx"], p["b"] if self.bias else None)  # (K, T, B, 3H)
        T = xp.shape[1]
        # h_0 = 0: the first step needs no recurrent matmul (h_0 W = 0 exactly, see _forward_train)
        zr = torch.sigmoid(xp[:, 0, :, :2 * H])
        h = zr[..., :H] * _tanh(xp[:, 0, :, 2 * H:])
        # contiguous copies once per pass: bmm on the strided views of the flat buffer copies each call
        Wzr, Whh = p["Wh_zr"].contiguous(), p["Wh_h"].contiguous()
        for t in range(1, T):
            xt = xp[:, t]
            a = torch.baddbmm(xt[..., :2 * H], h, Wzr)
            zr = torch.sigmoid(a) if a.requires_grad else a.sigmoid_()
            z, r = zr[..., :H], zr[..., H:]
            c = _tanh_inplace(torch.baddbmm(xt[..., 2 * H:], r * h, Whh))
            h = torch.addcmul(h, z, c - h)
        return self._readout(p, h), None

    def _forward_train(self, p, x):
        """Forward that keeps what BPTT needs in time-major buffers (T, K, B, .), written in place.

        Time-major so that every per-step slice is contiguous: ``out=`` into a batch-strided slice
        makes baddbmm fall back to one addmm per member.

        Step 0 starts from h_0 = 0, so its recurrent matmuls are skipped: h_0 W_zr and (r*h_0) W_h
        are exact zeros, and x + 0 == x, so the result is bitwise the same (for finite weights).
        """
        H = self.H
        xp = _input_projection_tm(x, p["Wx"], p["b"] if self.bias else None)  # (K, T, B, 3H)
        K, T, B, _ = xp.shape
        opts = dict(dtype=xp.dtype, device=xp.device)
        HS = torch.empty(T + 1, K, B, H, **opts)  # h_0 .. h_T
        HS[0].zero_()
        ZR = torch.empty(T, K, B, 2 * H, **opts)
        RH = torch.empty(T, K, B, H, **opts)
        CC = torch.empty(T, K, B, H, **opts)
        RH[0].zero_()
        torch.sigmoid(xp[:, 0, :, :2 * H], out=ZR[0])
        CC[0].copy_(xp[:, 0, :, 2 * H:]).mul_(2).sigmoid_().mul_(2).sub_(1)  # tanh (see _tanh)
        torch.mul(ZR[0, ..., :H], CC[0], out=HS[1])  # h_0 + z (c - h_0) with h_0 = 0
        Wzr, Whh = p["Wh_zr"].contiguous(), p["Wh_h"].contiguous()
        for t in range(1, T):
            h, zr, c = HS[t], ZR[t], CC[t]
            xt = xp[:, t]
            torch.baddbmm(xt[..., :2 * H], h, Wzr, out=zr)
            zr.sigmoid_()
            torch.mul(zr[..., H:], h, out=RH[t])
            torch.baddbmm(xt[..., 2 * H:], RH[t], Whh, out=c)
            c.mul_(2).sigmoid_().mul_(2).sub_(1)  # tanh (see _tanh)
            torch.addcmul(h, zr[..., :H], c - h, out=HS[t + 1])
        return self._readout(p, HS[T]), ("buffers", HS, ZR, RH, CC)

    def backward(self, p, x, cache, dout):
        _, HS, ZR, RH, CC = cache
        H = self.H
        T1, K, B, _ = HS.shape
        T = T1 - 1
        grads: dict[str, Tensor] = {}
        dh = self._readout_backward(p, HS[T], dout, grads)
        opts = dict(dtype=dh.dtype, device=dh.device)
        WzrT = p["Wh_zr"].transpose(1, 2).contiguous()
        WhhT = p["Wh_h"].transpose(1, 2).contiguous()
        # dE/d(pre-activations) per step, [z, r] and h~ kept apart so every write is contiguous
        # (torch.mul(..., out=<strided slice>) is ~10x slower than into a contiguous buffer)
        GZR = torch.empty(T, K, B, 2 * H, **opts)
        GH = torch.empty(T, K, B, H, **opts)
        xs = x if x.dim() == 4 else x.unsqueeze(0).expand(K, -1, -1, -1)
        acc: list[Tensor] = []  # dW_zr, dW_hh, summed over steps 1..T-1 (step 0 has h_0 = 0)
        xacc: list[Tensor] = []  # dW_x[z,r], dW_x[h~], summed over all steps
        for t in range(T - 1, -1, -1):
            h, zr, c = HS[t], ZR[t], CC[t]
            z, r = zr[..., :H], zr[..., H:]
            dc = dh * z
            dah = torch.mul(dc, 1 - c * c, out=GH[t])
            if t == 0:
                # h_0 = 0: no recurrent weight gradient, dr = (dah Wh~^T) * h_0 = 0, dh_0 unused
                gzr = GZR[0]
                torch.mul(dh, c, out=gzr[..., :H]).mul_(zr[..., :H] * (1 - zr[..., :H]))
                gzr[..., H:].zero_()
            else:
                drh = torch.bmm(dah, WhhT)
                gzr = torch.cat((dh * (c - h), drh * h), dim=-1, out=GZR[t]).mul_(zr * (1 - zr))
                dh = torch.baddbmm(torch.addcmul(dh - dc, drh, r), gzr, WzrT)
                terms = ((h.transpose(1, 2), gzr), (RH[t].transpose(1, 2), dah))
                if not acc:
                    acc = [torch.bmm(a, b) for a, b in terms]
                else:
                    for buf, (a, b) in zip(acc, terms):
                        buf.baddbmm_(a, b)
            xt = xs[:, :, t].transpose(1, 2)
            if not xacc:
                xacc = [torch.bmm(xt, gzr), torch.bmm(xt, dah)]
            else:
                xacc[0].baddbmm_(xt, gzr)
                xacc[1].baddbmm_(xt, dah)
        if not acc:  # T == 1
            acc = [torch.zeros(K, H, 2 * H, **opts), torch.zeros(K, H, H, **opts)]
        dWzr, dWhh = acc
        dWx_zr, dWx_h = xacc
        grads["Wx"] = torch.cat((dWx_zr, dWx_h), dim=-1)
        grads["Wh_zr"], grads["Wh_h"] = dWzr, dWhh
        if self.bias:
            grads["b"] = torch.cat((GZR.sum((0, 2)), GH.sum((0, 2))), dim=-1)
        return grads


class RNN(Family):
    name = "rnn"
    n_gates = 1

    def forward(self, p, x, keep=False):
        xp = _input_projection(x, p["Wx"], p["b"] if self.bias else None)
        K, B, T, H = xp.shape
        h = _zeros(xp, K, B, H)
        hs = [h]
        for t in range(T):
            h = _tanh(torch.baddbmm(xp[:, :, t], h, p["Wh"]))
            hs.append(h)
        return self._readout(p, h), (hs if keep else None, h)

    def backward(self, p, x, cache, dout):
        hs, hT = cache
        grads: dict[str, Tensor] = {}
        dh = self._readout_backward(p, hT, dout, grads)
        K, B, H = dh.shape
        T = len(hs) - 1
        WhT = p["Wh"].transpose(1, 2)
        dA = torch.empty(K, B, T, H, dtype=dh.dtype, device=dh.device)
        for t in range(T - 1, -1, -1):
            h = hs[t + 1]
            da = dh * (1 - h * h)
            dA[:, :, t] = da
            dh = torch.bmm(da, WhT)
        hprev = torch.stack(hs[:-1], dim=2).reshape(K, B * T, H).transpose(1, 2)
        grads["Wx"] = _input_grad(x, dA)
        grads["Wh"] = torch.bmm(hprev, dA.reshape(K, B * T, H))
        if self.bias:
            grads["b"] = dA.sum((1, 2))
        return grads


class LSTM(Family):
    """Gates [i, f, c~, o]: c' = f*c + i*c~, h' = o*tanh(c'). Backward by autograd."""

    name = "lstm"
    n_gates = 4
    manual = False

    def forward(self, p, x, keep=False):
        xp = _input_projection(x, p["Wx"], p["b"] if self.bias else None)
        K, B, T, G = xp.shape
        H = G // 4
        h = _zeros(xp, K, B, H)
        c = _zeros(xp, K, B, H)
        for t in range(T):
            a = torch.baddbmm(xp[:, :, t], h, p["Wh"])
            ifo = torch.sigmoid(a)
            i, f, o = ifo[..., :H], ifo[..., H:2 * H], ifo[..., 3 * H:]
            g = _tanh(a[..., 2 * H:3 * H])
            c = f * c + i * g
            h = o * _tanh(c)
        return self._readout(p, h), None


class DiagRNN(Family):
    """Diagonal Elman RNN (rnn-gd-convergence paper): h' = tanh(w*h + x U), y = h_T W_out / sqrt(m).

    Symmetric initialisation: for the first m/2 units w_i ~ U[-a, a], U[:, i] ~ U[-a, a] and
    readout entries ~ uniform {-1, +1}; unit i + m/2 copies w_i and U[:, i] with the readout
    negated, so the initial output is exactly 0.
    """

    name = "diag_rnn"

    def __init__(self, n_in, hidden, n_out, bias=True):
        super().__init__(n_in, hidden, n_out, bias=False)
        self.scale = 1.0 / math.sqrt(hidden)

    def specs(self):
        D, H, C = self.D, self.H, self.C
        return [ParamSpec("U", (D, H), "in"), ParamSpec("w", (H,), "rec"), ParamSpec("W_out", (H, C), "out")]

    def init_member(self, seed, a):
        D, H, C = self.D, self.H, self.C
        m2 = H // 2
        g = torch.Generator().manual_seed(int(seed))
        U = (torch.rand(D, m2, generator=g, dtype=torch.float64) * 2 - 1) * a
        w = (torch.rand(m2, generator=g, dtype=torch.float64) * 2 - 1) * a
        c = torch.randint(0, 2, (m2, C), generator=g).to(torch.float64) * 2 - 1
        U, w, c = torch.cat([U, U], 1), torch.cat([w, w]), torch.cat([c, -c], 0)
        return torch.cat([U.reshape(-1), w, c.reshape(-1)]).numpy()

    def forward(self, p, x, keep=False):
        xp = _input_projection(x, p["U"])
        K, B, T, H = xp.shape
        w = p["w"].unsqueeze(1)
        h = _zeros(xp, K, B, H)
        hs = [h]
        for t in range(T):
            h = _tanh(torch.addcmul(xp[:, :, t], w, h))
            hs.append(h)
        # the two halves are summed separately: at the symmetric init they are bitwise opposite,
        # so the initial output is exactly 0 (one bmm over all m units would not guarantee it)
        m2 = self.H // 2
        Wo = p["W_out"]
        out = torch.bmm(h[..., :m2], Wo[:, :m2]) + torch.bmm(h[..., m2:], Wo[:, m2:])
        return out * self.scale, (hs if keep else None, h)

    def backward(self, p, x, cache, dout):
        hs, hT = cache
        dout = dout * self.scale
        grads = {"W_out": torch.bmm(hT.transpose(1, 2), dout)}
        dh = torch.bmm(dout, p["W_out"].transpose(1, 2))
        K, B, H = dh.shape
        T = len(hs) - 1
        w = p["w"].unsqueeze(1)
        dA = torch.empty(K, B, T, H, dtype=dh.dtype, device=dh.device)
        for t in range(T - 1, -1, -1):
            h = hs[t + 1]
            da = dh * (1 - h * h)
            dA[:, :, t] = da
            dh = da * w
        hprev = torch.stack(hs[:-1], dim=2)
        grads["U"] = _input_grad(x, dA)
        grads["w"] = (hprev * dA).sum((1, 2))
        return grads


FAMILIES: dict[str, type[Family]] = {"gru": GRU, "lstm": LSTM, "rnn": RNN, "diag_rnn": DiagRNN}


def make_family(name: str, n_in: int, hidden: int, n_out: int, bias: bool = True) -> Family:
    return FAMILIES[name](n_in, hidden, n_out, bias)
