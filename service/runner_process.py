"""The runner as a process: signal handling (``rnnhpo runner``, ``rnnhpo serve``'s embedded
runner) and ``rnnhpo run``'s local run coordinated with servers through the queue."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.runner import Runner, _default_run_fn
from service.settings import Settings

log = logging.getLogger("rnnhpo.runner")


class GracefulSignals:
    """SIGTERM/SIGINT handlers for a process whose main job is ``runner``: the first signal calls
    ``runner.interrupt`` (packs stop, the experiment is released); if the process has not ended
    ``grace_s`` seconds later, or at a second signal, the claim is released from here and the
    process exits with ``exit_code`` (``on_exit`` may print a last message first)."""

    def __init__(self, runner: Runner, grace_s: float, *, exit_code: int = 0,
                 on_exit: Callable[[], None] | None = None):
        self.runner, self.grace_s, self.exit_code, self.on_exit = runner, grace_s, exit_code, on_exit
        self.received: int | None = None
        self._saved: dict = {}

    def __enter__(self) -> "GracefulSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._saved[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def _handle(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            self._force()
        self.received = signum
        log.info("%s: stopping (the experiment in flight is %s)", name,
                 "cancelled, resumable" if self.runner.on_stop == "cancel" else "handed back to the queue")
        self.runner.interrupt(f"interrupted by {name}")
        threading.Thread(target=self._watchdog, name="rnnhpo-stop-watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        time.sleep(self.grace_s)
        self._force()

    def _force(self) -> None:
        self.runner.release_current()
        if self.on_exit is not None:
            try:
                self.on_exit()
            except Exception:  # noqa: BLE001 - exiting regardless
                pass
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(self.exit_code)


@dataclass
class LocalRun:
    """What :func:`run_local` did: the experiment, how it ended, and whether a signal ended it."""

    exp_id: str
    status: str
    interrupted: bool = False


def run_local(settings: Settings, *, spec=None, resume_id: str | None = None,
              progress: Callable[[Any], None] | None = None,
              on_start: Callable[[str], None] | None = None,
              on_interrupt_exit: Callable[[str], None] | None = None) -> LocalRun:
    """``rnnhpo run``: run ``spec`` (or resume experiment ``resume_id``, spec from the database)
    in this process, coordinated with any server on the same database through the queue: a new
    experiment is created already claimed by this process, a resumed one is claimed atomically
    (refused while a live runner holds it). SIGINT/SIGTERM stop the packs and leave the
    experiment ``cancelled``, resumable with ``rnnhpo run --resume ID``; the process ends within
    ``settings.stop_grace_s`` seconds of the signal.

    Raises ``NotFound``, ``ValueError`` (succeeded: nothing to resume) or ``ExperimentRunning``.
    """
    from service.store import Store

    store = Store(settings.database_url)
    run_fn = _default_run_fn()

    def run_with_progress(spec_, sink, *, progress=None, should_cancel=None, **kw):
        def both(p):
            if progress_cb is not None:
                progress_cb(p)
            if progress is not None:
                progress(p)
        return run_fn(spec_, sink, progress=both, should_cancel=should_cancel, **kw)

    progress_cb = progress
    runner = Runner(settings, store=store, run_fn=run_with_progress, init_ray=True, on_stop="cancel")
    if resume_id is not None:
        view = store.resume_experiment(resume_id, runner_id=runner.runner_id,
                                       stale_after_s=settings.runner_stale_after_s)
    else:
        exp_id = store.create_experiment(spec.name, spec.model_dump(mode="json"),
                                         n_trials_total=spec.count_trials(), claimed_by=runner.runner_id)
        view = store.get_experiment(exp_id)
    exp_id = view.id
    if on_start is not None:
        on_start(exp_id)
    exit_message = (lambda: on_interrupt_exit(exp_id)) if on_interrupt_exit else None
    runner.stats.current = exp_id
    with GracefulSignals(runner, settings.stop_grace_s, exit_code=130, on_exit=exit_message) as signals:
        status = runner.execute(view)
    return LocalRun(exp_id, status, interrupted=signals.received is not None)


def main(settings: Settings | None = None, *, once: bool = False) -> int:
    """Entry point of ``rnnhpo runner``: run until SIGINT/SIGTERM (or one experiment with once).
    A signal stops the packs, hands the experiment back to the queue and ends the process within
    ``settings.stop_grace_s`` seconds (+ the time to release the claim)."""
    runner = Runner(settings)
    with GracefulSignals(runner, runner.settings.stop_grace_s):
        return runner.run_forever(max_experiments=1 if once else None)
