"""What training hands back: per-member traces as arrays, final metrics, diagnostics, weights."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainer.config import MemberConfig

#: Columns of the per-iteration trace, in this order (one row per recorded iteration).
TRACE_COLUMNS: tuple[str, ...] = (
    "step",           # update index k (0-based) the row describes: values at W^k, update to W^{k+1}
    "epoch",          # epoch the step belongs to (0-based)
    "loss",           # E on the batch: data loss + penalty
    "data_loss",      # data part of E on the batch
    "penalty",        # regularization part of E
    "grad_norm",      # ||dE/dW|| over all weights
    "grad_norm_out",  # ||dE/dW_out||
    "weight_norm",    # ||W^k|| over all weights
    "update_norm",    # ||W^{k+1} - W^k||
    "sparsity_out",   # share of |W_out| < 1e-5 (eq. 42)
    "sparsity_all",   # share of all weights with |w| < 1e-5
    "lr",             # learning rate used for the update
)

#: Columns of the per-epoch record.
EPOCH_COLUMNS: tuple[str, ...] = (
    "epoch",          # 0-based epoch index
    "train_metric",   # accuracy (classification) or MSE (regression, eq. 43) on the training split
    "test_metric",    # the same on the test split
    "train_loss",     # E on the full training set after the epoch
    "wall_time",      # seconds since training started (shared by the whole pack)
)

#: Keys of ``MemberResult.final``.
FINAL_KEYS: tuple[str, ...] = (
    "loss", "data_loss", "penalty", "train_metric", "test_metric",
    "sparsity_out", "sparsity_all", "weight_norm", "steps", "epochs", "wall_time",
)

#: Keys of ``MemberResult.diagnostics`` (the papers' theorems made checkable).
DIAGNOSTIC_KEYS: tuple[str, ...] = (
    "monotonicity_violations",  # Thm 1: count of E_{k+1} > E_k, full batch only (None otherwise)
    "max_relative_increase",    # Thm 1: largest (E_{k+1} - E_k) / |E_k|, full batch only
    "grad_norm_ratio",          # Thm 2: ||grad E|| final / initial
    "grad_norm_min_ratio",      # Thm 2: min ||grad E|| / initial
    "grad_norm_tail_trend",     # Thm 2: factor of the log-linear fit of ||grad E|| across the last 10%
    "weight_tail_distance",     # Thm 3: ||W^s - W^K||, s = first step of the last 10%
    "weight_tail_distance_rel", # Thm 3: the same relative to ||W^K||
    "update_norm_tail",         # mean ||W^{k+1}-W^k|| over the last 10% of steps
    "diverged",                 # loss became NaN/inf; the member stopped updating
    "diverged_at_step",         # step of divergence or -1
    "steps_to_sparsity",        # closed form: steps the penalty alone needs for median |W_out^0| < 1e-5
    "step_size_bound",          # (A2): 2(1 + D4) / (lambda C + 4 D4 + 2 D5), None where not computable
    "step_size_ok",             # (A2): 0 < eta < step_size_bound (None: n/a)
    "step_size_note",           # how the constants were obtained, or why n/a
)

#: Extra sparsity thresholds reported beside eq. 42's 1e-5 (final keys sparsity_out_<t>, sparsity_all_<t>).
SPARSITY_THRESHOLDS: tuple[float, ...] = (1e-5, 1e-3, 1e-2)

#: Columns of ``MemberResult.weight_path``: W_out at initialisation and at the end of every epoch.
WEIGHT_PATH_COLUMNS: tuple[str, ...] = ("step", "w_out_norm") + tuple(
    f"sparsity_out_{eps:g}" for eps in SPARSITY_THRESHOLDS)


@dataclass
class MemberResult:
    """Everything one member produced. Arrays are numpy, on the CPU."""

    index: int
    config: MemberConfig
    trace: dict[str, np.ndarray]
    epochs: dict[str, np.ndarray]
    final: dict[str, float]
    diagnostics: dict[str, Any]
    #: the final weights in the papers' notation (trainer.weights; exported when first read)
    weights: Mapping[str, np.ndarray] = field(default_factory=dict)
    #: WEIGHT_PATH_COLUMNS -> array (1 + epochs trained): updates done (``step``), ||W_out||, sparsity
    weight_path: dict[str, np.ndarray] = field(default_factory=dict)
    #: the member's output on ``Task.x_probe`` ``(P, n_outputs)``, or None
    probe: np.ndarray | None = None

    @property
    def diverged(self) -> bool:
        return bool(self.diagnostics.get("diverged", False))


@dataclass
class PackResult:
    """A trained pack. ``wall_time`` is shared by all members, not divided among them."""

    members: list[MemberResult]
    wall_time: float
    device: str
    family: str
    pack_size: int
    engine: str = "eager"  # "eager" or "fast/<backend>" (trainer.step)
