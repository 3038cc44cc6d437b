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


def log_slope(values: np.ndarray) -> float:
    """The least-squares slope of log(values) against 0, 1, ..., n-1 (the degree-1 ``np.polyfit``, in
    closed form: sum (i - mean i)(y_i - mean y) / sum (i - mean i)^2, ~10x faster per call)."""
    y = np.log(values)
    i = np.arange(len(y)) - (len(y) - 1) / 2
    return float(np.dot(i, y - y.mean()) / np.dot(i, i))


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
        out["grad_norm_tail_trend"] = float(np.exp(log_slope(tail) * (len(tail) - 1)))
    else:
        out["grad_norm_tail_trend"] = None
    out["weight_tail_distance"] = tail_distance
    out["weight_tail_distance_rel"] = (tail_distance / final_weight_norm
                                       if tail_distance is not None and final_weight_norm > 0 else None)
    return out


#: Suprema of the activations over R (assumption A1): sigma, sigma', sigma'', tanh, tanh', tanh''.
ACTIVATION_SUPREMA = (1.0, 0.25, 1.0 / (6.0 * math.sqrt(3.0)), 1.0, 1.0, 4.0 / (3.0 * math.sqrt(3.0)))

def penalty_lipschitz(reg: str, alpha: float) -> float | None:
    """Lipschitz constant C of the penalty's derivative (eq. A26): 2 for L2 ((w^2)'' = 2), 1/alpha
    for smoothing L1 (eq. 16), 0 without a penalty; ``None`` for L1, whose derivative has none."""
    return {"none": 0.0, "l2": 2.0, "sl1": 1.0 / alpha}.get(reg)


def step_size_constants(*, N: float, D0: float, D1: float, D2: float) -> dict[str, float]:
    """D3, D4, D5 of the SL1-GRU paper's appendix (eq. A19-A30) from N, D0, D1, D2 (eq. 39)."""
    D3 = max(D0**3 * D1**2, D0**3 * D1**3 * D2, D0**2 * D1**2, D0 * D1**2, D0**3 * D1,
             D0**3 * D1**2 * D2, D0**2 * D1)
    D4 = max(4 * N * D0 * D2 * D3, 4 * N * D0 * D2**2 * D3**2)
    D5 = 0.5 * D0 * N * (D0**2 + D1 - D0 * D1) ** 2
    return {"N": float(N), "D0": D0, "D1": D1, "D2": D2, "D3": D3, "D4": D4, "D5": D5}


def step_size_condition(*, family: str, reg: str, optimizer: str, loss: str, task_kind: str, reduction: str,
                        lr: float, lam: float, alpha: float, n_train: int, full_batch: bool,
                        max_input_norm: float, hidden: int, max_w_out_norm: float) -> dict[str, object]:
    """Assumption (A2) of the SL1-GRU paper: 0 < eta < 2(1 + D4) / (lambda C + 4 D4 + 2 D5).

    The constants, as eq. 39 and the appendix define them, from what a run knows:
    D0 = max(max_{n,t} ||x_t^n||, sqrt(H)) -- the inputs are measured; ||h_{t-1}|| <= sqrt(H) is a
    bound (a GRU state is a convex combination of h_{t-1} and tanh values, h_0 = 0), since hidden
    states are not stored; D1 = 1, the largest activation supremum (A1), which also bounds the
    per-sample loss derivative sigma'_n for softmax cross-entropy (|p_k - y_k| <= 1) and eq. 11's
    sigmoid squared error (<= 1/4); D2 = max_k ||W_out^k|| over the recorded iterates (initial
    and end of every epoch); N = the training samples under ``reduction: sum`` (eq. 15), 1 under
    ``mean`` (each per-sample term is then scaled by 1/N); C as :func:`penalty_lipschitz`.

    Returns ``step_size_bound`` (the right-hand side), ``step_size_ok`` (eta below it) and
    ``step_size_note``; bound and ok are ``None`` ("n/a") where the condition cannot be computed:
    a family other than the GRU (the theorems are the GRU's), an optimizer other than plain
    gradient descent (eq. 17), L1 (its derivative has no Lipschitz constant C), regression with
    a linear output (sup |sigma'_n| over R is unbounded). The theorems assume full-batch descent;
    with minibatches the bound is still given and the note says it does not apply.
    """
    def na(why: str) -> dict[str, object]:
        return {"step_size_bound": None, "step_size_ok": None, "step_size_note": f"n/a: {why}"}

    if family != "gru":
        return na(f"the theorems are stated for the GRU, not {family}")
    if optimizer != "sgd":
        return na(f"the theorems are for plain gradient descent (eq. 17), not {optimizer}")
    C = penalty_lipschitz(reg, alpha)
    if C is None:
        return na(f"the derivative of the {reg} penalty has no Lipschitz constant C")
    if task_kind != "classification":
        return na("sup |sigma'_n| over R is unbounded for a linear output with squared error (D1)")
    D0 = max(float(max_input_norm), math.sqrt(hidden))
    D1 = max(ACTIVATION_SUPREMA)
    N = float(n_train) if reduction == "sum" else 1.0
    k = step_size_constants(N=N, D0=D0, D1=D1, D2=float(max_w_out_norm))
    bound = 2 * (1 + k["D4"]) / ((lam if reg != "none" else 0.0) * C + 4 * k["D4"] + 2 * k["D5"])
    note = "D0 uses ||h|| <= sqrt(H); D2 over the initial and epoch-end iterates"
    if not full_batch:
        note += "; the theorems assume full-batch descent (this run used minibatches)"
    return {"step_size_bound": float(bound), "step_size_ok": bool(0 < lr < bound), "step_size_note": note,
            "step_size_constants": {**k, "C": C}}
