"""Comparison rows: the paper's Table 3/5 layout computed from the store's trial finals.

Aggregation (numpy): means over *completed* trials only (NULL/NaN skipped); ``std`` is the sample
standard deviation (ddof=1), ``None`` with fewer than two values.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

#: Metrics whose mean and std a comparison row reports.
COMPARE_METRICS: tuple[str, ...] = (
    "train_metric", "test_metric", "sparsity_out", "sparsity_all", "wall_time", "loss")
#: Diagnostics whose mean a comparison row reports.
DIAGNOSTIC_METRICS: tuple[str, ...] = ("monotonicity_violations", "grad_norm_ratio")


class VariantSummary(BaseModel):
    """One (experiment, variant[, configuration]) row; means over completed trials."""

    model_config = ConfigDict(from_attributes=True)

    experiment_id: str
    experiment_name: str
    variant: str
    params: dict[str, Any] | None = None  # the configuration, when compared by configuration
    n_trials: int
    n_completed: int
    n_diverged: int
    n_failed: int
    train_metric_mean: float | None = None
    train_metric_std: float | None = None
    test_metric_mean: float | None = None
    test_metric_std: float | None = None
    sparsity_out_mean: float | None = None
    sparsity_out_std: float | None = None
    sparsity_all_mean: float | None = None
    sparsity_all_std: float | None = None
    wall_time_mean: float | None = None
    wall_time_std: float | None = None
    loss_mean: float | None = None
    loss_std: float | None = None
    monotonicity_violations_mean: float | None = None
    grad_norm_ratio_mean: float | None = None


def summarize(names: dict[str, str], trials: list[dict[str, Any]], exp_ids: list[str], *,
              by_config: bool = False) -> list[VariantSummary]:
    """Group trial finals per (experiment, variant[, configuration]) in the order of
    ``exp_ids`` then variant name, and aggregate each group."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in trials:
        key = json.dumps(r["params"] or {}, sort_keys=True, default=str) if by_config else ""
        groups.setdefault((r["experiment_id"], r["variant"], key), []).append(r)
    order = {e: i for i, e in enumerate(dict.fromkeys(exp_ids))}
    out = []
    for exp_id, variant, key in sorted(groups, key=lambda k: (order[k[0]], k[1], k[2])):
        g = groups[(exp_id, variant, key)]
        done = [r for r in g if r["status"] == "completed"]
        row: dict[str, Any] = dict(
            experiment_id=exp_id, experiment_name=names[exp_id], variant=variant,
            params=json.loads(key) if by_config else None, n_trials=len(g), n_completed=len(done),
            n_diverged=sum(r["status"] == "diverged" for r in g),
            n_failed=sum(r["status"] == "failed" for r in g))
        for c in COMPARE_METRICS + DIAGNOSTIC_METRICS:
            vals = np.array([float(r[c]) for r in done if r[c] is not None], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            row[f"{c}_mean"] = float(vals.mean()) if vals.size else None
            if c in COMPARE_METRICS:
                row[f"{c}_std"] = float(vals.std(ddof=1)) if vals.size >= 2 else None
        out.append(VariantSummary.model_validate(row))
    return out


def compare(store, exp_ids: list[str], *, by_config: bool = False) -> list[VariantSummary]:
    """Comparison rows of these experiments (raises the store's ``NotFound`` naming unknown ids).

    ``by_config`` splits each variant by its searched parameters, so a grid search gives one row
    per grid point (mean ± std over that point's seeds and folds)."""
    exp_ids = list(dict.fromkeys(exp_ids))
    names, trials = store.trial_finals(exp_ids)
    return summarize(names, trials, exp_ids, by_config=by_config)
