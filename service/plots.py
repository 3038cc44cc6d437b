"""Headless matplotlib figures as PNG bytes: pure functions from arrays to images.

- :func:`convergence_png` -- mean +- std bands over seeds of E, ||grad E||, ||W|| per variant
  (the SL1-GRU paper's Fig. 6);
- :func:`sparsity_png` -- sparsity over iterations per variant (Fig. 3b);
- :func:`grid_heatmap_png` -- a metric over a 2-D hyperparameter grid (Fig. 5);
- :func:`pareto_png` and :func:`pareto_front` -- non-dominated trials of two objectives.

Every function takes ``width`` and ``height`` in pixels and returns a PNG of exactly that size.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: Axis labels of the trace columns the figures use.
METRIC_LABELS: dict[str, str] = {
    "loss": "loss E",
    "data_loss": "data loss",
    "penalty": "penalty",
    "grad_norm": r"$\|\partial E/\partial W\|$",
    "grad_norm_out": r"$\|\partial E/\partial W_{out}\|$",
    "weight_norm": r"$\|W\|$",
    "update_norm": r"$\|W^{k+1}-W^k\|$",
    "sparsity_out": r"sparsity of $W_{out}$",
    "sparsity_all": "sparsity (all weights)",
}

#: A variant's curves: ``steps`` (n,) and, per metric, a (n_seeds, n) array.
Curves = tuple[np.ndarray, Mapping[str, np.ndarray]]

MIN_PIXELS, MAX_PIXELS = 64, 4096


def _figure(width: int, height: int, dpi: int) -> Figure:
    if not (MIN_PIXELS <= width <= MAX_PIXELS and MIN_PIXELS <= height <= MAX_PIXELS):
        raise ValueError(f"width and height must be within [{MIN_PIXELS}, {MAX_PIXELS}] pixels")
    if not 10 <= dpi <= 600:
        raise ValueError("dpi must be within [10, 600]")
    return Figure(figsize=(width / dpi, height / dpi), dpi=dpi)


def _png(fig: Figure, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)  # no bbox_inches: the pixel size stays exact
    return buf.getvalue()


def _empty(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over seeds (axis 0), ignoring NaNs; a single seed has std 0."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(arr, axis=0)
            std = np.nanstd(arr, axis=0) if arr.shape[0] > 1 else np.zeros(arr.shape[1])
    return mean, std


def _bands_on(ax, curves: Mapping[str, Curves], metric: str, log: bool) -> bool:
    drew = False
    for i, (variant, (steps, per_metric)) in enumerate(sorted(curves.items())):
        if metric not in per_metric:
            continue
        values = np.asarray(per_metric[metric], dtype=float)
        if values.size == 0:
            continue
        mean, std = band(values)
        x = np.asarray(steps, dtype=float)[: mean.shape[0]]
        color = f"C{i % 10}"
        n = values.shape[0] if values.ndim == 2 else 1
        ax.plot(x, mean, color=color, lw=1.2, label=f"{variant} (n={n})")
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.25, lw=0)
        drew = True
    if drew and log:
        lo = ax.get_ylim()[0]
        if lo > 0:
            ax.set_yscale("log")
    return drew


def convergence_png(curves: Mapping[str, Curves],
                    metrics: Sequence[str] = ("loss", "grad_norm", "weight_norm"), *,
                    width: int = 1200, height: int = 400, dpi: int = 100, log: bool = False,
                    title: str | None = None) -> bytes:
    """One panel per metric, one mean +- std band per variant (Fig. 6)."""
    fig = _figure(width, height, dpi)
    axes = fig.subplots(1, max(1, len(metrics)), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        if not _bands_on(ax, curves, metric, log):
            _empty(ax)
        ax.set_xlabel("iteration k")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    if curves and any(ax.get_legend_handles_labels()[0] for ax in axes):
        axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _png(fig, dpi)


def sparsity_png(curves: Mapping[str, Curves], metric: str = "sparsity_out", *,
                 width: int = 800, height: int = 500, dpi: int = 100,
                 title: str | None = None) -> bytes:
    """Sparsity over iterations per variant, mean +- std over seeds (Fig. 3b)."""
    fig = _figure(width, height, dpi)
    ax = fig.subplots()
    if _bands_on(ax, curves, metric, log=False):
        ax.legend(fontsize="small")
    else:
        _empty(ax)
    ax.set_xlabel("iteration k")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _png(fig, dpi)


def _tick(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def grid_heatmap_png(x_values: Sequence, y_values: Sequence, values: np.ndarray, *,
                     x_label: str = "x", y_label: str = "y", value_label: str = "value",
                     width: int = 800, height: int = 600, dpi: int = 100,
                     title: str | None = None, annotate: bool = True) -> bytes:
    """Heatmap of ``values[i_y, i_x]`` over a hyperparameter grid (Fig. 5). NaN cells are blank."""
    fig = _figure(width, height, dpi)
    ax = fig.subplots()
    grid = np.asarray(values, dtype=float)
    if grid.size == 0 or not np.isfinite(grid).any():
        _empty(ax)
    else:
        if grid.shape != (len(y_values), len(x_values)):
            raise ValueError(f"values has shape {grid.shape}, expected {(len(y_values), len(x_values))}")
        im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis")
        fig.colorbar(im, ax=ax, label=value_label)
        ax.set_xticks(range(len(x_values)), [_tick(v) for v in x_values], rotation=45, ha="right")
        ax.set_yticks(range(len(y_values)), [_tick(v) for v in y_values])
        if annotate and grid.size <= 400:
            finite = grid[np.isfinite(grid)]
            mid = (finite.min() + finite.max()) / 2
            for (iy, ix), v in np.ndenumerate(grid):
                if np.isfinite(v):
                    ax.text(ix, iy, f"{v:.3g}", ha="center", va="center", fontsize="x-small",
                            color="black" if v > mid else "white")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _png(fig, dpi)


def pareto_front(points: np.ndarray, maximize: Sequence[bool] = (True, True)) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points`` (n, d); NaN rows are never on it."""
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[0] == 0:
        return np.zeros(pts.shape[0] if pts.ndim else 0, dtype=bool)
    signs = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)  # minimise signed values
    s = pts * signs
    valid = np.isfinite(s).all(axis=1)
    mask = valid.copy()
    for i in np.flatnonzero(valid):
        others = s[valid]
        dominated = np.any(np.all(others <= s[i], axis=1) & np.any(others < s[i], axis=1))
        mask[i] = not dominated
    return mask


