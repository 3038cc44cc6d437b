"""The repository API for experiments, trials and convergence traces.

One :class:`Store` per database URL (SQLite file or PostgreSQL); engines are cached per URL per
process (:func:`service.db.engine.get_engine`), so creating many stores is cheap.

Decisions (documented here because the REST layer and the CLI rely on them):

* Timestamps are taken from the Python clock in UTC (runners' clocks must be NTP-synced for
  heartbeat staleness); views always carry timezone-aware UTC datetimes.
* Every write runs in one transaction; on SQLite that transaction starts with
  ``BEGIN IMMEDIATE`` so concurrent writers queue on ``busy_timeout`` (60 s) instead of failing.
* ``claim_experiment``: PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED``; SQLite relies on
  ``BEGIN IMMEDIATE`` serialising writers. Oldest ``created_at`` first among queued experiments
  and running ones whose heartbeat is stale. A stale running experiment that had a cancel
  requested is finished as ``cancelled`` instead of being handed out.
* ``finish_experiment``: ``cancelled`` marks every still ``pending``/``running`` trial
  ``pruned``; ``succeeded``/``failed`` mark ``running`` trials ``failed`` (their worker is gone)
  and leave ``pending`` ones pending so a :meth:`Store.requeue` resumes them.
* ``record_trial``: one transaction that updates the trial row, deletes the trial's old trace and
  epoch rows and bulk-inserts the new ones (PostgreSQL: binary ``COPY`` built with numpy;
  SQLite: ``executemany`` of tuples). A retried trial replaces its trace; a failure leaves the
  previous one intact. NaN in a trace is kept as NaN on PostgreSQL and becomes NULL on SQLite;
  both read back as NaN. NaN/inf in the trial's scalar columns and JSON become NULL/None.
* ``get_trace(every=k)`` keeps rows with ``step % k == 0``; ``max_points=m`` keeps every s-th
  row (row order by step) with ``s = ceil((n-1)/(m-1))``; the last row is always kept, and the
  result never has more than ``m`` rows. Both run in SQL.
* ``compare``: finals of the experiments' trials are fetched (one row per trial, small) and
  aggregated in Python with numpy: means over *completed* trials only (NULL/NaN values skipped),
  ``std`` is the sample standard deviation (ddof=1), ``None`` with fewer than two values.
"""

from __future__ import annotations

import json

import math
import struct
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from itertools import repeat
from typing import Any

import numpy as np
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, computed_field
from sqlalchemy.engine import Connection, Engine

from search.sink import TrialPlan, TrialRecord
from service.db import migrate as _migrate
from service.db.engine import get_engine, normalize_url
from service.db.models import (
    EXPERIMENT_STATUSES,
    TRIAL_STATUSES,
    EpochMetric,
    Experiment,
    TracePoint,
    Trial,
)
from trainer.result import EPOCH_COLUMNS, TRACE_COLUMNS

__all__ = [
    "Store", "ExperimentView", "TrialView", "VariantSummary", "NotFound", "ExperimentRunning",
    "TRACE_COLUMNS", "EPOCH_COLUMNS", "TRIAL_SORT_COLUMNS", "COMPARE_METRICS",
]


class NotFound(KeyError):
    """No experiment / trial with that id."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "not found"


class ExperimentRunning(RuntimeError):
    """The operation needs an experiment that is not running."""


# --------------------------------------------------------------------------------------- views


class ExperimentView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    spec: dict[str, Any]
    status: str
    cancel_requested: bool
    runner_id: str | None = None
    heartbeat_at: datetime | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    n_trials_total: int | None = None
    n_trials_done: int = 0
    best: dict[str, Any] | None = None
    attempts: int = 0
    progress: dict[str, Any] | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def dashboard_url(self) -> str | None:
        """Ray dashboard of the cluster running the experiment, as its runner reported it."""
        return (self.progress or {}).get("dashboard_url")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def eta_s(self) -> float | None:
        """The driver's last ETA, less the time passed since it reported it."""
        progress = self.progress or {}
        if self.status != "running" or progress.get("eta_s") is None:
            return None
        since = (_now() - datetime.fromisoformat(progress["updated_at"])).total_seconds()
        return max(0.0, float(progress["eta_s"]) - since)


