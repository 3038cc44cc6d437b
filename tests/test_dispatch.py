"""Experiments as Ray jobs: the dispatcher's decisions on a fake Jobs API, and the real thing
against a Ray head started as a process (``ray start --head``, stopped by its process group)."""

from __future__ import annotations

import threading
import time
import urllib.request
from types import SimpleNamespace

import pytest

from service.dispatch import JobDispatcher, RunnerDetached, job_page_url, submission_id
from service.runner import Runner
from service.settings import Settings
from service.store import Store

SPEC = {"name": "dispatched", "dataset": {"name": "iris"}, "variants": [{"name": "GRU", "family": "gru"}],
        "training": {"epochs": 2, "batch_size": 16, "lr": 0.05}, "seeds": 2, "execution": {"pack_size": 1}}
LONG = {**SPEC, "name": "long", "training": {"epochs": 3000, "batch_size": 8, "lr": 0.05}, "seeds": 4}


class FakeJobs:
    """The parts of JobSubmissionClient the dispatcher uses, with scripted job states."""

    def __init__(self):
        self.jobs: dict[str, dict] = {}
        self.stopped: list[str] = []

    def submit_job(self, *, entrypoint, submission_id, metadata, **kw):
        assert submission_id not in self.jobs
        self.jobs[submission_id] = {"status": "RUNNING", "entrypoint": entrypoint, "metadata": metadata}
        return submission_id

    def get_job_status(self, sid):
        if sid not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {sid} does not exist.")
        return SimpleNamespace(value=self.jobs[sid]["status"])

    def stop_job(self, sid):
        self.stopped.append(sid)
        self.jobs[sid]["status"] = "STOPPED"
        return True

    def get_job_logs(self, sid):
        return "Traceback ...\nValueError: boom"


@pytest.fixture
def store(sqlite_url):
    return Store(sqlite_url)


def dispatcher(store, jobs, **kw):
    settings = Settings(database_url=store.url, ray_jobs_address="http://head:8265",
                        ray_dashboard_url="https://ray.lab.example/")
    return JobDispatcher(settings, store, client=jobs, poll_s=0.01, stop_timeout_s=1, **kw)


def test_submits_rnnhpo_id_with_metadata_and_links_the_job_page(store):
    jobs = FakeJobs()
    exp = store.create_experiment("iris", SPEC)
    d = dispatcher(store, jobs)
    sid = d.submit_or_attach(exp, "iris")
    assert sid == submission_id(exp) == f"rnnhpo-{exp}"
    job = jobs.jobs[sid]
    assert job["metadata"] == {"rnnhpo_experiment": exp, "rnnhpo_name": "iris"}
    assert job["entrypoint"].startswith(f"python -m service.job_driver {exp} --submission-id {sid}")
    assert "RNNHPO_DATABASE_URL" not in job["entrypoint"] and store.url not in job["entrypoint"]
    assert store.get_experiment(exp).dashboard_url == f"https://ray.lab.example/#/jobs/{sid}"
    assert store.ray_job(exp) == (sid, None)


def test_reattaches_to_a_running_job_and_resubmits_after_one_that_ended_unfinished(store):
    jobs = FakeJobs()
    exp = store.create_experiment("iris", SPEC)
    d = dispatcher(store, jobs)
    sid = d.submit_or_attach(exp, "iris")
    assert d.submit_or_attach(exp, "iris") == sid and len(jobs.jobs) == 1  # a restarted runner
    jobs.jobs[sid]["status"] = "FAILED"  # e.g. the head restarted under it
    again = d.submit_or_attach(exp, "iris")
    assert again == f"rnnhpo-{exp}-1" and store.ray_job(exp) == (again, None)


@pytest.mark.timeout(60)
def test_returns_the_driver_outcome_and_fails_with_the_log_tail_without_one(store):
    jobs = FakeJobs()
    exp = store.create_experiment("iris", SPEC)
    d = dispatcher(store, jobs)

    def finish(status, outcome=None):
        _wait(lambda: store.ray_job(exp)[0] in jobs.jobs, 10, "submission")
        if outcome:
            store.set_outcome(exp, outcome)
        jobs.jobs[store.ray_job(exp)[0]]["status"] = status

    t = threading.Thread(target=finish, args=("SUCCEEDED", {"trials_total": 2, "trials_done": 2, "n_failed": 0,
                                                            "cancelled": False, "best": None, "failures": {}}))
    t.start()
    summary = d.run(None, SimpleNamespace(experiment_id=exp), run_id=exp)
    t.join()
    assert (summary.trials_done, summary.cancelled) == (2, False)
    exp = store.create_experiment("iris", SPEC)
    threading.Thread(target=finish, args=("FAILED",)).start()
    with pytest.raises(RuntimeError, match="ValueError: boom"):
        dispatcher(store, jobs).run(None, SimpleNamespace(experiment_id=exp), run_id=exp)


