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
        scope = np.stack([weight_mask if m.scope == "all" else out_mask for m in members]).astype(float)
        # closed-form penalties only touch the columns some member penalises (W_out alone by default)
        used = np.flatnonzero(scope.any(0))
        self.cols = slice(int(used[0]), int(used[-1]) + 1) if len(used) else slice(0, 0)
        scope = scope[:, self.cols]

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
