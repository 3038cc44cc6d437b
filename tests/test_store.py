"""Store: experiments, trials, traces, down-sampling, comparison (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa

from search.sink import TrialPlan, TrialRecord
from service.db.engine import dispose_engines
from service.store import (
    TRIAL_SORT_COLUMNS,
    ExperimentRunning,
    NotFound,
    Store,
)
from trainer.result import TRACE_COLUMNS
from service.reports.compare import compare

FLOAT_TRACE = [c for c in TRACE_COLUMNS if c not in ("step", "epoch")]


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture
def url(db_url):
    """The conftest's fresh database (SQLite file or a new PostgreSQL database)."""
    return db_url


@pytest.fixture
def store(url):
    return Store(url)


def plans(n, variant="v", start=0):
    return [TrialPlan(number=start + i, variant=variant, params={"lr": 0.1 * (i + 1)},
                      seed=i, fold=None, config={"hidden": 8}) for i in range(n)]


def make_trace(n, *, offset=0.0, steps=None):
    steps = np.arange(n) if steps is None else np.asarray(steps)
    rng = np.random.default_rng(int(offset * 1000) + n)
    tr = {c: rng.random(len(steps)) + offset for c in FLOAT_TRACE}
    tr["step"] = steps
    tr["epoch"] = steps // 10
    return tr


def make_record(n=50, *, status="completed", offset=0.0, final=None, diagnostics=None, steps=None):
    return TrialRecord(
        status=status,
        final=final if final is not None else {"loss": 0.5 + offset, "test_metric": 0.9, "steps": n},
        diagnostics=diagnostics if diagnostics is not None else {
            "monotonicity_violations": 1, "grad_norm_ratio": 0.01, "diverged": False},
        trace=make_trace(n, offset=offset, steps=steps),
        epochs={"epoch": np.arange(3), "train_metric": np.array([0.1, 0.2, 0.3]) + offset,
                "test_metric": np.zeros(3), "train_loss": np.ones(3), "wall_time": np.arange(3.0)},
        wall_time=2.5, device="cpu", pack_id="pack-1", pack_size=4)


def one_trial(store, n_trials=1):
    exp = store.create_experiment("e", {"kind": "test"})
    ids = store.register_trials(exp, plans(n_trials))
    return exp, ids


# ------------------------------------------------------------------------------- experiments


def test_create_get_list_experiments(store):
    a = store.create_experiment("first", {"x": np.float64(1.5), "bad": float("nan")})
    b = store.create_experiment("second", {}, n_trials_total=7)
    c = store.create_experiment("third", {})
    ea = store.get_experiment(a)
    assert ea.name == "first" and ea.status == "queued" and ea.attempts == 0
    assert ea.spec == {"x": 1.5, "bad": None}           # numpy -> float, NaN -> null
    assert ea.created_at.tzinfo is not None and ea.created_at.utcoffset() == timedelta(0)
    assert store.get_experiment(b).n_trials_total == 7
    assert store.get_experiment("nope") is None

    page, total = store.list_experiments(limit=2)
    assert total == 3 and [e.id for e in page] == [c, b]   # newest first
    page, total = store.list_experiments(limit=2, offset=2)
    assert [e.id for e in page] == [a]
    store.request_cancel(b)
    page, total = store.list_experiments(status="cancelled")
    assert total == 1 and page[0].id == b
    with pytest.raises(ValueError, match="queued"):
        store.list_experiments(status="bogus")


def test_claim_takes_oldest_queued_and_heartbeat_ownership(store):
    assert store.claim_experiment("r1") is None
    a = store.create_experiment("a", {})
    b = store.create_experiment("b", {})
    got = store.claim_experiment("r1")
    assert got.id == a and got.status == "running" and got.runner_id == "r1" and got.attempts == 1
    assert got.started_at is not None and got.heartbeat_at is not None
    assert store.claim_experiment("r2").id == b
    assert store.claim_experiment("r3") is None          # both taken, heartbeats fresh
    assert store.heartbeat(a, "r1") is True
    assert store.heartbeat(a, "r2") is False
    store.finish_experiment(a, "succeeded")
    assert store.heartbeat(a, "r1") is False             # finished: no longer owned
    assert store.get_experiment(a).finished_at is not None


