"""Trace and epoch reads: whole, down-sampled in SQL (``every``, ``max_points``) or streamed in
chunks; PostgreSQL reads go through binary ``COPY`` parsed with numpy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from service.store._pgcopy import _parse_pg_binary
from service.store.base import T, TP, StoreBase
from service.store.trials import _EPOCH_INT, _TRACE_INT
from search.sink import EPOCH_COLUMNS, TRACE_COLUMNS


class TraceStore(StoreBase):
    """Per-iteration traces and per-epoch metrics of trials."""

    @staticmethod
    def _metric_names(metrics: list[str] | None) -> list[str]:
        if metrics is None:
            return list(TRACE_COLUMNS)
        if isinstance(metrics, str):
            metrics = [metrics]
        unknown = [m for m in metrics if m not in TRACE_COLUMNS]
        if unknown:
            raise ValueError(f"unknown trace metric(s) {unknown}; allowed: {', '.join(TRACE_COLUMNS)}")
        names = ["step"] + [m for m in dict.fromkeys(metrics) if m != "step"]
        return names

    @staticmethod
    def _to_arrays(rows: list, names: list[str], ints: tuple[str, ...] = _TRACE_INT
                   ) -> dict[str, np.ndarray]:
        if rows:
            a = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
        else:
            a = np.zeros((0, len(names)))
        out = {}
        for j, name in enumerate(names):
            col = a[:, j]
            out[name] = col.astype(np.int64) if name in ints and not np.isnan(col).any() else col
        return out

    def _fetch(self, conn: Connection, sql: str, names: list[str],
               ints: tuple[str, ...] = _TRACE_INT) -> dict[str, np.ndarray]:
        """Run ``sql`` (parameters already inlined as int literals) on the raw driver connection
        and return numpy columns. PostgreSQL: ``COPY (...) TO STDOUT (FORMAT BINARY)`` parsed
        with numpy (no Python object per value); SQLite: ``fetchall`` + ``np.array``."""
        dbapi = conn.connection.dbapi_connection
        if self.dialect == "postgresql":
            with dbapi.cursor() as cur:
                with cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT BINARY)") as copy:
                    data = b"".join(bytes(block) for block in copy)
            parsed = _parse_pg_binary(data, names, ints)
            if parsed is not None:
                return parsed
            with dbapi.cursor() as cur:  # NULLs present (rows not written by this store)
                rows = cur.execute(sql).fetchall()
        else:
            cur = dbapi.cursor()
            try:
                rows = cur.execute(sql).fetchall()
            finally:
                cur.close()
        return self._to_arrays(rows, names, ints)

    @staticmethod
    def _scalar(conn: Connection, sql: str) -> Any:
        # raw cursor without parameters: '%' in the SQL is the modulo operator, not a placeholder
        cur = conn.connection.dbapi_connection.cursor()
        try:
            cur.execute(sql)
            return cur.fetchone()[0]
        finally:
            cur.close()

    @staticmethod
    def _trace_where(trial_id: int, every: int) -> str:
        where = f"trial_id = {int(trial_id)}"
        if every > 1:
            where += (f" AND (step % {int(every)} = 0 OR step = (SELECT max(step) FROM "
                      f"rnnhpo_trace_points WHERE trial_id = {int(trial_id)}))")
        return where

    def _read_snapshot(self):
        """A read transaction seeing one snapshot across statements (count, then rows)."""
        conn = self.engine.connect()
        if self.dialect == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        return conn

    def get_trace(self, trial_id: int, *, metrics: list[str] | None = None, every: int = 1,
                  max_points: int | None = None) -> dict[str, np.ndarray]:
        """The trial's trace as arrays (``step`` always included), ordered by step and
        down-sampled in SQL: ``every`` keeps ``step % every == 0``, ``max_points`` caps the
        number of rows by an even stride over the (``every``-filtered) rows; the last point is
        always kept. Empty arrays when the trial has no trace."""
        names = self._metric_names(metrics)
        every = int(every)
        if every < 1:
            raise ValueError("every must be >= 1")
        if max_points is not None and int(max_points) < 1:
            raise ValueError("max_points must be >= 1")
        cols = ", ".join(names)
        where = self._trace_where(trial_id, every)
        plain = f"SELECT {cols} FROM rnnhpo_trace_points WHERE {where} ORDER BY step"
        with self._read_snapshot() as conn:
            with conn.begin():
                if max_points is None:
                    return self._fetch(conn, plain, names)
                mp = int(max_points)
                n = int(self._scalar(conn, f"SELECT count(*) FROM rnnhpo_trace_points WHERE {where}"))
                if n <= mp:
                    return self._fetch(conn, plain, names)
                if mp == 1:
                    sql = (f"SELECT {cols} FROM rnnhpo_trace_points WHERE {where} "
                           "ORDER BY step DESC LIMIT 1")
                else:
                    stride = -(-(n - 1) // (mp - 1))  # ceil((n-1)/(mp-1)) -> at most mp rows
                    sql = (f"SELECT {cols} FROM (SELECT {cols}, row_number() OVER (ORDER BY step)"
                           f" AS rn FROM rnnhpo_trace_points WHERE {where}) sub "
                           f"WHERE (rn - 1) % {stride} = 0 OR rn = {n} ORDER BY step")
                return self._fetch(conn, sql, names)

    def iter_trace(self, trial_id: int, *, metrics: list[str] | None = None, every: int = 1,
                   chunk_rows: int = 50_000) -> Iterator[dict[str, np.ndarray]]:
        """Stream a (large) trace in chunks ordered by step (keyset pagination on the primary
        key: each chunk is one short query, no server-side cursor held between chunks).
        ``every`` as in :meth:`get_trace` (the last point is kept)."""
        names = self._metric_names(metrics)
        every, chunk_rows = int(every), int(chunk_rows)
        if every < 1 or chunk_rows < 1:
            raise ValueError("every and chunk_rows must be >= 1")
        cols = ", ".join(names)
        where = self._trace_where(trial_id, every)
        after = -1
        while True:
            sql = (f"SELECT {cols} FROM rnnhpo_trace_points WHERE {where} AND step > {after} "
                   f"ORDER BY step LIMIT {chunk_rows}")
            with self._read() as conn:
                chunk = self._fetch(conn, sql, names)
            n = len(chunk["step"])
            if n == 0:
                return
            yield chunk
            if n < chunk_rows:
                return
            after = int(chunk["step"][-1])

    def get_epochs(self, trial_id: int) -> dict[str, np.ndarray]:
        names = list(EPOCH_COLUMNS)
        sql = (f"SELECT {', '.join(names)} FROM rnnhpo_epoch_metrics "
               f"WHERE trial_id = {int(trial_id)} ORDER BY epoch")
        with self._read() as conn:
            out = self._fetch(conn, sql, names, _EPOCH_INT)
        out["epoch"] = out["epoch"].astype(np.int64)
        return out

    def trace_row_count(self, *, exp_id: str | None = None, trial_id: int | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(TP)
        if trial_id is not None:
            q = q.where(TP.c.trial_id == int(trial_id))
        if exp_id is not None:
            q = q.where(TP.c.trial_id.in_(sa.select(T.c.id).where(T.c.experiment_id == exp_id)))
        with self._read() as conn:
            return int(conn.execute(q).scalar_one())
