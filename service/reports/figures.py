"""What each figure shows: which trials a plot uses and how they aggregate (the API's PNG routes,
``rnnhpo run``'s saved plots and the pages all call these; drawing is :mod:`service.plots`).

- :func:`chosen_trials` / :func:`curves`: per variant, the trials a curve draws -- the final test
  evaluation of its selected configuration(s) when the search has one, never mixed with the
  selection trials that scored configurations on validation data (``mode="all"`` draws both,
  labelled per phase) -- and their traces cut to a common length;
- :func:`grid_cells`: a final metric aggregated over (x, y) hyperparameter cells;
- :func:`pareto_points`: (x, y) per configuration (mean over its seeds) or per trial;
- :func:`objectives`: the search's objectives and their resolved directions.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

import numpy as np

#: Most trials one figure reads.
MAX_TRIALS = 2000
#: Final metrics a figure may show.
FINAL_METRICS = ("test_metric", "val_metric", "train_metric", "sparsity_out", "sparsity_all", "loss", "data_loss",
                 "wall_time", "weight_norm", "penalty")

Curves = dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]


class FigureError(ValueError):
    """A figure parameter names something the experiment does not have; ``field`` names it."""

    def __init__(self, field: str, msg: str):
        super().__init__(msg)
        self.field = field


def objectives(spec: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Objective metrics and their directions (``auto`` resolved by the dataset's task kind)."""
    from search.spec import ExperimentSpec
    from search.validation import dataset_kind

    try:
        model = ExperimentSpec.model_validate(spec)
    except Exception:  # noqa: BLE001 - a spec stored by an older version: the paper's default
        return ["test_metric"], ["maximize"]
    metrics = [o.metric for o in model.search.objectives]
    if all(o.direction != "auto" for o in model.search.objectives):
        return metrics, [o.direction for o in model.search.objectives]
    return metrics, model.objective_directions(dataset_kind(model))


def completed(store, exp_id: str, variant: str | None = None) -> list:
    items, _ = store.list_trials(exp_id, status="completed", variant=variant, limit=MAX_TRIALS)
    return items


def config_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def value(trial, metric: str) -> float | None:
    """A final metric of a trial (column or final JSON); None when missing or not finite."""
    v = getattr(trial, metric, None)
    if v is None and trial.final:
        v = trial.final.get(metric)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def best_configuration(trials: list, metric: str, maximize: bool) -> list:
    """The trials of the configuration with the best mean ``metric`` (ties: more trials)."""
    if not trials:
        return trials
    groups: dict[str, list] = defaultdict(list)
    for t in trials:
        groups[config_key(t.params)].append(t)

    def score(group):
        vals = [v for v in (value(t, metric) for t in group) if v is not None]
        if not vals:
            return -math.inf
        m = float(np.mean(vals))
        return m if maximize else -m

    return max(groups.values(), key=lambda g: (score(g), len(g)))


def chosen_trials(store, exp_id: str, mode: str = "best", variants: list[str] | None = None) -> dict[str, list]:
    """Per curve label, the completed trials a figure draws (at most 200 each).

    ``best``: per variant, its test-role trials (the selected configuration(s) trained on each
    split's whole training part and evaluated once on its test part) when it has any; otherwise
    (a search whose test phase has not run) the selection trials of its best configuration by
    the mean of the first objective. Selection and test trials share their parameters, so
    grouping by configuration alone would mix the two phases in one band. ``all``: every
    completed trial, the two phases as separate curves labelled ``"V (selection)"`` and
    ``"V (test)"`` when a variant has both."""
    from search.planning import is_test_number

    obj, dirs = objectives(store.get_experiment(exp_id).spec)
    by_variant: dict[str, dict[str, list]] = defaultdict(lambda: {"selection": [], "test": []})
    for t in completed(store, exp_id):
        if not variants or t.variant in variants:
            by_variant[t.variant]["test" if is_test_number(int(t.number)) else "selection"].append(t)
    out: dict[str, list] = {}
    for variant, phases in sorted(by_variant.items()):
        if mode == "all":
            both = phases["selection"] and phases["test"]
            for phase, trials in phases.items():
                if trials:
                    out[f"{variant} ({phase})" if both else variant] = trials[:200]
        elif phases["test"]:
            out[variant] = phases["test"][:200]
        else:
            out[variant] = best_configuration(phases["selection"], obj[0], dirs[0] == "maximize")[:200]
    return out