def _age_heartbeat(store, exp_id, seconds):
    from service.db.models import Experiment
    old = datetime.now(timezone.utc) - timedelta(seconds=seconds)
    with store.engine.begin() as conn:
        conn.execute(sa.update(Experiment).where(Experiment.id == exp_id).values(heartbeat_at=old))


def test_stale_heartbeat_is_reclaimed(store):
    a = store.create_experiment("a", {})
    assert store.claim_experiment("r1").id == a
    assert store.claim_experiment("r2", stale_after_s=30) is None
    _age_heartbeat(store, a, 60)
    got = store.claim_experiment("r2", stale_after_s=30)
    assert got is not None and got.id == a and got.runner_id == "r2" and got.attempts == 2
    assert store.heartbeat(a, "r1") is False and store.heartbeat(a, "r2") is True


def test_stale_experiment_with_cancel_request_is_cancelled_not_reclaimed(store):
    a = store.create_experiment("a", {})
    store.claim_experiment("r1")
    view = store.request_cancel(a)
    assert view.status == "running" and view.cancel_requested and store.cancel_requested(a)
    _age_heartbeat(store, a, 120)
    assert store.claim_experiment("r2") is None
    assert store.get_experiment(a).status == "cancelled"


def test_request_cancel_queued_is_immediate(store):
    a = store.create_experiment("a", {})
    view = store.request_cancel(a)
    assert view.status == "cancelled" and view.finished_at is not None
    assert store.claim_experiment("r1") is None
    with pytest.raises(NotFound):
        store.request_cancel("missing")
    with pytest.raises(NotFound):
        store.cancel_requested("missing")


def test_finish_cancelled_prunes_unfinished_trials(store):
    exp, ids = one_trial(store, 3)
    store.claim_experiment("r")
    store.record_trial(ids[0], make_record())
    store.pack_started([ids[1]], "p", 0, "cpu")
    store.finish_experiment(exp, "cancelled")
    st = {t.number: t.status for t in store.list_trials(exp)[0]}
    assert st == {0: "completed", 1: "pruned", 2: "pruned"}
    assert store.get_experiment(exp).status == "cancelled"
    with pytest.raises(ValueError):
        store.finish_experiment(exp, "running")


def test_finish_failed_fails_running_keeps_pending_and_requeue(store):
    exp, ids = one_trial(store, 3)
    store.claim_experiment("r")
    store.record_trial(ids[0], make_record())
    store.pack_started([ids[1]], "p", 0, "cpu")
    store.finish_experiment(exp, "failed", error="boom")
    e = store.get_experiment(exp)
    assert e.status == "failed" and e.error == "boom"
    st = {t.number: t.status for t in store.list_trials(exp)[0]}
    assert st == {0: "completed", 1: "failed", 2: "pending"}
    store.requeue(exp)
    e = store.get_experiment(exp)
    assert e.status == "queued" and e.error is None and e.runner_id is None
    again = store.claim_experiment("r2")
    assert again.id == exp and again.attempts == 2
    assert set(store.finished_trials(exp)) == {0}         # resume skips the completed one


def test_delete_experiment(store):
    exp, ids = one_trial(store, 2)
    store.record_trial(ids[0], make_record(100))
    other, oids = one_trial(store, 1)
    store.record_trial(oids[0], make_record(30))
    store.claim_experiment("r")                           # claims the older one: exp
    with pytest.raises(ExperimentRunning):
        store.delete_experiment(exp)
    store.finish_experiment(exp, "succeeded")
    store.delete_experiment(exp)
    assert store.get_experiment(exp) is None and store.get_trial(ids[0]) is None
    assert store.trace_row_count(trial_id=ids[0]) == 0
    assert len(store.get_epochs(ids[0])["epoch"]) == 0
    assert store.trace_row_count() == 30                  # the other experiment is untouched
    with pytest.raises(NotFound):
        store.delete_experiment(exp)


def test_set_progress(store):
    exp = store.create_experiment("a", {})
    store.set_progress(exp, total=10, done=3, best={"number": 2, "value": np.float32(0.5),
                                                     "params": {"lr": 0.1}})
    e = store.get_experiment(exp)
    assert (e.n_trials_total, e.n_trials_done) == (10, 3)
    assert e.best == {"number": 2, "value": 0.5, "params": {"lr": 0.1}}
    store.set_progress(exp, total=10, done=4)
    assert store.get_experiment(exp).best["number"] == 2   # best kept when not given
    with pytest.raises(NotFound):
        store.set_progress("missing", total=1, done=0)


