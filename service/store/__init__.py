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
* ``trial_finals``: one small row per trial (status, seed, fold, params, final metrics) for
  :mod:`service.reports`, which aggregates them.

The parts, one job each: :mod:`.queue` (experiment state machine), :mod:`.trials`,
:mod:`.traces`, :mod:`.jobs` (an experiment's Ray job), :mod:`._pgcopy` (PostgreSQL binary COPY codec), :mod:`.views` (what is returned).
"""

from __future__ import annotations

from service.store.jobs import JobStore
from service.store.queue import ExperimentQueue
from service.store.traces import TraceStore
from service.store.trials import TrialStore
from service.store.views import (
    TRIAL_SORT_COLUMNS,
    ExperimentRunning,
    ExperimentView,
    NotFound,
    TrialView,
)
from search.sink import EPOCH_COLUMNS, TRACE_COLUMNS

__all__ = [
    "Store", "ExperimentView", "TrialView", "NotFound", "ExperimentRunning",
    "TRACE_COLUMNS", "EPOCH_COLUMNS", "TRIAL_SORT_COLUMNS",
]


class Store(ExperimentQueue, TrialStore, TraceStore, JobStore):
    """Experiments, trials and traces in one SQL database (see the module docstring)."""
