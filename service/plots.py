"""Headless matplotlib figures as PNG bytes: pure functions from arrays to images.

- :func:`convergence_png` -- mean +- std bands over seeds of E, ||grad E||, ||W|| per variant
  (the SL1-GRU paper's Fig. 6);
- :func:`sparsity_png` -- sparsity over iterations per variant (Fig. 3b);
- :func:`grid_heatmap_png` -- a metric over a 2-D hyperparameter grid (Fig. 5);
- :func:`pareto_png` and :func:`pareto_front` -- non-dominated trials of two objectives;
- :func:`grid_facets_png` -- one heatmap per value of a third hyperparameter (never averaged away);
- :func:`learning_curves_png` -- train/test metric per epoch per variant, mean with a 95% CI;
- :func:`forest_png` -- paired differences against a reference with their 95% CIs.

Bands are the 95% confidence interval of the mean over seeds (Student t), clipped to the
metric's range (sparsity and accuracy in [0, 1], norms and losses >= 0). Curves that coincide
(within 0.2% of the panel's range) with an earlier one are drawn dashed with markers and
labelled "overlaps X".

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


#: The range a metric's values can take (bands are clipped to it).
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "sparsity_out": (0.0, 1.0), "sparsity_all": (0.0, 1.0), "grad_norm": (0.0, np.inf),
    "grad_norm_out": (0.0, np.inf), "weight_norm": (0.0, np.inf), "update_norm": (0.0, np.inf),
    "penalty": (0.0, np.inf), "train_metric": (0.0, 1.0), "test_metric": (0.0, 1.0),
}
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "v", "D", "x", "+", "*")


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


def ci_band(values: np.ndarray, value_range: tuple[float, float] = (-np.inf, np.inf),
            confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and the ``confidence`` CI of the mean over seeds (axis 0, Student t, NaNs ignored),
    clipped to ``value_range``; a single seed gives a zero-width band."""
    from scipy import stats

    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    mean, std = band(arr)
    n = np.sum(np.isfinite(arr), axis=0)
    with np.errstate(all="ignore"):
        t = np.where(n > 1, stats.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)), 0.0)
        half = np.where(n > 1, t * np.nan_to_num(std) * np.sqrt(n / np.maximum(n - 1, 1)) / np.sqrt(np.maximum(n, 1)),
                        0.0)
    lo, hi = value_range
    return mean, np.clip(mean - half, lo, hi), np.clip(mean + half, lo, hi)


