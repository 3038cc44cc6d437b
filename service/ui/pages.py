"""HTML pages and the partials htmx swaps into them.

Experiments come from :meth:`Store.list_experiments` / :meth:`Store.get_experiment` shaped by
:func:`service.api.schemas.experiment_out` (the API's own view: progress, ETA, dashboard);
comparison rows from :func:`service.reports.compare.compare` rendered with the columns of
:mod:`service.reports.tables`; trials from :meth:`Store.list_trials` / :meth:`Store.get_trial`.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from service.api.deps import NO_NUL_PATTERN, ExpIdPath, RunnerDep, SettingsDep, StoreDep, TrialIdPath
from service.api.experiments import _dashboard
from service.api.schemas import ExperimentOut, experiment_out
from service.reports import figures, tables, ui_data
from service.store import TRACE_COLUMNS
from service.ui import editor
from service.ui.paired import comparison_table

router = APIRouter()
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

ExperimentStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE = ("queued", "running")
TRIAL_SORTS = ("number", "variant", "status", "seed", "test_metric", "train_metric", "loss",
               "sparsity_out", "sparsity_all", "wall_time")


# -- formatting helpers (Jinja filters) -------------------------------------------------------
def num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.{digits}g}"
    return str(v)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def when(dt: datetime | None) -> str:
    if dt is None:
        return "–"
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def params_text(params: dict | None) -> str:
    if not params:
        return "–"
    return ", ".join(f"{k}={num(v)}" for k, v in sorted(params.items()))


templates.env.filters.update(num=num, duration=duration, when=when, params=params_text,
                             tojson_pretty=lambda v: json.dumps(v, indent=2, sort_keys=True, default=str))


def ray_job_url(out: ExperimentOut) -> str | None:
    """The experiment's page in the Ray dashboard (its job's submission id is ``rnnhpo-<id>``)."""
    if not out.dashboard_url:
        return None
    return f"{out.dashboard_url.rstrip('/')}/#/jobs/rnnhpo-{out.id}"


def _common(request: Request, settings, nav: str | None = None) -> dict[str, Any]:
    return {"request": request, "token_required": settings.token is not None, "nav": nav}


def _experiment(store, exp_id: str, settings, runner, *, with_spec: bool = False):
    view = store.get_experiment(exp_id)
    if view is None:
        raise HTTPException(404, detail=f"experiment {exp_id!r} not found")
    out = experiment_out(view, with_spec=with_spec, dashboard_url=_dashboard(settings, runner))
    return view, out


def _summary_ctx(view, out: ExperimentOut) -> dict[str, Any]:
    progress = view.progress or {}
    return {"exp": out, "packs_done": progress.get("packs_done"), "packs_total": progress.get("packs_total"),
            "ray_url": ray_job_url(out), "active": out.status in ACTIVE}


def _status(status: str | None) -> str | None:
    """An experiment status filter; empty means any."""
    if not status:
        return None
    if status not in ExperimentStatus.__args__:
        raise HTTPException(422, detail=[{"loc": ["query", "status"], "type": "literal_error",
                                          "msg": f"one of {list(ExperimentStatus.__args__)}"}])
    return status


# -- experiments list ---------------------------------------------------------------------------
@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
def experiments_page(request: Request, settings: SettingsDep,
                     status: str | None = Query(None, max_length=20, pattern=NO_NUL_PATTERN),
                     q: str | None = Query(None, max_length=200, pattern=NO_NUL_PATTERN)) -> HTMLResponse:
    return templates.TemplateResponse(request, "experiments.html", {
        **_common(request, settings, "experiments"), "status": _status(status), "q": q or "",
        "statuses": ExperimentStatus.__args__})


@router.get("/partials/experiments", response_class=HTMLResponse)
def experiment_rows(request: Request, store: StoreDep, settings: SettingsDep, runner: RunnerDep,
                    status: str | None = Query(None, max_length=20, pattern=NO_NUL_PATTERN),
                    q: str | None = Query(None, max_length=200, pattern=NO_NUL_PATTERN),
                    limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=10**9)) -> HTMLResponse:
    """The list's rows; htmx polls this every few seconds while the page is open."""
    dash = _dashboard(settings, runner)
    status = _status(status)
    if q:
        views, _ = store.list_experiments(status=status, limit=1000)
        views = [v for v in views if q.lower() in v.name.lower() or v.id.startswith(q)]
        total, views = len(views), views[offset:offset + limit]
    else:
        views, total = store.list_experiments(status=status, limit=limit, offset=offset)
    rows = [_summary_ctx(v, experiment_out(v, dashboard_url=dash)) for v in views]
    return templates.TemplateResponse(request, "_experiment_rows.html", {
        **_common(request, settings), "rows": rows, "total": total, "limit": limit, "offset": offset,
        "status": status, "q": q or ""})


# -- one experiment -------------------------------------------------------------------------------
@router.get("/experiments/{exp_id}", response_class=HTMLResponse)
def experiment_page(request: Request, exp_id: ExpIdPath, store: StoreDep, settings: SettingsDep,
                    runner: RunnerDep) -> HTMLResponse:
    view, out = _experiment(store, exp_id, settings, runner, with_spec=True)
    spec = view.spec or {}
    objs, dirs = figures.objectives(spec)
    trials, _ = store.list_trials(exp_id, limit=2000)
    searched = ui_data.searched_params(trials)
    variants = [v.get("name") for v in spec.get("variants", [])]
    return templates.TemplateResponse(request, "experiment.html", {
        **_common(request, settings), **_summary_ctx(view, out), "spec": spec,
        "spec_yaml": _yaml(spec), "objectives": list(zip(objs, dirs)), "searched": searched,
        "variants": variants,
        "grid_search": bool(searched) and (spec.get("search") or {}).get("algorithm", "grid") == "grid",
        "final_metrics": figures.FINAL_METRICS, "trace_metrics": [c for c in TRACE_COLUMNS if c not in ("step", "epoch")],
        "trial_sorts": TRIAL_SORTS})


