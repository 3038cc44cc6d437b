"""The experiment page's charts as Plotly figures (JSON) and their data as tables (CSV).

Each builder takes the store and the chart's parameters, selects the data through
:mod:`service.reports.figures` / :mod:`service.reports.ui_data` (the same selection as the API's
PNG figures), and returns a :class:`Chart`: the Plotly ``{data, layout}`` the browser draws and
the long-form table the CSV download holds. Bands are :func:`service.plots.band` (mean ± std over
the chosen trials), the same statistic the PNGs draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.plots import band, pareto_front
from service.reports import figures, ui_data

#: matplotlib's tab10, so a variant has the same colour here as in the PNG figures.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")

LABELS = {
    "loss": "loss E", "data_loss": "data loss", "penalty": "penalty", "grad_norm": "‖∂E/∂W‖",
    "grad_norm_out": "‖∂E/∂W_out‖", "weight_norm": "‖W‖", "update_norm": "‖W<sup>k+1</sup> − W<sup>k</sup>‖",
    "sparsity_out": "sparsity of W_out", "sparsity_all": "sparsity (all weights)", "lr": "learning rate η",
    "epoch": "epoch", "train_metric": "train metric", "test_metric": "test metric",
    "train_loss": "train loss E", "wall_time": "wall time [s]",
}


@dataclass
class Chart:
    """A Plotly figure and the rows behind it (``columns`` name the CSV header)."""

    data: list[dict[str, Any]]
    layout: dict[str, Any]
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str | None = None

    def figure(self) -> dict[str, Any]:
        return {"data": self.data, "layout": self.layout, "note": self.note}


def finite(values) -> list[float | None]:
    """A JSON-safe list: NaN and ±inf become None (Plotly leaves a gap)."""
    return [float(v) if v is not None and math.isfinite(v) else None
            for v in np.asarray(values, dtype=float).tolist()]


def _scalar(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _scalar(v.item())
    return v


def variant_colors(spec: dict[str, Any]) -> dict[str, str]:
    """Colour per variant in the spec's order (stable across every chart of an experiment)."""
    names = [v.get("name") for v in spec.get("variants", [])]
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def _color(colors: dict[str, str], variant: str) -> str:
    if variant not in colors:
        colors[variant] = PALETTE[len(colors) % len(PALETTE)]
    return colors[variant]


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _layout(title: str, x_title: str, y_title: str, **extra) -> dict[str, Any]:
    layout = {"title": {"text": title, "x": 0.01, "font": {"size": 15}},
              "xaxis": {"title": {"text": x_title}, "zeroline": False},
              "yaxis": {"title": {"text": y_title}, "zeroline": False},
              "margin": {"l": 70, "r": 20, "t": 48, "b": 50}, "hovermode": "x unified",
              "legend": {"orientation": "h", "y": -0.2}, "template": "plotly_white"}
    layout.update(extra)
    return layout


def _bands(curves: figures.Curves, metric: str, colors: dict[str, str]
           ) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """Two traces per variant (a filled mean ± std band and the mean line) and the CSV rows."""
    data, rows = [], []
    for variant in sorted(curves):
        xs, per_metric = curves[variant]
        if metric not in per_metric or per_metric[metric].size == 0:
            continue
        values = np.asarray(per_metric[metric], dtype=float)
        mean, std = band(values)
        x = np.asarray(xs, dtype=float)[: mean.shape[0]]
        n = values.shape[0] if values.ndim == 2 else 1
        color = _color(colors, variant)
        xf = finite(x)
        data.append({"type": "scatter", "mode": "lines", "x": xf + xf[::-1],
                     "y": finite(mean + std) + finite(mean - std)[::-1], "fill": "toself",
                     "fillcolor": _rgba(color, 0.2), "line": {"width": 0}, "hoverinfo": "skip",
                     "showlegend": False, "legendgroup": variant, "name": f"{variant} ± std",
                     "meta": {"role": "band", "variant": variant}})
        data.append({"type": "scatter", "mode": "lines", "x": xf, "y": finite(mean),
                     "name": f"{variant} (n={n})", "legendgroup": variant,
                     "line": {"color": color, "width": 1.6},
                     "customdata": finite(std), "hovertemplate": "%{y:.5g} ± %{customdata:.2g}",
                     "meta": {"role": "mean", "variant": variant, "n": n}})
        rows += [[variant, _scalar(a), n, _scalar(m), _scalar(s)]
                 for a, m, s in zip(x.tolist(), mean.tolist(), std.tolist())]
    return data, rows


