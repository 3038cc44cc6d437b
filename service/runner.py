"""The durable queue runner: claims queued experiments from the database and runs them.

A submitted experiment is a row with status ``queued``. A :class:`Runner` (``rnnhpo runner``, or
a background thread of ``rnnhpo serve``) loops:

1. ``Store.claim_experiment(runner_id)`` -- atomically takes the oldest queued experiment, or a
   ``running`` one whose heartbeat is older than ``stale_after_s`` (its runner died);
2. runs it through ``search.driver.run_experiment`` with a :class:`~service.sink.SqlResultSink`
   (trials already finished in the database are not re-run, so a reclaimed experiment resumes);
   a separate thread heartbeats every ``heartbeat_s``; progress goes to ``Store.set_progress``;
   ``should_cancel`` polls ``Store.cancel_requested`` (rate-limited) and also turns true when the
   runner loses its claim or is stopped;
3. finishes it: ``succeeded`` / ``failed`` / ``cancelled``. A runner that is stopped gracefully
   hands its experiment back to the queue (``Store.requeue``) instead.

A runner killed outright (SIGKILL, power loss) leaves ``running`` with a heartbeat that goes
stale; the next runner to poll reclaims it, so no experiment stays stuck at ``running``.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.settings import Settings

log = logging.getLogger("rnnhpo.runner")

RunFn = Callable[..., Any]


def default_runner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class RunnerStats:
    """What the runner has done so far (exposed on /metrics when it runs in-process)."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    requeued: int = 0
    current: str | None = None
    dashboard_url: str | None = None
    last_progress: dict[str, Any] = field(default_factory=dict)


class _Heartbeat(threading.Thread):
    """Calls ``store.heartbeat`` every ``interval`` seconds until stopped; records a lost claim."""

    def __init__(self, store, exp_id: str, runner_id: str, interval: float):
        super().__init__(name=f"rnnhpo-heartbeat-{exp_id}", daemon=True)
        self.store, self.exp_id, self.runner_id, self.interval = store, exp_id, runner_id, interval
        self.stop_event = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                if not self.store.heartbeat(self.exp_id, self.runner_id):
                    log.warning("experiment %s: claim lost (another runner took it over)", self.exp_id)
                    self.lost.set()
                    return
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the heartbeat
                log.exception("experiment %s: heartbeat failed; retrying", self.exp_id)

    def stop(self) -> None:
        self.stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)