def test_progress_reports_dashboard_and_a_shrinking_eta_while_running(store):
    exp = store.create_experiment("a", {})
    assert store.claim_experiment("r1", exp_id=exp).status == "running"
    store.set_progress(exp, total=10, done=5, eta_s=100.0, dashboard_url="http://127.0.0.1:8265",
                       packs_total=4, packs_done=2)
    e = store.get_experiment(exp)
    assert e.dashboard_url == "http://127.0.0.1:8265"
    assert e.progress["packs_done"] == 2 and e.progress["packs_total"] == 4
    assert 90.0 < e.eta_s <= 100.0
    store.finish_experiment(exp, "succeeded")
    assert store.get_experiment(exp).eta_s is None


# ------------------------------------------------------------------------------------ trials


def test_register_trials_is_idempotent(store):
    exp = store.create_experiment("a", {})
    ids = store.register_trials(exp, plans(3))
    assert sorted(ids) == [0, 1, 2] and len(set(ids.values())) == 3
    store.record_trial(ids[1], make_record())
    ids2 = store.register_trials(exp, plans(5))
    assert {k: ids2[k] for k in ids} == ids and len(ids2) == 5
    assert store.get_trial(ids[1]).status == "completed"  # results kept
    assert store.list_trials(exp)[1] == 5
    assert store.get_experiment(exp).n_trials_total == 3  # set once from the first registration
    t = store.get_trial(ids[0])
    assert t.params == {"lr": 0.1} and t.config == {"hidden": 8} and t.status == "pending"
    with pytest.raises(NotFound):
        store.register_trials("missing", plans(1))


def test_record_trial_stores_finals_and_flat_diagnostics(store):
    exp, ids = one_trial(store)
    store.pack_started([ids[0]], "pk", 2, "cuda:0")
    t = store.get_trial(ids[0])
    assert t.status == "running" and t.attempt == 2 and t.device == "cuda:0" and t.pack_size == 1
    rec = make_record(10, final={"loss": 0.25, "train_metric": 0.8, "test_metric": 0.7,
                                 "sparsity_out": 0.5, "steps": 10, "penalty": float("inf")},
                      diagnostics={"monotonicity_violations": np.int64(3),
                                   "grad_norm_ratio": np.float32(0.125), "diverged": False})
    rec.extra = {"note": "x"}
    store.record_trial(ids[0], rec)
    t = store.get_trial(ids[0])
    assert (t.loss, t.train_metric, t.test_metric, t.sparsity_out, t.steps) == (0.25, 0.8, 0.7, 0.5, 10)
    assert t.penalty is None and t.final["penalty"] is None   # inf -> NULL
    assert (t.monotonicity_violations, t.grad_norm_ratio, t.diverged) == (3, 0.125, False)
    assert t.wall_time == 2.5 and t.pack_id == "pack-1" and t.pack_size == 4
    assert t.extra == {"note": "x"} and t.finished_at.tzinfo is not None
    fin = store.finished_trials(exp)
    assert fin[0]["status"] == "completed" and fin[0]["final"]["loss"] == 0.25
    assert fin[0]["params"] == {"lr": 0.1}


def test_record_trial_twice_replaces_trace(store):
    exp, ids = one_trial(store, 2)
    first = make_record(300, offset=0.0)
    second = make_record(120, offset=5.0)
    store.record_trial(ids[0], first)
    store.record_trial(ids[1], make_record(77))
    assert store.trace_row_count(trial_id=ids[0]) == 300
    store.record_trial(ids[0], second)
    assert store.trace_row_count(trial_id=ids[0]) == 120
    assert store.trace_row_count(trial_id=ids[1]) == 77
    assert store.trace_row_count(exp_id=exp) == 197
    got = store.get_trace(ids[0])
    for c in TRACE_COLUMNS:
        np.testing.assert_array_equal(got[c], second.trace[c])
    ep = store.get_epochs(ids[0])
    np.testing.assert_allclose(ep["train_metric"], [5.1, 5.2, 5.3])
    assert store.get_trial(ids[0]).loss == 5.5


