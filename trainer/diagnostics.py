"""The convergence theorems of the SL1-GRU paper made checkable on one member's trace.

The theorems hold for *full-batch* gradient descent with a small enough step (assumptions
A1-A3): E(W^{k+1}) <= E(W^k) (Thm 1, eq. 36), ||grad E(W^k)|| -> 0 (Thm 2), W^k -> W* (Thm 3).

* Thm 1: with full batch, the number of steps where E rose and the largest relative rise
  (E_{k+1} - E_k) / |E_k|; with minibatches E is a different function each step, so both are
  ``None`` ("n/a"), never a count of minibatch wobbles.
* Thm 2: min and final ||grad E|| relative to the initial one, and the trend over the last 10% of
  the steps: the factor by which a least-squares line through log ||grad E|| changes across
  that tail (< 1 falling, > 1 growing).
* Thm 3: ||W^s - W^K|| with s the first step of the last 10% (absolute and relative to
  ||W^K||): how far the weights still moved over the tail (0 when they converged).
"""

from __future__ import annotations

import math

import numpy as np

TAIL = 0.1


def tail_start(n_steps: int) -> int:
    """The first step of the last ``TAIL`` share of ``n_steps`` updates."""
    return max(0, n_steps - max(1, int(math.ceil(TAIL * n_steps))))


def convergence_diagnostics(loss: np.ndarray, grad_norm: np.ndarray, *, full_batch: bool,
                            tail_distance: float | None, final_weight_norm: float) -> dict[str, float | int | None]:
    loss = np.asarray(loss, dtype=np.float64)
    gn = np.asarray(grad_norm, dtype=np.float64)
    out: dict[str, float | int | None] = {}
    if full_batch and len(loss) > 1:
        rise = np.diff(loss)
        rel = rise / np.maximum(np.abs(loss[:-1]), 1e-300)
        out["monotonicity_violations"] = int(np.sum(rise > 0))
        out["max_relative_increase"] = float(max(0.0, np.nanmax(rel))) if np.isfinite(rel).any() else None
    else:
        out["monotonicity_violations"] = None
        out["max_relative_increase"] = None
    finite = gn[np.isfinite(gn)]
    g0 = finite[0] if len(finite) else float("nan")
    ok = len(finite) > 0 and g0 > 0
    out["grad_norm_ratio"] = float(finite[-1] / g0) if ok else float("nan")
    out["grad_norm_min_ratio"] = float(finite.min() / g0) if ok else float("nan")
    tail = finite[tail_start(len(finite)):]
    if len(tail) >= 3 and np.all(tail > 0):
        slope = np.polyfit(np.arange(len(tail)), np.log(tail), 1)[0]
        out["grad_norm_tail_trend"] = float(np.exp(slope * (len(tail) - 1)))
    else:
        out["grad_norm_tail_trend"] = None
    out["weight_tail_distance"] = tail_distance
    out["weight_tail_distance_rel"] = (tail_distance / final_weight_norm
                                       if tail_distance is not None and final_weight_norm > 0 else None)
    return out
