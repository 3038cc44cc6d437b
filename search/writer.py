"""Storage off the packs' critical path: packs hand their results to one writer per run.

Packs never hold a database connection, nor its URL: every pack gets a :class:`HandOffSink`,
which carries only the handle of a :class:`TraceWriter` actor (no GPU, no CPU reserved, on the
driver's node). ``record_trial`` buffers in the pack; at the end of the pack ``flush`` hands the
buffer to the writer and returns as soon as the writer holds it, so the pack -- and its CPU or
GPU -- is released while the writer stores the records through the real sink in the background.
``pack_started`` and ``trial_failed`` are small and synchronous (the attempt number comes back
from the database). The writer retries every store on infrastructure faults with the run's
:class:`~search.faults.RetryPolicy` (backoff within a time budget), from the records it holds:
nothing is retrained. The driver calls :meth:`TraceWriter.drain` after each round: it waits for
the queue to empty and returns the trials whose write failed for good (the driver marks them
failed; a resume re-runs them).
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from typing import Any

from search.faults import RetryPolicy, call_with_retry, reason
from search.sink import ResultSink, TrialRecord

log = logging.getLogger("rnnhpo.search")

#: Packs' records the writer may hold before a hand-off waits (back-pressure).
WRITER_QUEUE_PACKS = 64


class TraceWriter:
    """Stores what packs hand over through ``sink``, records in one background thread (a Ray actor)."""

    def __init__(self, sink: ResultSink, policy: RetryPolicy | None = None):
        self.sink = sink
        self.policy = policy or RetryPolicy()
        self.queue: queue.Queue = queue.Queue(maxsize=WRITER_QUEUE_PACKS)
        self.failed: dict[int, str] = {}
        self.written = 0
        self._thread = threading.Thread(target=self._loop, name="rnnhpo-trace-writer", daemon=True)
        self._thread.start()

    def _retried(self, what: str, fn, *args):
        return call_with_retry(lambda: fn(*args), self.policy, on_retry=lambda exc, wait: log.warning(
            "%s failed (%s); retrying in %.1f s", what, reason(exc), wait))

    def pack_started(self, trial_ids, pack_id, attempt, device, placement=None) -> int | None:
        """The sink's ``pack_started`` (the attempt number as the database counts it)."""
        return self._retried(f"pack {pack_id}: marking started", self.sink.pack_started,
                             trial_ids, pack_id, attempt, device, placement)

    def trial_failed(self, trial_id: int, error: str) -> None:
        self._retried(f"trial {trial_id}: marking failed", self.sink.trial_failed, trial_id, error)

    def bind(self, sink: ResultSink, policy: RetryPolicy | None = None) -> None:
        """Serve another run: store what it hands over through ``sink`` (after storing what is queued)."""
        self.queue.join()
        self.sink, self.policy, self.failed = sink, policy or RetryPolicy(), {}

    def hand_off(self, records: list[tuple[int, TrialRecord]]) -> int:
        """Take a pack's records (returns when queued, not when written)."""
        self.queue.put(records)
        return len(records)

    def _loop(self) -> None:
        while True:
            records = self.queue.get()
            try:
                for trial_id, record in records:
                    try:
                        self._retried(f"trial {trial_id}: storing", self.sink.record_trial, trial_id, record)
                        self.written += 1
                        self.failed.pop(trial_id, None)
                    except Exception as exc:  # noqa: BLE001 - reported by drain, never lost silently
                        log.exception("storing trial %s failed", trial_id)
                        self.failed[trial_id] = f"storing the result failed: {reason(exc)}"
            finally:
                self.queue.task_done()

    def drain(self) -> dict[int, str]:
        """Wait until every handed-off record is stored; the failures so far (trial id -> reason)."""
        self.queue.join()
        failed, self.failed = dict(self.failed), {}
        return failed

    def stats(self) -> dict[str, int]:
        return {"written": self.written, "queued": self.queue.qsize()}


class HandOffSink:
    """What a pack gets as its sink: the writer's handle and the pack's buffer, no connection."""

    def __init__(self, writer):
        self.writer = writer
        self._buffer: list[tuple[int, TrialRecord]] = []

    def __getstate__(self) -> dict[str, Any]:
        return {"writer": self.writer}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.writer, self._buffer = state["writer"], []

    def pack_started(self, trial_ids, pack_id, attempt, device, placement=None):
        import ray

        self._buffer = []
        return ray.get(self.writer.pack_started.remote(trial_ids, pack_id, attempt, device, placement))

    def record_trial(self, trial_id: int, record: TrialRecord) -> None:
        self._buffer.append((int(trial_id), record))

    def trial_failed(self, trial_id: int, error: str) -> None:
        import ray

        ray.get(self.writer.trial_failed.remote(trial_id, error))

    def flush(self) -> None:
        """Hand the pack's buffered records to the writer; returns once the writer holds them."""
        import ray

        if self._buffer:
            records, self._buffer = self._buffer, []
            ray.get(self.writer.hand_off.remote(records))


def start_writer(sink: ResultSink, policy: RetryPolicy | None = None, reuse=None):
    """A :class:`TraceWriter` actor on this (the driver's) node, reserving no CPU or GPU: ``reuse``
    (a writer an earlier run of this process kept) bound to ``sink`` when it still answers, else a
    new one."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if reuse is not None:
        try:
            ray.get(reuse.bind.remote(sink, policy), timeout=30)
            return reuse
        except Exception:  # noqa: BLE001 - gone or stuck: a new writer
            log.warning("the kept result writer did not answer; starting a new one")
    here = ray.get_runtime_context().get_node_id()
    actor = ray.remote(num_cpus=0, max_concurrency=8)(TraceWriter)
    return actor.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
                         name=f"rnnhpo-writer-{uuid.uuid4().hex[:12]}").remote(sink, policy)
