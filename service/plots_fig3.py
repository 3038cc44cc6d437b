"""The SL1-GRU paper's Fig. 3 redrawn from stored numbers, as PNG bytes (headless matplotlib).

- :func:`fitted_curves_png` -- Fig. 3a: one panel per model, the noiseless f(x) of eq. 40 and the
  model's output on the probe grid, mean and 95% CI over the (seed, split) replicates;
- :func:`sparsity_paths_png` -- Fig. 3b: one panel per threshold (eq. 42's 1e-5, then 1e-3 and
  1e-2), the share of |W_out| below it after each iteration per model, mean and 95% CI in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from service.plots import _empty, _figure, _png, _styles, band, ci_band


def fitted_curves_png(x: Sequence[float], y_true: Sequence[float], fits: Mapping[str, np.ndarray], *,
                      width: int = 1500, height: int = 800, dpi: int = 100, title: str | None = None) -> bytes:
    """``fits``: model name -> ``(n_replicates, len(x))`` outputs on the grid ``x``."""
    fig = _figure(width, height, dpi)
    n = max(1, len(fits))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True).ravel()
    x = np.asarray(x, dtype=float)
    y_true = np.asarray(y_true, dtype=float)
    finite = [np.asarray(v, dtype=float) for v in fits.values()]
    spread = np.concatenate([y_true] + [band(v)[0] for v in finite]) if finite else y_true
    lo, hi = np.nanmin(spread), np.nanmax(spread)
    pad = 0.08 * (hi - lo if hi > lo else 1.0)
    for i, (ax, (name, values)) in enumerate(zip(axes, fits.items())):
        values = np.asarray(values, dtype=float)
        mean, low, high = ci_band(values)
        rmse = float(np.sqrt(np.nanmean((mean - y_true) ** 2)))
        ax.plot(x, y_true, color="black", lw=1.2, ls="--", label="f(x), eq. 40")
        ax.plot(x, mean, color=f"C{i % 10}", lw=1.6, label=f"{name} mean (n={values.shape[0]})")
        ax.fill_between(x, low, high, color=f"C{i % 10}", alpha=0.25, lw=0, label="95% CI")
        ax.set_title(f"{name}: RMSE of the mean curve to f = {rmse:.3g}", fontsize="medium")
        ax.set_ylim(lo - pad, hi + pad)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="upper right")
    for ax in axes[len(fits):]:
        _empty(ax)
    for ax in axes[-cols:]:
        ax.set_xlabel("x")
    for ax in axes[::cols]:
        ax.set_ylabel("output")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _png(fig, dpi)


def sparsity_paths_png(paths: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]],
                       columns: Sequence[tuple[str, str]], *, claim: tuple[float, int] | None = None,
                       width: int = 1500, height: int = 480, dpi: int = 100, title: str | None = None) -> bytes:
    """``paths``: model -> (iterations, {column: (n_replicates, len(iterations))}); one panel per
    ``(column, label)`` of ``columns``. ``claim`` = (sparsity, iteration) marks the paper's claim."""
    fig = _figure(width, height, dpi)
    axes = fig.subplots(1, max(1, len(columns)), squeeze=False)[0]
    for ax, (col, label) in zip(axes, columns):
        means = {m: band(np.asarray(d[col], dtype=float))[0] for m, (_, d) in paths.items() if col in d}
        styles = _styles(means)
        for name, (steps, data) in paths.items():
            if col not in data:
                continue
            values = np.asarray(data[col], dtype=float)
            mean, low, high = ci_band(values, (0.0, 1.0))
            kw, twin = styles[name]
            ax.plot(np.asarray(steps, dtype=float)[: len(mean)], mean, **kw,
                    label=f"{name} (n={values.shape[0]})" + (f", overlaps {twin}" if twin else ""))
            ax.fill_between(np.asarray(steps, dtype=float)[: len(mean)], low, high, color=kw["color"], alpha=0.2, lw=0)
        if claim is not None:
            ax.plot([claim[1]], [claim[0]], marker="*", ms=14, color="black", ls="none",
                    label=f"paper: ~{claim[0]:g} after {claim[1]} iterations")
        if not means:
            _empty(ax)
        else:
            top = max(float(np.nanmax(m)) if np.isfinite(m).any() else 0.0 for m in means.values())
            ax.text(0.02, 0.97, f"largest mean share: {top:.3g}", transform=ax.transAxes, va="top", fontsize="small")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("iteration k")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="x-small", loc="center right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _png(fig, dpi)