def test_cancel_stops_the_job_and_a_stopping_runner_leaves_it_running(store):
    jobs = FakeJobs()
    exp = store.create_experiment("iris", SPEC)
    stopping = threading.Event()
    d = dispatcher(store, jobs, stopping=stopping.is_set)
    sid = d.submit_or_attach(exp, "iris")
    stopping.set()
    with pytest.raises(RunnerDetached):
        d.wait(exp, sid, lambda: True)
    assert jobs.stopped == [] and jobs.jobs[sid]["status"] == "RUNNING"
    store.request_cancel(exp)
    assert d.wait(exp, sid, lambda: True) == "STOPPED" and jobs.stopped == [sid]


def test_job_page_url():
    assert job_page_url("127.0.0.1:8265", "rnnhpo-x") == "http://127.0.0.1:8265/#/jobs/rnnhpo-x"
    assert job_page_url("https://h/ray/", "rnnhpo-x") == "https://h/ray/#/jobs/rnnhpo-x"


# -- against a real Ray head ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head (2 CPUs, dashboard, token auth) as a process group of its own."""
    from search.local_cluster import LocalCluster

    home = tmp_path_factory.mktemp("job-home")
    db = f"sqlite:///{home / 'jobs.db'}"
    cluster = LocalCluster.create(env={"RNNHPO_DATABASE_URL": db, "RNNHPO_HOME": str(home),
                                       "RNNHPO_CANCEL_POLL_S": "0.2"})
    try:
        cluster.start_head(num_cpus=2)
        yield SimpleNamespace(cluster=cluster, db=db)
    finally:
        cluster.close()


def _runner(head, name: str) -> Runner:
    from ray.job_submission import JobSubmissionClient

    settings = Settings(database_url=head.db, ray_jobs_address=head.cluster.dashboard_url, runner_poll_s=0.1,
                        runner_heartbeat_s=0.5, runner_stale_after_s=5, cancel_poll_s=0.1)
    store = Store(head.db)
    client = JobSubmissionClient(head.cluster.dashboard_url, headers=head.cluster.auth_headers)
    runner = Runner(settings, store=store, runner_id=name, init_ray=False)
    runner._run_fn = JobDispatcher(settings, store, client=client, stopping=runner._stop.is_set, poll_s=0.2).run
    return runner


def _job(head, sid: str) -> dict:
    import json

    req = urllib.request.Request(f"{head.cluster.dashboard_url}/api/jobs/{sid}", headers=head.cluster.auth_headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_runner_runs_an_experiment_as_the_ray_job_rnnhpo_id(ray_head):
    store = Store(ray_head.db)
    exp = store.create_experiment("dispatched", SPEC)
    runner = _runner(ray_head, "runner-a")
    assert runner.run_once()
    view = store.get_experiment(exp)
    assert view.status == "succeeded", view.error
    trials, total = store.list_trials(exp, limit=100)
    assert total == 2 and all(t.status == "completed" for t in trials)
    assert all(t.host and t.node_id and t.attempt == 0 for t in trials)
    sid = f"rnnhpo-{exp}"
    job = _job(ray_head, sid)
    assert job["submission_id"] == sid and job["status"] == "SUCCEEDED"
    assert job["metadata"]["rnnhpo_experiment"] == exp
    assert view.dashboard_url == f"{ray_head.cluster.dashboard_url}/#/jobs/{sid}"
    with urllib.request.urlopen(view.dashboard_url, timeout=10) as page:  # the dashboard's app
        assert page.status == 200


@pytest.mark.slow
def test_cancel_stops_the_job_and_a_restarted_runner_reattaches(ray_head):
    store = Store(ray_head.db)
    # a restarted runner re-attaches to the job its predecessor submitted
    exp = store.create_experiment("long", LONG)
    first = _runner(ray_head, "runner-1")
    t = threading.Thread(target=first.run_once)
    t.start()
    sid = f"rnnhpo-{exp}"
    _wait(lambda: store.ray_job(exp)[0] == sid and _job(ray_head, sid)["status"] == "RUNNING", 120, "job running")
    first.stop()
    t.join(30)
    assert store.get_experiment(exp).status == "queued"
    assert _job(ray_head, sid)["status"] == "RUNNING"  # the job did not stop with its runner
    second = _runner(ray_head, "runner-2")
    t2 = threading.Thread(target=second.run_once)
    t2.start()
    _wait(lambda: store.get_experiment(exp).runner_id == "runner-2", 30, "runner-2 claims it")
    assert store.ray_job(exp)[0] == sid  # re-attached: no second job
    _wait(lambda: (store.get_experiment(exp).n_trials_total or 0) > 0, 120, "trials registered")
    # cancel: the runner stops the job; the driver's packs end with it
    store.request_cancel(exp)
    asked = time.monotonic()
    _wait(lambda: _job(ray_head, sid)["status"] in ("STOPPED", "SUCCEEDED", "FAILED"), 10, "job stopped")
    t2.join(30)
    assert time.monotonic() - asked < 12
    assert _job(ray_head, sid)["status"] == "STOPPED"
    assert store.get_experiment(exp).status == "cancelled"
    ids = [j["submission_id"] for j in _jobs(ray_head) if (j.get("metadata") or {}).get("rnnhpo_experiment") == exp]
    assert ids == [sid]


def _jobs(head) -> list[dict]:
    import json

    req = urllib.request.Request(f"{head.cluster.dashboard_url}/api/jobs/", headers=head.cluster.auth_headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())