def test_record_trial_failure_midway_keeps_previous_trace(store, monkeypatch):
    exp, ids = one_trial(store)
    first = make_record(200, offset=1.0)
    store.record_trial(ids[0], first)
    calls = []
    real = Store._bulk_insert

    def failing(self, conn, table, *a, **k):
        real(self, conn, table, *a, **k)                  # the new trace rows do go in ...
        calls.append(table)
        if table == "rnnhpo_epoch_metrics":
            raise RuntimeError("injected failure")        # ... then the transaction dies

    monkeypatch.setattr(Store, "_bulk_insert", failing)
    with pytest.raises(RuntimeError, match="injected"):
        store.record_trial(ids[0], make_record(50, offset=9.0, status="diverged"))
    assert calls == ["rnnhpo_trace_points", "rnnhpo_epoch_metrics"]
    monkeypatch.undo()
    assert store.trace_row_count(trial_id=ids[0]) == 200
    got = store.get_trace(ids[0])
    np.testing.assert_array_equal(got["loss"], first.trace["loss"])
    t = store.get_trial(ids[0])
    assert t.status == "completed" and t.loss == 1.5
    np.testing.assert_allclose(store.get_epochs(ids[0])["train_metric"], [1.1, 1.2, 1.3])


def test_record_trial_database_error_keeps_previous_trace(store, monkeypatch):
    """A failure raised by the database itself (primary-key conflict in the bulk insert, after
    the new trace rows went in) rolls the whole record back."""
    exp, ids = one_trial(store)
    first = make_record(40)
    store.record_trial(ids[0], first)
    real = Store._bulk_insert

    def twice(self, conn, table, *a, **k):
        real(self, conn, table, *a, **k)
        if table == "rnnhpo_epoch_metrics":
            real(self, conn, table, *a, **k)              # duplicate (trial_id, epoch) keys

    monkeypatch.setattr(Store, "_bulk_insert", twice)
    with pytest.raises(sa.exc.IntegrityError):
        store.record_trial(ids[0], make_record(25, offset=3.0))
    monkeypatch.undo()
    assert store.trace_row_count(trial_id=ids[0]) == 40
    np.testing.assert_array_equal(store.get_trace(ids[0])["lr"], first.trace["lr"])
    assert len(store.get_epochs(ids[0])["epoch"]) == 3
    assert store.get_trial(ids[0]).loss == 0.5
    bad = make_record(40, offset=3.0)
    bad.trace["step"] = np.zeros(40, dtype=np.int64)
    with pytest.raises(ValueError, match="duplicate"):
        store.record_trial(ids[0], bad)
    assert store.trace_row_count(trial_id=ids[0]) == 40


def test_record_trial_validation(store):
    exp, ids = one_trial(store)
    rec = make_record(10)
    rec.trace["bogus"] = np.zeros(10)
    with pytest.raises(ValueError, match="bogus"):
        store.record_trial(ids[0], rec)
    rec = make_record(10)
    rec.trace["loss"] = np.zeros(9)
    with pytest.raises(ValueError, match="different lengths"):
        store.record_trial(ids[0], rec)
    rec = make_record(10)
    rec.trace["loss"] = np.array(["a"] * 10)
    with pytest.raises(ValueError, match="numeric"):
        store.record_trial(ids[0], rec)
    rec = make_record(10)
    rec.status = "weird"
    with pytest.raises(ValueError, match="status"):
        store.record_trial(ids[0], rec)
    with pytest.raises(NotFound):
        store.record_trial(999_999, make_record(10))
    assert store.trace_row_count() == 0


def test_trace_nan_and_missing_columns_roundtrip(store):
    exp, ids = one_trial(store)
    rec = make_record(20, status="diverged")
    rec.trace["loss"][7:] = np.nan
    rec.trace["grad_norm"][3] = np.inf
    del rec.trace["lr"]                                    # missing float column -> NaN
    store.record_trial(ids[0], rec)
    got = store.get_trace(ids[0])
    assert np.isnan(got["loss"][7:]).all() and not np.isnan(got["loss"][:7]).any()
    assert got["grad_norm"][3] == np.inf
    assert np.isnan(got["lr"]).all()
    assert got["step"].dtype == np.int64 and got["epoch"].dtype == np.int64
    assert store.get_trial(ids[0]).diverged is True
    assert store.finished_trials(exp)[0]["status"] == "diverged"


def test_empty_trace(store):
    exp, ids = one_trial(store)
    rec = make_record(0)
    rec.trace = {}
    rec.epochs = {}
    store.record_trial(ids[0], rec)
    got = store.get_trace(ids[0], max_points=5)
    assert set(got) == set(TRACE_COLUMNS) and all(len(v) == 0 for v in got.values())
    assert list(store.iter_trace(ids[0])) == []


