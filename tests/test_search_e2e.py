"""The search layer end to end on a real local Ray, storing into SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from search.driver import run_experiment
from search.planning import is_test_number
from search.spec import ExperimentSpec
from service.sink import SqlResultSink
from service.store import Store

pytestmark = pytest.mark.slow

STEPS_PER_EPOCH = math.ceil(105 / 32)  # iris: 105 training samples, batch 32 (test trials)
SELECT_STEPS_PER_EPOCH = math.ceil(84 / 32)  # selection trials: 21 of the 105 held out for validation


def selection(trials):
    return [t for t in trials if not is_test_number(t.number)]


def on_test(trials):
    return [t for t in trials if is_test_number(t.number)]


def make_spec(**overrides) -> ExperimentSpec:
    data = {
        "name": "e2e",
        "dataset": {"name": "iris"},
        "variants": [{"name": "GRU", "family": "gru"}, {"name": "SL1-GRU", "family": "gru", "reg": "sl1"}],
        "training": {"epochs": 3, "hidden": 8, "batch_size": 32, "lam": 5e-4},
        "search": {"algorithm": "grid", "space": {"lr": {"type": "grid", "values": [0.005, 0.05]}}},
        "seeds": 2,
        "execution": {"pack_size": 64, "max_failures": 2},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return ExperimentSpec.model_validate(data)


def start(url: str, spec: ExperimentSpec) -> tuple[Store, str, SqlResultSink]:
    store = Store(url)
    exp_id = store.create_experiment(spec.name, spec.model_dump(mode="json"), n_trials_total=spec.count_trials())
    return store, exp_id, SqlResultSink(url, exp_id)


def all_trials(store: Store, exp_id: str):
    views, total = store.list_trials(exp_id, limit=10_000)
    assert total == len(views)
    return views


def assert_one_complete_trace_each(store: Store, exp_id: str, epochs: int) -> None:
    for t in all_trials(store, exp_id):
        assert t.status == "completed", (t.number, t.status, t.error)
        steps = epochs * (STEPS_PER_EPOCH if is_test_number(t.number) else SELECT_STEPS_PER_EPOCH)
        trace = store.get_trace(t.id)
        assert len(trace["step"]) == steps
        assert np.array_equal(trace["step"], np.arange(steps))
        assert store.trace_row_count(trial_id=t.id) == steps
        assert len(store.get_epochs(t.id)["epoch"]) == epochs


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'e2e.db'}"
    return request.getfixturevalue("pg_url")


def test_grid_runs_exactly_the_grid_and_stores_every_trace(ray_local, db_url):
    spec = make_spec()
    store, exp_id, sink = start(db_url, spec)
    seen = []
    summary = run_experiment(spec, sink, progress=seen.append)
    # 8 selection trials (2 variants x 2 lr x 2 seeds), then each variant's best lr x 2 seeds on test
    assert summary.trials_done == spec.count_trials() == 12 and summary.n_failed == 0
    trials = all_trials(store, exp_id)
    visited = {(t.variant, t.params["lr"], t.seed) for t in selection(trials)}
    assert visited == set(itertools.product(["GRU", "SL1-GRU"], [0.005, 0.05], [0, 1]))
    assert all(t.test_metric is None and t.final["val_metric"] is not None for t in selection(trials))
    assert all(t.test_metric is not None for t in on_test(trials)) and len(on_test(trials)) == 4
    assert_one_complete_trace_each(store, exp_id, epochs=3)
    assert seen[-1].trials_done == 12 and seen[-1].packs_done == seen[-1].packs_total
    assert summary.best is not None and summary.best["metric"] == "val_metric"
    best_trial = max(selection(trials), key=lambda t: t.final["val_metric"])
    assert summary.best["value"] == pytest.approx(best_trial.final["val_metric"])
    for variant in ("GRU", "SL1-GRU"):  # the test trials use the lr with the best mean validation score
        mean = {lr: np.mean([t.final["val_metric"] for t in selection(trials)
                             if t.variant == variant and t.params["lr"] == lr]) for lr in (0.005, 0.05)}
        chosen = {t.params["lr"] for t in on_test(trials) if t.variant == variant}
        assert chosen == {max(mean, key=lambda lr: (mean[lr], -[0.005, 0.05].index(lr)))}


def test_packed_and_one_per_trial_give_identical_metrics(ray_local, tmp_path):
    results = {}
    for pack_size in (64, 1):
        spec = make_spec(training={"dtype": "float64"}, execution={"pack_size": pack_size})
        store, exp_id, sink = start(f"sqlite:///{tmp_path / f'p{pack_size}.db'}", spec)
        run_experiment(spec, sink)
        trials = all_trials(store, exp_id)
        assert len({t.pack_id for t in trials}) == (4 if pack_size == 64 else 12)
        results[pack_size] = {(t.variant, t.params["lr"], t.seed, is_test_number(t.number)):
                              (t.train_metric, t.test_metric, t.final.get("val_metric"), t.loss) for t in trials}
    assert results[64].keys() == results[1].keys()
    for key, packed in results[64].items():
        assert packed == pytest.approx(results[1][key], abs=1e-10)


@pytest.mark.parametrize("exit_worker", [False, True], ids=["raise", "kill-worker"])
def test_failed_pack_is_retried_and_leaves_one_trace_per_trial(ray_local, db_url, exit_worker):
    spec = make_spec(execution={"inject_failure": {"pack": 0, "times": 1, "exit": int(exit_worker)}})
    store, exp_id, sink = start(db_url, spec)
    summary = run_experiment(spec, sink)
    assert summary.n_failed == 0
    trials = all_trials(store, exp_id)
    assert max(t.attempt for t in trials) == 1  # pack 0 ran twice
    assert_one_complete_trace_each(store, exp_id, epochs=3)


def test_pack_failing_past_its_retries_marks_its_trials_failed(ray_local, tmp_path):
    spec = make_spec(execution={"inject_failure": {"pack": 0, "times": 5}, "max_failures": 1})
    store, exp_id, sink = start(f"sqlite:///{tmp_path / 'f.db'}", spec)
    summary = run_experiment(spec, sink)
    trials = all_trials(store, exp_id)
    failed = [t for t in trials if t.status == "failed"]
    assert summary.n_failed == len(failed) > 0
    assert all(t.status == "completed" for t in trials if t not in failed)


def test_cancelled_run_resumes_without_duplicates(ray_local, tmp_path):
    spec = make_spec(execution={"pack_size": 2})
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store, exp_id, sink = start(url, spec)
    packs_done = []

    def cancel_after_first_pack() -> bool:
        return len(packs_done) >= 1

    first = run_experiment(spec, sink, progress=lambda p: packs_done.append(p.packs_done) if p.packs_done else None,
                           should_cancel=cancel_after_first_pack)
    assert first.cancelled
    done_before = [t for t in all_trials(store, exp_id) if t.status == "completed"]
    assert 0 < len(done_before) < 12
    second = run_experiment(spec, SqlResultSink(url, exp_id))
    assert not second.cancelled and second.trials_done == 12
    trials = all_trials(store, exp_id)
    assert len(trials) == 12
    assert_one_complete_trace_each(store, exp_id, epochs=3)
    unchanged = {t.id: t.pack_id for t in done_before}
    assert all(t.pack_id == unchanged[t.id] for t in trials if t.id in unchanged)


def test_nsga2_returns_a_pareto_set(ray_local, tmp_path):
    spec = make_spec(
        variants=[{"name": "SL1-GRU", "family": "gru", "reg": "sl1"}], seeds=1,
        search={"algorithm": "nsga2", "n_trials": 8, "round_size": 4,
                "space": {"lr": {"type": "log", "low": 1e-3, "high": 1e-1},
                          "lam": {"type": "log", "low": 1e-4, "high": 1e-1}},
                "objectives": [{"metric": "val_metric", "direction": "maximize"},
                               {"metric": "sparsity_all", "direction": "minimize"}], "select": 3})
    store, exp_id, sink = start(f"sqlite:///{tmp_path / 'n.db'}", spec)
    summary = run_experiment(spec, sink)
    trials = all_trials(store, exp_id)
    assert len(selection(trials)) == 8
    points = [(t.final["val_metric"], t.sparsity_all) for t in selection(trials)]
    front = [tuple(p["values"]) for p in summary.pareto]
    assert front

    def dominated(p):
        return any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points)

    assert set(front) == {p for p in points if not dominated(p)}
    # up to 3 of the validation Pareto set are evaluated on the test split
    tested = {tuple(sorted(t.params.items())) for t in on_test(trials)}
    pareto_params = {tuple(sorted(t.params.items())) for t in selection(trials)
                     if (t.final["val_metric"], t.sparsity_all) in set(front)}
    assert 1 <= len(tested) <= 3 and tested <= pareto_params


def test_asha_prunes_inside_packs_at_the_rungs(ray_local, tmp_path):
    lrs = [0.001 * (i + 1) for i in range(9)]
    spec = make_spec(variants=[{"name": "GRU", "family": "gru"}], seeds=1, training={"epochs": 9},
                     search={"algorithm": "grid", "space": {"lr": {"type": "grid", "values": lrs}}},
                     execution={"pack_size": 9, "cpus_per_pack": 2, "scheduler": "asha",
                                "asha": {"grace_epochs": 1, "reduction_factor": 3}})
    store, exp_id, sink = start(f"sqlite:///{tmp_path / 'a.db'}", spec)
    run_experiment(spec, sink)
    everything = all_trials(store, exp_id)
    assert [len(store.get_epochs(t.id)["epoch"]) for t in on_test(everything)] == [9]  # never pruned
    trials = selection(everything)
    epochs_run = sorted(len(store.get_epochs(t.id)["epoch"]) for t in trials)
    assert epochs_run == [1] * 6 + [3] * 2 + [9]
    assert sorted(t.status for t in trials) == ["completed"] + ["pruned"] * 8
    survivor = next(t for t in trials if t.status == "completed")
    after_first_rung = [t for t in trials if len(store.get_epochs(t.id)["epoch"]) >= 3]
    first_epoch = {t.id: store.get_epochs(t.id)["test_metric"][0] for t in trials}
    # the three kept at the first rung had the best accuracy after epoch 1
    kept = sorted(first_epoch[t.id] for t in after_first_rung)
    dropped = [v for k, v in first_epoch.items() if k not in {t.id for t in after_first_rung}]
    assert min(kept) >= max(dropped)
    assert survivor.id in {t.id for t in after_first_rung}


def test_relative_sqlite_path_reaches_the_workers(ray_local, tmp_path, monkeypatch):
    """Tune runs trainables in their trial directories: a relative path must not name a new file."""
    monkeypatch.chdir(tmp_path)
    spec = make_spec(seeds=1, variants=[{"name": "GRU", "family": "gru"}])
    store, exp_id, sink = start("sqlite:///var/relative.db", spec)
    summary = run_experiment(spec, sink)
    assert summary.n_failed == 0
    assert_one_complete_trace_each(store, exp_id, epochs=3)
    assert (tmp_path / "var" / "relative.db").is_file()
