"""The experiment queue: create, claim (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), heartbeat,
progress, finish, cancel, requeue and delete -- the experiment's state machine."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from service.db.models import EXPERIMENT_STATUSES, FINAL_EXPERIMENT_STATUSES
from service.store._values import _check_status, _jsonable, _now
from service.store.base import E, T, TP, EM, StoreBase
from service.store.views import ExperimentRunning, ExperimentView, NotFound


class ExperimentQueue(StoreBase):
    """Experiment rows and their lifecycle (see :mod:`service.store` for the rules)."""

    def create_experiment(self, name: str, spec: dict, *, n_trials_total: int | None = None,
                          claimed_by: str | None = None) -> str:
        """A new ``queued`` experiment; with ``claimed_by`` it is created ``running`` and owned
        by that runner in the same transaction (``rnnhpo run``: no other runner can take it)."""
        exp_id = uuid.uuid4().hex
        now = _now()
        claim = ({"status": "running", "runner_id": claimed_by, "heartbeat_at": now, "started_at": now,
                  "attempts": 1} if claimed_by else {"status": "queued", "attempts": 0})
        with self._write() as conn:
            conn.execute(E.insert().values(
                id=exp_id, name=name, spec=_jsonable(spec or {}), cancel_requested=False,
                created_at=now, n_trials_total=n_trials_total, n_trials_done=0, **claim))
        return exp_id

    def get_experiment(self, exp_id: str) -> ExperimentView | None:
        with self._read() as conn:
            row = conn.execute(sa.select(E).where(E.c.id == exp_id)).first()
        return None if row is None else self._exp_view(row)

    def list_experiments(self, *, status: str | None = None, limit: int = 50, offset: int = 0,
                         with_spec: bool = True) -> tuple[list[ExperimentView], int]:
        """Newest first; ``(page, total matching)``. ``with_spec=False`` does not read the specs
        (their views carry ``spec={}``): listings stay cheap however large the specs are."""
        _check_status(status, EXPERIMENT_STATUSES, "experiment")
        cond = sa.true() if status is None else E.c.status == status
        cols = [E] if with_spec else [c for c in E.c if c.name != "spec"]
        with self._read() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(E).where(cond)).scalar_one()
            rows = conn.execute(sa.select(*cols).where(cond)
                                .order_by(E.c.created_at.desc(), E.c.id.desc())
                                .limit(max(0, limit)).offset(max(0, offset))).all()
        if with_spec:
            return [self._exp_view(r) for r in rows], int(total)
        return [ExperimentView.model_validate({**r._mapping, "spec": {}}) for r in rows], int(total)

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
                     packs_total: int | None = None, packs_done: int | None = None,
                     phase: str | None = None, packs_running: int | None = None) -> None:
        """Record progress; ETA, dashboard URL, pack counts and the phase (connecting, starting,
        waiting for resources, running) go to the ``progress`` JSON."""
        values: dict[str, Any] = {"n_trials_total": int(total), "n_trials_done": int(done)}
        if best is not None:
            values["best"] = _jsonable(best)
        extra = {"eta_s": eta_s, "dashboard_url": dashboard_url, "packs_total": packs_total,
                 "packs_done": packs_done, "phase": phase, "packs_running": packs_running}
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
        """End an experiment: ``succeeded``, ``partial`` (some trials failed), ``failed`` or
        ``cancelled`` (see module docstring for what happens to its unfinished trials)."""
        if status not in FINAL_EXPERIMENT_STATUSES:
            raise ValueError(f"finish status must be one of {FINAL_EXPERIMENT_STATUSES}, not {status!r}")
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

    def release(self, exp_id: str, runner_id: str, *, status: str = "queued",
                error: str | None = None) -> bool:
        """Give up this runner's claim: back to ``queued`` (a stopping server or runner) or
        ``cancelled`` (an interrupted ``rnnhpo run``, resumable). Only while ``runner_id`` still
        owns the running experiment; returns whether it did."""
        if status not in ("queued", "cancelled"):
            raise ValueError(f"release to queued or cancelled, not {status!r}")
        with self._write() as conn:
            row = conn.execute(sa.select(E.c.status, E.c.runner_id).where(E.c.id == exp_id)).first()
            if row is None or row.status != "running" or row.runner_id != runner_id:
                return False
            if status == "cancelled":
                self._finish(conn, exp_id, "cancelled", error)
                return True
            conn.execute(E.update().where(E.c.id == exp_id).values(
                status="queued", runner_id=None, heartbeat_at=None, finished_at=None, error=None))
            conn.execute(T.update().where(T.c.experiment_id == exp_id, T.c.status == "running")
                         .values(status="pending"))
            return True

    def resume_experiment(self, exp_id: str, *, runner_id: str | None = None,
                          stale_after_s: float = 30.0) -> ExperimentView:
        """Resume a ``failed``, ``partial`` or ``cancelled`` experiment: its failed and missing
        trials run again, finished ones are kept. Without ``runner_id`` it goes back to the queue;
        with it, it is claimed by that runner in the same transaction (``rnnhpo run --resume``),
        which also takes a ``queued`` one or a ``running`` one whose runner died.
        Raises :class:`ValueError` for a ``succeeded`` one and :class:`ExperimentRunning` for one
        that a live runner holds."""
        with self._write() as conn:
            row = self._require_experiment(conn, exp_id, lock=True)
            if row.status == "succeeded":
                raise ValueError(f"experiment {exp_id} succeeded: every trial finished, nothing to resume")
            if row.status == "running":
                hb = row.heartbeat_at
                if hb is not None and hb.tzinfo is None:
                    hb = hb.replace(tzinfo=_now().tzinfo)
                if hb is not None and (_now() - hb).total_seconds() < stale_after_s:
                    raise ExperimentRunning(f"experiment {exp_id} is running (runner {row.runner_id})")
            if row.status == "queued" and runner_id is None:
                return self._exp_view(conn.execute(sa.select(E).where(E.c.id == exp_id)).one())
            now = _now()
            values: dict[str, Any] = {"cancel_requested": False, "finished_at": None, "error": None}
            if runner_id is None:
                values.update(status="queued", runner_id=None, heartbeat_at=None)
            else:
                values.update(status="running", runner_id=runner_id, heartbeat_at=now,
                              started_at=sa.func.coalesce(E.c.started_at, now), attempts=E.c.attempts + 1)
            conn.execute(E.update().where(E.c.id == exp_id).values(**values))
            conn.execute(T.update().where(T.c.experiment_id == exp_id,
                                          T.c.status.in_(("running", "failed")))
                         .values(status="pending", error=None))
            conn.execute(T.update().where(T.c.experiment_id == exp_id, T.c.status == "pruned",
                                          T.c.steps.is_(None)).values(status="pending", finished_at=None))
            return self._exp_view(conn.execute(sa.select(E).where(E.c.id == exp_id)).one())

    def requeue(self, exp_id: str) -> None:
        """running / failed / partial / cancelled -> queued (to resume; finished trials are kept
        and ``finished_trials`` tells the search layer what to skip). Queued: no-op."""
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
