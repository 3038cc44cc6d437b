"""Storage off the accelerator's critical path: packs hand their results to a writer.

A GPU pack that wrote its members' traces itself would hold its GPU for the whole write. With a
:class:`HandOffSink`, ``record_trial`` only buffers; at the end of the pack ``flush`` hands the
buffered records to the :class:`TraceWriter` actor (no GPU, no CPU reserved, on the driver's node)
and returns as soon as the writer holds them, so the pack -- and its GPU -- is released while the
writer stores them through the real sink in the background, with one small connection pool.
The driver calls :meth:`TraceWriter.drain` after each round: it waits for the queue to empty and
returns the trials whose write failed (the driver marks them failed; a resume re-runs them).

``pack_started`` and ``trial_failed`` stay synchronous: they are small, and the attempt number
comes back from the database.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from search.sink import ResultSink, TrialPlan, TrialRecord

log = logging.getLogger("rnnhpo.search")

#: Records the writer may hold before a pack's hand-off waits (back-pressure).
WRITER_QUEUE_PACKS = 64


class TraceWriter:
    """Stores handed-off records through ``sink`` in one background thread (a Ray actor)."""

    def __init__(self, sink: ResultSink):
        self.sink = sink
        self.queue: queue.Queue = queue.Queue(maxsize=WRITER_QUEUE_PACKS)
        self.failed: dict[int, str] = {}
        self.written = 0
        self._thread = threading.Thread(target=self._loop, name="rnnhpo-trace-writer", daemon=True)
        self._thread.start()

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
                        self.sink.record_trial(trial_id, record)
                        self.written += 1
                        self.failed.pop(trial_id, None)
                    except Exception as exc:  # noqa: BLE001 - reported by drain, never lost silently
                        log.exception("writing trial %s failed", trial_id)
                        self.failed[trial_id] = f"storing the result failed: {type(exc).__name__}: {exc}"
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
    """A :class:`~search.sink.ResultSink` for packs: results go to the writer, the rest direct."""

    def __init__(self, sink: ResultSink, writer):
        self.sink, self.writer = sink, writer
        self._buffer: list[tuple[int, TrialRecord]] = []

    def __getstate__(self) -> dict[str, Any]:
        return {"sink": self.sink, "writer": self.writer}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.sink, self.writer = state["sink"], state["writer"]
        self._buffer = []

    def register_trials(self, plans: list[TrialPlan]) -> dict[int, int]:
        return self.sink.register_trials(plans)

    def finished_trials(self) -> dict[int, dict[str, Any]]:
        return self.sink.finished_trials()

    def trial_states(self) -> dict[int, dict[str, Any]]:
        return self.sink.trial_states()

    def pack_started(self, trial_ids, pack_id, attempt, device, placement=None):
        self._buffer = []
        return self.sink.pack_started(trial_ids, pack_id, attempt, device, placement)

    def record_trial(self, trial_id: int, record: TrialRecord) -> None:
        self._buffer.append((int(trial_id), record))

    def trial_failed(self, trial_id: int, error: str) -> None:
        self.sink.trial_failed(trial_id, error)

    def flush(self) -> None:
        """Hand the pack's buffered records to the writer; returns once the writer holds them."""
        import ray

        if self._buffer:
            records, self._buffer = self._buffer, []
            ray.get(self.writer.hand_off.remote(records))


def start_writer(sink: ResultSink):
    """A :class:`TraceWriter` actor on this (the driver's) node, reserving no CPU or GPU."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor = ray.remote(num_cpus=0, max_concurrency=4)(TraceWriter)
    return actor.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
                         name=f"rnnhpo-writer-{getattr(sink, 'experiment_id', 'run')}-{id(sink):x}").remote(sink)