def stacked_curves(store, exp_id: str, metrics: list[str], mode: str, variants: list[str] | None,
                   read, x: str) -> Curves:
    """Per curve label of :func:`chosen_trials`, ``(x values, {metric: (n_trials, n) array})`` of
    the records ``read(trial)`` returns (column ``x`` and the metrics), cut to a common length."""
    out: Curves = {}
    for variant, chosen in chosen_trials(store, exp_id, mode, variants).items():
        records = [r for r in (read(t) for t in chosen) if len(r[x])]
        if not records:
            continue
        n = min(len(r[x]) for r in records)
        out[variant] = (np.asarray(records[0][x][:n], dtype=float),
                        {m: np.stack([np.asarray(r[m][:n], dtype=float) for r in records]) for m in metrics})
    return out


def curves(store, exp_id: str, metrics: list[str], mode: str = "best", points: int = 500,
           variants: list[str] | None = None) -> Curves:
    """Per curve label ``(steps, {metric: (n_trials, n_steps) array})`` of :func:`chosen_trials`."""
    return stacked_curves(store, exp_id, metrics, mode, variants,
                          lambda t: store.get_trace(t.id, metrics=metrics, max_points=points), "step")


def _sortable(values) -> list:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def grid_cells(store, exp_id: str, *, x: str | None = None, y: str | None = None,
               metric: str = "test_metric", variant: str | None = None, agg: str = "mean",
               where: dict[str, Any] | None = None) -> tuple[list, list, np.ndarray, str | None, str]:
    """``(xs, ys, grid[len(ys), len(xs)], x, y)``: ``agg`` of ``metric`` per (x, y) cell over
    seeds, folds and any other parameter. ``x`` defaults to the first searched hyperparameter,
    ``y`` to the second, else the variant. ``where`` keeps trials with these parameter values (one
    facet of a third parameter). Raises :class:`FigureError` for an unsearched name."""
    trials = completed(store, exp_id, variant)
    if where:
        trials = [t for t in trials if all(t.params.get(k) == v for k, v in where.items())]
    searched: list[str] = []
    for t in trials:
        searched += [k for k in t.params if k not in searched]
    x = x or (searched[0] if searched else None)
    if y is None:
        others = [k for k in searched if k != x]
        y = others[0] if others else "variant"
    for name, v in (("x", x), ("y", y)):
        if v is not None and v != "variant" and trials and v not in searched:
            raise FigureError(name, f"{v!r} was not searched; searched: {searched}")
    cells: dict[tuple[Any, Any], list[float]] = defaultdict(list)
    for t in trials if x is not None else []:
        xv = t.variant if x == "variant" else t.params.get(x)
        yv = t.variant if y == "variant" else t.params.get(y)
        v = value(t, metric)
        if xv is not None and yv is not None and v is not None:
            cells[(xv, yv)].append(v)
    xs, ys = _sortable({k[0] for k in cells}), _sortable({k[1] for k in cells})
    grid = np.full((len(ys), len(xs)), np.nan)
    fn = {"mean": np.mean, "max": np.max, "min": np.min}[agg]
    for (xv, yv), vals in cells.items():
        grid[ys.index(yv), xs.index(xv)] = float(fn(vals))
    return xs, ys, grid, x, y


def pareto_points(store, exp_id: str, *, x: str | None = None, y: str | None = None,
                  per: str = "config") -> tuple[np.ndarray, list[str], str, str, tuple[bool, bool]]:
    """``(points (n, 2), variant labels, x, y, (maximize x, maximize y))``; x and y default to
    the search's first two objectives, else (sparsity_out, test_metric)."""
    view = store.get_experiment(exp_id)
    objs, dirs = objectives(view.spec)
    direction = dict(zip(objs, dirs))
    if x is None and y is None and len(objs) >= 2:
        x, y = objs[0], objs[1]
    x = x or "sparsity_out"
    y = y or (objs[0] if objs[0] != x else "test_metric")

    def maximize(m: str) -> bool:
        if m in direction:
            return direction[m] == "maximize"
        if m.startswith("sparsity"):
            return True
        if m in ("test_metric", "train_metric"):
            known = [direction[k] for k in ("test_metric", "train_metric") if k in direction]
            return (known[0] == "maximize") if known else True
        return False

    groups: dict[tuple[str, str], list] = defaultdict(list)
    for t in completed(store, exp_id):
        groups[(t.variant, config_key(t.params) if per == "config" else str(t.id))].append(t)
    pts, labels = [], []
    for (variant, _), ts in groups.items():
        xv = [v for v in (value(t, x) for t in ts) if v is not None]
        yv = [v for v in (value(t, y) for t in ts) if v is not None]
        if xv and yv:
            pts.append((float(np.mean(xv)), float(np.mean(yv))))
            labels.append(variant)
    return np.asarray(pts, dtype=float).reshape(-1, 2), labels, x, y, (maximize(x), maximize(y))


