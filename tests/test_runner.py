"""The durable queue runner: claim, heartbeat, progress, finish, cancel, stop/requeue, stale
reclaim, and two runners on one PostgreSQL. Fake run functions exercise the queue without Ray;
one slow test runs the real search driver."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from types import SimpleNamespace

import pytest

from service.runner import Runner
from service.settings import Settings
from service.store import Store

SPEC = {"name": "q", "dataset": {"name": "iris"}, "variants": [{"name": "GRU", "family": "gru"}],
        "training": {"epochs": 2, "batch_size": 16, "lr": 0.05}, "seeds": 2, "execution": {"pack_size": 2}}


def _settings(url: str, **kw) -> Settings:
    base = dict(database_url=url, runner_poll_s=0.05, runner_heartbeat_s=0.1, runner_stale_after_s=1.0,
                cancel_poll_s=0.0)
    base.update(kw)
    return Settings(**base)


def summary(total=2, done=2, n_failed=0, cancelled=False, best=None):
    return SimpleNamespace(trials_total=total, trials_done=done, n_failed=n_failed, cancelled=cancelled,
                           best=best, dashboard_url=None, wall_time=0.1, pareto=[])


def make_progress(total, done, best=None):
    return SimpleNamespace(trials_total=total, trials_done=done, packs_total=1, packs_done=done,
                           best=best, eta_s=1.0, dashboard_url="http://127.0.0.1:8265", elapsed_s=0.1)


def fake_runner(store, url, run_fn, **kw):
    return Runner(_settings(url, **kw), store=store, run_fn=run_fn, sink_factory=lambda u, e: ("sink", e),
                  spec_loader=lambda spec: spec, init_ray=False)


@pytest.fixture
def store(sqlite_url):
    return Store(sqlite_url)


def test_runs_queued_experiment_to_success(store, sqlite_url):
    exp_id = store.create_experiment("q", SPEC, n_trials_total=2)
    calls = []

    def run_fn(spec, sink, *, progress=None, should_cancel=None):
        assert store.get_experiment(exp_id).status == "running"
        progress(make_progress(2, 1, {"number": 0, "value": 0.9}))
        calls.append((spec["name"], sink))
        assert should_cancel() is False
        return summary(best={"number": 0, "value": 0.9})

    r = fake_runner(store, sqlite_url, run_fn)
    assert r.run_once() is True
    assert r.run_once() is False  # queue empty
    v = store.get_experiment(exp_id)
    assert v.status == "succeeded" and v.n_trials_done == 2 and v.best["value"] == 0.9
    assert calls == [("q", ("sink", exp_id))] and r.stats.succeeded == 1
    assert r.stats.dashboard_url == "http://127.0.0.1:8265"


def test_failure_marks_failed_with_error(store, sqlite_url):
    exp_id = store.create_experiment("q", SPEC)

    def boom(spec, sink, **kw):
        raise RuntimeError("driver exploded")

    fake_runner(store, sqlite_url, boom).run_once()
    v = store.get_experiment(exp_id)
    assert v.status == "failed" and "driver exploded" in v.error


def test_all_trials_failed_is_failed(store, sqlite_url):
    exp_id = store.create_experiment("q", SPEC)
    fake_runner(store, sqlite_url, lambda s, k, **kw: summary(total=2, done=0, n_failed=2)).run_once()
    assert store.get_experiment(exp_id).status == "failed"


def test_cancel_reaches_the_driver(store, sqlite_url):
    exp_id = store.create_experiment("q", SPEC)
    started = threading.Event()

    def run_fn(spec, sink, *, progress=None, should_cancel=None):
        started.set()
        deadline = time.monotonic() + 10
        while not should_cancel():
            assert time.monotonic() < deadline, "cancel never seen"
            time.sleep(0.02)
        return summary(done=1, cancelled=True)

    r = fake_runner(store, sqlite_url, run_fn)
    t = threading.Thread(target=r.run_once)
    t.start()
    assert started.wait(10)
    assert store.request_cancel(exp_id).cancel_requested
    t.join(10)
    assert store.get_experiment(exp_id).status == "cancelled" and r.stats.cancelled == 1


def test_stop_hands_the_experiment_back(store, sqlite_url):
    exp_id = store.create_experiment("q", SPEC)
    started = threading.Event()

    def run_fn(spec, sink, *, progress=None, should_cancel=None):
        started.set()
        while not should_cancel():
            time.sleep(0.02)
        return summary(done=1, cancelled=True)

    r = fake_runner(store, sqlite_url, run_fn)
    r.start_in_thread()
    assert started.wait(10)
    r.stop(timeout=10)
    v = store.get_experiment(exp_id)
    assert v.status == "queued" and v.runner_id is None and r.stats.requeued == 1


def test_heartbeat_keeps_claim_and_stale_claim_is_reclaimed(store, sqlite_url):
    exp_id = store.create_experiment("q", SPEC)
    # a runner that died: claimed, never heartbeats again
    assert store.claim_experiment("dead-runner").id == exp_id
    r = fake_runner(store, sqlite_url, lambda s, k, **kw: summary())
    assert r.run_once() is False  # heartbeat still fresh
    time.sleep(1.2)
    assert r.run_once() is True   # stale: reclaimed and finished
    v = store.get_experiment(exp_id)
    assert v.status == "succeeded" and v.attempts == 2 and v.runner_id == r.runner_id

    # a live runner's heartbeat keeps its claim past stale_after_s
    exp2 = store.create_experiment("q2", SPEC)
    other = fake_runner(store, sqlite_url, lambda s, k, **kw: summary())

    def slow(spec, sink, **kw):
        time.sleep(2.0)  # > stale_after_s, heartbeats every 0.1 s
        assert other.run_once() is False
        return summary()

    fake_runner(store, sqlite_url, slow).run_once()
    assert store.get_experiment(exp2).attempts == 1


def test_lost_claim_leaves_the_row_alone(store, sqlite_url):
    exp_id = store.create_experiment("q", SPEC)

    def run_fn(spec, sink, *, progress=None, should_cancel=None):
        # another runner takes over (e.g. we stalled past stale_after_s)
        store.requeue(exp_id)
        assert store.claim_experiment("usurper").runner_id == "usurper"
        deadline = time.monotonic() + 5
        while not should_cancel():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        return summary(cancelled=True)

    r = fake_runner(store, sqlite_url, run_fn)
    r.run_once()
    v = store.get_experiment(exp_id)
    assert v.status == "running" and v.runner_id == "usurper"


def test_driver_callbacks_pickle_to_noops(store, sqlite_url):
    """Whatever pickles the runner's callables (Ray shipping them to a worker) gets inert probes."""
    import pickle

    captured = {}

    def run_fn(spec, sink, *, progress=None, should_cancel=None):
        captured["p"] = pickle.loads(pickle.dumps(progress))
        captured["c"] = pickle.loads(pickle.dumps(should_cancel))
        return summary()

    store.create_experiment("q", SPEC)
    fake_runner(store, sqlite_url, run_fn).run_once()
    assert captured["c"]() is False and captured["p"](make_progress(1, 1)) is None


