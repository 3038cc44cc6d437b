"""The FastAPI application factory.

``create_app(settings)`` opens the :class:`service.store.Store` (migrating the schema), mounts one
router per resource under ``/api/v1`` (health and metrics at the root) and, when
``settings.runner_in_process`` is set (``rnnhpo serve`` without ``--no-runner``), runs the queue
runner in a background thread for the life of the app.

Uvicorn can build it directly: ``uvicorn --factory service.api.app:create_app`` (settings from
the ``RNNHPO_*`` environment).
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from service.db.models import EXPERIMENT_STATUSES
from service.settings import Settings

API_PREFIX = "/api/v1"
log = logging.getLogger("rnnhpo.api")

TAGS = [
    {"name": "experiments", "description": "Submit, list, inspect, cancel and delete experiments."},
    {"name": "trials", "description": "Trials of an experiment, their final metrics and traces."},
    {"name": "compare", "description": "Paper-style tables (Table 3/5): mean ± std over seeds per variant."},
    {"name": "plots", "description": "PNG figures rendered headless with matplotlib."},
    {"name": "health", "description": "Liveness, readiness and Prometheus metrics."},
]


class MetricsState:
    """A private Prometheus registry per app (several apps may live in one test process)."""

    def __init__(self, store, runner=None):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.store, self.runner = store, runner
        self.registry = CollectorRegistry()
        self.requests = Counter("rnnhpo_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("rnnhpo_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 registry=self.registry)
        self.experiments = Gauge("rnnhpo_experiments", "Experiments by status", ["status"],
                                 registry=self.registry)
        self.runner_events = Gauge("rnnhpo_runner_experiments", "Experiments handled by the in-process runner",
                                   ["outcome"], registry=self.registry)

    def refresh(self) -> None:
        for status in EXPERIMENT_STATUSES:
            try:
                _, total = self.store.list_experiments(status=status, limit=1)
            except Exception:  # noqa: BLE001 - a scrape never fails on the database
                continue
            self.experiments.labels(status=status).set(total)
        if self.runner is not None:
            st = self.runner.stats
            for outcome in ("claimed", "succeeded", "failed", "cancelled", "requeued"):
                self.runner_events.labels(outcome=outcome).set(getattr(st, outcome))


def create_app(settings: Settings | None = None, *, store=None) -> FastAPI:
    """Build the app. ``store`` may be injected (tests); else one is opened on ``settings.database_url``."""
    settings = settings or Settings()
    settings.ensure_dirs()
    if store is None:
        from service.api.degraded import open_store

        store = open_store(settings)

    runner = None
    if settings.runner_in_process:
        from service.runner import Runner

        runner = Runner(settings, store=store)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if runner is not None:
            runner.start_in_thread()
            log.info("in-process runner %s started", runner.runner_id)
        try:
            yield
        finally:
            if runner is not None:
                # packs stop and the experiment goes back to the queue; past the grace period
                # the claim is released anyway so that shutdown stays short
                runner.stop(timeout=settings.stop_grace_s)

    # /docs (Swagger UI) and /redoc load their scripts and styles from this server (assets
    # shipped by fastapi-offline under /static-offline-docs), never from a CDN: they work offline.
    app = FastAPIOffline(
        title="rnnhpo",
        version="1.0.0",
        summary="Distributed hyperparameter search for regularized recurrent networks (SL1-GRU and baselines).",
        description=(
            "Submit an experiment spec (JSON or YAML); a durable queue runner trains every trial "
            "on Ray and stores per-iteration convergence traces in SQL. Query trials and traces, "
            "compare variants in the paper's table layout, and render the paper's figures.\n\n"
            "Mutating routes need `Authorization: Bearer <token>` when `RNNHPO_API_TOKEN` is set."),
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.runner = runner
    app.state.metrics = MetricsState(store, runner)

    from service.api import compare, experiments, health, plots, trials

    app.include_router(health.router)
    for module in (experiments, trials, compare, plots):
        app.include_router(module.router, prefix=API_PREFIX)
    _install_handlers(app)
    _install_metrics_middleware(app)
    _install_openapi(app, experiments)
    from service import ui

    ui.mount(app)
    return app


def _install_openapi(app: FastAPI, experiments_module) -> None:
    """Add the spec's nested models (referenced by the submit body) to components/schemas."""
    original = app.openapi

    def openapi():
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, sub in getattr(experiments_module._openapi_body, "defs", {}).items():
            comps.setdefault(name, sub)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_handlers(app: FastAPI) -> None:
    from service import store as store_mod
    from service.api import degraded

    degraded.install(app, app.state.store)

    not_found = getattr(store_mod, "NotFound", None)
    running = getattr(store_mod, "ExperimentRunning", None)
    if not_found is not None:
        @app.exception_handler(not_found)
        async def _nf(_request: Request, exc: Exception):
            return JSONResponse({"detail": str(exc) or "not found"}, status_code=404)
    if running is not None:
        @app.exception_handler(running)
        async def _running(_request: Request, exc: Exception):
            return JSONResponse({"detail": str(exc) or "experiment is running"}, status_code=409)


class _ObserveMiddleware:
    """Pure ASGI middleware counting requests and timing them by route template (it does not
    buffer or wrap streamed bodies, unlike ``@app.middleware("http")``)."""

    def __init__(self, app, metrics: MetricsState):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = getattr(scope.get("route"), "path", "<unmatched>")
            if path != "<unmatched>" and scope.get("path", "").startswith(API_PREFIX + "/") \
                    and not path.startswith(API_PREFIX):
                path = API_PREFIX + path
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status["code"])).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - t0)


def _install_metrics_middleware(app: FastAPI) -> None:
    app.add_middleware(_ObserveMiddleware, metrics=app.state.metrics)
