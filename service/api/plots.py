"""/api/v1/experiments/{id}/plots/*.png: the paper's figures rendered from the database.

- ``convergence.png`` -- mean ± std over seeds of E, ‖∇E‖, ‖W‖ per variant (Fig. 6);
- ``sparsity.png`` -- sparsity over iterations per variant (Fig. 3b);
- ``grid.png`` -- a metric over two searched hyperparameters (Fig. 5);
- ``pareto.png`` -- the non-dominated configurations of two objectives.

Per variant the bands use the configuration with the best mean objective (``config=best``) or
every completed trial (``config=all``).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from service import plots as figs
from service.api.deps import NO_NUL_PATTERN, ExpIdPath, StoreDep, experiment_or_404

from trainer.result import TRACE_COLUMNS

router = APIRouter(prefix="/experiments/{exp_id}/plots", tags=["plots"])

MAX_TRIALS = 2000
FINAL_METRICS = ("test_metric", "train_metric", "sparsity_out", "sparsity_all", "loss", "data_loss",
                 "wall_time", "weight_norm", "penalty")
PNG = {200: {"content": {"image/png": {}}, "description": "a PNG image of width x height pixels"},
       404: {"description": "no such experiment"}, 422: {"description": "invalid parameter"}}


def _png(data: bytes) -> Response:
    return Response(content=data, media_type="image/png", headers={"Cache-Control": "no-store"})


@lru_cache(maxsize=256)
def _kind_cached(spec_json: str) -> str:
    from search.driver import task_kind
    from search.spec import ExperimentSpec

    return task_kind(ExperimentSpec.model_validate(json.loads(spec_json)))


def _directions(view) -> tuple[list[str], list[str]]:
    """Objective metrics and their directions from the spec (auto resolved by the task kind)."""
    from search.spec import ExperimentSpec

    try:
        spec = ExperimentSpec.model_validate(view.spec)
        metrics = [o.metric for o in spec.search.objectives]
        if all(o.direction != "auto" for o in spec.search.objectives):
            return metrics, [o.direction for o in spec.search.objectives]
        try:
            kind = _kind_cached(json.dumps(view.spec, sort_keys=True))
        except Exception:  # noqa: BLE001 - unknown dataset: assume classification
            kind = "classification"
        return metrics, spec.objective_directions(kind)
    except Exception:  # noqa: BLE001
        return ["test_metric"], ["maximize"]


def _completed(store, exp_id: str, variant: str | None = None) -> list:
    items, _ = store.list_trials(exp_id, status="completed", variant=variant, limit=MAX_TRIALS)
    return items


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _select(trials: list, mode: str, metric: str, maximize: bool) -> list:
    if mode == "all" or not trials:
        return trials
    groups: dict[str, list] = defaultdict(list)
    for t in trials:
        groups[_key(t.params)].append(t)

    def score(group):
        vals = [getattr(t, metric, None) for t in group]
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        if not vals:
            return -math.inf
        m = float(np.mean(vals))
        return m if maximize else -m

    return max(groups.values(), key=lambda g: (score(g), len(g)))


def _curves(store, exp_id: str, metrics: list[str], mode: str, points: int,
            variants: list[str] | None) -> dict[str, figs.Curves]:
    view = experiment_or_404(store, exp_id)
    obj, dirs = _directions(view)
    by_variant: dict[str, list] = defaultdict(list)
    for t in _completed(store, exp_id):
        if variants and t.variant not in variants:
            continue
        by_variant[t.variant].append(t)
    out: dict[str, figs.Curves] = {}
    for variant, trials in by_variant.items():
        chosen = _select(trials, mode, obj[0], dirs[0] == "maximize")[:200]
        traces = [store.get_trace(t.id, metrics=metrics, max_points=points) for t in chosen]
        traces = [tr for tr in traces if len(tr["step"])]
        if not traces:
            continue
        n = min(len(tr["step"]) for tr in traces)
        out[variant] = (np.asarray(traces[0]["step"][:n], dtype=float),
                        {m: np.stack([np.asarray(tr[m][:n], dtype=float) for tr in traces]) for m in metrics})
    return out


def _metrics_list(metrics: str, default: tuple[str, ...]) -> list[str]:
    names = [m.strip() for m in (metrics or "").split(",") if m.strip()] or list(default)
    bad = [m for m in names if m not in TRACE_COLUMNS or m == "step"]
    if bad or len(names) > 6:
        raise HTTPException(422, detail=[{"loc": ["query", "metrics"], "type": "value_error",
                                          "msg": f"give 1-6 of {list(TRACE_COLUMNS[1:])}; bad: {bad}"}])
    return names


def _variants(v: str | None) -> list[str] | None:
    return [x.strip() for x in v.split(",") if x.strip()] or None if v else None


ConfigQ = Query("best", description="best: the variant's best configuration (bands over its seeds); "
                                    "all: every completed trial of the variant")
PointsQ = Query(500, ge=2, le=20_000, description="trace points per trial (server-side down-sampling)")
VariantsQ = Query(None, max_length=2000, pattern=NO_NUL_PATTERN,
                  description="comma-separated variants (default all)")


@router.get("/convergence.png", response_class=Response, responses=PNG,
            summary="Convergence bands: mean ± std over seeds of E, ‖∇E‖, ‖W‖ per variant (Fig. 6)")
def convergence_plot(exp_id: ExpIdPath, store: StoreDep,
                     metrics: str = Query("loss,grad_norm,weight_norm", max_length=200,
                                          description="comma-separated trace columns, one panel each"),
                     config: Literal["best", "all"] = ConfigQ, points: int = PointsQ,
                     variants: str | None = VariantsQ, log: bool = Query(False, description="log y axis"),
                     width: int = Query(1200, ge=64, le=4096), height: int = Query(400, ge=64, le=4096),
                     dpi: int = Query(100, ge=10, le=600)) -> Response:
    names = _metrics_list(metrics, ("loss", "grad_norm", "weight_norm"))
    curves = _curves(store, exp_id, names, config, points, _variants(variants))
    return _png(figs.convergence_png(curves, names, width=width, height=height, dpi=dpi, log=log,
                                     title=f"convergence ({config} configuration per variant)"))


@router.get("/sparsity.png", response_class=Response, responses=PNG,
            summary="Sparsity over iterations per variant, mean ± std over seeds (Fig. 3b)")
def sparsity_plot(exp_id: ExpIdPath, store: StoreDep,
                  metric: Literal["sparsity_out", "sparsity_all"] = Query("sparsity_out"),
                  config: Literal["best", "all"] = ConfigQ, points: int = PointsQ,
                  variants: str | None = VariantsQ,
                  width: int = Query(800, ge=64, le=4096), height: int = Query(500, ge=64, le=4096),
                  dpi: int = Query(100, ge=10, le=600)) -> Response:
    curves = _curves(store, exp_id, [metric], config, points, _variants(variants))
    return _png(figs.sparsity_png(curves, metric, width=width, height=height, dpi=dpi,
                                  title="sparsity over iterations"))


def _value(t, metric: str) -> float | None:
    v = getattr(t, metric, None)
    if v is None and t.final:
        v = t.final.get(metric)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _sortable(values) -> list:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


@router.get("/grid.png", response_class=Response, responses=PNG,
            summary="Heatmap of a metric over two searched hyperparameters (Fig. 5)")
def grid_plot(exp_id: ExpIdPath, store: StoreDep,
              x: str | None = Query(None, max_length=64, pattern=NO_NUL_PATTERN, description="hyperparameter on the x axis "
                                                                     "(default: the first searched one)"),
              y: str | None = Query(None, max_length=64, pattern=NO_NUL_PATTERN, description="hyperparameter on the y axis "
                                                                     "(default: the second, else the variant)"),
              metric: Literal[FINAL_METRICS] = Query("test_metric"),  # type: ignore[valid-type]
              variant: str | None = Query(None, max_length=200, pattern=NO_NUL_PATTERN,
                                        description="only this variant"),
              agg: Literal["mean", "max", "min"] = Query("mean", description="over seeds, folds and other params"),
              width: int = Query(800, ge=64, le=4096), height: int = Query(600, ge=64, le=4096),
              dpi: int = Query(100, ge=10, le=600)) -> Response:
    experiment_or_404(store, exp_id)
    trials = _completed(store, exp_id, variant)
    searched = []
    for t in trials:
        for k in t.params:
            if k not in searched:
                searched.append(k)
    x = x or (searched[0] if searched else None)
    if y is None:
        others = [k for k in searched if k != x]
        y = others[0] if others else "variant"
    for name, value in (("x", x), ("y", y)):
        if value is not None and value != "variant" and trials and value not in searched:
            raise HTTPException(422, detail=[{"loc": ["query", name], "type": "value_error",
                                              "msg": f"{value!r} was not searched; searched: {searched}"}])
    cells: dict[tuple[Any, Any], list[float]] = defaultdict(list)
    for t in trials:
        if x is None:
            break
        xv = t.variant if x == "variant" else t.params.get(x)
        yv = t.variant if y == "variant" else t.params.get(y)
        v = _value(t, metric)
        if xv is None or yv is None or v is None:
            continue
        cells[(xv, yv)].append(v)
    xs = _sortable({k[0] for k in cells})
    ys = _sortable({k[1] for k in cells})
    grid = np.full((len(ys), len(xs)), np.nan)
    fn = {"mean": np.mean, "max": np.max, "min": np.min}[agg]
    for (xv, yv), vals in cells.items():
        grid[ys.index(yv), xs.index(xv)] = float(fn(vals))
    return _png(figs.grid_heatmap_png(xs, ys, grid, x_label=str(x), y_label=str(y),
                                      value_label=f"{agg} {metric}", width=width, height=height, dpi=dpi,
                                      title=f"{metric} over the search grid" + (f" ({variant})" if variant else "")))


@router.get("/pareto.png", response_class=Response, responses=PNG,
            summary="Pareto front of two objectives over configurations (multi-objective runs)")
def pareto_plot(exp_id: ExpIdPath, store: StoreDep,
                x: Literal[FINAL_METRICS] | None = Query(None, description="default: first objective, "  # type: ignore[valid-type]
                                                                           "or sparsity_out"),
                y: Literal[FINAL_METRICS] | None = Query(None, description="default: second objective, "  # type: ignore[valid-type]
                                                                           "or test_metric"),
                per: Literal["config", "trial"] = Query("config", description="mean over seeds per "
                                                                               "configuration, or every trial"),
                width: int = Query(800, ge=64, le=4096), height: int = Query(600, ge=64, le=4096),
                dpi: int = Query(100, ge=10, le=600)) -> Response:
    view = experiment_or_404(store, exp_id)
    objs, dirs = _directions(view)
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
            return direction.get("test_metric", direction.get("train_metric", "maximize")) == "maximize" \
                if ("test_metric" in direction or "train_metric" in direction) else True
        return False

    groups: dict[tuple[str, str], list] = defaultdict(list)
    for t in _completed(store, exp_id):
        key = (t.variant, _key(t.params) if per == "config" else str(t.id))
        groups[key].append(t)
    pts, labels = [], []
    for (variant, _), ts in groups.items():
        xv = [v for v in (_value(t, x) for t in ts) if v is not None]
        yv = [v for v in (_value(t, y) for t in ts) if v is not None]
        if xv and yv:
            pts.append((float(np.mean(xv)), float(np.mean(yv))))
            labels.append(variant)
    arr = np.asarray(pts, dtype=float).reshape(-1, 2)
    return _png(figs.pareto_png(arr, labels, maximize=(maximize(x), maximize(y)), x_label=x, y_label=y,
                                width=width, height=height, dpi=dpi, title="Pareto front"))
