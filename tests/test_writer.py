"""Results handed off to a writer that holds no GPU: nothing lost, failures reported."""

from __future__ import annotations

import time

import numpy as np
import pytest

from search.sink import TrialRecord
from search.faults import RetryPolicy
from search.writer import HandOffSink, TraceWriter, start_writer


def record(n: int = 5) -> TrialRecord:
    return TrialRecord(status="completed", final={"loss": 0.5}, diagnostics={},
                       trace={"step": np.arange(n)}, epochs={}, wall_time=1.0, device="cuda:0",
                       pack_id="p", pack_size=2)


class SlowSink:
    def __init__(self, fail: set[int] = frozenset(), flaky: int = 0):
        self.stored: list[int] = []
        self.fail, self.flaky = fail, flaky

    def record_trial(self, trial_id, rec):
        time.sleep(0.05)
        if trial_id in self.fail:
            raise ValueError("this record cannot be stored")
        if self.flaky:
            self.flaky -= 1
            raise ConnectionError("database unreachable")
        self.stored.append(trial_id)


FAST_RETRY = RetryPolicy(budget_s=5.0, base_s=0.01, max_delay_s=0.05)


def test_hand_off_returns_before_the_write_and_drain_waits_for_it():
    sink = SlowSink()
    writer = TraceWriter(sink)
    t0 = time.perf_counter()
    assert writer.hand_off([(i, record()) for i in range(10)]) == 10
    handed = time.perf_counter() - t0
    assert handed < 0.25 and len(sink.stored) < 10  # the pack is free long before 10 x 50 ms of writing
    assert writer.drain() == {}
    assert sink.stored == list(range(10)) and writer.stats() == {"written": 10, "queued": 0}


def test_failed_writes_are_reported_once_by_drain():
    writer = TraceWriter(SlowSink(fail={3}), FAST_RETRY)
    writer.hand_off([(i, record()) for i in range(5)])
    failures = writer.drain()
    assert list(failures) == [3] and "ValueError: this record cannot be stored" in failures[3]
    assert writer.drain() == {}


def test_an_outage_is_retried_from_the_held_records():
    sink = SlowSink(flaky=3)
    writer = TraceWriter(sink, FAST_RETRY)
    writer.hand_off([(i, record()) for i in range(4)])
    assert writer.drain() == {}
    assert sink.stored == [0, 1, 2, 3] and sink.flaky == 0


def test_what_a_pack_receives_holds_no_database_url(sqlite_url):
    """The sink pickled into every pack is the writer's handle, not the SQL sink."""
    import pickle

    import ray

    from search.ray_runtime import ensure_ray
    from service.sink import SqlResultSink

    ensure_ray(num_cpus=2)
    writer = start_writer(SqlResultSink(sqlite_url, "e1"))
    try:
        shipped = pickle.dumps(HandOffSink(writer))
        assert sqlite_url.encode() not in shipped and b"SqlResultSink" not in shipped
    finally:
        ray.kill(writer)


@pytest.mark.slow
def test_a_search_stores_every_trace_through_the_writer(sqlite_url):
    from search.driver import _Run
    from search.ray_runtime import ensure_ray
    from search.spec import ExperimentSpec
    from service.sink import SqlResultSink
    from service.store import Store

    ensure_ray(num_cpus=2)
    spec = ExperimentSpec.model_validate({
        "name": "hand-off", "dataset": {"name": "iris"}, "variants": [{"name": "GRU", "family": "gru"}],
        "training": {"epochs": 2, "hidden": 8, "batch_size": 32},
        "search": {"algorithm": "grid", "space": {"lr": {"type": "grid", "values": [0.01, 0.05]}}},
        "seeds": 2, "execution": {"pack_size": 2}})
    store = Store(sqlite_url)
    exp = store.create_experiment(spec.name, spec.model_dump(mode="json"))
    run = _Run(spec, SqlResultSink(sqlite_url, exp), None, None, exp)
    summary = run.run()
    assert summary.trials_done == spec.count_trials() == 6 and summary.n_failed == 0  # 4 selection + 2 test
    trials, total = store.list_trials(exp)
    assert total == 6 and all(t.status == "completed" for t in trials)
    assert all(store.trace_row_count(trial_id=t.id) == t.steps > 0 for t in trials)