def applicable(spec: dict[str, Any]) -> list[str]:
    """The figures that mean something for this experiment: convergence and sparsity always,
    the grid heatmap when hyperparameters were searched, the Pareto front for several objectives."""
    names = ["convergence", "sparsity"]
    searched = spec["search"].get("space") or any(v.get("space") for v in spec["variants"])
    if searched and spec["search"].get("algorithm", "grid") == "grid":
        names.append("grid")
    if len(spec["search"].get("objectives", [])) >= 2:
        names.append("pareto")
    return names


def _grid_png(store, exp_id: str, draw) -> bytes:
    """The validation metric over the grid (what selection saw), one annotated panel per value of
    a third searched parameter (never averaged over it)."""
    metric = "val_metric"
    searched: list[str] = []
    for t in completed(store, exp_id):
        searched += [k for k in t.params if k not in searched]
    if len(searched) <= 2:
        xs, ys, grid, x, y = grid_cells(store, exp_id, metric=metric)
        return draw.grid_heatmap_png(xs, ys, grid, x_label=str(x), y_label=str(y),
                                     value_label=f"mean {metric}", width=800, height=600, dpi=100,
                                     title=f"{metric} (validation) over the search grid")
    third = searched[2]
    values = _sortable({t.params.get(third) for t in completed(store, exp_id) if third in t.params})
    facets = []
    all_cells = grid_cells(store, exp_id, metric=metric)
    xs, ys, x, y = all_cells[0], all_cells[1], all_cells[3], all_cells[4]
    for v in values:
        fx, fy, g, _, _ = grid_cells(store, exp_id, metric=metric, where={third: v})
        full = np.full((len(ys), len(xs)), np.nan)
        for iy, yv in enumerate(fy):
            for ix, xv in enumerate(fx):
                full[ys.index(yv), xs.index(xv)] = g[iy, ix]
        facets.append((f"{third} = {v:g}" if isinstance(v, float) else f"{third} = {v}", full))
    rest = searched[3:]
    note = f" (mean over {', '.join(rest)})" if rest else ""
    return draw.grid_facets_png(xs, ys, facets, x_label=str(x), y_label=str(y),
                                value_label=f"mean {metric}", width=min(4096, 420 * len(facets) + 200),
                                height=450, dpi=100,
                                title=f"{metric} (validation) over the search grid, one panel per {third}{note}")


def save_figures(store, exp_id: str, out_dir) -> list:
    """Write the experiment's applicable figures as PNGs into ``out_dir``; returns the paths."""
    from pathlib import Path

    from service import plots as draw

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = ["loss", "grad_norm", "weight_norm"]
    paths = []
    for name in applicable(store.get_experiment(exp_id).spec):
        if name == "convergence":
            png = draw.convergence_png(curves(store, exp_id, metrics), metrics, width=1500, height=450,
                                       dpi=100, log=True, title="convergence: test-evaluation trials of each variant's selected configuration")
        elif name == "sparsity":
            png = draw.sparsity_png(curves(store, exp_id, ["sparsity_out"]), "sparsity_out", width=800,
                                    height=500, dpi=100, title="sparsity over iterations")
        elif name == "grid":
            png = _grid_png(store, exp_id, draw)
        else:
            arr, labels, x, y, maximize = pareto_points(store, exp_id)
            png = draw.pareto_png(arr, labels, maximize=maximize, x_label=x, y_label=y, width=800,
                                  height=600, dpi=100, title="Pareto front")
        path = out_dir / f"{name}.png"
        path.write_bytes(png)
        paths.append(path)
    return paths
