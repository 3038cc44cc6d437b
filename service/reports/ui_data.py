"""Data the browser pages need beyond :mod:`service.reports.figures`: which trials a figure uses
(shared with :func:`~service.reports.figures.curves`), per-epoch learning curves of those trials,
grid cells split by a third parameter, one row per trial for parallel coordinates, and a
trace window (a step range, down-sampled in SQL).

Everything here selects and aggregates; nothing draws. The pages (:mod:`service.ui`) turn the
results into Plotly figures and CSV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from service.reports import figures
from service.store import EPOCH_COLUMNS, TRACE_COLUMNS

#: Epoch columns a learning curve may show.
EPOCH_METRICS: tuple[str, ...] = tuple(c for c in EPOCH_COLUMNS if c != "epoch")


def chosen_trials(store, exp_id: str, mode: str = "best",
                  variants: list[str] | None = None) -> dict[str, list]:
    """Per curve label, the completed trials a figure draws: :func:`figures.chosen_trials` (the
    test evaluation of the selected configuration(s), never mixed with selection trials)."""
    return figures.chosen_trials(store, exp_id, mode, variants)


def learning_curves(store, exp_id: str, metrics: list[str], mode: str = "best",
                    variants: list[str] | None = None) -> figures.Curves:
    """Per variant ``(epochs, {metric: (n_trials, n_epochs) array})`` of the chosen trials'
    per-epoch records, cut to a common length."""
    unknown = [m for m in metrics if m not in EPOCH_METRICS]
    if unknown:
        raise figures.FigureError("metrics", f"unknown epoch metric(s) {unknown}; allowed: {list(EPOCH_METRICS)}")
    return figures.stacked_curves(store, exp_id, metrics, mode, variants, lambda t: store.get_epochs(t.id), "epoch")


@dataclass(frozen=True)
class Facet:
    """One panel of a faceted heatmap: the third parameter's value and the grid of cells."""

    value: Any
    xs: list
    ys: list
    grid: np.ndarray  # (len(ys), len(xs)), NaN where no trial


def searched_params(trials: list) -> list[str]:
    """Hyperparameter names in the order the trials first mention them."""
    names: list[str] = []
    for t in trials:
        names += [k for k in t.params if k not in names]
    return names


def grid_facets(store, exp_id: str, *, x: str | None = None, y: str | None = None,
                facet: str | None = None, metric: str = "test_metric", variant: str | None = None,
                agg: str = "mean") -> tuple[list[Facet], str | None, str | None, str | None]:
    """Heatmap panels of ``agg(metric)`` over (x, y), one per value of ``facet``.

    Without a facet this is :func:`figures.grid_cells` (one panel). With one, each panel is the
    same aggregation over the trials having that facet value. Defaults as ``grid_cells``; the
    facet defaults to the third searched parameter (``"none"`` turns it off)."""
    trials = figures.completed(store, exp_id, variant)
    searched = searched_params(trials)
    x = x or (searched[0] if searched else None)
    if y is None:
        others = [k for k in searched if k != x]
        y = others[0] if others else "variant"
    if facet is None:
        rest = [k for k in searched if k not in (x, y)]
        facet = rest[0] if rest else None
    elif facet == "none":
        facet = None
    if facet is not None and trials and facet != "variant" and facet not in searched:
        raise figures.FigureError("facet", f"{facet!r} was not searched; searched: {searched}")
    if facet is None:
        xs, ys, grid, x, y = figures.grid_cells(store, exp_id, x=x, y=y, metric=metric,
                                                variant=variant, agg=agg)
        return [Facet(None, xs, ys, grid)], x, y, None
    for name, v in (("x", x), ("y", y)):
        if v is not None and v != "variant" and trials and v not in searched:
            raise figures.FigureError(name, f"{v!r} was not searched; searched: {searched}")
    values = figures._sortable({t.variant if facet == "variant" else t.params.get(facet) for t in trials} - {None})
    xs, ys, _, _, _ = figures.grid_cells(store, exp_id, x=x, y=y, metric=metric, variant=variant, agg=agg)
    panels = []
    for fv in values:
        if facet == "variant":
            fx, fy, g, _, _ = figures.grid_cells(store, exp_id, x=x, y=y, metric=metric, variant=fv, agg=agg)
        else:
            fx, fy, g, _, _ = figures.grid_cells(store, exp_id, x=x, y=y, metric=metric, variant=variant,
                                                 agg=agg, where={facet: fv})
        grid = np.full((len(ys), len(xs)), np.nan)  # every panel on the axes of the whole grid
        for iy, yv in enumerate(fy):
            for ix, xv in enumerate(fx):
                grid[ys.index(yv), xs.index(xv)] = g[iy, ix]
        panels.append(Facet(fv, xs, ys, grid))
    return panels, x, y, facet


def trial_rows(store, exp_id: str, metrics: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """``(searched parameter names, one dict per completed trial)`` with ``id``, ``variant``,
    ``seed``, the parameters and the final ``metrics`` (None when missing): the rows of the
    parallel-coordinates chart."""
    trials = figures.completed(store, exp_id)
    names = searched_params(trials)
    rows = []
    for t in trials:
        row: dict[str, Any] = {"id": t.id, "variant": t.variant, "seed": t.seed}
        row.update({k: t.params.get(k) for k in names})
        row.update({m: figures.value(t, m) for m in metrics})
        rows.append(row)
    return names, rows


@dataclass(frozen=True)
class TraceWindow:
    """A step range of a trial's trace: the rows kept and how many the range holds."""

    columns: dict[str, np.ndarray]
    rows_in_range: int
    total_rows: int
    stride: int


def trace_window(store, trial_id: int, metrics: list[str], *, start: int | None = None,
                 stop: int | None = None, max_points: int = 2000) -> TraceWindow:
    """Rows with ``start <= step <= stop`` of a trial's trace, down-sampled in SQL to at most
    ``max_points`` by an even stride over the range (the range's last row always kept) --
    :meth:`Store.get_trace`'s rule applied to a window, so zooming in shows more detail."""
    unknown = [m for m in metrics if m not in TRACE_COLUMNS]
    if unknown:
        raise ValueError(f"unknown trace metric(s) {unknown}")
    if max_points < 2:
        raise ValueError("max_points must be >= 2")
    names = ["step"] + [m for m in dict.fromkeys(metrics) if m != "step"]
    from service.store.base import TP

    conds = [TP.c.trial_id == int(trial_id)]
    if start is not None:
        conds.append(TP.c.step >= int(start))
    if stop is not None:
        conds.append(TP.c.step <= int(stop))
    with store._read() as conn:
        total = int(conn.execute(sa.select(sa.func.count()).where(TP.c.trial_id == int(trial_id))).scalar_one())
        n = int(conn.execute(sa.select(sa.func.count()).where(*conds)).scalar_one())
        stride = max(1, math.ceil((n - 1) / (max_points - 1))) if n > max_points else 1
        cols = [TP.c[c] for c in names]
        if stride == 1:
            q = sa.select(*cols).where(*conds).order_by(TP.c.step)
        else:
            rn = sa.func.row_number().over(order_by=TP.c.step).label("rn")
            sub = sa.select(*cols, rn).where(*conds).subquery()
            q = (sa.select(*[sub.c[c] for c in names])
                 .where(sa.or_((sub.c.rn - 1) % stride == 0, sub.c.rn == n)).order_by(sub.c.step))
        rows = conn.execute(q).all()
    arr = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    return TraceWindow({c: arr[:, j] for j, c in enumerate(names)}, n, total, stride)