class Runner:
    """Claims and runs queued experiments until :meth:`stop` is called.

    ``run_fn`` and ``sink_factory`` default to the search layer's ``run_experiment`` and
    ``SqlResultSink``; tests inject fakes to exercise the queue without training.
    """

    def __init__(self, settings: Settings | None = None, *, store=None, runner_id: str | None = None,
                 run_fn: RunFn | None = None, sink_factory: Callable[[str, str], Any] | None = None,
                 spec_loader: Callable[[dict], Any] | None = None, init_ray: bool | None = None):
        self.settings = settings or Settings()
        if store is None:
            from service.store import Store

            store = Store(self.settings.database_url)
        self.store = store
        self.runner_id = runner_id or default_runner_id()
        self._stop = threading.Event()
        if run_fn is None and self.settings.ray_jobs_address:
            from service.dispatch import JobDispatcher  # experiments run as Ray jobs on the cluster

            run_fn = JobDispatcher(self.settings, store, stopping=self._stop.is_set).run
            init_ray = False
        self._run_fn = run_fn
        self._sink_factory = sink_factory
        self._spec_loader = spec_loader
        self._init_ray = (run_fn is None) if init_ray is None else init_ray
        self._thread: threading.Thread | None = None
        self.stats = RunnerStats(dashboard_url=self.settings.ray_dashboard_url)

    # -- lifecycle ----------------------------------------------------------------------
    def start_in_thread(self) -> threading.Thread:
        """Run :meth:`run_forever` in a daemon thread (``rnnhpo serve``'s embedded runner)."""
        self._thread = threading.Thread(target=self.run_forever, name="rnnhpo-runner", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = 30.0) -> None:
        """Ask the loop to end; the experiment in flight is cancelled and handed back to the queue."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run_forever(self, *, max_experiments: int | None = None, idle_exit_s: float | None = None) -> int:
        """Claim and run experiments until stopped (or ``max_experiments`` ran, or the queue
        stayed empty for ``idle_exit_s``). Returns the number of experiments handled."""
        handled, idle_since = 0, time.monotonic()
        log.info("runner %s polling %s", self.runner_id, _safe_url(self.settings.database_url))
        while not self._stop.is_set():
            try:
                ran = self.run_once()
            except Exception:  # noqa: BLE001 - the loop survives database outages
                log.exception("runner %s: claim failed; retrying", self.runner_id)
                ran = False
            if ran:
                handled += 1
                idle_since = time.monotonic()
                if max_experiments is not None and handled >= max_experiments:
                    break
                continue
            if idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
                break
            self._stop.wait(self.settings.runner_poll_s)
        return handled

    # -- one experiment -----------------------------------------------------------------
    def run_once(self) -> bool:
        """Claim one experiment and run it to the end; False when the queue is empty."""
        view = self.store.claim_experiment(self.runner_id, stale_after_s=self.settings.runner_stale_after_s)
        if view is None:
            return False
        self.stats.claimed += 1
        self.execute(view)
        return True

    def execute(self, view) -> str:
        """Run a claimed experiment; returns the status it finished with (or 'requeued'/'lost')."""
        exp_id = _get(view, "id")
        self.stats.current = exp_id
        hb = _Heartbeat(self.store, exp_id, self.runner_id, self.settings.runner_heartbeat_s)
        hb.start()
        try:
            return self._execute(view, exp_id, hb)
        finally:
            hb.stop()
            self.stats.current = None

    def _execute(self, view, exp_id: str, hb: _Heartbeat) -> str:
        log.info("runner %s: experiment %s (%s) started", self.runner_id, exp_id, _get(view, "name"))
        try:
            spec = self._load_spec(_get(view, "spec"))
            run_fn = self._run_fn or _default_run_fn()
            if self._init_ray:
                self._ensure_ray(spec)
            sink = (self._sink_factory or _default_sink_factory)(self.settings.database_url, exp_id)
            should_cancel = self._cancel_probe(exp_id, hb)
            summary = run_fn(spec, sink, progress=self._progress_cb(exp_id), should_cancel=should_cancel)
        except Exception as exc:  # noqa: BLE001 - any failure ends the experiment as failed
            if hb.lost.is_set():
                return "lost"
            if self._stop.is_set():
                return self._requeue(exp_id)
            err = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=20)}"
            log.error("experiment %s failed: %s", exp_id, err)
            self.store.finish_experiment(exp_id, "failed", error=err[-8000:])
            self.stats.failed += 1
            return "failed"
        if hb.lost.is_set():
            return "lost"  # another runner owns it now: leave its row alone
        self._record_summary(exp_id, summary)
        if _attr(summary, "cancelled", False):
            if self._stop.is_set() and not self._cancel_flag(exp_id):
                return self._requeue(exp_id)
            self.store.finish_experiment(exp_id, "cancelled")
            self.stats.cancelled += 1
            return "cancelled"
        total = _attr(summary, "trials_total", 0) or 0
        n_failed = _attr(summary, "n_failed", 0) or 0
        if total and n_failed >= total:
            self.store.finish_experiment(exp_id, "failed", error=f"all {total} trials failed")
            self.stats.failed += 1
            return "failed"
        error = f"{n_failed} of {total} trials failed" if n_failed else None
        self.store.finish_experiment(exp_id, "succeeded", error=error)
        self.stats.succeeded += 1
        log.info("experiment %s succeeded (%s trials, %s failed)", exp_id, total, n_failed)
        return "succeeded"

    def _requeue(self, exp_id: str) -> str:
        log.info("runner stopping: experiment %s goes back to the queue", exp_id)
        self.store.requeue(exp_id)
        self.stats.requeued += 1
        return "requeued"

    def _cancel_flag(self, exp_id: str) -> bool:
        try:
            return bool(self.store.cancel_requested(exp_id))
        except Exception:  # noqa: BLE001
            return False

    def _load_spec(self, spec: Any):
        if self._spec_loader is not None:
            return self._spec_loader(spec)
        from search.spec import ExperimentSpec
        from service.submission import with_data_dir

        spec = spec if isinstance(spec, ExperimentSpec) else ExperimentSpec.model_validate(spec)
        return with_data_dir(spec, self.settings.data_dir)

    def _ensure_ray(self, spec) -> None:
        from search.ray_runtime import ensure_ray

        # the deployment's address wins over the one a submitter put in the spec
        address = self.settings.ray_address or getattr(getattr(spec, "execution", None), "ray_address", None)
        url = ensure_ray(address)
        if url:
            self.stats.dashboard_url = url if "://" in url else f"http://{url}"

    def _cancel_probe(self, exp_id: str, hb: _Heartbeat) -> Callable[[], bool]:
        """``should_cancel`` for the driver: stop requested, claim lost, or cancel in the database
        (the database is asked at most every ``cancel_poll_s`` seconds)."""
        return _CancelProbe(self, exp_id, hb)

    def _progress_cb(self, exp_id: str) -> Callable[[Any], None]:
        return _ProgressRecorder(self, exp_id)

    def _record_summary(self, exp_id: str, summary) -> None:
        try:
            self.store.set_progress(exp_id, total=int(_attr(summary, "trials_total", 0) or 0),
                                    done=int(_attr(summary, "trials_done", 0) or 0),
                                    best=_attr(summary, "best", None))
        except Exception:  # noqa: BLE001
            log.exception("experiment %s: final set_progress failed", exp_id)


class _DriverCallback:
    """Base of the callables handed to the driver. Ray Tune pickles its stoppers and callbacks
    (with whatever they close over) into its experiment state; these pickle to inert no-ops
    instead of failing on the runner's locks and database connections."""

    _live = False

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._live = False


