"""A trained pack's buffers turned into its :class:`PackResult`, one :class:`MemberResult` per member.

Both engines end here. Everything that can be computed for all K members at once is (sparsities at
every threshold, weight norms, the final scalars, the member-major trace, epoch and W_out-path
arrays); the loop over members only slices those arrays and builds its dicts.
A member's arrays are views of pack-wide arrays, one block per member, never shared between two
members (pickling a view, as Ray does, copies only the member's block). At K = 16,384 this is what
keeps a GPU pack's result from costing more host time than its training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from trainer.config import PackConfig
from trainer.diagnostics import convergence_diagnostics, step_size_condition
from trainer.regularizers import steps_to_threshold
from trainer.result import (DIAGNOSTIC_KEYS, EPOCH_COLUMNS, FINAL_KEYS, SPARSITY_THRESHOLDS, TRACE_COLUMNS,
                            WEIGHT_PATH_COLUMNS, MemberResult, PackResult)
from trainer.trace import SPARSITY_EPS, STEP_STATS, TraceRecorder
from trainer.weights import ExportedWeights

if TYPE_CHECKING:
    from trainer.train import _Pack

_DIAGNOSTIC_KEYS = frozenset(DIAGNOSTIC_KEYS)


def assemble(st: "_Pack", config: PackConfig, recorder: TraceRecorder, epoch_rows: list[dict], diverged: np.ndarray,
             div_step: np.ndarray, stopped_rows: list, stopped_epochs: list, total_steps: int,
             wall: float) -> PackResult:
    """The pack's result: each member's trace up to where it stopped (diverged, pruned or the end),
    its epochs, final metrics, diagnostics, weights in the papers' notation, W_out path and probe."""
    K = st.K
    stats, steps = recorder.arrays()
    flat_np = st.flat.detach().cpu().numpy()  # the pack's dtype: on a CPU, the buffer itself
    n_rows, n_updates, n_epochs = _member_extent(K, len(epoch_rows), steps, diverged, div_step, stopped_rows,
                                                 stopped_epochs, total_steps)
    trace = _member_major_trace(stats, steps, config.trace_every)
    by_col = {c: _member_major([r[c] for r in epoch_rows], K) for c in (*EPOCH_COLUMNS, "_data_loss", "_penalty")}
    path_stats = np.ascontiguousarray(np.stack([st.w_out_path0] + [r["_w_out"] for r in epoch_rows]).transpose(2, 1, 0))
    path_steps = _member_major([np.zeros(K, dtype=np.int64)] + [r["_steps"] for r in epoch_rows], K).astype(np.int64)
    finals, tail_distance = _final_columns(st, by_col, n_updates, n_epochs, wall)
    probe = _probe_outputs(st)
    # (A2)'s D2: the largest ||W_out|| over each member's recorded iterates (NaN ones skipped)
    max_w_out_norm = np.fmax.accumulate(path_stats[:, WEIGHT_PATH_COLUMNS.index("w_out_norm") - 1], axis=1)
    rho_end = (st.penalty.tikhonov_rho_h(st.flat).cpu().numpy() if st.tikhonov_init is not None else None)
    lr = np.array([m.lr for m in config.members], dtype=np.float64)
    n_kept = np.searchsorted(trace["_sel"], n_rows)  # each member's trace rows that survive the decimation
    members = []
    for k, mc in enumerate(config.members):
        n_tr, n_ep = int(n_kept[k]), int(n_epochs[k])
        member_trace = {c: trace[c][k, :n_tr] for c in STEP_STATS}
        member_trace.update(step=trace["step"][:n_tr].copy(), epoch=trace["epoch"][:n_tr].copy(),
                            lr=np.full(n_tr, lr[k]))
        final = dict(zip(finals["keys"], finals["rows"][k]))
        path = {"step": path_steps[k, :n_ep + 1]}
        path.update((col, path_stats[k, i, :n_ep + 1]) for i, col in enumerate(WEIGHT_PATH_COLUMNS[1:]))
        pruned = stopped_rows[k] is not None
        diagnostics = _diagnostics(st, config, k, mc, stats, n_rows[k], n_updates[k], final,
                                   None if tail_distance is None or diverged[k] or pruned else float(tail_distance[k]),
                                   float(max_w_out_norm[k, n_ep]), bool(diverged[k]), int(div_step[k]), pruned,
                                   rho_end)
        members.append(MemberResult(index=k, config=mc, trace={c: member_trace[c] for c in TRACE_COLUMNS},
                                    epochs={c: by_col[c][k, :n_ep] for c in EPOCH_COLUMNS}, final=final,
                                    diagnostics=diagnostics, weights=ExportedWeights(st.family, flat_np[k]),
                                    weight_path=path, probe=None if probe is None else probe[k]))
    return PackResult(members=members, wall_time=wall, device=str(st.device), family=config.family, pack_size=K)


