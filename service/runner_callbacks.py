"""The callables the runner hands to the search driver: the cancel probe and the progress
recorder (they pickle to inert no-ops: nothing shipped to another process carries the runner's
locks or connections); and
the progress the runner records itself, before the driver starts and after it ends."""

from __future__ import annotations

import inspect
import logging
import threading
import time
from typing import Any

log = logging.getLogger("rnnhpo.runner")


def attr(view, key: str, default=None):
    if isinstance(view, dict):
        return view.get(key, default)
    return getattr(view, key, default)


def set_progress_kwargs(store) -> set[str]:
    try:
        return set(inspect.signature(store.set_progress).parameters)
    except (TypeError, ValueError):
        return set()


class _DriverCallback:
    """Base of the callables handed to the driver. Whatever pickles them (Ray shipping a closure
    to a worker, a scheduler saving its state) gets an inert no-op instead of failing on the
    runner's locks and database connections."""

    _live = False

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._live = False


class CancelProbe(_DriverCallback):
    """``should_cancel`` for the driver: stop requested, claim lost, or cancel in the database
    (asked at most every ``cancel_poll_s`` seconds)."""

    def __init__(self, runner: Any, exp_id: str, hb):
        self._live = True
        self.runner, self.exp_id, self.hb = runner, exp_id, hb
        self._lock = threading.Lock()
        self._t, self._v = 0.0, False

    def __call__(self) -> bool:
        if not self._live:
            return False
        if self.runner._stop.is_set() or self.hb.lost.is_set():
            return True
        with self._lock:
            now = time.monotonic()
            if not self._v and now - self._t >= self.runner.settings.cancel_poll_s:
                self._t = now
                self._v = self.runner._cancel_flag(self.exp_id)
            return self._v


class ProgressRecorder(_DriverCallback):
    """``progress`` for the driver: the runner's stats and ``Store.set_progress``, best effort."""

    def __init__(self, runner: Any, exp_id: str):
        self._live = True
        self.runner, self.exp_id = runner, exp_id
        self.accepts = set_progress_kwargs(runner.store)

    def __call__(self, p) -> None:
        if not self._live:
            return
        runner, exp_id = self.runner, self.exp_id
        url = attr(p, "dashboard_url", None)
        if url:
            runner.stats.dashboard_url = url
        info = {k: attr(p, k, None) for k in ("trials_total", "trials_done", "packs_total", "packs_done",
                                                "eta_s", "elapsed_s", "dashboard_url", "phase", "packs_running")}
        runner.stats.last_progress = {"experiment_id": exp_id, **info}
        kwargs: dict[str, Any] = {k: info[k] for k in ("eta_s", "dashboard_url", "packs_total", "packs_done",
                                                       "phase", "packs_running") if k in self.accepts}
        try:
            runner.store.set_progress(exp_id, total=int(info["trials_total"] or 0),
                                      done=int(info["trials_done"] or 0), best=attr(p, "best", None),
                                      **kwargs)
        except Exception:  # noqa: BLE001 - progress is best effort; results are in the sink
            log.exception("experiment %s: set_progress failed", exp_id)


def record_phase(store, view, phase: str) -> None:
    """Say what a claimed experiment is doing before the driver reports (``connecting`` while
    Ray starts or is joined), best effort."""
    if "phase" not in set_progress_kwargs(store):
        return
    try:
        store.set_progress(attr(view, "id"), total=int(attr(view, "n_trials_total", 0) or 0),
                           done=int(attr(view, "n_trials_done", 0) or 0), phase=phase)
    except Exception:  # noqa: BLE001 - progress is best effort
        log.exception("experiment %s: set_progress failed", attr(view, "id"))


def record_summary(store, exp_id: str, summary) -> None:
    """The driver's final counts and best trial, best effort."""
    try:
        store.set_progress(exp_id, total=int(attr(summary, "trials_total", 0) or 0),
                           done=int(attr(summary, "trials_done", 0) or 0), best=attr(summary, "best", None))
    except Exception:  # noqa: BLE001 - progress is best effort
        log.exception("experiment %s: final set_progress failed", exp_id)
