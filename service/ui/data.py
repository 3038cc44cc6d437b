"""Data routes of the pages: each chart as a Plotly figure (JSON) or its rows (CSV), the trace
explorer's window, a trial's epochs and weights, and the spec editor's checks.

Reads are open, like the API's; nothing here changes state (submitting and cancelling go to the
API's own routes, with the bearer token).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Literal

from fastapi import APIRouter, Body, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from service.api.deps import NO_NUL_PATTERN, ExpIdPath, SettingsDep, StoreDep, TrialIdPath
from service.reports import figures, ui_data
from service.store import TRACE_COLUMNS
from service.submission import validate
from service.ui import charts, editor
from service.validation import SpecError

router = APIRouter(prefix="/data")

ChartName = Literal["convergence", "sparsity", "learning", "grid", "parallel", "pareto"]
Fmt = Literal["json", "csv"]
TRACE_METRICS = tuple(c for c in TRACE_COLUMNS if c not in ("step", "epoch"))


def _csv(columns: list[str], rows: list[list], filename: str) -> Response:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    w.writerows(["" if v is None else v for v in row] for row in rows)
    return Response(out.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _respond(chart: charts.Chart, fmt: str, filename: str) -> Response:
    if fmt == "csv":
        return _csv(chart.columns, chart.rows, filename)
    return JSONResponse(chart.figure(), headers={"Cache-Control": "no-store"})


def _unprocessable(field: str, msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["query", field], "msg": msg, "type": "value_error"}])


@router.get("/experiments/{exp_id}/charts/{name}.{fmt}")
def chart(exp_id: ExpIdPath, name: ChartName, fmt: Fmt, store: StoreDep,
          metric: str | None = Query(None, max_length=40, pattern=NO_NUL_PATTERN),
          config: Literal["best", "all"] = Query("best"),
          points: int = Query(500, ge=2, le=20_000),
          log: bool = Query(False),
          x: str | None = Query(None, max_length=64, pattern=NO_NUL_PATTERN),
          y: str | None = Query(None, max_length=64, pattern=NO_NUL_PATTERN),
          facet: str | None = Query(None, max_length=64, pattern=NO_NUL_PATTERN),
          variant: str | None = Query(None, max_length=200, pattern=NO_NUL_PATTERN),
          agg: Literal["mean", "max", "min"] = Query("mean"),
          per: Literal["config", "trial"] = Query("config")) -> Response:
    """One chart of the experiment page, as the figure (json) or its data (csv)."""
    if store.get_experiment(exp_id) is None:
        raise HTTPException(404, detail=f"experiment {exp_id!r} not found")
    try:
        if name in ("convergence", "sparsity"):
            default = "loss" if name == "convergence" else "sparsity_out"
            metric = metric or default
            if metric not in TRACE_METRICS:
                raise _unprocessable("metric", f"one of {list(TRACE_METRICS)}")
            result = charts.convergence(store, exp_id, metric=metric, mode=config, points=points, log=log)
        elif name == "learning":
            chosen = tuple((metric or "train_metric,test_metric").split(","))
            result = charts.learning(store, exp_id, metrics=chosen, mode=config)
        elif name == "grid":
            metric = metric or "test_metric"
            if metric not in figures.FINAL_METRICS:
                raise _unprocessable("metric", f"one of {list(figures.FINAL_METRICS)}")
            result = charts.grid(store, exp_id, x=x, y=y, facet=facet, metric=metric, variant=variant, agg=agg)
        elif name == "parallel":
            if metric is not None and metric not in figures.FINAL_METRICS:
                raise _unprocessable("metric", f"one of {list(figures.FINAL_METRICS)}")
            result = charts.parallel(store, exp_id, color=metric)
        else:
            for field, v in (("x", x), ("y", y)):
                if v is not None and v not in figures.FINAL_METRICS:
                    raise _unprocessable(field, f"one of {list(figures.FINAL_METRICS)}")
            result = charts.pareto(store, exp_id, x=x, y=y, per=per)
    except figures.FigureError as exc:
        raise _unprocessable(exc.field, str(exc)) from None
    return _respond(result, fmt, f"{exp_id[:12]}-{name}.csv")


@router.get("/trials/{trial_id}/trace.{fmt}")
def trace(trial_id: TrialIdPath, fmt: Fmt, store: StoreDep,
          metrics: str = Query("loss,grad_norm,weight_norm", max_length=300, pattern=NO_NUL_PATTERN),
          start: int | None = Query(None, ge=0, le=2**62), stop: int | None = Query(None, ge=0, le=2**62),
          max_points: int = Query(1000, ge=2, le=200_000), log: bool = Query(False)) -> Response:
    """A step range of the trial's trace, down-sampled in SQL to ``max_points`` rows."""
    if store.get_trial(trial_id) is None:
        raise HTTPException(404, detail=f"trial {trial_id} not found")
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    bad = [m for m in names if m not in TRACE_METRICS]
    if bad or not names or len(names) > 8:
        raise _unprocessable("metrics", f"1-8 of {list(TRACE_METRICS)}; bad: {bad}")
    if start is not None and stop is not None and stop < start:
        raise _unprocessable("stop", "stop must be >= start")
    window = ui_data.trace_window(store, trial_id, names, start=start, stop=stop, max_points=max_points)
    result = charts.trace(window, names, log=log)
    if fmt == "csv":
        return _csv(result.columns, result.rows, f"trial-{trial_id}-trace.csv")
    body = result.figure()
    body["window"] = {"rows_in_range": window.rows_in_range, "total_rows": window.total_rows,
                      "returned": len(window.columns["step"]), "stride": window.stride,
                      "start": start, "stop": stop}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/trials/{trial_id}/epochs.{fmt}")
def epochs(trial_id: TrialIdPath, fmt: Fmt, store: StoreDep) -> Response:
    if store.get_trial(trial_id) is None:
        raise HTTPException(404, detail=f"trial {trial_id} not found")
    return _respond(charts.epochs(store.get_epochs(trial_id)), fmt, f"trial-{trial_id}-epochs.csv")


@router.get("/trials/{trial_id}/weights.json")
def weights(trial_id: TrialIdPath, store: StoreDep) -> Response:
    """The trial's exported weights, when the run stored them (``extra.weights``)."""
    trial = store.get_trial(trial_id)
    if trial is None:
        raise HTTPException(404, detail=f"trial {trial_id} not found")
    stored = (trial.extra or {}).get("weights")
    if not stored:
        raise HTTPException(404, detail=f"trial {trial_id} has no stored weights")
    return Response(json.dumps(stored), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="trial-{trial_id}-weights.json"'})


@router.post("/validate")
async def check_spec(request: Request, settings: SettingsDep) -> JSONResponse:
    """Validate a spec exactly as ``POST /api/v1/experiments`` does, without queuing it; every
    problem with its field's line and column in the text."""
    raw = await request.body()
    if len(raw) > settings.max_body_bytes:
        raise HTTPException(413, detail="spec too large")
    text = raw.decode("utf-8", errors="replace")
    try:
        spec, n_trials = await run_in_threadpool(validate, settings, raw, request.headers.get("content-type"))
    except SpecError as exc:
        return JSONResponse({"ok": False, "status": exc.status, "errors": editor.annotate(text, exc.errors)})
    return JSONResponse({"ok": True, "name": spec.name, "trials_planned": n_trials, "errors": []})


@router.post("/locate")
def locate(text: str = Body(..., max_length=1_000_000), detail: list[dict] = Body(..., max_length=500)) -> list[dict]:
    """The API's 422 ``detail`` entries with the line and column of each field in ``text``."""
    return editor.annotate(text, detail)
