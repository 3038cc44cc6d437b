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
3. finishes it: ``succeeded``; ``partial`` (some trials failed) or ``failed`` (all failed, or
   the run raised), with the count and the readable reasons (``Type: message``; tracebacks go
   to the log only); or ``cancelled``. A runner that is stopped (SIGTERM/SIGINT, server
   shutdown) hands its experiment back to the queue instead; an interrupted ``rnnhpo run``
   (:func:`service.runner_process.run_local`) leaves it ``cancelled``, resumable with ``rnnhpo run --resume ID``.

Infrastructure faults that reach the runner (the database unreachable mid-run) re-run the
driver, which resumes from the database, with exponential backoff until ``retry_budget_s``.

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
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from search.faults import RetryPolicy, call_with_retry, reason
from service.runner_callbacks import CancelProbe, ProgressRecorder, attr, record_phase, record_summary
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
                 spec_loader: Callable[[dict], Any] | None = None, init_ray: bool | None = None,
                 on_stop: str = "requeue"):
        """``on_stop``: what a stop does to the experiment in flight: ``requeue`` (servers and
        runners: another runner continues it) or ``cancel`` (``rnnhpo run``: resumable)."""
        self.settings = settings or Settings()
        self.on_stop = on_stop
        self.stop_reason = "the runner stopped"
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
        """Ask the loop to end; the packs in flight stop and the experiment goes back to the
        queue. If the loop has not ended after ``timeout`` seconds the claim is released anyway
        (the packs' late results are harmless: a retried trial replaces its trace)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                self.release_current()

    def interrupt(self, why: str = "interrupted") -> None:
        """Begin a stop without waiting (signal handlers call this)."""
        self.stop_reason = why
        self._stop.set()

    def release_current(self) -> bool:
        """Hand the experiment in flight back (``on_stop``) if this runner still holds it."""
        exp_id = self.stats.current
        if exp_id is None:
            return False
        try:
            done = self.store.release(exp_id, self.runner_id, **self._stop_outcome(exp_id))
        except Exception as exc:  # noqa: BLE001 - the database may be gone; its heartbeat goes stale
            log.warning("experiment %s: could not release the claim (%s); it is reclaimed when its "
                        "heartbeat is stale", exp_id, reason(exc))
            return False
        if done:
            log.info("experiment %s released (%s)", exp_id, self.on_stop)
        return done

    def _stop_outcome(self, exp_id: str) -> dict:
        if self.on_stop == "cancel":
            return {"status": "cancelled", "error": f"{self.stop_reason}; resume with "
                                                    f"`rnnhpo run --resume {exp_id}`"}
        return {"status": "queued"}

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run_forever(self, *, max_experiments: int | None = None, idle_exit_s: float | None = None) -> int:
        """Claim and run experiments until stopped (or ``max_experiments`` ran, or the queue
        stayed empty for ``idle_exit_s``). Returns the number of experiments handled."""
        handled, idle_since, failures = 0, time.monotonic(), 0
        log.info("runner %s polling %s", self.runner_id, _safe_url(self.settings.database_url))
        policy = RetryPolicy(base_s=max(self.settings.runner_poll_s, 0.5), max_delay_s=30.0)
        while not self._stop.is_set():
            try:
                ran = self.run_once()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the loop survives database outages
                wait = policy.delay(failures)
                failures += 1
                self._migrate_if_empty(exc)
                log.warning("runner %s: claim failed (%s); next try in %.0f s", self.runner_id,
                            reason(exc), wait)
                self._stop.wait(wait)
                continue
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

    def _migrate_if_empty(self, exc: Exception) -> None:
        """A database that came back empty (recreated) gets its schema before the next claim."""
        from service.db.errors import is_schema_missing

        if is_schema_missing(exc):
            try:
                self.store.migrate()
            except Exception as again:  # noqa: BLE001 - the next poll tries again
                log.warning("runner %s: migration failed (%s)", self.runner_id, reason(again))

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
        exp_id = attr(view, "id")
        self.stats.current = exp_id
        hb = _Heartbeat(self.store, exp_id, self.runner_id, self.settings.runner_heartbeat_s)
        hb.start()
        try:
            return self._execute(view, exp_id, hb)
        finally:
            hb.stop()
            self.stats.current = None

    def _execute(self, view, exp_id: str, hb: _Heartbeat) -> str:
        log.info("runner %s: experiment %s (%s) started", self.runner_id, exp_id, attr(view, "name"))
        should_cancel = self._cancel_probe(exp_id, hb)
        try:
            if self._stop.is_set():
                return self._stopped(exp_id)
            spec = self._load_spec(attr(view, "spec"))
            run_fn = self._run_fn or _default_run_fn()
            if self._init_ray:
                record_phase(self.store, view, "connecting")
                self._ensure_ray(spec, should_cancel)
            sink = (self._sink_factory or _default_sink_factory)(self.settings.database_url, exp_id)
            kwargs = {"progress": self._progress_cb(exp_id), "should_cancel": should_cancel}
            accepted = _accepted_kwargs(run_fn)
            if accepted is None or "run_id" in accepted:
                kwargs["run_id"] = exp_id
            if accepted is None or "retry" in accepted:
                kwargs["retry"] = self._policy()
            if accepted is None or "keep_workers_s" in accepted:
                kwargs["keep_workers_s"] = self.settings.pack_worker_keep_s
            summary = call_with_retry(
                lambda: run_fn(spec, sink, **kwargs), self._policy(max_unknown=0), should_cancel=should_cancel,
                on_retry=lambda exc, wait: log.warning("experiment %s: %s; resuming in %.1f s", exp_id,
                                                       reason(exc), wait))
        except Exception as exc:  # noqa: BLE001 - any failure ends the experiment as failed
            if hb.lost.is_set():
                return "lost"
            if self._stop.is_set():
                return self._stopped(exp_id)
            if _is_connect_cancel(exc):  # cancelled while Ray was starting or being joined
                return self._cancelled(exp_id)
            why = reason(exc)
            log.error("experiment %s failed: %s", exp_id, why, exc_info=exc)
            self.store.finish_experiment(exp_id, "failed", error=why)
            self.stats.failed += 1
            return "failed"
        if hb.lost.is_set():
            return "lost"  # another runner owns it now: leave its row alone
        record_summary(self.store, exp_id, summary)
        if attr(summary, "cancelled", False):
            return self._cancelled(exp_id)
        total = attr(summary, "trials_total", 0) or 0
        n_failed = attr(summary, "n_failed", 0) or 0
        reasons = _reasons(attr(summary, "failures", None) or {})
        if n_failed and total and n_failed >= total:
            self.store.finish_experiment(exp_id, "failed", error=f"all {total} trials failed{reasons}")
            self.stats.failed += 1
            return "failed"
        if n_failed:
            self.store.finish_experiment(exp_id, "partial", error=f"{n_failed} of {total} trials failed"
                                                                  f"{reasons}; `--resume` re-runs them")
            self.stats.failed += 1
            log.info("experiment %s partial (%s of %s trials failed)", exp_id, n_failed, total)
            return "partial"
        self.store.finish_experiment(exp_id, "succeeded")
        self.stats.succeeded += 1
        log.info("experiment %s succeeded (%s trials)", exp_id, total)
        return "succeeded"

    def _policy(self, **overrides) -> RetryPolicy:
        s = self.settings
        return RetryPolicy(**{"budget_s": s.retry_budget_s, "base_s": s.retry_backoff_s,
                              "max_delay_s": s.retry_max_delay_s, **overrides})

    def _cancelled(self, exp_id: str) -> str:
        """The driver stopped because cancel was asked (or the runner is stopping)."""
        if self._stop.is_set() and not self._cancel_flag(exp_id):
            return self._stopped(exp_id)
        self.store.finish_experiment(exp_id, "cancelled")
        self.stats.cancelled += 1
        return "cancelled"

    def _stopped(self, exp_id: str) -> str:
        """The runner was stopped while running ``exp_id``: requeue it, or cancel it resumably."""
        outcome = self._stop_outcome(exp_id)
        if outcome["status"] == "cancelled":
            if self.store.release(exp_id, self.runner_id, **outcome):
                self.stats.cancelled += 1
            return "cancelled"
        return self._requeue(exp_id)

    def _requeue(self, exp_id: str) -> str:
        log.info("runner stopping: experiment %s goes back to the queue", exp_id)
        self.store.release(exp_id, self.runner_id)
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

    def _ensure_ray(self, spec, should_cancel: Callable[[], bool]) -> None:
        from search.ray_runtime import ensure_ray

        # the deployment's address wins over the one a submitter put in the spec
        address = self.settings.ray_address or getattr(getattr(spec, "execution", None), "ray_address", None)
        url = ensure_ray(address, connect_timeout_s=self.settings.ray_connect_timeout_s,
                         should_cancel=should_cancel, var_dir=self.settings.var_dir)
        if url:
            self.stats.dashboard_url = url if "://" in url else f"http://{url}"

    def _cancel_probe(self, exp_id: str, hb: _Heartbeat) -> Callable[[], bool]:
        """``should_cancel`` for the driver: stop requested, claim lost, or cancel in the database
        (the database is asked at most every ``cancel_poll_s`` seconds)."""
        return CancelProbe(self, exp_id, hb)

    def _progress_cb(self, exp_id: str) -> Callable[[Any], None]:
        return ProgressRecorder(self, exp_id)


def _reasons(failures: dict[str, int], limit: int = 5) -> str:
    """``: A: x (3); B: y (1)`` -- the most frequent readable failure reasons with their counts."""
    if not failures:
        return ""
    top = sorted(failures.items(), key=lambda kv: -kv[1])
    text = "; ".join(f"{why} ({n})" for why, n in top[:limit])
    if len(top) > limit:
        text += f"; {len(top) - limit} more reasons"
    return f": {text}"


def _accepted_kwargs(fn) -> set[str] | None:
    """Keyword names ``fn`` takes (None: any, it has ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def _is_connect_cancel(exc: BaseException) -> bool:
    return type(exc).__name__ == "RayConnectCancelled"


def _default_run_fn() -> RunFn:
    from search.driver import run_experiment

    return run_experiment


def _default_sink_factory(url: str, exp_id: str):
    from service.sink import SqlResultSink

    return SqlResultSink(url, exp_id)


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<database>"