def convergence(store, exp_id: str, *, metric: str = "loss", mode: str = "best", points: int = 500,
                log: bool = False) -> Chart:
    """Mean ± std band per variant of one trace column over iterations (Fig. 6; Fig. 3b for a
    sparsity column)."""
    spec = store.get_experiment(exp_id).spec
    curves = figures.curves(store, exp_id, [metric], mode, points)
    data, rows = _bands(curves, metric, variant_colors(spec))
    which = "best configuration" if mode == "best" else "all completed trials"
    layout = _layout(f"{LABELS.get(metric, metric)} over iterations ({which} per variant)",
                     "iteration k", LABELS.get(metric, metric))
    if log:
        layout["yaxis"].update(type="log", dtick="D2")  # labels at 1, 2, 5 of each decade only
    if metric.startswith("sparsity"):
        layout["yaxis"]["rangemode"] = "nonnegative"  # a share: an all-zero curve sits on the axis
    return Chart(data, layout, ["variant", "step", "n", f"{metric}_mean", f"{metric}_std"], rows,
                 None if data else "no completed trial has a trace yet")


def learning(store, exp_id: str, *, metrics: tuple[str, ...] = ("train_metric", "test_metric"),
             mode: str = "best") -> Chart:
    """Per-epoch train/test metric per variant, mean ± std over the chosen trials; test solid,
    train dashed."""
    spec = store.get_experiment(exp_id).spec
    curves = ui_data.learning_curves(store, exp_id, list(metrics), mode)
    colors = variant_colors(spec)
    data, rows = [], []
    for metric in metrics:
        d, r = _bands(curves, metric, colors)
        for trace in d:
            trace["meta"]["metric"] = metric
            if trace["meta"]["role"] == "mean":
                trace["name"] = f"{trace['name']} {metric.replace('_metric', '')}"
                if metric != "test_metric":
                    trace["line"]["dash"] = "dash"
            trace["legendgroup"] = f"{trace['legendgroup']}/{metric}"
        data += d
        rows += [[metric] + row for row in r]
    layout = _layout("learning curves (per epoch; test solid, train dashed)", "epoch", "metric")
    return Chart(data, layout, ["metric", "variant", "epoch", "n", "mean", "std"], rows,
                 None if data else "no completed trial has per-epoch records yet")


