"""Per-member regularizers on the flat ``(K, P)`` parameter buffer.

* ``l1``  - lambda * sum |w| (subgradient sign(w), 0 at 0)
* ``l2``  - lambda * sum w^2
* ``sl1`` - lambda * sum h_alpha(w), eq. 14/16: h = |w| for |w| >= alpha, w^2/(2 alpha) + alpha/2 inside
* ``tikhonov`` - LSTM only, lstm-tikhonov paper eq. 52-57 (see :func:`tikhonov_terms`)

Scope ``output`` penalises W_out (the paper's choice); ``all`` penalises every weight matrix
(biases are never penalised). Members of one pack may mix kinds: each kind's coefficient is a
``(K, P)`` tensor that is zero outside the members (and scope) that use it, so each member's
penalty only depends on its own row.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from trainer.config import MemberConfig
from trainer.models import Family

Tensor = torch.Tensor

#: beta of the Tikhonov bound: the paper's 17/161 and the numerical supremum of |grad G| (1).
TIKHONOV_BETA = {"paper": 17.0 / 161.0, "bound": 1.0}
#: alpha of eq. 52-57: max sigma'(x) = 1/4.
TIKHONOV_ALPHA = 0.25
#: Floor of the 1 - rho_h^2 denominator of R (outside the feasible region the
#: lambda_1 (rho_h^2 - 1)_+ term takes over).
TIKHONOV_DENOM_FLOOR = 1e-3


def h_alpha(w: Tensor, alpha) -> Tensor:
    """Smoothing L1 function of eq. 14, elementwise."""
    a = w.abs()
    return torch.where(a >= alpha, a, w * w / (2 * alpha) + alpha / 2)


def h_alpha_grad(w: Tensor, alpha) -> Tensor:
    """Derivative of h_alpha: sign(w) outside [-alpha, alpha], w/alpha inside."""
    return torch.where(w.abs() >= alpha, torch.sign(w), w / alpha)


def steps_to_threshold(kind: str, w0: float, lr: float, lam: float, alpha: float, eps: float) -> float:
    """Plain-SGD steps the penalty *alone* needs to bring a weight from |w0| below ``eps``.

    The data gradient is ignored (the best case for sparsity). Per step the penalty moves w by
    ``-lr * lam * dR/dw``: L1 by ``lr*lam`` (``(|w0| - eps) / (lr*lam)`` steps); L2 multiplies it by
    ``1 - 2 lr lam``; smoothing L1 (eq. 14) moves it by ``lr*lam`` down to ``alpha``, then multiplies it
    by ``1 - lr lam / alpha`` inside the band. ``inf`` when the penalty cannot get there (no penalty,
    or a step that overshoots: the closed form does not apply).
    """
    a = abs(float(w0))
    step = lr * lam
    if a < eps:
        return 0.0
    if step <= 0 or kind not in ("l1", "l2", "sl1"):
        return math.inf
    if kind == "l1":
        return (a - eps) / step
    if kind == "l2":
        q = 2 * step
        return math.log(a / eps) / -math.log1p(-q) if q < 1 else math.inf
    q = step / alpha
    if q >= 1:
        return math.inf
    outside = max(0.0, (a - alpha) / step)
    inside = math.log(min(a, alpha) / eps) / -math.log1p(-q)
    return outside + inside


def resolve_beta(beta) -> float:
    return TIKHONOV_BETA[beta] if isinstance(beta, str) else float(beta)


class Penalty:
    """Penalty value and gradient of a pack, member by member."""

    def __init__(self, family: Family, members: list[MemberConfig], dtype, device):
        lay = family.layout
        self.family = family
        K = len(members)
        out_mask = lay.mask(("out",))
        weight_mask = lay.mask(("in", "rec", "out"))
        scope_all = np.array([m.scope == "all" for m in members], dtype=bool)
        # closed-form penalties only touch the columns some member penalises (W_out alone by default)
        used = np.flatnonzero(weight_mask if scope_all.any() else out_mask)
        self.cols = slice(int(used[0]), int(used[-1]) + 1) if len(used) else slice(0, 0)
        scope = np.where(scope_all[:, None], weight_mask[self.cols], out_mask[self.cols]).astype(float)

        def coef(kind):
            lam = np.array([m.lam if m.reg == kind else 0.0 for m in members])
            if not np.any(lam):
                return None
            return torch.as_tensor(lam[:, None] * scope, dtype=dtype, device=device)

        self.c_l1, self.c_l2, self.c_sl1 = coef("l1"), coef("l2"), coef("sl1")
        self.alpha = torch.as_tensor([[m.alpha] for m in members], dtype=dtype, device=device)
        self.has_tik = any(m.reg == "tikhonov" for m in members)
        if self.has_tik:
            t = lambda v: torch.as_tensor(v, dtype=dtype, device=device)  # noqa: E731
            on = np.array([m.reg == "tikhonov" for m in members], dtype=float)
            self.t_lamS = t(on * np.array([m.lam for m in members]))
            self.t_lam1 = t(on * np.array([m.tikhonov_lambda1 for m in members]))
            self.t_lam2 = t(on * np.array([m.tikhonov_lambda2 for m in members]))
            self.t_beta = t(np.array([resolve_beta(m.tikhonov_beta) for m in members]))
            self.t_spectral = torch.as_tensor([m.tikhonov_norm == "spectral" for m in members], device=device)
        self.K = K

    def value_and_grad(self, flat: Tensor, need_grad: bool = True, include_tikhonov: bool = True):
        """Returns (penalty (K,), [(column slice, gradient (K, cols)), ...]); add each part in place.

        ``include_tikhonov=False`` leaves the Tikhonov term out (the fast step differentiates it
        together with the data loss)."""
        pen = torch.zeros(flat.shape[0], dtype=flat.dtype, device=flat.device)
        grad = None
        full = flat
        flat = flat[:, self.cols]
        if self.c_l1 is not None:
            pen = pen + (self.c_l1 * flat.abs()).sum(1)
            if need_grad:
                grad = self.c_l1 * torch.sign(flat)
        if self.c_l2 is not None:
            pen = pen + (self.c_l2 * flat * flat).sum(1)
            if need_grad:
                g = self.c_l2 * (2 * flat)
                grad = g if grad is None else grad + g
        if self.c_sl1 is not None:
            pen = pen + (self.c_sl1 * h_alpha(flat, self.alpha)).sum(1)
            if need_grad:
                g = self.c_sl1 * h_alpha_grad(flat, self.alpha)
                grad = g if grad is None else grad + g
        grads = [] if grad is None else [(self.cols, grad)]
        flat = full
        if self.has_tik and include_tikhonov:
            if need_grad:
                with torch.enable_grad():
                    leaf = flat.detach().requires_grad_(True)
                    r = self.tikhonov(leaf)
                    (g,) = torch.autograd.grad(r.sum(), leaf)
                r = r.detach()
                grads.append((slice(0, flat.shape[1]), g))
            else:
                r = self.tikhonov(flat)
            pen = pen + r
        return pen, grads

    def prox(self, v: Tensor, lr: Tensor) -> Tensor:
        """The proximal map of lr * R per member (``prox_sgd``, beyond the papers), in place on ``v``
        (K, P); ``lr`` is (K, 1). argmin_u 1/2 (u - v)^2 + lr lam h(u), elementwise:

        * L1: soft-thresholding sign(v) max(|v| - lr lam, 0) - exact zeros;
        * smoothing L1 (eq. 14): v - lr lam sign(v) when that stays outside [-alpha, alpha], else
          v / (1 + lr lam / alpha) (the quadratic part's prox; it shrinks but never reaches 0);
        * L2: v / (1 + 2 lr lam).
        """
        w = v[:, self.cols]
        if self.c_l1 is not None:
            t = lr * self.c_l1
            w = torch.where(t > 0, torch.sign(w) * torch.clamp(w.abs() - t, min=0), w)
        if self.c_sl1 is not None:
            t = lr * self.c_sl1
            outside = w.abs() - t >= self.alpha
            w = torch.where(t > 0, torch.where(outside, w - t * torch.sign(w), w / (1 + t / self.alpha)), w)
        if self.c_l2 is not None:
            w = w / (1 + 2 * lr * self.c_l2)
        v[:, self.cols] = w
        return v

    def tikhonov_rho_h(self, flat: Tensor) -> Tensor:
        """rho_h (K,) of every member (meaningful for the tikhonov members): the paper's feasible
        region is rho_h < 1, where 1 - rho_h^2 > 0 and R is finite without the floor."""
        return tikhonov_parts(self.family.layout.views(flat), self.family.H, self.t_beta, self.t_spectral)["rho_h"]

    def feasible_scale(self, flat: Tensor, target: float = 0.9) -> Tensor:
        """Per member, the factor c in (0, 1] such that rho_h(c W) <= ``target`` (bisection; rho_h
        grows with the weights): multiply init_scale by it to start inside the feasible region."""
        lo = torch.zeros(flat.shape[0], dtype=flat.dtype, device=flat.device)
        hi = torch.ones_like(lo)
        ok = self.tikhonov_rho_h(flat) <= target
        for _ in range(40):
            mid = (lo + hi) / 2
            inside = self.tikhonov_rho_h(flat * mid[:, None]) <= target
            lo = torch.where(inside, mid, lo)
            hi = torch.where(inside, hi, mid)
        return torch.where(ok, torch.ones_like(lo), lo)

    def tikhonov(self, flat: Tensor) -> Tensor:
        p = self.family.layout.views(flat)
        return tikhonov_terms(p, self.family.H, self.t_beta, self.t_lamS, self.t_lam1, self.t_lam2,
                              self.t_spectral)


def _norm(W: Tensor, spectral: Tensor) -> Tensor:
    """Per-member matrix norm of (K, a, b): spectral where ``spectral`` (K,) is true, else Frobenius."""
    fro = torch.linalg.matrix_norm(W, ord="fro")
    return torch.where(spectral, torch.linalg.matrix_norm(W, ord=2), fro)


def tikhonov_parts(p: dict[str, Tensor], H: int, beta: Tensor, spectral: Tensor) -> dict[str, Tensor]:
    """rho_x, rho_h and the norms of DESIGN.md's eq. 52-57 for an LSTM pack (gates [i, f, c~, o])."""
    Wx, Wh = p["Wx"], p["Wh"]
    g = lambda W, k: W[..., k * H:(k + 1) * H]  # noqa: E731
    n = lambda W: _norm(W, spectral)  # noqa: E731
    a = TIKHONOV_ALPHA
    gx = a * n(g(Wx, 1)) + beta * (n(g(Wx, 0)) + n(g(Wx, 2)))
    gh = a * n(g(Wh, 1)) + beta * (n(g(Wh, 0)) + n(g(Wh, 2)))
    Woh, Wox = n(g(Wh, 3)), n(g(Wx, 3))
    e = torch.exp(1 - beta * Woh)
    s2 = math.sqrt(2.0)
    rho_x = s2 * (gx + s2 * (beta * gx * Woh + Wox) / e)
    rho_h = s2 * (gh + beta * gh * Woh / e)
    return {"rho_x": rho_x, "rho_h": rho_h, "W_oh": Woh, "W_hy": n(p["W_out"])}


def tikhonov_terms(p, H, beta, lamS, lam1, lam2, spectral) -> Tensor:
    """lam_S ||W_hy||^2 rho_x^2 / max(1 - rho_h^2, floor) + lam1 (rho_h^2 - 1)_+ + lam2 (beta ||W_oh|| - 1)_+."""
    t = tikhonov_parts(p, H, beta, spectral)
    denom = torch.clamp(1 - t["rho_h"] ** 2, min=TIKHONOV_DENOM_FLOOR)
    R = t["W_hy"] ** 2 * t["rho_x"] ** 2 / denom
    return (lamS * R + lam1 * torch.relu(t["rho_h"] ** 2 - 1)
            + lam2 * torch.relu(beta * t["W_oh"] - 1))