def _yaml(spec: dict) -> str:
    import yaml

    return yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=100)


@router.get("/partials/experiments/{exp_id}/summary", response_class=HTMLResponse)
def experiment_summary(request: Request, exp_id: ExpIdPath, store: StoreDep, settings: SettingsDep,
                       runner: RunnerDep, seen: int | None = Query(None, ge=-1, le=10**9),
                       seen_status: str | None = Query(None, max_length=20, pattern=NO_NUL_PATTERN)) -> HTMLResponse:
    """Status and progress; polled while the experiment is queued or running. When trials were
    finished since ``seen`` (or the status changed) the response triggers ``rnnhpo:progress``,
    on which the page reloads its table and charts."""
    view, out = _experiment(store, exp_id, settings, runner)
    response = templates.TemplateResponse(request, "_summary.html", {**_common(request, settings),
                                                                     **_summary_ctx(view, out)})
    if (seen is not None and seen != out.progress.trials_done) or (seen_status and seen_status != out.status):
        response.headers["HX-Trigger"] = "rnnhpo:progress"
    return response


@router.get("/partials/experiments/{exp_id}/compare", response_class=HTMLResponse)
def comparison(request: Request, exp_id: ExpIdPath, store: StoreDep, settings: SettingsDep,
               by: Literal["variant", "config"] = Query("variant"),
               reference: str | None = Query(None, max_length=200, pattern=NO_NUL_PATTERN)) -> HTMLResponse:
    """The comparison table (the API's rows in the CLI's columns), with paired statistics
    against a reference variant where the reports layer provides them."""
    view = store.get_experiment(exp_id)
    if view is None:
        raise HTTPException(404, detail=f"experiment {exp_id!r} not found")
    table = comparison_table(store, exp_id, by_config=by == "config", reference=reference or None,
                             paper=tables.paper_protocol(view.spec))
    return templates.TemplateResponse(request, "_compare.html", {
        **_common(request, settings), "exp_id": exp_id, "by": by, "table": table})


@router.get("/partials/experiments/{exp_id}/trials", response_class=HTMLResponse)
def trial_rows(request: Request, exp_id: ExpIdPath, store: StoreDep, settings: SettingsDep,
               variant: str | None = Query(None, max_length=200, pattern=NO_NUL_PATTERN),
               status: str | None = Query(None, max_length=20, pattern=NO_NUL_PATTERN),
               sort: str = Query("number", max_length=40, pattern=NO_NUL_PATTERN),
               order: Literal["asc", "desc"] = Query("asc"),
               limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9)) -> HTMLResponse:
    if store.get_experiment(exp_id) is None:
        raise HTTPException(404, detail=f"experiment {exp_id!r} not found")
    try:
        items, total = store.list_trials(exp_id, status=status or None, variant=variant or None,
                                         sort=sort if sort in TRIAL_SORTS else "number",
                                         descending=order == "desc", limit=limit, offset=offset)
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    return templates.TemplateResponse(request, "_trial_rows.html", {
        **_common(request, settings), "exp_id": exp_id, "trials": items, "total": total, "limit": limit,
        "offset": offset, "variant": variant or "", "status": status or "", "sort": sort, "order": order})


# -- one trial ---------------------------------------------------------------------------------------
@router.get("/trials/{trial_id}", response_class=HTMLResponse)
def trial_page(request: Request, trial_id: TrialIdPath, store: StoreDep, settings: SettingsDep) -> HTMLResponse:
    trial = store.get_trial(trial_id)
    if trial is None:
        raise HTTPException(404, detail=f"trial {trial_id} not found")
    exp = store.get_experiment(trial.experiment_id)
    total = store.trace_row_count(trial_id=trial_id)
    weights = (trial.extra or {}).get("weights")
    finals = {k: getattr(trial, k) for k in ("train_metric", "test_metric", "loss", "data_loss", "penalty",
                                             "sparsity_out", "sparsity_all", "weight_norm", "steps", "wall_time")}
    finals.update({k: v for k, v in (trial.final or {}).items() if k not in finals})
    return templates.TemplateResponse(request, "trial.html", {
        **_common(request, settings), "trial": trial, "exp": exp, "finals": finals,
        "trace_rows": total, "weights": weights,
        "trace_metrics": [c for c in TRACE_COLUMNS if c not in ("step", "epoch")]})


# -- submit ---------------------------------------------------------------------------------------------
@router.get("/submit", response_class=HTMLResponse)
def submit_page(request: Request, settings: SettingsDep,
                example: str | None = Query(None, max_length=200, pattern=NO_NUL_PATTERN)) -> HTMLResponse:
    examples = editor.examples()
    first = example if example in examples else next(iter(examples))
    return templates.TemplateResponse(request, "submit.html", {
        **_common(request, settings, "submit"), "examples": examples, "example": first, "text": examples[first]})


@router.get("/experiments", include_in_schema=False)
def experiments_redirect() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)
