"""Long-lived pack workers: Ray actors that train pack after pack, across rounds and runs.

A pack is one task on a :class:`PackWorker`, an actor holding the pack's resources (CPUs and a
GPU or a fraction of one), with torch, the compiled kernels and the last datasets loaded. The
driver keeps its workers between rounds and, for ``keep_s`` seconds after a run, for the next
run in the same process (the embedded runner serves experiment after experiment), so only the
first pack of a process pays for a worker's start.

This replaced one Ray Tune run per round: measured on the 2-core machine, a Tune run cost
2.4-3.7 s of wall time before its first pack trained (a new actor process importing torch,
about 1.1 s, and Tune's own start, about 1.3 s), which was 65 % of a 100-epoch Wine grid.
The dashboard shows each worker as a ``PackWorker`` actor and each pack as a task named
``<run name>-pack<i>``.

:func:`run_round` hands a round's packs to the workers, one at a time per worker, and waits:

* a pack's deterministic failure comes back as its summary (the worker stays);
* any other exception, or the worker's death, fails the pack with its reason and fault kind
  (:mod:`search.faults`); the worker is ended and, while packs wait, replaced;
* a cancel (``should_cancel``) or the end of ``time_budget_s`` ends the workers in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from search.faults import RetryPolicy, classify, reason

log = logging.getLogger("rnnhpo.search")

#: How often the driver looks at cancel, the time budget and the activity counts (seconds).
POLL_S = 0.2


class PackWorker:
    """One worker process (a Ray actor): trains the packs it is given, one at a time."""

    def __init__(self) -> None:
        import torch

        import trainer.train  # noqa: F401 - the import is the warm-up: paid once per worker

        torch.set_num_threads(1)

    def ready(self) -> bool:
        """Returns once the worker is up (its resources granted, its imports done)."""
        return True

    def run(self, job, sink, policy: RetryPolicy | None) -> dict[str, Any]:
        """Train one pack and store its members (:func:`search.execution.run_pack_job`)."""
        from search.execution import run_pack_job

        return run_pack_job(job, sink, policy)


@dataclass
class _Worker:
    handle: Any
    shape: tuple[float, float]
    ready_ref: Any
    up: bool = False
    idle_until: float = 0.0
    #: started by the current round (not taken from the pool)
    fresh: bool = True


@dataclass
class _Pool:
    """The process's idle workers, by resource shape; only touched under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    idle: list[_Worker] = field(default_factory=list)
    session: str | None = None
    reaper: threading.Timer | None = None
    #: the last run's result writer (:mod:`search.writer`), kept with the workers
    writer: Any = None
    writer_until: float = 0.0


_POOL = _Pool()
_ACTOR_CLASS = None


def _actor_class():
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        import ray

        _ACTOR_CLASS = ray.remote(max_restarts=0, max_task_retries=0)(PackWorker)
    return _ACTOR_CLASS


def _current_session() -> str:
    """This driver's Ray job and node: a new local Ray reuses job ids, never node ids."""
    import ray

    context = ray.get_runtime_context()
    return f"{context.get_job_id()}@{context.get_node_id()}"


def _kill(worker: _Worker) -> None:
    _kill_actor(worker.handle)


