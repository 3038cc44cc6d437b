"""Long-lived pack workers (search.pack_pool) on the session's real local Ray (2 CPUs)."""

from __future__ import annotations

import time

import pytest
import ray

from search import pack_pool
from search.driver import run_experiment
from search.spec import ExperimentSpec
from service.sink import SqlResultSink
from service.store import Store

pytestmark = pytest.mark.slow


def spec_of(**execution) -> ExperimentSpec:
    return ExperimentSpec.model_validate({
        "name": "pool",
        "dataset": {"name": "iris"},
        "variants": [{"name": "GRU", "family": "gru"}],
        "training": {"epochs": 2, "hidden": 8, "batch_size": 32},
        "search": {"algorithm": "grid", "space": {"lr": {"type": "grid", "values": [0.01, 0.05]}}},
        "seeds": 2,
        "execution": {"cpus_per_pack": 1, **execution},
    })


def run(url: str, spec: ExperimentSpec, **kwargs):
    store = Store(url)
    exp_id = store.create_experiment(spec.name, spec.model_dump(mode="json"), n_trials_total=spec.count_trials())
    summary = run_experiment(spec, SqlResultSink(url, exp_id), run_id=exp_id, **kwargs)
    return store, exp_id, summary


def alive(actor_id: str) -> bool:
    from ray.util.state import get_actor

    state = get_actor(actor_id)
    return state is not None and state.state == "ALIVE"


def eventually(cond, timeout: float = 20.0, every: float = 0.2) -> bool:
    """Whether ``cond()`` holds within ``timeout`` seconds (polled every ``every``)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)
    return True


def cpus_free() -> bool:
    return ray.available_resources().get("CPU", 0) >= 2.0 - 1e-6


def test_workers_serve_the_next_run_then_end(ray_local, sqlite_url):
    """keep_workers_s > 0: the second run takes the first run's worker processes (no new one),
    and they end once the keep time is over."""
    _, _, first = run(sqlite_url, spec_of(), keep_workers_s=30)
    assert first.n_failed == 0
    kept = pack_pool.idle_worker_ids()
    assert len(kept) == 2, "two CPUs, two packs: two workers (one may have come up after the packs ended)"
    _, _, second = run(sqlite_url, spec_of(), keep_workers_s=1.0)
    assert second.n_failed == 0
    assert sorted(pack_pool.idle_worker_ids()) == sorted(kept), "the same processes served the second run"
    assert eventually(lambda: pack_pool.idle_worker_ids() == [])
    assert eventually(lambda: not any(alive(a) for a in kept), every=0.5), \
        "the workers' processes ended (their CPUs are free)"


def test_no_keep_time_ends_the_workers_with_the_run(ray_local, sqlite_url):
    _, _, summary = run(sqlite_url, spec_of())
    assert summary.n_failed == 0 and pack_pool.idle_worker_ids() == []
    assert eventually(cpus_free)


def test_kept_workers_of_another_shape_give_way(ray_local, sqlite_url):
    """Two idle 1-CPU workers hold both CPUs of the session's Ray; a run whose packs need 2 CPUs
    must end them rather than wait for resources forever."""
    _, _, first = run(sqlite_url, spec_of(), keep_workers_s=60)
    assert first.n_failed == 0 and len(pack_pool.idle_worker_ids()) == 2
    # a worker may come up after the packs ended: wait for both
    assert eventually(lambda: ray.available_resources().get("CPU", 0) < 1e-6, 30), "the idle workers hold both CPUs"
    t0 = time.monotonic()
    _, _, second = run(sqlite_url, spec_of(cpus_per_pack=2, time_budget_s=60), keep_workers_s=60)  # fails, never hangs
    assert second.n_failed == 0 and second.trials_done == second.trials_total
    assert time.monotonic() - t0 < 60
    assert len(pack_pool.idle_worker_ids()) == 1


def test_the_time_budget_stops_the_packs_in_flight(ray_local, sqlite_url):
    """A pack still training when the budget ends is stopped (its worker ended), its trials fail
    saying why, and the run returns at about the budget, not when the pack would have ended."""
    spec = spec_of(time_budget_s=8)
    spec = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 100_000})})
    t0 = time.monotonic()
    store, exp_id, summary = run(sqlite_url, spec, keep_workers_s=60)
    assert time.monotonic() - t0 < 30
    assert summary.trials_done == 0 and summary.n_failed == summary.trials_total - 2  # test trials never ran
    trials, _ = store.list_trials(exp_id)
    failed = [t for t in trials if t.status == "failed"]
    assert failed and all("time budget" in (t.error or "") for t in failed), [t.error for t in trials]
    from ray.util.state import list_tasks

    ran = {t.actor_id for t in list_tasks(limit=10_000, detail=True, raise_on_missing_output=False)
           if (t.name or "").startswith(exp_id) and t.actor_id}
    assert ran, "packs were training when the budget ran out"
    assert not ran & set(pack_pool.idle_worker_ids()), "a stopped pack's worker is ended, never kept"
    assert eventually(lambda: not any(alive(a) for a in ran), every=0.5)


def test_a_worker_waiting_for_resources_never_holds_a_pack(ray_local, sqlite_url):
    """One of the session's 2 CPUs is held elsewhere for the whole run: the round's second worker
    never starts, and both packs train, one after the other, on the worker that did."""

    @ray.remote(num_cpus=1)
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.remote()
    try:
        ray.get(holder.ready.remote(), timeout=60)
        t0 = time.monotonic()
        # the budget turns a regression (a pack held by the worker that never starts) into a failure
        store, exp_id, summary = run(sqlite_url, spec_of(time_budget_s=60))
        assert summary.n_failed == 0 and summary.trials_done == summary.trials_total
        assert time.monotonic() - t0 < 60
        packs = {t.pack_id for t in store.list_trials(exp_id)[0] if t.number < 4}
        assert len(packs) == 2, "the selection round had two packs for two slots"
    finally:
        ray.kill(holder)
