"""Where a trial ran and on which attempt: counted in the database, not on a node's disk."""

from __future__ import annotations

import pytest

from search.cluster import placement
from search.sink import TrialPlan
from service.sink import SqlResultSink
from service.store import Store


@pytest.fixture
def sink(db_url):
    store = Store(db_url)
    exp = store.create_experiment("e", {})
    store.register_trials(exp, [TrialPlan(number=i, variant="v", params={"lr": i}, seed=i, fold=None,
                                          config={}) for i in range(3)])
    return SqlResultSink(db_url, exp)


def _ids(sink) -> list[int]:
    return sorted(t.id for t in sink.store.list_trials(sink.experiment_id)[0])


def test_a_pack_retried_on_another_node_counts_its_attempt_in_the_database(sink):
    ids = _ids(sink)
    node_a = {"node_id": "a" * 56, "host": "gpu-1", "device_name": "NVIDIA H100 80GB HBM3"}
    node_b = {"node_id": "b" * 56, "host": "gpu-2", "device_name": "NVIDIA H100 80GB HBM3"}
    # the worker on each node starts from 0: nothing on its disk says this pack ran before
    assert sink.pack_started(ids[:2], "p1", 0, "cuda:0", node_a) == 0
    assert sink.pack_started(ids[:2], "p1", 0, "cuda:0", node_b) == 1
    assert sink.pack_started(ids[:2], "p1", 0, "cuda:0", node_a) == 2
    trials = {t.id: t for t in sink.store.list_trials(sink.experiment_id)[0]}
    first = trials[ids[0]]
    assert (first.attempt, first.node_id, first.host, first.device_name) == (2, "a" * 56, "gpu-1",
                                                                           "NVIDIA H100 80GB HBM3")
    assert trials[ids[2]].attempt == 0 and trials[ids[2]].node_id is None
    # a pack never started before begins at attempt 0; a caller's higher count is kept
    assert sink.pack_started([ids[2]], "p2", 0, "cpu", None) == 0
    assert sink.pack_started([ids[2]], "p2", 5, "cpu", None) == 5


def test_placement_names_this_host_and_device():
    import socket

    where = placement("cpu")
    assert where["host"] == socket.gethostname() and where["device_name"]
    import ray

    # the Ray node of this process when the session started Ray (other tests do), else none
    expected = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    assert where["node_id"] == expected
