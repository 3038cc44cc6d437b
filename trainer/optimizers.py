"""Per-member optimizers on the flat ``(K, P)`` buffer.

Each ``step`` returns the proposed update ``delta`` (K, P) (W^{k+1} = W^k + delta); the loop
masks it for diverged/stopped members and applies it in place.

* ``sgd`` - W <- W - eta grad E (eq. 17), eta per member.
* ``projected_gd`` - the SGD step followed by projection of each unit's parameters onto a ball
  around their initial values (rnn-gd-convergence paper): radius rho/sqrt(m) for recurrent
  parameters and rho_u/sqrt(m) for input parameters, m = hidden width. A "unit" is one column of
  a weight matrix (one gate of one hidden unit; for ``diag_rnn`` the scalar w_i and the column
  U[:, i]). Biases and the readout are not projected.
* ``adam`` - Adam with per-member eta, shared betas, eps 1e-8 (an extra, not in the papers).
* ``prox_sgd`` - beyond the papers: the SGD step on the data loss only, followed by the proximal
  map of eta * lambda * R (``Penalty.prox``): soft-thresholding for L1 (exact zeros), the exact
  prox of h_alpha for smoothing L1, v / (1 + 2 eta lambda) for L2.
"""

from __future__ import annotations

import math

import torch

from trainer.config import PackConfig
from trainer.models import Family

Tensor = torch.Tensor


class Optimizer:
    def __init__(self, config: PackConfig, family: Family, flat0: Tensor):
        members = config.members
        self.kind = config.optimizer
        dt, dev = flat0.dtype, flat0.device
        self.lr = torch.as_tensor([[m.lr] for m in members], dtype=dt, device=dev)
        self.neg_lr = -self.lr
        if self.kind == "adam":
            self.b1, self.b2 = config.adam_betas
            self.m = torch.zeros_like(flat0)
            self.v = torch.zeros_like(flat0)
            self.t = 0
        if self.kind == "projected_gd":
            self.flat0 = flat0.clone()
            m = family.H
            self.groups = []  # (slice, unit-count, radius (K,1,1))
            for s in family.layout.specs:
                if s.kind not in ("in", "rec"):
                    continue
                r = [(mc.rho if s.kind == "rec" else mc.rho_u) / math.sqrt(m) for mc in members]
                units = s.shape[-1]
                self.groups.append((family.layout.slice(s.name), units,
                                    torch.as_tensor(r, dtype=dt, device=dev).view(-1, 1, 1)))

    def step(self, flat: Tensor, grad: Tensor) -> Tensor:
        if self.kind in ("sgd", "prox_sgd"):
            return self.neg_lr * grad
        if self.kind == "adam":
            self.t += 1
            self.m.mul_(self.b1).add_(grad, alpha=1 - self.b1)
            self.v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
            mh = self.m / (1 - self.b1 ** self.t)
            vh = self.v / (1 - self.b2 ** self.t)
            return self.neg_lr * mh / (vh.sqrt() + 1e-8)
        new = flat + self.neg_lr * grad
        self.project(new)
        return new - flat

    def project(self, flat: Tensor) -> None:
        """In place: clip every unit's deviation from its initial parameters to its radius."""
        K = flat.shape[0]
        for sl, units, radius in self.groups:
            d = (flat[:, sl] - self.flat0[:, sl]).view(K, -1, units)
            norm = torch.linalg.vector_norm(d, dim=1, keepdim=True)
            scale = torch.clamp(radius / torch.clamp(norm, min=1e-300), max=1.0)
            flat[:, sl] = (self.flat0[:, sl].view(K, -1, units) + d * scale).reshape(K, -1)
