"""The API while its database is unavailable, and a complete ``Allow`` on 405s.

* Every route that needs the database answers **503** with ``Retry-After`` while the database
  cannot be reached (connection refused or reset, pool timeout, disk full, read-only) instead of
  a 500; the detail names the cause in one line.
* Which errors count as an outage: :mod:`service.db.errors`.
* A database that comes back **empty** (recreated) is migrated on the first request that finds
  its tables missing; that request gets a 503, the next ones work.
* The app starts even when the database is down: :func:`open_store` opens the store without
  migrating, and the migration runs on reconnect as above. ``/healthz`` answers regardless and
  ``/readyz`` says 503 until the database takes writes.
"""

from __future__ import annotations

import logging
import re
import threading
import time

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from search.faults import reason
from service.db.errors import is_db_unavailable, is_schema_missing

log = logging.getLogger("rnnhpo.api")

RETRY_AFTER_S = 5


class _Migrator:
    """Runs the store's migration in the background, at most once every ``min_interval_s``."""

    def __init__(self, store, min_interval_s: float = 5.0):
        self.store, self.min_interval_s = store, min_interval_s
        self._lock = threading.Lock()
        self._last = -1e9

    def kick(self) -> None:
        with self._lock:
            if time.monotonic() - self._last < self.min_interval_s:
                return
            self._last = time.monotonic()
        threading.Thread(target=self._run, name="rnnhpo-migrate", daemon=True).start()

    def _run(self) -> None:
        try:
            self.store.migrate()
            log.info("database schema migrated after reconnect")
        except Exception as exc:  # noqa: BLE001 - tried again on a later request
            log.warning("migration on reconnect failed: %s", reason(exc))


def open_store(settings):
    """The app's store; when the database is unreachable at start, a store that migrates later."""
    from service.store import Store

    try:
        return Store(settings.database_url)
    except Exception as exc:  # noqa: BLE001 - only outages are tolerated
        if not is_db_unavailable(exc):
            raise
        log.warning("database unavailable at start (%s); serving 503 until it is back", reason(exc))
        return Store(settings.database_url, migrate=False)


def install(app: FastAPI, store) -> None:
    """Register the 503 handler for database outages and the 405 handler with a full ``Allow``."""
    import sqlalchemy.exc as sa_exc

    migrator = _Migrator(store)
    app.state.migrator = migrator

    async def unavailable(_request: Request, exc: Exception):
        if not is_db_unavailable(exc):
            log.error("database error: %s", reason(exc), exc_info=exc)
            return JSONResponse({"detail": "internal error"}, status_code=500)
        if is_schema_missing(exc):
            migrator.kick()
        log.warning("database unavailable: %s", reason(exc))
        return JSONResponse({"detail": f"database unavailable, retry later ({reason(exc, 200)})"},
                            status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    app.add_exception_handler(sa_exc.SQLAlchemyError, unavailable)

    allowed: list[tuple[re.Pattern, set[str]]] = []

    async def with_allow(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 405:
            if not allowed:
                allowed.extend(_allowed_methods(request.app))
            path = request.url.path
            methods = set().union(*(m for rx, m in allowed if rx.fullmatch(path)))
            if methods:
                exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))}
        return await http_exception_handler(request, exc)

    app.add_exception_handler(StarletteHTTPException, with_allow)


def _allowed_methods(app: FastAPI) -> list[tuple[re.Pattern, set[str]]]:
    """``(path regex, methods)`` of every documented route (path templates from OpenAPI)."""
    out = []
    for template, ops in app.openapi().get("paths", {}).items():
        rx = re.compile(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)))
        methods = {m.upper() for m in ops if m in ("get", "post", "put", "patch", "delete")}
        out.append((rx, methods))
    return out
