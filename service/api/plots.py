"""/api/v1/experiments/{id}/plots/*.png: the paper's figures rendered from the database.

- ``convergence.png`` -- mean ± std over seeds of E, ‖∇E‖, ‖W‖ per variant (Fig. 6);
- ``sparsity.png`` -- sparsity over iterations per variant (Fig. 3b);
- ``grid.png`` -- a metric over two searched hyperparameters (Fig. 5);
- ``pareto.png`` -- the non-dominated configurations of two objectives.

Per variant the bands use the configuration with the best mean objective (``config=best``) or
every completed trial (``config=all``).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from service import plots as figs
from service.api.deps import NO_NUL_PATTERN, ExpIdPath, StoreDep, experiment_or_404
from service.reports import figures
from service.reports.figures import FINAL_METRICS
from service.store import TRACE_COLUMNS

router = APIRouter(prefix="/experiments/{exp_id}/plots", tags=["plots"])

_TRACE_NAME = "|".join(c for c in TRACE_COLUMNS if c != "step")
#: One to six trace columns, comma-separated (the schema says which names are allowed).
METRICS_PATTERN = rf"^\s*({_TRACE_NAME})\s*(,\s*({_TRACE_NAME})\s*){{0,5}}$"
PNG = {200: {"content": {"image/png": {}}, "description": "a PNG image of width x height pixels"},
       404: {"description": "no such experiment"}, 422: {"description": "invalid parameter"}}


def _png(data: bytes) -> Response:
    return Response(content=data, media_type="image/png", headers={"Cache-Control": "no-store"})


def _curves(store, exp_id: str, metrics: list[str], mode: str, points: int,
            variants: list[str] | None) -> figures.Curves:
    experiment_or_404(store, exp_id)
    return figures.curves(store, exp_id, metrics, mode, points, variants)


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
                     metrics: str = Query("loss,grad_norm,weight_norm", max_length=200, pattern=METRICS_PATTERN,
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
    try:
        xs, ys, grid, x, y = figures.grid_cells(store, exp_id, x=x, y=y, metric=metric, variant=variant, agg=agg)
    except figures.FigureError as exc:
        raise HTTPException(422, detail=[{"loc": ["query", exc.field], "type": "value_error",
                                          "msg": str(exc)}]) from None
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
    experiment_or_404(store, exp_id)
    arr, labels, x, y, maximize = figures.pareto_points(store, exp_id, x=x, y=y, per=per)
    return _png(figs.pareto_png(arr, labels, maximize=maximize, x_label=x, y_label=y,
                                width=width, height=height, dpi=dpi, title="Pareto front"))