def _member_extent(K, n_epoch_rows, steps, diverged, div_step, stopped_rows, stopped_epochs, total_steps):
    """Per member: trace rows (a diverged member keeps the row of the step that diverged), updates
    done, and epochs trained."""
    n_rows = np.full(K, total_steps, dtype=np.int64)
    n_updates = n_rows.copy()
    n_epochs = np.full(K, n_epoch_rows, dtype=np.int64)
    for k in np.flatnonzero(np.asarray([s is not None for s in stopped_rows], dtype=bool)):
        n_rows[k] = n_updates[k] = stopped_rows[k]
        n_epochs[k] = stopped_epochs[k] + 1
    for k in np.flatnonzero(diverged):
        n_rows[k], n_updates[k] = div_step[k] + 1, div_step[k]
        n_epochs[k] = int(steps[div_step[k], 1]) + 1 if len(steps) else 1
    return n_rows, n_updates, np.minimum(n_epochs, n_epoch_rows)


def _member_major(columns: list[np.ndarray], K: int) -> np.ndarray:
    """(K, n) from n arrays of shape (K,), contiguous per member."""
    if not columns:
        return np.zeros((K, 0))
    return np.ascontiguousarray(np.stack(columns).T)


def _member_major_trace(stats: np.ndarray, steps: np.ndarray, every: int) -> dict[str, np.ndarray]:
    """The recorded steps decimated to every ``every``-th one: each statistic as (K, kept steps), the
    shared step and epoch columns, and ``_sel``, the kept rows."""
    sel = np.arange(len(steps)) if every <= 1 else np.flatnonzero(steps[:, 0] % every == 0)
    kept = np.ascontiguousarray(stats[sel].transpose(2, 1, 0))  # (K, statistics, kept steps)
    out = {c: kept[:, i] for i, c in enumerate(STEP_STATS)}
    out.update(step=steps[sel, 0], epoch=steps[sel, 1], _sel=sel)
    return out


def _final_columns(st: "_Pack", by_col: dict[str, np.ndarray], n_updates: np.ndarray, n_epochs: np.ndarray,
                   wall: float) -> tuple[dict, np.ndarray | None]:
    """``FINAL_KEYS`` (and the sparsities at every threshold) of all members as Python scalars:
    the metrics of the last epoch each member trained (NaN before any; ``by_col``: the epoch columns,
    member-major), sparsities and norms of the final weights; and Thm 3's ||W^K - W^s|| of every
    member (None without a W^s)."""
    K = st.K
    cols: dict[str, list] = {}
    members = np.arange(K)
    last = np.maximum(n_epochs - 1, 0)
    for key, col in (("loss", "train_loss"), ("data_loss", "_data_loss"), ("penalty", "_penalty"),
                     ("train_metric", "train_metric"), ("test_metric", "test_metric")):
        if by_col[col].shape[1]:
            values = by_col[col][members, last].astype(np.float64)
            cols[key] = np.where(n_epochs > 0, values, np.nan).tolist()
        else:
            cols[key] = [float("nan")] * K
    norms, sparse_out, sparse_all, tail_distance = _weight_summaries(st.flat, st.w_tail, st.out_sl,
                                                                     st.weight_idx.cpu().numpy())
    cols.update(sparsity_out=sparse_out[SPARSITY_EPS].tolist(), sparsity_all=sparse_all[SPARSITY_EPS].tolist(),
                weight_norm=norms.tolist(), steps=n_updates.tolist(), epochs=n_epochs.tolist(),
                wall_time=[float(wall)] * K)
    for eps in SPARSITY_THRESHOLDS:
        cols[f"sparsity_out_{eps:g}"] = sparse_out[eps].tolist()
        cols[f"sparsity_all_{eps:g}"] = sparse_all[eps].tolist()
    assert set(FINAL_KEYS) <= cols.keys()
    return {"keys": tuple(cols), "rows": list(zip(*cols.values()))}, tail_distance