def _styles(series: Mapping[str, np.ndarray]) -> dict[str, tuple[dict, str | None]]:
    """Per name: plot keywords and the earlier name whose curve it overlaps (None when it does not).
    Curves overlap when they differ nowhere by more than 0.2% of the panel's value range: drawn
    solid they would hide each other, so the later one is dashed with markers."""
    out: dict[str, tuple[dict, str | None]] = {}
    finite = [np.asarray(y, dtype=float)[np.isfinite(y)] for y in series.values()]
    finite = np.concatenate(finite) if finite else np.array([])
    tol = 2e-3 * float(np.ptp(finite)) if finite.size else 0.0
    seen: list[tuple[str, np.ndarray]] = []
    for i, name in enumerate(series):
        y = np.asarray(series[name], dtype=float)
        twin = next((m for m, other in seen if other.shape == y.shape
                     and np.allclose(other, y, rtol=0, atol=max(tol, 1e-12), equal_nan=True)), None)
        kw = {"color": f"C{i % 10}", "lw": 1.4, "ls": LINESTYLES[i % len(LINESTYLES)]}
        if twin is not None:
            kw.update(ls="--", marker=MARKERS[i % len(MARKERS)], markevery=(i, max(1, len(y) // 12)), ms=5, lw=1.0)
        out[name] = (kw, twin)
        seen.append((name, y))
    return out


def _bands_on(ax, curves: Mapping[str, Curves], metric: str, log: bool) -> bool:
    means, data = {}, {}
    for variant, (steps, per_metric) in sorted(curves.items()):
        if metric not in per_metric or np.asarray(per_metric[metric]).size == 0:
            continue
        values = np.asarray(per_metric[metric], dtype=float)
        data[variant] = (np.asarray(steps, dtype=float), values)
        means[variant] = band(values)[0]
    styles = _styles(means)
    for variant, (steps, values) in data.items():
        mean, lo, hi = ci_band(values, METRIC_RANGES.get(metric, (-np.inf, np.inf)))
        x = steps[: mean.shape[0]]
        kw, twin = styles[variant]
        n = values.shape[0] if values.ndim == 2 else 1
        label = f"{variant} (n={n})" + (f", overlaps {twin}" if twin else "")
        ax.plot(x, mean, label=label, **kw)
        ax.fill_between(x, lo, hi, color=kw["color"], alpha=0.2, lw=0)
    if data and log:
        if ax.get_ylim()[0] > 0:
            ax.set_yscale("log")
    return bool(data)


def convergence_png(curves: Mapping[str, Curves],
                    metrics: Sequence[str] = ("loss", "grad_norm", "weight_norm"), *,
                    width: int = 1200, height: int = 400, dpi: int = 100, log: bool = False,
                    title: str | None = None) -> bytes:
    """One panel per metric, one mean band (95% CI over seeds) per variant (Fig. 6)."""
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
    """Sparsity over iterations per variant, mean and 95% CI over seeds in [0, 1] (Fig. 3b)."""
    fig = _figure(width, height, dpi)
    ax = fig.subplots()
    if _bands_on(ax, curves, metric, log=False):
        ax.legend(fontsize="small")
        top = max(ax.get_ylim()[1], 1e-3)  # a share: the axis starts at 0, never below
        ax.set_ylim(-0.02 * top, top)
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
        front = pareto_front(pts, maximize)
        for i, g in enumerate(sorted(set(labels[finite]))):
            sel = finite & (labels == g)
            ax.scatter(pts[sel & ~front, 0], pts[sel & ~front, 1], s=16, alpha=0.35, color=f"C{i % 10}",
                       label=f"{g}: dominated ({int(np.sum(sel & ~front))})", zorder=2)
            ax.scatter(pts[sel & front, 0], pts[sel & front, 1], s=40, color=f"C{i % 10}", edgecolors="k",
                       label=f"{g}: on the front ({int(np.sum(sel & front))})", zorder=4)
        fp = pts[front]
        fp = fp[np.argsort(fp[:, 0])]
        if len(fp) > 1:
            ax.plot(fp[:, 0], fp[:, 1], "k--", lw=1, drawstyle="steps-post", zorder=3)
        ax.legend(fontsize="small")
    ax.set_xlabel(x_label + (" (max)" if maximize[0] else " (min)"))
    ax.set_ylabel(y_label + (" (max)" if maximize[1] else " (min)"))
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _png(fig, dpi)


def grid_facets_png(x_values: Sequence, y_values: Sequence, facets: Sequence[tuple[str, np.ndarray]], *,
                    x_label: str = "x", y_label: str = "y", value_label: str = "value",
                    width: int = 1200, height: int = 450, dpi: int = 100, title: str | None = None) -> bytes:
    """One annotated heatmap per value of a third hyperparameter (``facets``: (label, values[i_y, i_x])),
    on a shared colour scale, so nothing is averaged over the third parameter."""
    fig = _figure(width, height, dpi)
    axes = fig.subplots(1, max(1, len(facets)), squeeze=False)[0]
    arrays = [np.asarray(v, dtype=float) for _, v in facets]
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays]) if arrays else np.array([])
    if finite.size == 0:
        _empty(axes[0])
        return _png(fig, dpi)
    vmin, vmax = float(finite.min()), float(finite.max())
    mid = (vmin + vmax) / 2
    im = None
    for ax, (label, grid) in zip(axes, zip([f for f, _ in facets], arrays)):
        im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis",
                       vmin=vmin, vmax=vmax)
        ax.set_xticks(range(len(x_values)), [_tick(v) for v in x_values], rotation=45, ha="right")
        ax.set_yticks(range(len(y_values)), [_tick(v) for v in y_values])
        for (iy, ix), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(ix, iy, f"{v:.3g}", ha="center", va="center", fontsize="x-small",
                        color="black" if v > mid else "white")
        ax.set_title(label, fontsize="small")
        ax.set_xlabel(x_label)
    axes[0].set_ylabel(y_label)
    fig.subplots_adjust(bottom=0.22, top=0.84, left=0.08, wspace=0.25)
    fig.colorbar(im, ax=list(axes), label=value_label)
    if title:
        fig.suptitle(title)
    return _png(fig, dpi)


def learning_curves_png(curves: Mapping[str, Curves], metrics: Sequence[str] = ("train_metric", "test_metric"), *,
                        metric_label: str = "accuracy", width: int = 1200, height: int = 450, dpi: int = 100,
                        title: str | None = None) -> bytes:
    """Per epoch, one panel per metric (train / test), mean and 95% CI over replicates per variant."""
    fig = _figure(width, height, dpi)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        if not _bands_on(ax, curves, metric, log=False):
            _empty(ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric.split('_')[0]} {metric_label}")
        ax.grid(alpha=0.3)
    if any(ax.get_legend_handles_labels()[0] for ax in axes):
        axes[-1].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _png(fig, dpi)


def forest_png(rows: Sequence[Mapping], *, x_label: str = "paired difference", width: int = 800,
               height: int = 400, dpi: int = 100, title: str | None = None) -> bytes:
    """Paired differences against a reference: one row per comparison with its mean, 95% CI and
    verdict (``rows``: label, mean_diff, ci_low, ci_high, verdict); a line at 0."""
    fig = _figure(width, height, dpi)
    ax = fig.subplots()
    rows = [r for r in rows if r.get("mean_diff") is not None]
    if not rows:
        _empty(ax)
        return _png(fig, dpi)
    for i, r in enumerate(rows):
        lo = r["ci_low"] if r.get("ci_low") is not None else r["mean_diff"]
        hi = r["ci_high"] if r.get("ci_high") is not None else r["mean_diff"]
        sure = r.get("verdict") == "distinguishable"
        ax.plot([lo, hi], [i, i], color="C0" if sure else "0.5", lw=2)
        ax.plot(r["mean_diff"], i, "o", color="C0" if sure else "0.5", ms=7)
        ax.text(1.01, i, r.get("verdict", ""), transform=ax.get_yaxis_transform(), va="center", fontsize="small")
    ax.axvline(0, color="k", lw=0.8)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.invert_yaxis()
    ax.set_xlabel(x_label)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.subplots_adjust(left=0.25, right=0.72, bottom=0.15)
    return _png(fig, dpi)


__all__ = ["band", "ci_band", "convergence_png", "sparsity_png", "grid_heatmap_png", "grid_facets_png",
           "pareto_front", "pareto_png", "learning_curves_png", "forest_png", "METRIC_LABELS", "plt"]
