"""Failure classification, backoff, readable reasons, the repeat-filtered log, the Allow header,
resume/release rules of the queue and the database-outage 503 -- without Ray or subprocesses."""

from __future__ import annotations

import logging
import random

import pytest
import sqlalchemy as sa

from search.faults import (
    ResourceUnsatisfiable,
    RetryPolicy,
    TransientFault,
    call_with_retry,
    classify,
    reason,
)
from trainer.datasets.base import DatasetError


class OperationalError(Exception):
    """Named like SQLAlchemy's / the DB-API's: classified by name, search imports no SQL."""


class RayActorError(Exception):
    pass


@pytest.mark.parametrize("exc,kind", [
    (DatasetError("csv: no file x.csv"), "deterministic"),
    (ValueError("bad"), "deterministic"),
    (ResourceUnsatisfiable("execution.cpus_per_pack=64"), "deterministic"),
    (KeyError("k"), "deterministic"),
    (OperationalError("server closed the connection"), "infrastructure"),
    (RayActorError("The actor died unexpectedly"), "infrastructure"),
    (ConnectionResetError(), "infrastructure"),
    (TransientFault("x"), "infrastructure"),
    (OSError(28, "No space left on device"), "infrastructure"),
    (RuntimeError("who knows"), "unknown"),
])
def test_classify(exc, kind):
    assert classify(exc) == kind


def test_reason_unwraps_wrappers_and_is_one_line():
    class RayTaskError(Exception):
        def __init__(self, cause):
            super().__init__("ray::ImplicitFunc.train() (pid=1, ip=10.0.0.1)\n  File \"/x/y.py\"")
            self.cause = cause

    wrapped = RayTaskError(DatasetError("csv: no file x.csv\nmore text"))
    assert reason(wrapped) == "DatasetError: csv: no file x.csv"
    assert classify(wrapped) == "deterministic"
    assert reason(RuntimeError("")) == "RuntimeError"
    assert len(reason(ValueError("x" * 5000))) == 500


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    policy = RetryPolicy(budget_s=100, base_s=1.0, max_delay_s=8.0)
    rng = random.Random(0)
    for n, d in enumerate([1, 2, 4, 8, 8, 8]):
        delays = [policy.delay(n, rng) for _ in range(200)]
        assert d / 2 <= min(delays) and max(delays) <= d
        assert max(delays) - min(delays) > d / 4  # jittered, not constant


def test_should_retry_by_kind_budget_and_count():
    policy = RetryPolicy(budget_s=10, max_unknown=2)
    assert not policy.should_retry("deterministic", 0, first_failure=0, now=0)
    assert policy.should_retry("infrastructure", 50, first_failure=0, now=9.9)
    assert not policy.should_retry("infrastructure", 0, first_failure=0, now=10.0)
    assert policy.should_retry("unknown", 1, first_failure=0, now=1)
    assert not policy.should_retry("unknown", 2, first_failure=0, now=1)


def test_call_with_retry(monkeypatch):
    monkeypatch.setattr("search.faults.time.sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise OperationalError("down")
        return "stored"

    assert call_with_retry(flaky, RetryPolicy(base_s=0.001)) == "stored" and len(calls) == 4
    calls.clear()

    def broken():
        calls.append(1)
        raise DatasetError("bad data")

    with pytest.raises(DatasetError):
        call_with_retry(broken, RetryPolicy(base_s=0.001))
    assert len(calls) == 1  # never retried


def test_repeat_filter_drops_identical_lines_and_counts_them():
    from service.logs import RepeatFilter

    flt = RepeatFilter(window_s=60)
    rec = lambda msg: logging.LogRecord("rnnhpo.api", logging.WARNING, __file__, 1, msg, None, None)  # noqa: E731
    assert flt.filter(rec("database unavailable: X"))
    assert not any(flt.filter(rec("database unavailable: X")) for _ in range(100))
    assert flt.filter(rec("database unavailable: Y"))
    flt._seen[("rnnhpo.api", logging.WARNING, "database unavailable: X", False)][0] -= 61
    again = rec("database unavailable: X")
    assert flt.filter(again) and "100 identical" in again.getMessage()


# ------------------------------------------------------------------ the queue's resume/release rules

@pytest.fixture
def store(sqlite_url):
    from service.store import Store

    return Store(sqlite_url)


def _trial(store, exp_id, n, status):
    from search.sink import TrialPlan

    ids = store.register_trials(exp_id, [TrialPlan(n, "GRU", {}, n, None, {})])
    from service.db.models import Trial

    with store._write() as conn:
        conn.execute(sa.update(Trial.__table__).where(Trial.__table__.c.id == ids[n]).values(status=status))


def test_resume_reopens_failed_and_unrun_trials_only(store):
    from service.store import ExperimentRunning

    exp = store.create_experiment("e", {}, claimed_by="r1")
    for n, status in enumerate(["completed", "failed", "running", "pending"]):
        _trial(store, exp, n, status)
    with pytest.raises(ExperimentRunning):
        store.resume_experiment(exp, runner_id="r2")  # a live runner holds it
    store.finish_experiment(exp, "partial", "1 of 4 trials failed")
    view = store.resume_experiment(exp, runner_id="r2")
    assert view.status == "running" and view.runner_id == "r2" and view.attempts == 2
    statuses = [t.status for t in sorted(store.list_trials(exp)[0], key=lambda t: t.number)]
    assert statuses == ["completed", "pending", "pending", "pending"]
    store.finish_experiment(exp, "succeeded")
    with pytest.raises(ValueError):
        store.resume_experiment(exp)


def test_release_only_by_the_owner(store):
    exp = store.create_experiment("e", {}, claimed_by="r1")
    assert store.claim_experiment("r2") is None  # created claimed: no race with other runners
    assert not store.release(exp, "r2")
    assert store.release(exp, "r1", status="cancelled", error="interrupted")
    v = store.get_experiment(exp)
    assert v.status == "cancelled" and v.error == "interrupted"


def test_list_without_specs(store):
    store.create_experiment("big", {"blob": "x" * 100_000})
    (view,), total = store.list_experiments(with_spec=False)
    assert total == 1 and view.spec == {} and view.name == "big"


# ------------------------------------------------------------------ API: 503 on outages, 405 Allow

def test_database_errors_are_503_with_retry_after(sqlite_url, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import Settings
    from service.store import Store

    store = Store(sqlite_url)
    app = create_app(Settings(database_url=sqlite_url, data_dir=tmp_path / "data"), store=store)
    client = TestClient(app)

    def down(*a, **k):
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(store, "list_experiments", down)
    monkeypatch.setattr(store, "get_experiment", down)
    monkeypatch.setattr(store, "check_writable", down)
    for path in ("/api/v1/experiments", "/api/v1/experiments/abc"):
        r = client.get(path)
        assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        assert "database unavailable" in r.json()["detail"] and "Traceback" not in r.text
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503


def test_405_lists_every_method_of_the_path(sqlite_url, tmp_path):
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import Settings

    client = TestClient(create_app(Settings(database_url=sqlite_url, data_dir=tmp_path / "data")))
    r = client.put("/api/v1/experiments")
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "POST"}
    r = client.patch("/api/v1/experiments/abc")
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "DELETE"}
