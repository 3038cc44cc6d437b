"""Trials: registration (idempotent), pack start, results (trace and epochs replaced in one
transaction), failures, listing."""

from __future__ import annotations

import time
from itertools import repeat
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from search.sink import FINISHED_TRIAL_STATUSES, TRIAL_STATUSES, TrialPlan, TrialRecord
from service.store._pgcopy import _pg_copy_chunks
from service.store._values import _check_status, _columns, _int, _jsonable, _now, _num
from service.store.base import E, EM, T, TP, StoreBase
from service.store.views import TRIAL_SORT_COLUMNS, NotFound, TrialView
from search.sink import EPOCH_COLUMNS, TRACE_COLUMNS

_FINAL_FLOAT_COLUMNS = ("train_metric", "test_metric", "loss", "data_loss", "penalty",
                        "sparsity_out", "sparsity_all", "weight_norm")
_TRACE_INT = ("step", "epoch")
_EPOCH_INT = ("epoch",)


class TrialStore(StoreBase):
    """Trial rows and their results."""

    def register_trials(self, exp_id: str, plans: list[TrialPlan]) -> dict[int, int]:
        """Create the trials not there yet; ``number -> trial id`` for every plan (idempotent,
        also when two processes register the same numbers at once)."""
        numbers = [p.number for p in plans]
        if len(set(numbers)) != len(numbers):
            raise ValueError("duplicate trial numbers in plans")
        with self._write() as conn:
            self._require_experiment(conn, exp_id)
            existing = dict(conn.execute(
                sa.select(T.c.number, T.c.id).where(T.c.experiment_id == exp_id)).all())
            new = [dict(experiment_id=exp_id, number=int(p.number), variant=p.variant,
                        params=_jsonable(p.params), config=_jsonable(p.config), seed=int(p.seed),
                        fold=None if p.fold is None else int(p.fold), attempt=0,
                        status="pending")
                   for p in plans if p.number not in existing]
            if new:
                if self.dialect == "postgresql":
                    from sqlalchemy.dialects.postgresql import insert
                else:
                    from sqlalchemy.dialects.sqlite import insert
                conn.execute(insert(T).on_conflict_do_nothing(
                    index_elements=["experiment_id", "number"]), new)
                existing = dict(conn.execute(
                    sa.select(T.c.number, T.c.id).where(T.c.experiment_id == exp_id)).all())
                conn.execute(E.update().where(E.c.id == exp_id, E.c.n_trials_total.is_(None))
                             .values(n_trials_total=len(existing)))
        return {p.number: int(existing[p.number]) for p in plans}

    def finished_trials(self, exp_id: str) -> dict[int, dict]:
        """``number -> {"status", "params", "final", "trial_id", "variant"}`` of completed or
        diverged trials."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(T.c.number, T.c.id, T.c.status, T.c.params, T.c.final, T.c.variant)
                .where(T.c.experiment_id == exp_id, T.c.status.in_(FINISHED_TRIAL_STATUSES))
                .order_by(T.c.number)).all()
        return {r.number: {"status": r.status, "params": r.params, "final": r.final or {},
                           "trial_id": r.id, "variant": r.variant} for r in rows}

    def pack_started(self, trial_ids: list[int], pack_id: str, attempt: int, device: str,
                     placement: dict[str, Any] | None = None) -> int:
        """Mark the trials running in ``pack_id`` on ``device`` (and the node, host and device name
        in ``placement``); returns the attempt number, counted here: a trial that started
        before and did not finish is on its next attempt, whichever node ran it before."""
        if not trial_ids:
            return int(attempt)
        ids = [int(i) for i in trial_ids]
        place = {k: (placement or {}).get(k) for k in ("node_id", "host", "device_name")}
        with self._write() as conn:
            previous = conn.execute(
                sa.select(sa.func.max(sa.case((T.c.started_at.is_(None), -1), else_=T.c.attempt)))
                .where(T.c.id.in_(ids))).scalar()
            attempt = max(int(attempt), -1 if previous is None else int(previous) + 1)
            conn.execute(T.update().where(T.c.id.in_(ids)).values(
                status="running", pack_id=pack_id, attempt=attempt, device=device,
                pack_size=len(trial_ids), started_at=_now(), finished_at=None, error=None, **place))
        return attempt

    def record_trial(self, trial_id: int, record: TrialRecord) -> None:
        """Store a finished trial atomically, replacing any earlier trace/epochs of it."""
        _check_status(record.status, TRIAL_STATUSES, "trial")
        n_tr, trace = _columns(record.trace or {}, TRACE_COLUMNS, _TRACE_INT, "trace")
        n_ep, epochs = _columns(record.epochs or {}, EPOCH_COLUMNS, _EPOCH_INT, "epochs")
        for what, n, cols, key in (("trace", n_tr, trace, "step"), ("epochs", n_ep, epochs, "epoch")):
            if n > 1 and len(np.unique(cols[key])) != n:
                raise ValueError(f"{what} column {key!r} has duplicate values")
        final = record.final or {}
        diag = record.diagnostics or {}
        now = _now()
        values: dict[str, Any] = {c: _num(final.get(c)) for c in _FINAL_FLOAT_COLUMNS}
        values.update(
            status=record.status, steps=_int(final.get("steps")),
            wall_time=_num(record.wall_time if record.wall_time is not None
                           else final.get("wall_time")),
            device=record.device, pack_id=record.pack_id, pack_size=int(record.pack_size),
            attempt=int(record.attempt), diagnostics=_jsonable(diag),
            monotonicity_violations=_int(diag.get("monotonicity_violations")),
            grad_norm_ratio=_num(diag.get("grad_norm_ratio")),
            diverged=bool(diag.get("diverged", False)) or record.status == "diverged",
            final=_jsonable(final), extra=_jsonable(record.extra or {}), error=record.error,
            started_at=sa.func.coalesce(T.c.started_at, now), finished_at=now)
        trial_id = int(trial_id)
        for attempt in range(3):
            try:
                with self._write() as conn:
                    res = conn.execute(T.update().where(T.c.id == trial_id).values(**values))
                    if res.rowcount != 1:
                        raise NotFound(f"trial {trial_id} not found")
                    conn.execute(TP.delete().where(TP.c.trial_id == trial_id))
                    conn.execute(EM.delete().where(EM.c.trial_id == trial_id))
                    self._bulk_insert(conn, "rnnhpo_trace_points", trial_id, n_tr, trace,
                                      TRACE_COLUMNS, _TRACE_INT)
                    self._bulk_insert(conn, "rnnhpo_epoch_metrics", trial_id, n_ep, epochs,
                                      EPOCH_COLUMNS, _EPOCH_INT)
                return
            except sa.exc.OperationalError as exc:
                # SQLite: still locked after busy_timeout (many writers with huge traces). The
                # write replaces the trial's rows, so trying again is safe.
                if self.dialect != "sqlite" or "locked" not in str(exc) or attempt == 2:
                    raise
                time.sleep(1.0 + attempt)

    def _bulk_insert(self, conn: Connection, table: str, trial_id: int, n: int,
                     cols: dict[str, np.ndarray], columns: tuple[str, ...],
                     ints: tuple[str, ...]) -> None:
        if n == 0:
            return
        dbapi = conn.connection.dbapi_connection
        names = ", ".join(("trial_id",) + columns)
        base_error = self.engine.dialect.loaded_dbapi.Error
        if self.dialect == "postgresql":
            sql = f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)"
        else:
            sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * (len(columns) + 1))})"
        try:
            if self.dialect == "postgresql":
                with dbapi.cursor() as cur:
                    with cur.copy(sql) as copy:
                        for chunk in _pg_copy_chunks(trial_id, n, cols, columns, ints):
                            copy.write(chunk)
            else:
                rows = zip(repeat(trial_id, n), *(cols[c].tolist() for c in columns))
                cur = dbapi.cursor()
                try:
                    cur.executemany(sql, rows)
                finally:
                    cur.close()
        except base_error as exc:  # raw driver errors -> the usual sqlalchemy.exc classes
            raise sa.exc.DBAPIError.instance(sql, None, exc, base_error,
                                             dialect=self.engine.dialect) from exc

    def trial_failed(self, trial_id: int, error: str) -> None:
        with self._write() as conn:
            res = conn.execute(T.update().where(T.c.id == int(trial_id)).values(
                status="failed", error=error, finished_at=_now()))
            if res.rowcount != 1:
                raise NotFound(f"trial {trial_id} not found")

    def list_trials(self, exp_id: str, *, status: str | None = None, variant: str | None = None,
                    sort: str = "number", descending: bool = False, limit: int = 100,
                    offset: int = 0) -> tuple[list[TrialView], int]:
        """A page of an experiment's trials and the total matching; NULLs sort last."""
        if sort not in TRIAL_SORT_COLUMNS:
            raise ValueError(f"unknown sort column {sort!r}; allowed: {', '.join(TRIAL_SORT_COLUMNS)}")
        _check_status(status, TRIAL_STATUSES, "trial")
        conds = [T.c.experiment_id == exp_id]
        if status is not None:
            conds.append(T.c.status == status)
        if variant is not None:
            conds.append(T.c.variant == variant)
        col = T.c[sort]
        order = (col.desc() if descending else col.asc()).nulls_last()
        with self._read() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(T).where(*conds)).scalar_one()
            rows = conn.execute(sa.select(T).where(*conds).order_by(order, T.c.number)
                                .limit(max(0, limit)).offset(max(0, offset))).all()
        return [self._trial_view(r) for r in rows], int(total)

    def get_trial(self, trial_id: int) -> TrialView | None:
        with self._read() as conn:
            row = conn.execute(sa.select(T).where(T.c.id == int(trial_id))).first()
        return None if row is None else self._trial_view(row)

    def trial_finals(self, exp_ids: list[str]) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """``(experiment id -> name, one dict per trial)`` with the columns reports aggregate:
        experiment_id, number, variant, status, params, seed, fold, the final metrics and the
        per-member diagnostics. Raises :class:`NotFound` naming every unknown id."""
        exp_ids = list(dict.fromkeys(exp_ids))
        cols = ("experiment_id", "number", "variant", "status", "params", "seed", "fold",
                "train_metric", "test_metric", "sparsity_out", "sparsity_all", "wall_time", "loss",
                "monotonicity_violations", "grad_norm_ratio", "diagnostics", "final", "pack_size")
        with self._read() as conn:
            names = dict(conn.execute(sa.select(E.c.id, E.c.name).where(E.c.id.in_(exp_ids))).all())
            missing = [e for e in exp_ids if e not in names]
            if missing:
                raise NotFound(f"experiment(s) not found: {', '.join(missing)}")
            rows = conn.execute(sa.select(*[T.c[c] for c in cols])
                                .where(T.c.experiment_id.in_(exp_ids))
                                .order_by(T.c.experiment_id, T.c.number)).all()
        return names, [dict(r._mapping) for r in rows]
