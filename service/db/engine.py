"""Engine creation from one URL.

* SQLite (``sqlite:///path.db``): the parent directory is created; every connection gets
  ``journal_mode=WAL``, ``busy_timeout`` (60 s),
  ``foreign_keys=ON``, ``synchronous=NORMAL``. ``sqlite://`` (in memory) shares one connection.
  pysqlite's own transaction handling is switched off and SQLAlchemy emits ``BEGIN`` itself, so
  a connection opened with ``execution_options(sqlite_begin="IMMEDIATE")`` takes the write lock
  at the start of its transaction (writers queue on busy_timeout instead of failing with
  SQLITE_BUSY when a read transaction tries to upgrade to a write).
* PostgreSQL: ``postgresql://`` / ``postgres://`` URLs are mapped to the psycopg 3 driver.

:func:`get_engine` caches one engine per (URL, process id): many stores/sinks in one process
share one pool, and a forked child never reuses its parent's connections.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url

SQLITE_BUSY_TIMEOUT_S = 60.0

_CACHE: dict[tuple[str, int], Engine] = {}
_CACHE_LOCK = threading.Lock()


def normalize_url(url: str | URL) -> URL:
    """Parse ``url``, pick the psycopg 3 driver for plain PostgreSQL URLs and make a relative
    SQLite path absolute (Ray's worker processes, where packs and the result writer run, do not
    share the driver's directory, so a relative path would name a different, empty file there)."""
    u = make_url(str(url)) if not isinstance(url, URL) else url
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:" \
            and not u.database.startswith("file:") and not os.path.isabs(u.database):
        u = u.set(database=os.path.abspath(u.database))
    return u


def is_sqlite(engine_or_url: Engine | str | URL) -> bool:
    if isinstance(engine_or_url, Engine):
        return engine_or_url.dialect.name == "sqlite"
    return normalize_url(engine_or_url).get_backend_name() == "sqlite"


def _setup_sqlite(engine: Engine) -> None:
    busy_ms = int(SQLITE_BUSY_TIMEOUT_S * 1000)
    in_memory = engine.url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised through every test
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see "begin" below)
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
            if not in_memory:
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.execute("PRAGMA synchronous = NORMAL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # pragma: no cover - exercised through every test
        mode = conn.get_execution_options().get("sqlite_begin")
        conn.exec_driver_sql(f"BEGIN {mode}" if mode else "BEGIN")


def make_engine(url: str | URL, **kwargs) -> Engine:
    """A new engine for ``url`` (SQLite file or PostgreSQL), configured as described above."""
    u = normalize_url(url)
    if u.get_backend_name() == "sqlite":
        db = u.database
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
        connect_args.setdefault("check_same_thread", False)
        if db in (None, "", ":memory:"):
            # one shared in-memory database for every thread of the engine (tests, demos)
            kwargs.setdefault("poolclass", sa.pool.StaticPool)
        engine = sa.create_engine(u, connect_args=connect_args, **kwargs)
        _setup_sqlite(engine)
        return engine
    if u.get_backend_name() == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("connect_timeout", 10)
        return sa.create_engine(u, connect_args=connect_args, **kwargs)
    raise ValueError(f"unsupported database URL {u.render_as_string(hide_password=True)!r}: "
                     "use sqlite:///path.db or postgresql://...")


def get_engine(url: str | URL) -> Engine:
    """The process-wide cached engine for ``url`` (one pool per URL per process)."""
    key = (normalize_url(url).render_as_string(hide_password=False), os.getpid())
    with _CACHE_LOCK:
        engine = _CACHE.get(key)
        if engine is None:
            engine = _CACHE[key] = make_engine(url)
        return engine


def _after_fork_in_child() -> None:
    # A forked child must not touch (or close) the parent's pooled connections: forget them
    # without closing; the child builds its own engines on first use (cache keyed by pid).
    global _CACHE_LOCK
    _CACHE_LOCK = threading.Lock()  # the parent's may have been held by another thread
    for (_, pid), engine in list(_CACHE.items()):
        if pid != os.getpid():
            engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def dispose_engines() -> None:
    """Dispose and forget every cached engine of this process (tests, shutdown)."""
    with _CACHE_LOCK:
        for (_, pid), engine in list(_CACHE.items()):
            if pid == os.getpid():
                engine.dispose()
        for key in [k for k in _CACHE if k[1] == os.getpid()]:
            del _CACHE[key]