class _CancelProbe(_DriverCallback):
    def __init__(self, runner: "Runner", exp_id: str, hb: _Heartbeat):
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


class _ProgressRecorder(_DriverCallback):
    def __init__(self, runner: "Runner", exp_id: str):
        self._live = True
        self.runner, self.exp_id = runner, exp_id
        self.accepts = _set_progress_kwargs(runner.store)

    def __call__(self, p) -> None:
        if not self._live:
            return
        runner, exp_id = self.runner, self.exp_id
        url = _attr(p, "dashboard_url", None)
        if url:
            runner.stats.dashboard_url = url
        info = {k: _attr(p, k, None) for k in ("trials_total", "trials_done", "packs_total",
                                                "packs_done", "eta_s", "elapsed_s", "dashboard_url")}
        runner.stats.last_progress = {"experiment_id": exp_id, **info}
        kwargs: dict[str, Any] = {k: info[k] for k in ("eta_s", "dashboard_url", "packs_total", "packs_done")
                                  if k in self.accepts}
        try:
            runner.store.set_progress(exp_id, total=int(info["trials_total"] or 0),
                                      done=int(info["trials_done"] or 0), best=_attr(p, "best", None),
                                      **kwargs)
        except Exception:  # noqa: BLE001 - progress is best effort; results are in the sink
            log.exception("experiment %s: set_progress failed", exp_id)


def _set_progress_kwargs(store) -> set[str]:
    try:
        return set(inspect.signature(store.set_progress).parameters)
    except (TypeError, ValueError):
        return set()


def _default_run_fn() -> RunFn:
    from search.driver import run_experiment

    return run_experiment


def _default_sink_factory(url: str, exp_id: str):
    from service.sink import SqlResultSink

    return SqlResultSink(url, exp_id)


def _get(view, key: str, default=None):
    if isinstance(view, dict):
        return view.get(key, default)
    return getattr(view, key, default)


_attr = _get


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<database>"


def main(settings: Settings | None = None, *, once: bool = False) -> int:
    """Entry point of ``rnnhpo runner``: run until SIGINT/SIGTERM (or one experiment with once)."""
    import signal

    runner = Runner(settings)

    def _graceful(signum, _frame):
        log.info("signal %s: stopping after handing the current experiment back", signum)
        runner._stop.set()

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    return runner.run_forever(max_experiments=1 if once else None)