def _tick(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def grid(store, exp_id: str, *, x: str | None = None, y: str | None = None, facet: str | None = None,
         metric: str = "test_metric", variant: str | None = None, agg: str = "mean") -> Chart:
    """Heatmaps of ``agg(metric)`` over two hyperparameters, one panel per value of a third (Fig. 5)."""
    panels, x, y, facet = ui_data.grid_facets(store, exp_id, x=x, y=y, facet=facet, metric=metric,
                                              variant=variant, agg=agg)
    panels = [p for p in panels if p.grid.size]
    n = max(1, len(panels))
    gap = 0.04
    width = (1 - gap * (n - 1)) / n
    data, rows = [], []
    layout = _layout(f"{agg} {metric} over the search grid" + (f" ({variant})" if variant else ""),
                     "", "", hovermode="closest", coloraxis={"colorscale": "Viridis",
                                                             "colorbar": {"title": {"text": metric}}})
    annotations = []
    for i, p in enumerate(panels):
        suffix = "" if i == 0 else str(i + 1)
        xa, ya = f"xaxis{suffix}", f"yaxis{suffix}"
        lo = i * (width + gap)
        layout[xa] = {"domain": [lo, lo + width], "title": {"text": str(x)}, "type": "category"}
        layout[ya] = {"title": {"text": str(y) if i == 0 else ""}, "type": "category",
                      "anchor": f"x{suffix}", **({"matches": "y"} if i else {})}
        layout[xa]["anchor"] = f"y{suffix}"
        z = [[_scalar(v) for v in row] for row in np.where(np.isfinite(p.grid), p.grid, np.nan).tolist()]
        z = [[v if v is None or math.isfinite(v) else None for v in row] for row in z]
        data.append({"type": "heatmap", "x": [_tick(v) for v in p.xs], "y": [_tick(v) for v in p.ys], "z": z,
                     "coloraxis": "coloraxis", "xaxis": f"x{suffix}", "yaxis": f"y{suffix}",
                     "texttemplate": "%{z:.3g}", "name": "" if p.value is None else f"{facet}={_tick(p.value)}",
                     "hovertemplate": f"{x}=%{{x}}<br>{y}=%{{y}}<br>{metric}=%{{z:.5g}}<extra></extra>",
                     "meta": {"facet": _scalar(p.value)}})
        if p.value is not None:
            annotations.append({"text": f"{facet} = {_tick(p.value)}", "showarrow": False, "xref": "paper",
                                "yref": "paper", "x": lo + width / 2, "y": 1.0, "yanchor": "bottom"})
        for yi, yv in enumerate(p.ys):
            for xi, xv in enumerate(p.xs):
                v = p.grid[yi, xi]
                if math.isfinite(v):
                    rows.append([_scalar(p.value), _scalar(xv), _scalar(yv), float(v)])
    layout["annotations"] = annotations
    layout["margin"]["t"] = 70 if annotations else 48
    return Chart(data, layout, [facet or "facet", str(x), str(y), f"{agg}_{metric}"], rows,
                 None if data else "no completed trial yet")


def _log_params(spec: dict[str, Any]) -> set[str]:
    spaces = [spec.get("search", {}).get("space") or {}] + [v.get("space") or {} for v in spec.get("variants", [])]
    return {k for sp in spaces for k, d in sp.items() if isinstance(d, dict) and d.get("type") == "log"}


def parallel(store, exp_id: str, *, color: str | None = None) -> Chart:
    """Parallel coordinates: one line per completed trial through its hyperparameters (log10 for
    log-scale ones), the variant (when several) and the objectives, coloured by ``color``."""
    spec = store.get_experiment(exp_id).spec
    objs, dirs = figures.objectives(spec)
    metrics = list(dict.fromkeys(objs + ["test_metric"]))
    color = color or objs[0]
    if color not in metrics:
        metrics.append(color)
    names, rows = ui_data.trial_rows(store, exp_id, metrics)
    logs = _log_params(spec)
    dims = []
    variants = sorted({r["variant"] for r in rows})
    if len(variants) > 1:
        dims.append({"label": "variant", "values": [variants.index(r["variant"]) for r in rows],
                     "tickvals": list(range(len(variants))), "ticktext": variants})
    for k in names:
        vals = [r[k] for r in rows]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals if v is not None):
            if k in logs:
                dims.append({"label": f"log10 {k}", "values": [math.log10(v) if v and v > 0 else None for v in vals]})
            else:
                dims.append({"label": k, "values": [_scalar(v) for v in vals]})
        else:
            cats = figures._sortable({str(v) for v in vals})
            dims.append({"label": k, "values": [cats.index(str(v)) for v in vals],
                         "tickvals": list(range(len(cats))), "ticktext": cats})
    for m in metrics:
        dims.append({"label": m, "values": [r[m] for r in rows]})
    cvals = [r[color] for r in rows]
    direction = dict(zip(objs, dirs)).get(color, "maximize")
    data = [{"type": "parcoords", "dimensions": dims,
             "line": {"color": [v if v is not None else float("nan") for v in cvals] if rows else [],
                      "colorscale": "Viridis", "reversescale": direction == "minimize", "showscale": True,
                      "colorbar": {"title": {"text": color}}},
             "meta": {"trials": [r["id"] for r in rows]}}] if rows else []
    for d in data:
        d["line"]["color"] = finite(d["line"]["color"])
    layout = _layout(f"parameters → objectives ({len(rows)} completed trials, colour: {color})", "", "",
                     hovermode="closest")
    layout["margin"] = {"l": 80, "r": 80, "t": 80, "b": 30}
    columns = ["id", "variant", "seed"] + names + metrics
    return Chart(data, layout, columns, [[_scalar(r[c]) for c in columns] for r in rows],
                 None if rows else "no completed trial yet")