class TrialView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    experiment_id: str
    number: int
    variant: str
    params: dict[str, Any]
    config: dict[str, Any]
    seed: int
    fold: int | None = None
    pack_id: str | None = None
    pack_size: int | None = None
    attempt: int = 0
    status: str
    train_metric: float | None = None
    test_metric: float | None = None
    loss: float | None = None
    data_loss: float | None = None
    penalty: float | None = None
    sparsity_out: float | None = None
    sparsity_all: float | None = None
    weight_norm: float | None = None
    steps: int | None = None
    wall_time: float | None = None
    device: str | None = None
    diagnostics: dict[str, Any] | None = None
    monotonicity_violations: int | None = None
    grad_norm_ratio: float | None = None
    diverged: bool | None = None
    final: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


#: Metrics whose mean and std :meth:`Store.compare` reports.
COMPARE_METRICS: tuple[str, ...] = (
    "train_metric", "test_metric", "sparsity_out", "sparsity_all", "wall_time", "loss")


class VariantSummary(BaseModel):
    """One (experiment, variant) row of :meth:`Store.compare`; means over completed trials."""

    model_config = ConfigDict(from_attributes=True)

    experiment_id: str
    experiment_name: str
    variant: str
    params: dict[str, Any] | None = None  # the configuration, when compared by configuration
    n_trials: int
    n_completed: int
    n_diverged: int
    n_failed: int
    train_metric_mean: float | None = None
    train_metric_std: float | None = None
    test_metric_mean: float | None = None
    test_metric_std: float | None = None
    sparsity_out_mean: float | None = None
    sparsity_out_std: float | None = None
    sparsity_all_mean: float | None = None
    sparsity_all_std: float | None = None
    wall_time_mean: float | None = None
    wall_time_std: float | None = None
    loss_mean: float | None = None
    loss_std: float | None = None
    monotonicity_violations_mean: float | None = None
    grad_norm_ratio_mean: float | None = None


# ------------------------------------------------------------------------------------- helpers

E = Experiment.__table__
T = Trial.__table__
TP = TracePoint.__table__
EM = EpochMetric.__table__

#: Columns ``list_trials`` may sort by.
TRIAL_SORT_COLUMNS: tuple[str, ...] = (
    "number", "id", "seed", "fold", "attempt", "pack_size", "train_metric", "test_metric", "loss",
    "data_loss", "penalty", "sparsity_out", "sparsity_all", "weight_norm", "steps", "wall_time",
    "monotonicity_violations", "grad_norm_ratio", "started_at", "finished_at",
)

_FINAL_FLOAT_COLUMNS = ("train_metric", "test_metric", "loss", "data_loss", "penalty",
                        "sparsity_out", "sparsity_all", "weight_norm")