def _kill_actor(handle) -> None:
    import ray

    try:
        ray.kill(handle, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def _same_session() -> None:
    """Forget what an earlier Ray session left (its handles are gone with it); under ``lock``."""
    session = _current_session()
    if _POOL.session != session:
        _POOL.idle, _POOL.writer, _POOL.session = [], None, session


def keep_writer(handle) -> None:
    """Keep the run's result writer for the next run (until :func:`release`'s deadline)."""
    with _POOL.lock:
        _same_session()
        previous, _POOL.writer, _POOL.writer_until = _POOL.writer, handle, float("inf")
    if previous is not None and previous is not handle:
        _kill_actor(previous)


def take_writer():
    """The result writer an earlier run kept, or None."""
    with _POOL.lock:
        _same_session()
        handle, _POOL.writer = _POOL.writer, None
        return handle


def _take(shape: tuple[float, float], n: int) -> list[_Worker]:
    """Up to ``n`` workers of ``shape``: idle ones first (those up before those still starting), new
    ones for the rest. Idle workers of another shape are ended (they hold resources the new ones
    may need)."""
    with _POOL.lock:
        _same_session()
        mine = sorted((w for w in _POOL.idle if w.shape == shape), key=lambda w: not w.up)[:n]
        others = [w for w in _POOL.idle if w.shape != shape]
        _POOL.idle = [w for w in _POOL.idle if w.shape == shape and w not in mine]
    for worker in others:
        _kill(worker)
    return mine + [_start(shape) for _ in range(n - len(mine))]


def _start(shape: tuple[float, float]) -> _Worker:
    cpus, gpus = shape
    handle = _actor_class().options(num_cpus=cpus, num_gpus=gpus).remote()
    return _Worker(handle, shape, handle.ready.remote())


def _give_back(workers: list[_Worker]) -> None:
    with _POOL.lock:
        for worker in workers:
            worker.idle_until = float("inf")  # kept for the run's next round
            worker.fresh = False
            _POOL.idle.append(worker)


def release(keep_s: float = 0.0) -> None:
    """The run is over: idle workers (and the kept writer) stay ``keep_s`` seconds for the next
    run in this process, then end (``0``: now)."""
    now = time.monotonic()
    with _POOL.lock:
        for worker in _POOL.idle:
            worker.idle_until = min(worker.idle_until, now + keep_s)
        _POOL.writer_until = min(_POOL.writer_until, now + keep_s)
        if _POOL.reaper is not None:
            _POOL.reaper.cancel()
        _POOL.reaper = None
        if keep_s > 0 and (_POOL.idle or _POOL.writer is not None):
            _POOL.reaper = threading.Timer(keep_s + 0.05, _reap)
            _POOL.reaper.daemon = True
            _POOL.reaper.start()
    _reap()


def _reap() -> None:
    now = time.monotonic()
    with _POOL.lock:
        ended = [w.handle for w in _POOL.idle if w.idle_until <= now]
        _POOL.idle = [w for w in _POOL.idle if w.idle_until > now]
        if _POOL.writer is not None and _POOL.writer_until <= now:
            ended.append(_POOL.writer)
            _POOL.writer = None
    for handle in ended:
        _kill_actor(handle)


def idle_worker_ids() -> list[str]:
    """Ray actor ids of the workers this process keeps idle (for the next round or run)."""
    with _POOL.lock:
        return [w.handle._actor_id.hex() for w in _POOL.idle]


@dataclass
class PackDone:
    """What became of one pack of a round: its summary, or why it failed and the fault's kind."""

    summary: dict[str, Any] | None = None
    error: str | None = None
    kind: str | None = None


def run_round(jobs: list, sink, *, cpus_per_pack: float, gpus_per_pack: float, slots: int, name: str,
              policy: RetryPolicy, should_cancel: Callable[[], bool] | None = None,
              time_budget_s: float | None = None,
              on_activity: Callable[[int, int], None] | None = None) -> list[PackDone]:
    """Run ``jobs`` on at most ``slots`` workers and return what became of each (in order).

    A pack goes only to a worker that is up: one still waiting for resources (a lost node's
    share, CPUs held elsewhere) never holds a pack that a running worker could take next.
    ``on_activity(running, waiting)``: packs training, and packs waiting for a worker while the
    cluster has too few resources free, whenever the counts change (checked every ``POLL_S``)."""
    import ray

    round_ = _Round(jobs, sink, policy, name, (float(cpus_per_pack), float(gpus_per_pack)))
    round_.workers = _take(round_.shape, max(1, min(slots, len(jobs))))
    started = time.monotonic()
    activity: tuple[int, int] | None = None
    try:
        while round_.queue or round_.in_flight:
            round_.check_starts()
            round_.submit()
            waiting_on = list(round_.in_flight) + [w.ready_ref for w in round_.workers if not w.up]
            ready, _ = ray.wait(waiting_on, num_returns=1, timeout=POLL_S)
            round_.collect([r for r in ready if r in round_.in_flight])
            if should_cancel and should_cancel():
                round_.stopped = "cancelled"
            elif time_budget_s is not None and time.monotonic() - started >= time_budget_s:
                round_.stopped = "stopped: the experiment's time budget ran out"
            if round_.stopped:
                break
            counts = round_.activity()
            if on_activity is not None and counts != activity:
                activity = counts
                on_activity(*counts)
    finally:
        round_.end()
    return [round_.done.get(i, round_.unfinished()) for i in range(len(jobs))]


#: Workers of one round that may die before they are up, in a row, before its waiting packs fail.
MAX_START_FAILURES = 3


class _Round:
    """The book-keeping of one :func:`run_round`: packs queued, in flight and done; its workers."""

    def __init__(self, jobs: list, sink, policy, name: str, shape: tuple[float, float]):
        self.jobs, self.sink, self.policy, self.name, self.shape = jobs, sink, policy, name, shape
        self.queue = deque(range(len(jobs)))
        self.workers: list[_Worker] = []
        self.in_flight: dict[Any, tuple[int, _Worker]] = {}
        self.done: dict[int, PackDone] = {}
        self.stopped: str | None = None
        self.start_failures = 0

    def busy(self) -> set[int]:
        return {id(w) for _, w in self.in_flight.values()}

    def check_starts(self) -> None:
        """Mark workers that came up; drop those that died starting (replaced while packs wait)."""
        import ray

        for worker in [w for w in self.workers if not w.up]:
            ready, _ = ray.wait([worker.ready_ref], timeout=0)
            if not ready:
                continue
            try:
                ray.get(worker.ready_ref)
                worker.up, self.start_failures = True, 0
            except Exception as exc:  # noqa: BLE001 - it died starting: its resources are back
                self.workers.remove(worker)
                self.start_failures += worker.fresh  # a kept worker may have died idle (its node lost)
                log.warning("a pack worker died starting: %s", reason(exc))
                if self.workers or not self.queue:
                    continue
                if self.start_failures >= MAX_START_FAILURES:
                    while self.queue:
                        self.done[self.queue.popleft()] = PackDone(error=reason(exc), kind=classify(exc))
                else:
                    self.workers.append(_start(self.shape))

    def submit(self) -> None:
        busy = self.busy()
        for worker in self.workers:
            if not self.queue:
                return
            if worker.up and id(worker) not in busy:
                index = self.queue.popleft()
                ref = worker.handle.run.options(name=f"{self.name}-pack{index}").remote(
                    self.jobs[index], self.sink, self.policy)
                self.in_flight[ref] = (index, worker)

    def collect(self, refs: list) -> None:
        import ray

        for ref in refs:
            index, worker = self.in_flight.pop(ref)
            try:
                self.done[index] = _summary_done(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - classified; the worker is not trusted again
                self.done[index] = PackDone(error=reason(exc), kind=classify(exc))
                log.warning("pack %s failed on its worker: %s", self.jobs[index].pack_id, self.done[index].error)
                _kill(worker)
                self.workers.remove(worker)
                if self.queue:  # used once up (resources allowing): the others go on meanwhile
                    self.workers.append(_start(self.shape))

    def activity(self) -> tuple[int, int]:
        """(packs training, packs waiting for resources): packs queued while some worker is not up
        wait for resources when the cluster has too few of them free (else a worker is starting)."""
        import ray

        running = len(self.in_flight)
        if not self.queue or all(w.up for w in self.workers):
            return running, 0
        free = ray.available_resources()
        short = free.get("CPU", 0.0) < self.shape[0] or (self.shape[1] > 0 and free.get("GPU", 0.0) < self.shape[1])
        return running, len(self.queue) if short else 0

    def unfinished(self) -> PackDone:
        return PackDone(error=self.stopped or "not finished", kind="stopped" if self.stopped else "unknown")

    def end(self) -> None:
        """In-flight packs (cancelled, out of time, the driver failed) end with their workers; the
        others, up or still starting, go back to the pool."""
        for index, worker in self.in_flight.values():
            _kill(worker)
            self.workers.remove(worker)
            self.done.setdefault(index, self.unfinished())
        _give_back(self.workers)


def _summary_done(summary: dict[str, Any]) -> PackDone:
    if summary.get("error") is not None:
        return PackDone(summary, str(summary["error"]), str(summary.get("error_kind") or "deterministic"))
    return PackDone(summary)