def pareto(store, exp_id: str, *, x: str | None = None, y: str | None = None, per: str = "config") -> Chart:
    """Every configuration (or trial) as a point per variant and the non-dominated front as a step line."""
    spec = store.get_experiment(exp_id).spec
    pts, labels, x, y, maximize = figures.pareto_points(store, exp_id, x=x, y=y, per=per)
    mask = pareto_front(pts, maximize) if len(pts) else np.zeros(0, dtype=bool)
    colors = variant_colors(spec)
    data = []
    for variant in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == variant]
        data.append({"type": "scatter", "mode": "markers", "name": variant,
                     "x": finite(pts[idx, 0]), "y": finite(pts[idx, 1]),
                     "marker": {"color": _color(colors, variant), "size": 8, "opacity": 0.75},
                     "meta": {"role": "points", "variant": variant}})
    front = pts[mask]
    if len(front):
        front = front[np.argsort(front[:, 0])]
        data.append({"type": "scatter", "mode": "lines+markers", "name": "Pareto front",
                     "x": finite(front[:, 0]), "y": finite(front[:, 1]),
                     "line": {"color": "black", "shape": "hv", "width": 1.5},
                     "marker": {"symbol": "diamond-open", "size": 11, "color": "black"},
                     "meta": {"role": "front"}})
    arrows = {True: "↑ better", False: "↓ better"}
    layout = _layout(f"Pareto front ({'mean over seeds per configuration' if per == 'config' else 'per trial'})",
                     f"{x} ({'→' if maximize[0] else '←'} better)", f"{y} ({arrows[maximize[1]]})",
                     hovermode="closest")
    rows = [[lab, float(a), float(b), bool(m)] for lab, (a, b), m in zip(labels, pts.tolist(), mask.tolist())]
    return Chart(data, layout, ["variant", x, y, "on_front"], rows, None if len(pts) else "no completed trial yet")


def trace(window: ui_data.TraceWindow, metrics: list[str], *, log: bool = False, title: str = "") -> Chart:
    """The trace explorer: one panel per metric, stacked, sharing the step axis."""
    n = max(1, len(metrics))
    gap = 0.06 if n > 1 else 0.0
    height = (1 - gap * (n - 1)) / n
    steps = finite(window.columns["step"])
    data, layout = [], _layout(title, "", "", hovermode="x unified", showlegend=False)
    for i, m in enumerate(metrics):
        suffix = "" if i == 0 else str(i + 1)
        top = 1 - i * (height + gap)
        layout[f"yaxis{suffix}"] = {"domain": [max(0.0, top - height), top], "title": {"text": LABELS.get(m, m)},
                                    "type": "log" if log else "linear", "anchor": f"x{suffix}"}
        layout[f"xaxis{suffix}"] = {"anchor": f"y{suffix}", "showticklabels": i == n - 1,
                                    **({"matches": "x"} if i else {}),
                                    **({"title": {"text": "iteration k"}} if i == n - 1 else {})}
        data.append({"type": "scattergl" if len(steps) > 5000 else "scatter",
                     "mode": "lines+markers" if len(steps) <= 300 else "lines",
                     "x": steps, "y": finite(window.columns[m]), "name": m,
                     "xaxis": f"x{suffix}", "yaxis": f"y{suffix}", "marker": {"size": 3},
                     "line": {"color": PALETTE[i % len(PALETTE)], "width": 1.2}, "meta": {"metric": m}})
    layout["height"] = 170 * n + 90
    cols = ["step"] + list(metrics)
    rows = [[_scalar(v) for v in r] for r in zip(*(window.columns[c].tolist() for c in cols))]
    return Chart(data, layout, cols, rows)


def epochs(records: dict[str, np.ndarray]) -> Chart:
    """A trial's per-epoch train/test metric (and training loss on a second axis)."""
    x = finite(records.get("epoch", []))
    data = []
    for m, dash in (("train_metric", "dash"), ("test_metric", "solid")):
        data.append({"type": "scatter", "mode": "lines", "name": m, "x": x, "y": finite(records.get(m, [])),
                     "line": {"dash": dash, "color": PALETTE[0]}, "meta": {"metric": m}})
    data.append({"type": "scatter", "mode": "lines", "name": "train_loss", "x": x,
                 "y": finite(records.get("train_loss", [])), "yaxis": "y2",
                 "line": {"color": PALETTE[1]}, "meta": {"metric": "train_loss"}})
    layout = _layout("per-epoch metrics", "epoch", "metric",
                     yaxis2={"title": {"text": "train loss E"}, "overlaying": "y", "side": "right"})
    layout["margin"]["r"] = 70
    cols = ["epoch", "train_metric", "test_metric", "train_loss", "wall_time"]
    rows = [[_scalar(v) for v in r] for r in zip(*(np.asarray(records.get(c, []), dtype=float).tolist()
                                                   for c in cols))]
    return Chart(data, layout, cols, rows, None if x else "no per-epoch records")