def test_trial_failed(store):
    exp, ids = one_trial(store)
    store.trial_failed(ids[0], "OOM")
    t = store.get_trial(ids[0])
    assert t.status == "failed" and t.error == "OOM"
    assert store.finished_trials(exp) == {}
    with pytest.raises(NotFound):
        store.trial_failed(424242, "x")


def test_list_trials_filters_sorting_pagination(store):
    exp = store.create_experiment("a", {})
    ids = store.register_trials(exp, plans(4, "A") + plans(3, "B", start=4))
    values = {0: 0.3, 1: 0.9, 2: None, 4: 0.5, 5: 0.1}
    for num, v in values.items():
        store.record_trial(ids[num], make_record(5, final={"test_metric": v, "loss": 1.0}))
    page, total = store.list_trials(exp, sort="test_metric", descending=True)
    assert total == 7
    assert [t.number for t in page][:4] == [1, 4, 0, 5]   # NULLs (2, 3, 6) last
    assert {t.number for t in page[4:]} == {2, 3, 6}
    page, _ = store.list_trials(exp, sort="test_metric")
    assert [t.number for t in page][:4] == [5, 0, 4, 1]
    page, total = store.list_trials(exp, variant="B")
    assert total == 3 and [t.number for t in page] == [4, 5, 6]
    page, total = store.list_trials(exp, status="pending")
    assert total == 2 and {t.number for t in page} == {3, 6}
    page, total = store.list_trials(exp, limit=2, offset=2)
    assert total == 7 and [t.number for t in page] == [2, 3]
    with pytest.raises(ValueError) as err:
        store.list_trials(exp, sort="drop table")
    assert "test_metric" in str(err.value) and "number" in str(err.value)
    with pytest.raises(ValueError, match="pending"):
        store.list_trials(exp, status="nope")
    assert "wall_time" in TRIAL_SORT_COLUMNS


# --------------------------------------------------------------------------- trace reading


def test_get_trace_every_keeps_last(store):
    exp, ids = one_trial(store)
    rec = make_record(1000)
    store.record_trial(ids[0], rec)
    got = store.get_trace(ids[0], metrics=["loss"], every=300)
    assert set(got) == {"step", "loss"}
    np.testing.assert_array_equal(got["step"], [0, 300, 600, 900, 999])
    np.testing.assert_array_equal(got["loss"], rec.trace["loss"][[0, 300, 600, 900, 999]])
    got = store.get_trace(ids[0], metrics=["loss"], every=333)   # 999 is on the grid
    np.testing.assert_array_equal(got["step"], [0, 333, 666, 999])


@pytest.mark.parametrize("n,mp", [(1000, 7), (1000, 10), (1000, 2), (1000, 999), (1000, 1000),
                                  (1000, 5000), (1, 3), (2, 1), (11, 3)])
