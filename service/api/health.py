"""Liveness, readiness and Prometheus metrics (mounted at the root, not under /api/v1)."""

from __future__ import annotations

import socket
import sys
import time
from typing import Any
from urllib.parse import urlparse

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from service.api.deps import RunnerDep, SettingsDep, StoreDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Check(BaseModel):
    ok: bool
    detail: str = Field(examples=["sqlite: 3 experiments"])
    latency_ms: float | None = None


class Ready(BaseModel):
    status: str = Field(examples=["ready"], description="ready | not ready")
    checks: dict[str, Check]


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="ok")


def _check_db(store, settings, migrator=None) -> Check:
    """Ready when the database takes a write (a committed no-op update) and, for SQLite, its disk
    has at least ``min_free_disk_mb`` free: a full disk is not ready."""
    from search.faults import reason
    from service.db.errors import is_schema_missing

    t0 = time.perf_counter()
    try:
        store.check_writable()
        _, total = store.list_experiments(limit=1, with_spec=False)
    except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
        if migrator is not None and is_schema_missing(exc):
            migrator.kick()
        return Check(ok=False, detail=reason(exc, 200))
    free_mb = _sqlite_free_mb(store)
    if free_mb is not None and free_mb < settings.min_free_disk_mb:
        return Check(ok=False, detail=f"disk nearly full: {free_mb:.1f} MB free beside the SQLite file "
                                      f"(RNNHPO_MIN_FREE_DISK_MB={settings.min_free_disk_mb:g})")
    return Check(ok=True, detail=f"{total} experiments, writable",
                 latency_ms=round(1000 * (time.perf_counter() - t0), 2))


def _sqlite_free_mb(store) -> float | None:
    import os
    import shutil

    if getattr(store, "dialect", None) != "sqlite":
        return None
    path = store.engine.url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 2**20


def _tcp(host: str, port: int, timeout: float = 1.0) -> None:
    with socket.create_connection((host, port), timeout=timeout):
        pass


def _check_ray(address: str | None, runner) -> Check:
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        return Check(ok=True, detail="connected in this process")
    if address in (None, "", "local"):
        where = "in-process runner" if runner is not None else "each runner"
        return Check(ok=True, detail=f"embedded: a local Ray starts on demand in {where}")
    if address == "auto":
        return Check(ok=True, detail="address 'auto': resolved by the runner")
    t0 = time.perf_counter()
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or (10001 if parsed.scheme == "ray" else 6379)
    try:
        _tcp(host, port)
    except OSError as exc:
        return Check(ok=False, detail=f"Ray at {host}:{port} unreachable: {exc}")
    return Check(ok=True, detail=f"Ray at {host}:{port} reachable",
                 latency_ms=round(1000 * (time.perf_counter() - t0), 2))


@router.get("/readyz", response_model=Ready, summary="Readiness: database writable (disk not full), Ray reachable",
            responses={503: {"model": Ready, "description": "a dependency is down"}})
async def readyz(request: Request, store: StoreDep, settings: SettingsDep, runner: RunnerDep,
                 response: Response) -> Ready:
    db = await run_in_threadpool(_check_db, store, settings, getattr(request.app.state, "migrator", None))
    ray = await run_in_threadpool(_check_ray, settings.ray_address, runner)
    checks = {"database": db, "ray": ray}
    ok = all(c.ok for c in checks.values())
    if not ok:
        response.status_code = 503
    return Ready(status="ready" if ok else "not ready", checks=checks)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition"}})
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    metrics_state: Any = request.app.state.metrics
    await run_in_threadpool(metrics_state.refresh)
    return Response(generate_latest(metrics_state.registry), media_type=CONTENT_TYPE_LATEST)