# ------------------------------------------------------------------ two runners, one PostgreSQL

def _runner_proc(url: str, name: str, out: "mp.Queue", n_idle: float) -> None:
    from service.runner import Runner
    from service.store import Store

    store = Store(url, migrate=False)

    def run_fn(spec, sink, **kw):
        out.put((sink[1], name))
        time.sleep(0.05)
        return summary()

    r = Runner(_settings(url), store=store, runner_id=name, run_fn=run_fn,
               sink_factory=lambda u, e: ("sink", e), spec_loader=lambda s: s, init_ray=False)
    r.run_forever(idle_exit_s=n_idle)


@pytest.mark.postgres
@pytest.mark.slow
def test_two_runners_on_postgres_never_share_an_experiment(pg_url):
    store = Store(pg_url)
    ids = [store.create_experiment(f"e{i}", SPEC) for i in range(30)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_runner_proc, args=(pg_url, f"runner-{k}", out, 2.0)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    runs = []
    while not out.empty():
        runs.append(out.get())
    ran = [e for e, _ in runs if e in set(ids)]
    assert sorted(ran) == sorted(ids), "every experiment ran exactly once"
    assert len({name for _, name in runs}) == 2, "both runners took part"
    for exp_id in ids:
        v = store.get_experiment(exp_id)
        assert v.status == "succeeded" and v.attempts == 1


# ------------------------------------------------------------------ the real driver

@pytest.mark.slow
def test_real_driver_in_process(sqlite_url, tmp_path, monkeypatch):
    """Runner + search.driver + SqlResultSink + local Ray, resuming a half-done experiment."""
    monkeypatch.setenv("RNNHPO_VAR_DIR", str(tmp_path / "var"))
    from search.spec import ExperimentSpec

    store = Store(sqlite_url)
    spec = ExperimentSpec.model_validate(SPEC)
    exp_id = store.create_experiment(spec.name, spec.model_dump(mode="json"), n_trials_total=spec.count_trials())
    r = Runner(_settings(sqlite_url, runner_heartbeat_s=1.0, runner_stale_after_s=30), store=store)
    assert r.run_once()
    v = store.get_experiment(exp_id)
    assert v.status == "succeeded", v.error
    trials, total = store.list_trials(exp_id)
    assert total == 2 and {t.status for t in trials} == {"completed"}
    rows = store.trace_row_count(exp_id=exp_id)
    assert rows == sum(t.steps for t in trials) > 0
    # resume: requeue a finished-with-failure copy; finished trials are not re-run
    store.finish_experiment(exp_id, "failed", "pretend")
    store.requeue(exp_id)
    assert r.run_once()
    assert store.get_experiment(exp_id).status == "succeeded"
    assert store.trace_row_count(exp_id=exp_id) == rows
    assert store.list_trials(exp_id)[1] == 2
