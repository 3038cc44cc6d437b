"""Run the Alembic migrations programmatically (no alembic.ini needed).

The version table is ``rnnhpo_alembic_version`` so that Optuna's (or anyone's) own
``alembic_version`` in a shared database is left alone.

Concurrency: the whole upgrade runs in one transaction that first takes a lock -- a
transaction-scoped advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` (the write lock) on SQLite --
so two processes migrating at once serialise and the second finds the schema already at head.
On top of that, :func:`upgrade` retries a few times and finally verifies the revision.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from service.db.engine import get_engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "rnnhpo_alembic_version"
_PG_LOCK_KEY = 0x726E6E68706F  # "rnnhpo"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", str(url).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _engine(target: Engine | str) -> Engine:
    return target if isinstance(target, Engine) else get_engine(target)


def current_revision(target: Engine | str) -> str | None:
    with _engine(target).connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def _run(engine: Engine, fn, revision: str) -> None:
    """Run an Alembic command in one transaction (PostgreSQL: under an advisory lock). On SQLite
    foreign keys are off while it runs: batch migrations recreate a table, and with them on,
    dropping the old ``rnnhpo_experiments`` would cascade and delete every trial and trace."""
    sqlite = engine.dialect.name == "sqlite"
    opts = {"sqlite_begin": "IMMEDIATE"} if sqlite else {}
    with engine.connect().execution_options(**opts) as conn:
        raw = conn.connection.dbapi_connection
        if sqlite:
            raw.execute("PRAGMA foreign_keys=OFF")  # outside any transaction, where it applies
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
                cfg = alembic_config()
                cfg.attributes["connection"] = conn
                fn(cfg, revision)
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise sa.exc.IntegrityError("PRAGMA foreign_key_check", None,
                                                Exception("a migration left dangling references"))
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


def upgrade(target: Engine | str, revision: str = "head", *, retries: int = 5) -> None:
    """Upgrade the database to ``revision`` (idempotent; safe when processes race)."""
    engine = _engine(target)
    for attempt in range(retries):
        try:
            _run(engine, command.upgrade, revision)
            return
        except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError) as exc:
            # A racing migrator that slipped past the lock (e.g. an older version of this code):
            # wait and check whether the schema got to head meanwhile.
            log.warning("migration attempt %d failed: %s", attempt + 1, exc)
            time.sleep(0.2 * (attempt + 1))
            if revision == "head" and current_revision(engine) == head_revision():
                return
            if attempt == retries - 1:
                raise


def downgrade(target: Engine | str, revision: str = "base") -> None:
    """Downgrade to ``revision`` (``"base"`` drops every rnnhpo table)."""
    _run(_engine(target), command.downgrade, revision)