_TRACE_INT = ("step", "epoch")
_EPOCH_INT = ("epoch",)
_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_PG_COPY_TRAILER = struct.pack(">h", -1)
_COPY_CHUNK_ROWS = 100_000
_INT32_MAX = 2**31 - 1


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _jsonable(x: Any) -> Any:
    """Plain JSON: numpy scalars/arrays to Python, NaN/inf to None, pydantic models dumped."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (str, int, bool)):
        return x
    if isinstance(x, datetime):
        return x.isoformat()
    if hasattr(x, "model_dump"):
        return _jsonable(x.model_dump(mode="json"))
    return str(x)


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _int(x: Any) -> int | None:
    v = _num(x)
    return None if v is None else int(v)


def _check_status(status: str | None, allowed: tuple[str, ...], what: str) -> None:
    if status is not None and status not in allowed:
        raise ValueError(f"unknown {what} status {status!r}; allowed: {', '.join(allowed)}")


def _columns(data: dict[str, Any], columns: tuple[str, ...], ints: tuple[str, ...],
             what: str) -> tuple[int, dict[str, np.ndarray]]:
    """Validate a trace/epochs dict: known names, equal lengths, int columns present & finite.

    Missing float columns are filled with NaN. Returns (n_rows, arrays in ``columns`` order).
    """
    unknown = set(data) - set(columns)
    if unknown:
        raise ValueError(f"unknown {what} column(s) {sorted(unknown)}; allowed: {list(columns)}")
    lengths = {k: len(np.asarray(v).reshape(-1)) for k, v in data.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{what} columns have different lengths: {lengths}")
    n = next(iter(lengths.values())) if lengths else 0
    out: dict[str, np.ndarray] = {}
    for c in columns:
        if c in ints:
            if c not in data:
                if n == 0:
                    out[c] = np.zeros(0, dtype=np.int64)
                    continue
                raise ValueError(f"{what} column {c!r} is required")
            a = np.asarray(data[c]).reshape(-1)
            if a.dtype.kind == "f":
                if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                    raise ValueError(f"{what} column {c!r} must hold finite integers")
            elif a.dtype.kind not in "iub":
                raise ValueError(f"{what} column {c!r} must be integer, got dtype {a.dtype}")
            a = a.astype(np.int64)
            if n and (a.min() < 0 or a.max() > _INT32_MAX):
                raise ValueError(f"{what} column {c!r} out of range [0, 2**31)")
            out[c] = a
        else:
            if c in data:
                a = np.asarray(data[c]).reshape(-1)
                if a.dtype.kind not in "fiub":
                    raise ValueError(f"{what} column {c!r} must be numeric, got dtype {a.dtype}")
                out[c] = a.astype(np.float64)
            else:
                out[c] = np.full(n, np.nan)
    return n, out


def _pg_copy_chunks(trial_id: int, n: int, cols: dict[str, np.ndarray],
                    columns: tuple[str, ...], ints: tuple[str, ...]) -> Iterator[bytes]:
    """PostgreSQL binary COPY payload for (trial_id, *columns), built with numpy (no per-row
    Python). Integer columns are int4, float columns float8; all values non-NULL."""
    fields: list[tuple[str, str]] = [("nf", ">i2"), ("l_tid", ">i4"), ("v_tid", ">i4")]
    for j, c in enumerate(columns):
        fields += [(f"l{j}", ">i4"), (f"v{j}", ">i4" if c in ints else ">f8")]
    dtype = np.dtype(fields)  # packed: no alignment padding, exactly the COPY row layout
    yield _PG_COPY_HEADER
    for start in range(0, n, _COPY_CHUNK_ROWS):
        stop = min(n, start + _COPY_CHUNK_ROWS)
        rec = np.empty(stop - start, dtype=dtype)
        rec["nf"] = len(columns) + 1
        rec["l_tid"] = 4
        rec["v_tid"] = trial_id
        for j, c in enumerate(columns):
            rec[f"l{j}"] = 4 if c in ints else 8
            rec[f"v{j}"] = cols[c][start:stop]
        yield rec.tobytes()
    yield _PG_COPY_TRAILER


def _parse_pg_binary(data: bytes, names: list[str], ints: tuple[str, ...]
                     ) -> dict[str, np.ndarray] | None:
    """Parse a binary ``COPY ... TO STDOUT`` of int4/float8 columns into numpy arrays; ``None``
    when the payload has NULLs or unexpected field sizes (the caller then falls back)."""
    if len(data) < 21 or not data.startswith(b"PGCOPY\n\xff\r\n\x00"):
        return None
    (ext,) = struct.unpack(">i", data[15:19])
    body = memoryview(data)[19 + ext: len(data) - 2]
    fields: list[tuple[str, str]] = [("nf", ">i2")]
    for j, c in enumerate(names):
        fields += [(f"l{j}", ">i4"), (f"v{j}", ">i4" if c in ints else ">f8")]
    dtype = np.dtype(fields)
    if len(body) % dtype.itemsize:
        return None
    rec = np.frombuffer(body, dtype=dtype)
    if rec.size and not np.all(rec["nf"] == len(names)):
        return None
    out: dict[str, np.ndarray] = {}
    for j, c in enumerate(names):
        if rec.size and not np.all(rec[f"l{j}"] == (4 if c in ints else 8)):
            return None
        out[c] = rec[f"v{j}"].astype(np.int64 if c in ints else np.float64)
    return out


# --------------------------------------------------------------------------------------- store


class Store:
    """Experiments, trials and traces in one SQL database (see the module docstring)."""

    def __init__(self, url: str, *, migrate: bool = True, engine: Engine | None = None):
        self.url = str(url)
        self.engine: Engine = engine if engine is not None else get_engine(url)
        self.dialect = self.engine.dialect.name
        self._wopts = {"sqlite_begin": "IMMEDIATE"} if self.dialect == "sqlite" else {}
        if migrate:
            self.migrate()

    def __repr__(self) -> str:
        return f"Store({normalize_url(self.url).render_as_string(hide_password=True)!r})"

    # ---------------------------------------------------------------- plumbing

    def migrate(self, revision: str = "head") -> None:
        """Alembic upgrade to ``revision`` (idempotent, safe when processes race)."""
        _migrate.upgrade(self.engine, revision)

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

    # ---------------------------------------------------------------- experiments

    def create_experiment(self, name: str, spec: dict, *, n_trials_total: int | None = None) -> str:
        exp_id = uuid.uuid4().hex
        with self._write() as conn:
            conn.execute(E.insert().values(
                id=exp_id, name=name, spec=_jsonable(spec or {}), status="queued",
                cancel_requested=False, created_at=_now(), n_trials_total=n_trials_total,
                n_trials_done=0, attempts=0))
        return exp_id

    def get_experiment(self, exp_id: str) -> ExperimentView | None:
        with self._read() as conn:
            row = conn.execute(sa.select(E).where(E.c.id == exp_id)).first()
        return None if row is None else self._exp_view(row)

    def list_experiments(self, *, status: str | None = None, limit: int = 50,
                         offset: int = 0) -> tuple[list[ExperimentView], int]:
        """Newest first; ``(page, total matching)``."""
        _check_status(status, EXPERIMENT_STATUSES, "experiment")
        cond = sa.true() if status is None else E.c.status == status
        with self._read() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(E).where(cond)).scalar_one()
            rows = conn.execute(sa.select(E).where(cond)
                                .order_by(E.c.created_at.desc(), E.c.id.desc())
                                .limit(max(0, limit)).offset(max(0, offset))).all()
        return [self._exp_view(r) for r in rows], int(total)

    def claim_experiment(self, runner_id: str, *, stale_after_s: float = 30.0,
                         exp_id: str | None = None) -> ExperimentView | None:
        """Atomically take the oldest queued experiment, or a running one whose runner died
        (heartbeat older than ``stale_after_s``). Two runners never get the same experiment.

        With ``exp_id``, only that experiment is considered (``None`` when it is not claimable:
        finished, or running with a fresh heartbeat)."""
        with self._write() as conn:
            retries = 2 if self.dialect == "postgresql" else 0
            while True:
                now = _now()
                cutoff = now - timedelta(seconds=stale_after_s)
                q = (sa.select(E.c.id, E.c.cancel_requested)
                     .where(sa.or_(E.c.status == "queued",
                                   sa.and_(E.c.status == "running",
                                           sa.or_(E.c.heartbeat_at.is_(None),
                                                  E.c.heartbeat_at < cutoff))))
                     .order_by(E.c.created_at, E.c.id).limit(1))
                if exp_id is not None:
                    q = q.where(E.c.id == exp_id)
                if self.dialect == "postgresql":
                    q = q.with_for_update(skip_locked=True)
                row = conn.execute(q).first()
                if row is None:
                    # PostgreSQL: a row re-checked after a concurrent commit can make LIMIT 1
                    # come back empty although other candidates exist; look once more.
                    if retries > 0:
                        retries -= 1
                        continue
                    return None
                if row.cancel_requested:
                    self._finish(conn, row.id, "cancelled", "cancelled while its runner was gone")
                    continue
                conn.execute(E.update().where(E.c.id == row.id).values(
                    status="running", runner_id=runner_id, heartbeat_at=now,
                    started_at=sa.func.coalesce(E.c.started_at, now), finished_at=None,
                    attempts=E.c.attempts + 1))
                return self._exp_view(conn.execute(sa.select(E).where(E.c.id == row.id)).one())

    def heartbeat(self, exp_id: str, runner_id: str) -> bool:
        """Refresh the heartbeat; False when this runner no longer owns the experiment."""
        with self._write() as conn:
            res = conn.execute(E.update().where(
                E.c.id == exp_id, E.c.runner_id == runner_id, E.c.status == "running",
            ).values(heartbeat_at=_now()))
            return res.rowcount == 1

    def set_progress(self, exp_id: str, *, total: int, done: int, best: dict | None = None,
                     eta_s: float | None = None, dashboard_url: str | None = None,
                     packs_total: int | None = None, packs_done: int | None = None) -> None:
        """Record progress; ETA, dashboard URL and pack counts go to the ``progress`` JSON."""
        values: dict[str, Any] = {"n_trials_total": int(total), "n_trials_done": int(done)}
        if best is not None:
            values["best"] = _jsonable(best)
        extra = {"eta_s": eta_s, "dashboard_url": dashboard_url, "packs_total": packs_total,
                 "packs_done": packs_done}
        if any(v is not None for v in extra.values()):
            values["progress"] = _jsonable({**extra, "updated_at": _now().isoformat()})
        with self._write() as conn:
            if conn.execute(E.update().where(E.c.id == exp_id).values(**values)).rowcount != 1:
                raise NotFound(f"experiment {exp_id!r} not found")

    def _finish(self, conn: Connection, exp_id: str, status: str, error: str | None) -> None:
        now = _now()
        conn.execute(E.update().where(E.c.id == exp_id).values(
            status=status, finished_at=now, error=error, heartbeat_at=None))
        if status == "cancelled":
            conn.execute(T.update().where(
                T.c.experiment_id == exp_id, T.c.status.in_(("pending", "running")),
            ).values(status="pruned", finished_at=now))
        else:
            conn.execute(T.update().where(
                T.c.experiment_id == exp_id, T.c.status == "running",
            ).values(status="failed", finished_at=now,
                     error=sa.func.coalesce(T.c.error, f"experiment ended ({status}) while the "
                                                       "trial was running")))

    def finish_experiment(self, exp_id: str, status: str, error: str | None = None) -> None:
        """End an experiment: ``succeeded``, ``failed`` or ``cancelled`` (see module docstring
        for what happens to its unfinished trials)."""
        if status not in ("succeeded", "failed", "cancelled"):
            raise ValueError(f"finish status must be succeeded, failed or cancelled, not {status!r}")
        with self._write() as conn:
            self._require_experiment(conn, exp_id, lock=True)
            self._finish(conn, exp_id, status, error)

    def request_cancel(self, exp_id: str) -> ExperimentView:
        """Queued: cancelled at once. Running: ``cancel_requested`` set (the runner stops).
        Finished: unchanged."""
        with self._write() as conn:
            row = self._require_experiment(conn, exp_id, lock=True)
            if row.status == "queued":
                self._finish(conn, exp_id, "cancelled", None)
                conn.execute(E.update().where(E.c.id == exp_id).values(cancel_requested=True))
            elif row.status == "running":
                conn.execute(E.update().where(E.c.id == exp_id).values(cancel_requested=True))
            return self._exp_view(conn.execute(sa.select(E).where(E.c.id == exp_id)).one())

    def cancel_requested(self, exp_id: str) -> bool:
        with self._read() as conn:
            v = conn.execute(sa.select(E.c.cancel_requested).where(E.c.id == exp_id)).scalar()
        if v is None:
            raise NotFound(f"experiment {exp_id!r} not found")
        return bool(v)

    def delete_experiment(self, exp_id: str) -> None:
        """Delete an experiment with its trials, traces and epochs; refuses a running one."""
        with self._write() as conn:
            row = self._require_experiment(conn, exp_id, lock=True)
            if row.status == "running":
                raise ExperimentRunning(f"experiment {exp_id} is running; cancel it first")
            trial_ids = sa.select(T.c.id).where(T.c.experiment_id == exp_id).scalar_subquery()
            # explicit deletes: correct even where foreign keys are not enforced
            conn.execute(TP.delete().where(TP.c.trial_id.in_(trial_ids)))
            conn.execute(EM.delete().where(EM.c.trial_id.in_(trial_ids)))
            conn.execute(T.delete().where(T.c.experiment_id == exp_id))
            conn.execute(E.delete().where(E.c.id == exp_id))

    def requeue(self, exp_id: str) -> None:
        """running / failed / cancelled -> queued (to resume; finished trials are kept and
        ``finished_trials`` tells the search layer what to skip). Queued: no-op."""
        with self._write() as conn:
            row = self._require_experiment(conn, exp_id, lock=True)
            if row.status == "queued":
                return
            if row.status == "succeeded":
                raise ValueError(f"experiment {exp_id} already succeeded; nothing to resume")
            conn.execute(E.update().where(E.c.id == exp_id).values(
                status="queued", cancel_requested=False, runner_id=None, heartbeat_at=None,
                finished_at=None, error=None))
            conn.execute(T.update().where(T.c.experiment_id == exp_id, T.c.status == "running")
                         .values(status="pending"))

    # ---------------------------------------------------------------- trials

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
                .where(T.c.experiment_id == exp_id, T.c.status.in_(("completed", "diverged")))
                .order_by(T.c.number)).all()
        return {r.number: {"status": r.status, "params": r.params, "final": r.final or {},
                           "trial_id": r.id, "variant": r.variant} for r in rows}

    def pack_started(self, trial_ids: list[int], pack_id: str, attempt: int, device: str) -> None:
        if not trial_ids:
            return
        with self._write() as conn:
            conn.execute(T.update().where(T.c.id.in_([int(i) for i in trial_ids])).values(
                status="running", pack_id=pack_id, attempt=int(attempt), device=device,
                pack_size=len(trial_ids), started_at=_now(), finished_at=None, error=None))

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

    # ---------------------------------------------------------------- traces

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

    # ---------------------------------------------------------------- comparison

    def compare(self, exp_ids: list[str], *, by_config: bool = False) -> list[VariantSummary]:
        """Per (experiment, variant) summary, in the order of ``exp_ids`` then variant name.

        ``by_config`` splits each variant by its searched parameters, so a grid search gives one
        row per grid point (mean ± std over that point's seeds and folds)."""
        exp_ids = list(dict.fromkeys(exp_ids))
        metric_cols = COMPARE_METRICS + ("monotonicity_violations", "grad_norm_ratio")
        with self._read() as conn:
            names = dict(conn.execute(sa.select(E.c.id, E.c.name).where(E.c.id.in_(exp_ids))).all())
            missing = [e for e in exp_ids if e not in names]
            if missing:
                raise NotFound(f"experiment(s) not found: {', '.join(missing)}")
            rows = conn.execute(
                sa.select(T.c.experiment_id, T.c.variant, T.c.status, T.c.params,
                          *[T.c[c] for c in metric_cols])
                .where(T.c.experiment_id.in_(exp_ids))).all()
        groups: dict[tuple[str, str, str], list] = {}
        for r in rows:
            key = json.dumps(r.params or {}, sort_keys=True, default=str) if by_config else ""
            groups.setdefault((r.experiment_id, r.variant, key), []).append(r)
        order = {e: i for i, e in enumerate(exp_ids)}
        out = []
        for (exp_id, variant, key) in sorted(groups, key=lambda k: (order[k[0]], k[1], k[2])):
            g = groups[(exp_id, variant, key)]
            done = [r for r in g if r.status == "completed"]
            summary: dict[str, Any] = dict(
                experiment_id=exp_id, experiment_name=names[exp_id], variant=variant,
                params=json.loads(key) if by_config else None,
                n_trials=len(g), n_completed=len(done),
                n_diverged=sum(r.status == "diverged" for r in g),
                n_failed=sum(r.status == "failed" for r in g))
            for c in metric_cols:
                vals = np.array([float(getattr(r, c)) for r in done if getattr(r, c) is not None],
                                dtype=np.float64)
                vals = vals[np.isfinite(vals)]
                summary[f"{c}_mean"] = float(vals.mean()) if vals.size else None
                if c in COMPARE_METRICS:
                    summary[f"{c}_std"] = float(vals.std(ddof=1)) if vals.size >= 2 else None
            out.append(VariantSummary.model_validate(summary))
        return out
