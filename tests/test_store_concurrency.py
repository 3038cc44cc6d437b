"""Store under concurrency: racing claimers, racing migrators, several writer processes."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from search.sink import ResultSink, TrialPlan, TrialRecord
from service.db import current_revision, head_revision, upgrade
from service.db.engine import make_engine
from service.sink import SqlResultSink
from service.store import Store
from trainer.result import TRACE_COLUMNS


@pytest.fixture
def url(db_url):
    """The conftest's fresh database (SQLite file or a new PostgreSQL database)."""
    return db_url


def _record(trial_id: int, n: int, attempt: int = 0) -> TrialRecord:
    """A trace whose values identify the trial (lr == trial_id) and the attempt (loss)."""
    trace = {c: np.full(n, float(attempt)) for c in TRACE_COLUMNS}
    trace["step"] = np.arange(n)
    trace["epoch"] = np.arange(n) // 100
    trace["lr"] = np.full(n, float(trial_id))
    trace["loss"] = np.arange(n) + attempt * 1e6
    return TrialRecord(status="completed", final={"loss": float(attempt)}, diagnostics={},
                       trace=trace, epochs={"epoch": np.arange(2), "wall_time": np.ones(2)},
                       wall_time=1.0, device="cpu", pack_id=f"p{trial_id}", pack_size=1,
                       attempt=attempt)


def _n_rows(trial_id: int) -> int:
    return 500 + 37 * (trial_id % 11)


@pytest.mark.parametrize("n_claimers", [2, 4])
def test_concurrent_claimers_never_share(url, n_claimers):
    Store(url)  # migrate once
    exp_ids = [Store(url, migrate=False).create_experiment(f"e{i}", {}) for i in range(20)]
    start = threading.Barrier(n_claimers)
    engines = [make_engine(url) for _ in range(n_claimers)]  # each claimer: its own pool too

    def claimer(k: int) -> list[str]:
        store = Store(url, migrate=False, engine=engines[k])
        start.wait()
        got = []
        misses = 0
        while misses < 3:
            view = store.claim_experiment(f"runner-{k}")
            if view is None:
                misses += 1
                continue
            assert view.runner_id == f"runner-{k}"
            got.append(view.id)
        return got

    try:
        with ThreadPoolExecutor(n_claimers) as pool:
            results = list(pool.map(claimer, range(n_claimers)))
    finally:
        for e in engines:
            e.dispose()
    claimed = [e for r in results for e in r]
    assert len(claimed) == len(set(claimed)), "an experiment was handed to two runners"
    assert sorted(claimed) == sorted(exp_ids)
    store = Store(url, migrate=False)
    views = [store.get_experiment(e) for e in exp_ids]
    assert all(v.status == "running" and v.attempts == 1 for v in views)
    owner = {e: f"runner-{k}" for k, r in enumerate(results) for e in r}
    assert all(v.runner_id == owner[v.id] for v in views)


def test_concurrent_migrations(url):
    errors = []
    barrier = threading.Barrier(4)

    def migrate():
        try:
            barrier.wait()
            Store(url)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert current_revision(url) == head_revision()
    upgrade(url)  # and once more: idempotent
    assert Store(url).list_experiments() == ([], 0)


def test_same_trial_recorded_concurrently_is_never_duplicated(url):
    """Racing retries of one trial: the trace ends up as exactly one attempt's rows."""
    store = Store(url)
    exp = store.create_experiment("e", {})
    tid = store.register_trials(exp, [TrialPlan(0, "v", {}, 0, None, {})])[0]

    def write(attempt: int):
        Store(url, migrate=False).record_trial(tid, _record(tid, 400 + attempt, attempt))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(8)))
    n = store.trace_row_count(trial_id=tid)
    tr = store.get_trace(tid)
    attempt = store.get_trial(tid).attempt
    assert n == 400 + attempt
    np.testing.assert_array_equal(tr["loss"], np.arange(n) + attempt * 1e6)
    np.testing.assert_array_equal(tr["step"], np.arange(n))


def _worker(sink_bytes: bytes, trial_ids: list[int]) -> int:
    sink = pickle.loads(sink_bytes)
    for tid in trial_ids:
        sink.pack_started([tid], f"p{tid}", 0, "cpu")
        sink.record_trial(tid, _record(tid, _n_rows(tid), attempt=0))
        sink.record_trial(tid, _record(tid, _n_rows(tid), attempt=1))  # a retry replaces
    return len(trial_ids)


def test_writer_processes_each_trial_has_exactly_its_rows(url):
    store = Store(url)
    exp = store.create_experiment("e", {})
    sink = SqlResultSink(url, exp)
    assert isinstance(sink, ResultSink)
    ids = sink.register_trials([TrialPlan(i, "v", {"i": i}, i, None, {}) for i in range(24)])
    blob = pickle.dumps(sink)
    assert len(blob) < 1000                              # a URL and an id, no connection
    tids = list(ids.values())
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        done = pool.starmap(_worker, [(blob, tids[k::4]) for k in range(4)])
    assert sum(done) == 24
    for tid in tids:
        assert store.trace_row_count(trial_id=tid) == _n_rows(tid)
        tr = store.get_trace(tid, metrics=["lr", "loss"])
        assert np.all(tr["lr"] == tid)
        np.testing.assert_array_equal(tr["loss"], np.arange(_n_rows(tid)) + 1e6)
        assert store.get_trial(tid).status == "completed"
    assert store.trace_row_count(exp_id=exp) == sum(_n_rows(t) for t in tids)
    assert set(sink.finished_trials()) == set(range(24))


def test_sink_pickles_without_its_store(url):
    store = Store(url)
    exp = store.create_experiment("e", {})
    sink = SqlResultSink(url, exp)
    ids = sink.register_trials([TrialPlan(0, "v", {}, 0, None, {})])
    assert sink._store is not None                       # created lazily on first use
    clone = pickle.loads(pickle.dumps(sink))
    assert clone._store is None and clone.url == url and clone.experiment_id == exp
    clone.trial_failed(ids[0], "gone")
    assert clone._store is sink._store                   # one store per URL per process
    assert store.get_trial(ids[0]).status == "failed"
    assert clone.cancel_requested() is False