def test_get_trace_max_points(store, n, mp):
    exp, ids = one_trial(store)
    steps = np.arange(n) * 5 + 3                            # non-contiguous steps
    rec = make_record(n, steps=steps)
    store.record_trial(ids[0], rec)
    got = store.get_trace(ids[0], metrics=["lr", "weight_norm"], max_points=mp)
    s = got["step"]
    assert len(s) <= mp
    assert s[-1] == steps[-1]                                # the last point is kept
    assert np.all(np.diff(s) > 0)
    if mp >= n:
        np.testing.assert_array_equal(s, steps)
    elif mp > 1:
        stride = -(-(n - 1) // (mp - 1))
        expected = list(steps[::stride])
        if expected[-1] != steps[-1]:
            expected.append(steps[-1])
        np.testing.assert_array_equal(s, expected)
    idx = np.searchsorted(steps, s)
    np.testing.assert_array_equal(got["lr"], rec.trace["lr"][idx])


def test_get_trace_every_and_max_points(store):
    exp, ids = one_trial(store)
    store.record_trial(ids[0], make_record(1001))
    got = store.get_trace(ids[0], metrics=["loss"], every=10, max_points=11)
    # every=10 -> steps 0,10,...,1000 (101 rows); stride 10 over those rows -> 0,100,...,1000
    np.testing.assert_array_equal(got["step"], np.arange(0, 1001, 100))


def test_iter_trace_streams_in_order(store):
    exp, ids = one_trial(store)
    rec = make_record(1234)
    store.record_trial(ids[0], rec)
    chunks = list(store.iter_trace(ids[0], metrics=["loss"], chunk_rows=500))
    assert [len(c["step"]) for c in chunks] == [500, 500, 234]
    np.testing.assert_array_equal(np.concatenate([c["step"] for c in chunks]), np.arange(1234))
    np.testing.assert_array_equal(np.concatenate([c["loss"] for c in chunks]), rec.trace["loss"])
    chunks = list(store.iter_trace(ids[0], every=100, chunk_rows=5))
    steps = np.concatenate([c["step"] for c in chunks])
    np.testing.assert_array_equal(steps, list(range(0, 1234, 100)) + [1233])
    assert set(chunks[0]) == set(TRACE_COLUMNS)


def test_unknown_metric_raises(store):
    exp, ids = one_trial(store)
    with pytest.raises(ValueError) as err:
        store.get_trace(ids[0], metrics=["loss", "accuracy"])
    assert "accuracy" in str(err.value) and "grad_norm" in str(err.value)
    with pytest.raises(ValueError):
        next(store.iter_trace(ids[0], metrics=["nope"]))
    with pytest.raises(ValueError):
        store.get_trace(ids[0], every=0)
    with pytest.raises(ValueError):
        store.get_trace(ids[0], max_points=0)


def test_get_missing_trial_and_counts(store):
    exp, ids = one_trial(store, 2)
    assert store.get_trial(10_000) is None
    store.record_trial(ids[0], make_record(11))
    store.record_trial(ids[1], make_record(13))
    assert store.trace_row_count() == 24
    assert store.trace_row_count(exp_id=exp) == 24
    assert store.trace_row_count(trial_id=ids[1]) == 13
    assert store.trace_row_count(exp_id="other") == 0


# ------------------------------------------------------------------------------------ compare


def test_compare_matches_numpy(store):
    rng = np.random.default_rng(0)
    e1 = store.create_experiment("one", {})
    e2 = store.create_experiment("two", {})
    expected = {}
    for exp in (e1, e2):
        ids = store.register_trials(exp, plans(5, "sl1") + plans(4, "l2", start=5)
                                    + plans(1, "solo", start=9))
        for num, tid in ids.items():
            variant = "sl1" if num < 5 else ("l2" if num < 9 else "solo")
            status = "diverged" if num in (0, 5) else "completed"
            if num == 8:
                store.trial_failed(tid, "x")
                continue
            fin = {k: float(rng.random()) for k in
                   ("train_metric", "test_metric", "sparsity_out", "sparsity_all", "loss")}
            diag = {"monotonicity_violations": int(rng.integers(0, 5)),
                    "grad_norm_ratio": float(rng.random()), "diverged": status == "diverged"}
            rec = make_record(3, status=status, final=fin, diagnostics=diag)
            rec.wall_time = float(rng.random() * 10)
            store.record_trial(tid, rec)
            if status == "completed":
                d = expected.setdefault((exp, variant), {})
                for k, v in {**fin, "wall_time": rec.wall_time, **diag}.items():
                    d.setdefault(k, []).append(float(v))
    out = compare(store, [e2, e1])
    assert [(s.experiment_id, s.variant) for s in out] == [
        (e2, "l2"), (e2, "sl1"), (e2, "solo"), (e1, "l2"), (e1, "sl1"), (e1, "solo")]
    for s in out:
        ref = expected[(s.experiment_id, s.variant)]
        for m in ("train_metric", "test_metric", "sparsity_out", "sparsity_all", "wall_time", "loss"):
            assert getattr(s, f"{m}_mean") == pytest.approx(np.mean(ref[m]), rel=1e-12)
            if len(ref[m]) >= 2:
                assert getattr(s, f"{m}_std") == pytest.approx(np.std(ref[m], ddof=1), rel=1e-9)
            else:
                assert getattr(s, f"{m}_std") is None
        assert s.monotonicity_violations_mean == pytest.approx(np.mean(ref["monotonicity_violations"]))
        assert s.grad_norm_ratio_mean == pytest.approx(np.mean(ref["grad_norm_ratio"]))
    sl1 = next(s for s in out if s.variant == "sl1")
    l2 = next(s for s in out if s.variant == "l2")
    assert (sl1.n_trials, sl1.n_completed, sl1.n_diverged, sl1.n_failed) == (5, 4, 1, 0)
    assert (l2.n_trials, l2.n_completed, l2.n_diverged, l2.n_failed) == (4, 2, 1, 1)
    assert sl1.experiment_name == "two"
    with pytest.raises(NotFound):
        compare(store, [e1, "missing"])


def test_compare_by_config_gives_one_row_per_grid_point(store):
    exp = store.create_experiment("grid", {})
    grid = [{"lr": 0.1, "lam": 0.01}, {"lr": 0.1, "lam": 0.02}, {"lr": 0.2, "lam": 0.01}]
    trial_plans = [TrialPlan(number=3 * c + seed, variant="SL1", params=params, seed=seed, fold=None, config={})
                   for c, params in enumerate(grid) for seed in range(3)]
    ids = store.register_trials(exp, trial_plans)
    expected: dict[str, list[float]] = {}
    for plan in trial_plans:
        acc = 0.5 + 0.1 * plan.number
        store.record_trial(ids[plan.number], make_record(3, final={"test_metric": acc}))
        expected.setdefault(json.dumps(plan.params, sort_keys=True), []).append(acc)
    rows = compare(store, [exp], by_config=True)
    assert len(rows) == 3 and all(r.n_completed == 3 and r.variant == "SL1" for r in rows)
    for r in rows:
        values = expected[json.dumps(r.params, sort_keys=True)]
        assert r.test_metric_mean == pytest.approx(np.mean(values))
        assert r.test_metric_std == pytest.approx(np.std(values, ddof=1))
    (whole,) = compare(store, [exp])
    assert whole.params is None and whole.n_completed == 9
    assert whole.test_metric_mean == pytest.approx(np.mean(sum(expected.values(), [])))


def test_rows_with_nulls_written_elsewhere_read_back_as_nan(store):
    """Rows not written by record_trial may hold NULLs; PostgreSQL's binary fast path falls back."""
    exp, ids = one_trial(store)
    tid = ids[0]
    with store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO rnnhpo_trace_points (trial_id, step, epoch, loss) "
                             "VALUES (:t, 0, NULL, 1.5), (:t, 1, 0, NULL)"), {"t": tid})
        conn.execute(sa.text("INSERT INTO rnnhpo_epoch_metrics (trial_id, epoch, train_metric) "
                             "VALUES (:t, 0, 0.5)"), {"t": tid})
    got = store.get_trace(tid, metrics=["epoch", "loss", "lr"])
    np.testing.assert_array_equal(got["step"], [0, 1])
    assert np.isnan(got["epoch"][0]) and got["epoch"][1] == 0
    assert got["loss"][0] == 1.5 and np.isnan(got["loss"][1]) and np.isnan(got["lr"]).all()
    ep = store.get_epochs(tid)
    assert ep["train_metric"][0] == 0.5 and np.isnan(ep["test_metric"][0])