def _diagnostics(st: "_Pack", config: PackConfig, k: int, mc, stats: np.ndarray, n_rows: int, n_updates: int,
                 final: dict, tail_distance: float | None, max_w_out_norm: float, diverged: bool, div_step: int,
                 pruned: bool, rho_end) -> dict:
    """Member k's diagnostics: the convergence theorems on its trace, divergence and pruning, the
    closed-form steps to sparsity, (A2)'s step-size condition and, for Tikhonov, rho_h."""
    un = stats[:n_updates, STEP_STATS.index("update_norm"), k]
    tail = un[-max(1, len(un) // 10):] if len(un) else un
    out = {
        **convergence_diagnostics(stats[:n_rows, STEP_STATS.index("loss"), k],
                                  stats[:n_rows, STEP_STATS.index("grad_norm"), k], full_batch=st.full_batch,
                                  tail_distance=tail_distance, final_weight_norm=final["weight_norm"]),
        "update_norm_tail": float(tail.mean()) if len(tail) else float("nan"),
        "diverged": diverged,
        "diverged_at_step": div_step if diverged else -1,
        "pruned": pruned,
        "median_abs_w_out_init": float(st.median_out0[k]),
        "steps_to_sparsity": steps_to_threshold(mc.reg, st.median_out0[k], mc.lr, mc.lam, mc.alpha, SPARSITY_EPS),
    }
    if rho_end is not None and mc.reg == "tikhonov":
        out.update(tikhonov_rho_h_init=float(st.tikhonov_init["rho_h"][k]), tikhonov_rho_h_final=float(rho_end[k]),
                   tikhonov_feasible_init_scale=float(st.tikhonov_init["feasible_init_scale"][k]))
    out.update(step_size_condition(
        family=config.family, reg=mc.reg, optimizer=config.optimizer, loss=config.loss,
        task_kind=st.task.kind, reduction=config.reduction, lr=mc.lr, lam=mc.lam, alpha=mc.alpha,
        n_train=st.x_train.shape[0], full_batch=st.full_batch, max_input_norm=st.max_input_norm,
        hidden=config.hidden, max_w_out_norm=max_w_out_norm))
    assert _DIAGNOSTIC_KEYS <= out.keys()
    return out


def _weight_summaries(flat: torch.Tensor, tail: torch.Tensor | None, out_sl: slice, weight_idx: np.ndarray,
                      rows: int = 128):
    """Per row of the pack's ``flat``, in float64: ||w|| (:func:`_row_norms`), the shares of |W_out|
    and of all weights below each threshold of :data:`SPARSITY_THRESHOLDS` (eq. 42), and ||w - tail||
    (None without ``tail``). ``rows`` rows at a time, so that each pass stays in the cache (a pack-sized
    float64 copy would be K x P doubles: 440 MB at K = 16,384 on the Iris shape, and most of the
    assembly's time). All weights = every column less the few that are not weights (the biases)."""
    K, P = flat.shape
    other_idx = np.setdiff1d(np.arange(P), weight_idx)
    norms = np.empty(K)
    distance = None if tail is None else np.empty(K)
    out_share = {eps: np.empty(K) for eps in SPARSITY_THRESHOLDS}
    all_share = {eps: np.empty(K) for eps in SPARSITY_THRESHOLDS}
    for a in range(0, K, rows):
        block = flat[a:a + rows].detach().to("cpu", torch.float64).numpy()
        norms[a:a + rows] = _row_norms(block)
        magnitude = np.abs(block)
        w_out, others = magnitude[:, out_sl], magnitude[:, other_idx]
        for eps in SPARSITY_THRESHOLDS:
            out_share[eps][a:a + rows] = np.count_nonzero(w_out < eps, axis=1) / w_out.shape[1]
            small = np.count_nonzero(magnitude < eps, axis=1) - np.count_nonzero(others < eps, axis=1)
            all_share[eps][a:a + rows] = small / len(weight_idx)
        if tail is not None:
            with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in diverged rows, never read
                distance[a:a + rows] = _row_norms(block - tail[a:a + rows].detach().to("cpu", torch.float64).numpy())
    return norms, out_share, all_share, distance


def _row_norms(flat: np.ndarray) -> np.ndarray:
    """||w|| of each row of ``flat`` (float64); a row with entries of 1e150 or more (or NaN) is scaled by
    its largest entry first, so that squaring cannot overflow."""
    with np.errstate(over="ignore"):  # such rows are computed again below
        norms = np.sqrt(np.sum(np.square(flat), axis=1))
    for k in np.flatnonzero(~np.all(np.abs(flat) < 1e150, axis=1)):
        peak = np.abs(flat[k]).max()
        norms[k] = np.linalg.norm(flat[k] / peak) * peak
    return norms


@torch.no_grad()
def _probe_outputs(st: "_Pack") -> np.ndarray | None:
    """Every member's output on ``task.x_probe`` ``(K, P, n_outputs)``, in the target's units
    (a scaled target is scaled back), or None when the task has no probe."""
    if st.x_probe is None:
        return None
    out = st.family.forward(st.p, st.x_probe)[0].detach().to(torch.float64).cpu().numpy()
    meta = st.task.meta or {}
    if meta.get("target_scaled"):
        out = out * np.asarray(meta["target_std"]) + np.asarray(meta["target_mean"])
    return out
