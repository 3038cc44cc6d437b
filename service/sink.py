"""``SqlResultSink``: the :class:`search.sink.ResultSink` of one experiment, backed by SQL.

It holds only the URL and the experiment id, so it pickles cheaply and Ray can ship it to worker
processes. The :class:`~service.store.Store` behind it is created lazily on first use in each
process, with ``migrate=False`` (the service migrates once at start-up), and shared by every sink
for the same URL in that process (one engine / connection pool per URL per process).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from search.sink import TrialPlan, TrialRecord
from service.db.engine import make_engine, normalize_url
from service.store import Store

_STORES: dict[tuple[str, int], Store] = {}
_LOCK = threading.Lock()


def _reset_lock_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_in_child)


#: Connections one process's sink holds at most on a server database (every Ray worker process
#: has its own pool). Past ~50 pack processes at once, put PgBouncer in front of PostgreSQL
#: (``docker compose --profile pgbouncer``).
SINK_POOL_SIZE, SINK_MAX_OVERFLOW = 1, 1


def _store_for(url: str) -> Store:
    key = (url, os.getpid())
    with _LOCK:
        store = _STORES.get(key)
        if store is None:
            engine = None
            if normalize_url(url).get_backend_name() == "postgresql":
                engine = make_engine(url, pool_size=SINK_POOL_SIZE, max_overflow=SINK_MAX_OVERFLOW)
            store = _STORES[key] = Store(url, migrate=False, engine=engine)
        return store


class SqlResultSink:
    """Results of experiment ``experiment_id`` go to the database at ``url``."""

    def __init__(self, url: str, experiment_id: str):
        self.url = normalize_url(url).render_as_string(hide_password=False)
        self.experiment_id = experiment_id
        self._store: Store | None = None

    def __repr__(self) -> str:
        return f"SqlResultSink(experiment_id={self.experiment_id!r})"

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = _store_for(self.url)
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "experiment_id": self.experiment_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.url = state["url"]
        self.experiment_id = state["experiment_id"]
        self._store = None

    # ResultSink --------------------------------------------------------------------------------

    def register_trials(self, plans: list[TrialPlan]) -> dict[int, int]:
        return self.store.register_trials(self.experiment_id, plans)

    def finished_trials(self) -> dict[int, dict[str, Any]]:
        return self.store.finished_trials(self.experiment_id)

    def trial_states(self) -> dict[int, dict[str, Any]]:
        views, _ = self.store.list_trials(self.experiment_id, limit=1_000_000)
        return {v.number: {"status": v.status, "variant": v.variant, "params": v.params, "seed": v.seed,
                           "fold": v.fold, "final": v.final or {}} for v in views}

    def pack_started(self, trial_ids: list[int], pack_id: str, attempt: int, device: str,
                     placement: dict[str, Any] | None = None) -> int:
        return self.store.pack_started(trial_ids, pack_id, attempt, device, placement)

    def record_trial(self, trial_id: int, record: TrialRecord) -> None:
        self.store.record_trial(trial_id, record)

    def trial_failed(self, trial_id: int, error: str) -> None:
        self.store.trial_failed(trial_id, error)

    # convenience for the runner ------------------------------------------------------------

    def cancel_requested(self) -> bool:
        return self.store.cancel_requested(self.experiment_id)