def test_claim_a_given_experiment(store):
    a = store.create_experiment("a", {})
    b = store.create_experiment("b", {})
    got = store.claim_experiment("cli", exp_id=b)
    assert got.id == b and got.runner_id == "cli"           # not the oldest: the one asked for
    assert store.claim_experiment("other", exp_id=b) is None  # fresh heartbeat: not claimable
    assert store.claim_experiment("other", exp_id="missing") is None
    store.finish_experiment(b, "succeeded")
    assert store.claim_experiment("other", exp_id=b) is None
    assert store.get_experiment(a).status == "queued"
    _age_heartbeat(store, b, 0)
    assert store.claim_experiment("r", exp_id=a).id == a


def test_sqlite_locked_record_is_retried(sqlite_url, monkeypatch):
    import service.store.trials as store_mod

    store = Store(sqlite_url)
    exp, ids = one_trial(store)
    real = Store._bulk_insert
    failures = []

    def flaky(self, conn, table, *a, **k):
        if not failures:
            failures.append(table)
            raise sa.exc.OperationalError("INSERT", None, Exception("database is locked"))
        return real(self, conn, table, *a, **k)

    monkeypatch.setattr(Store, "_bulk_insert", flaky)
    monkeypatch.setattr(store_mod.time, "sleep", lambda s: None)
    store.record_trial(ids[0], make_record(33))
    assert failures == ["rnnhpo_trace_points"]
    assert store.trace_row_count(trial_id=ids[0]) == 33
    dispose_engines()