def pareto_png(points: np.ndarray, groups: Sequence[str] | None = None, *,
               maximize: Sequence[bool] = (True, True), x_label: str = "objective 1",
               y_label: str = "objective 2", width: int = 800, height: int = 600, dpi: int = 100,
               title: str | None = None) -> bytes:
    """Scatter of all trials (coloured by ``groups``) with the Pareto front drawn as a step line."""
    fig = _figure(width, height, dpi)
    ax = fig.subplots()
    pts = np.asarray(points, dtype=float).reshape(-1, 2) if np.size(points) else np.zeros((0, 2))
    finite = np.isfinite(pts).all(axis=1)
    if not finite.any():
        _empty(ax)
    else:
        labels = np.asarray(groups if groups is not None else ["trials"] * len(pts), dtype=object)
        for i, g in enumerate(sorted(set(labels[finite]))):
            sel = finite & (labels == g)
            ax.scatter(pts[sel, 0], pts[sel, 1], s=18, alpha=0.7, color=f"C{i % 10}", label=str(g))
        front = pareto_front(pts, maximize)
        fp = pts[front]
        fp = fp[np.argsort(fp[:, 0])]
        ax.plot(fp[:, 0], fp[:, 1], "k--", lw=1, drawstyle="steps-post" if len(fp) > 1 else "default")
        ax.scatter(fp[:, 0], fp[:, 1], s=60, facecolors="none", edgecolors="k", label="Pareto front")
        ax.legend(fontsize="small")
    ax.set_xlabel(x_label + (" (max)" if maximize[0] else " (min)"))
    ax.set_ylabel(y_label + (" (max)" if maximize[1] else " (min)"))
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _png(fig, dpi)


__all__ = ["band", "convergence_png", "sparsity_png", "grid_heatmap_png", "pareto_front",
           "pareto_png", "METRIC_LABELS", "plt"]
