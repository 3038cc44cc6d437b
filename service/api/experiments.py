"""/api/v1/experiments: submit (JSON or YAML), list, inspect, cancel, delete."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from service.api.deps import AuthDep, ExpIdPath, RunnerDep, SettingsDep, StoreDep, experiment_or_404
from service.api.schemas import (
    EXAMPLE_SPEC_JSON,
    EXAMPLE_SPEC_YAML,
    ExperimentOut,
    ExperimentPage,
    SubmitResponse,
    experiment_out,
    links_for,
)
from service.db.models import ExperimentStatus
from service.submission import enqueue
from service.validation import SpecError

router = APIRouter(prefix="/experiments", tags=["experiments"])


_ERRORS = {
    401: {"description": "missing or invalid bearer token (when RNNHPO_API_TOKEN is set)"},
    404: {"description": "no such experiment"},
}


def _spec_schema() -> dict:
    from search.spec import ExperimentSpec

    return ExperimentSpec.model_json_schema(ref_template="#/components/schemas/{model}")


def _openapi_body() -> dict:
    schema = _spec_schema()
    defs = schema.pop("$defs", {})
    _openapi_body.defs = defs  # type: ignore[attr-defined]
    return {
        "requestBody": {
            "required": True,
            "description": "An experiment spec (search.spec.ExperimentSpec) as JSON or YAML.",
            "content": {
                "application/json": {"schema": schema,
                                     "examples": {"iris": {"summary": "GRU vs SL1-GRU on Iris",
                                                           "value": EXAMPLE_SPEC_JSON}}},
                "application/yaml": {"schema": schema,
                                     "examples": {"iris": {"summary": "the same in YAML",
                                                           "value": EXAMPLE_SPEC_YAML}}},
            },
        }
    }


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise HTTPException(413, detail=f"request body of {declared} bytes exceeds the limit of "
                                                f"{limit} bytes (RNNHPO_MAX_BODY_BYTES)")
        except ValueError:
            raise HTTPException(400, detail="invalid Content-Length header") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, detail=f"request body exceeds the limit of {limit} bytes "
                                            f"(RNNHPO_MAX_BODY_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SubmitResponse,
    summary="Submit an experiment",
    description="Validates the spec (422 naming the field otherwise), stores it as a queued experiment "
                "and returns 202 with its id and links. A runner picks it up from the queue.",
    openapi_extra=_openapi_body(),
    responses={**_ERRORS, 413: {"description": "body larger than RNNHPO_MAX_BODY_BYTES"},
               415: {"description": "not JSON or YAML"},
               422: {"description": "invalid spec; `detail[].loc` names the field"}},
)
async def submit_experiment(request: Request, response: Response, store: StoreDep,
                            settings: SettingsDep, _auth: AuthDep) -> SubmitResponse:
    raw = await _read_limited(request, settings.max_body_bytes)
    try:
        sub = await run_in_threadpool(enqueue, store, settings, raw, request.headers.get("content-type"))
    except SpecError as exc:
        if exc.status == 422:
            raise RequestValidationError(exc.errors) from None
        raise HTTPException(exc.status, detail=exc.errors) from None
    links = links_for(sub.id)
    response.headers["Location"] = links.self
    return SubmitResponse(id=sub.id, status="queued", name=sub.name, trials_planned=sub.n_trials,
                          links=links)


def _dashboard(settings, runner) -> str | None:
    if runner is not None and runner.stats.dashboard_url:
        return runner.stats.dashboard_url
    return settings.ray_dashboard_url


@router.get("", response_model=ExperimentPage, summary="List experiments (newest first)")
def list_experiments(
    store: StoreDep, settings: SettingsDep, runner: RunnerDep,
    status_: ExperimentStatus | None = Query(None, alias="status", description="only this status"),
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=10**9),
) -> ExperimentPage:
    items, total = store.list_experiments(status=status_, limit=limit, offset=offset, with_spec=False)
    dash = _dashboard(settings, runner)
    return ExperimentPage(items=[experiment_out(v, dashboard_url=dash) for v in items],
                          total=total, limit=limit, offset=offset)


ExpId = ExpIdPath


@router.get("/{exp_id}", response_model=ExperimentOut, responses={404: _ERRORS[404]},
            summary="Status, progress (trials done/total, best so far, ETA) and the Ray dashboard URL")
def get_experiment(exp_id: ExpId, store: StoreDep, settings: SettingsDep, runner: RunnerDep) -> ExperimentOut:
    return experiment_out(experiment_or_404(store, exp_id), with_spec=True, dashboard_url=_dashboard(settings, runner))


@router.post("/{exp_id}/cancel", response_model=ExperimentOut, status_code=202, responses=_ERRORS,
             summary="Cancel: a queued experiment is cancelled at once, a running one stops its packs")
def cancel_experiment(exp_id: ExpId, store: StoreDep, settings: SettingsDep, runner: RunnerDep,
                      _auth: AuthDep) -> ExperimentOut:
    experiment_or_404(store, exp_id)
    view = store.request_cancel(exp_id)
    return experiment_out(view, dashboard_url=_dashboard(settings, runner))


@router.post("/{exp_id}/resume", response_model=ExperimentOut, status_code=202,
             responses={**_ERRORS, 409: {"description": "running (held by a live runner) or succeeded: "
                                                         "nothing to resume"}},
             summary="Resume: re-run the failed and missing trials of a partial, failed or cancelled experiment")
def resume_experiment(exp_id: ExpId, store: StoreDep, settings: SettingsDep, runner: RunnerDep,
                      _auth: AuthDep) -> ExperimentOut:
    from service.store import ExperimentRunning

    experiment_or_404(store, exp_id)
    try:
        view = store.resume_experiment(exp_id, stale_after_s=settings.runner_stale_after_s)
    except (ValueError, ExperimentRunning) as exc:
        raise HTTPException(409, detail=str(exc)) from None
    return experiment_out(view, dashboard_url=_dashboard(settings, runner))


@router.delete("/{exp_id}", status_code=204, response_class=Response,
               responses={**_ERRORS, 409: {"description": "the experiment is running: cancel it first"}},
               summary="Delete an experiment with its trials and traces (not while it runs)")
def delete_experiment(exp_id: ExpId, store: StoreDep, _auth: AuthDep) -> Response:
    view = experiment_or_404(store, exp_id)
    if getattr(view, "status", None) == "running":
        raise HTTPException(409, detail=f"experiment {exp_id!r} is running: cancel it first")
    store.delete_experiment(exp_id)
    return Response(status_code=204)
