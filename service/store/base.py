"""The store's plumbing: one engine per URL, write transactions (``BEGIN IMMEDIATE`` on SQLite),
reads, and row-to-view conversion."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from service.db import migrate as _migrate
from service.db.engine import get_engine, normalize_url
from service.db.models import EpochMetric, Experiment, TracePoint, Trial
from service.store.views import ExperimentView, NotFound, TrialView

E = Experiment.__table__
T = Trial.__table__
TP = TracePoint.__table__
EM = EpochMetric.__table__


class StoreBase:
    """Engine, transactions and row-to-view conversion shared by the store's parts."""

    def __init__(self, url: str, *, migrate: bool = True, engine: Engine | None = None):
        self.url = str(url)
        self.engine: Engine = engine if engine is not None else get_engine(url)
        self.dialect = self.engine.dialect.name
        self._wopts = {"sqlite_begin": "IMMEDIATE"} if self.dialect == "sqlite" else {}
        if migrate:
            self.migrate()

    def __repr__(self) -> str:
        return f"Store({normalize_url(self.url).render_as_string(hide_password=True)!r})"

    def migrate(self, revision: str = "head") -> None:
        """Alembic upgrade to ``revision`` (idempotent, safe when processes race)."""
        _migrate.upgrade(self.engine, revision)

    def check_writable(self) -> None:
        """Commit a no-op write (raises when the database cannot take writes: down, read-only,
        disk full, or not migrated)."""
        from service.db.migrate import VERSION_TABLE

        with self._write() as conn:
            conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = version_num"))

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(**self._wopts)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @staticmethod
    def _exp_view(row) -> ExperimentView:
        return ExperimentView.model_validate(dict(row._mapping))

    @staticmethod
    def _trial_view(row) -> TrialView:
        return TrialView.model_validate(dict(row._mapping))

    def _require_experiment(self, conn: Connection, exp_id: str, *, lock: bool = False):
        q = sa.select(E).where(E.c.id == exp_id)
        if lock and self.dialect == "postgresql":
            q = q.with_for_update()
        row = conn.execute(q).first()
        if row is None:
            raise NotFound(f"experiment {exp_id!r} not found")
        return row
