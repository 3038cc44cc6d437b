"""Experiments as Ray jobs: the runner submits, watches and stops; the job's driver does the work.

With ``Settings.ray_jobs_address`` set (``http://ray-head:8265``), a runner needs no Ray of its
own. For each experiment it claims, :meth:`JobDispatcher.run` (the runner's ``run_fn``):

1. submits ``python -m service.job_driver <id>`` through Ray's Job Submission API with the
   submission id ``rnnhpo-<experiment id>`` (``rnnhpo-<id>-<n>`` when an earlier job of the same
   experiment ended without finishing it) and metadata naming the experiment -- or, when the
   experiment's recorded job is still pending or running (its runner was restarted or died),
   re-attaches to it;
2. polls the job until it ends; the driver writes progress, trials and traces to the database
   and, at the end, its summary (``Store.set_outcome``), which the runner turns into the
   experiment's final status as before;
3. on cancel, stops the job (Ray sends the driver SIGTERM, then SIGKILL; the packs are the
   job's actors and end with it). A runner that is only being stopped leaves the job running and
   hands the experiment back to the queue: the next runner re-attaches.

The experiment's dashboard link is the job's page, ``<base>/#/jobs/rnnhpo-<id>``, where the base
is ``Settings.ray_dashboard_url`` (the operator's public URL) or the Jobs API address.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from search.faults import TransientFault
from service.settings import Settings

log = logging.getLogger("rnnhpo.dispatch")

#: Job states after which a job never runs again.
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class JobFailed(RuntimeError):
    """The experiment's Ray job ended without its driver reporting an outcome."""


class RunnerDetached(RuntimeError):
    """The runner is stopping: it leaves the job running and hands the experiment back."""


class JobsUnavailable(TransientFault):
    """The cluster's Jobs API did not answer."""


def submission_id(exp_id: str, attempt: int = 0) -> str:
    """``rnnhpo-<experiment id>``, and ``rnnhpo-<id>-<n>`` for the n-th later job of it."""
    return f"rnnhpo-{exp_id}" if attempt == 0 else f"rnnhpo-{exp_id}-{attempt}"


def job_page_url(base: str, sid: str) -> str:
    """The Ray dashboard's page of job ``sid`` under the dashboard at ``base``."""
    base = base if "://" in base else f"http://{base}"
    return f"{base.rstrip('/')}/#/jobs/{sid}"


def driver_entrypoint(exp_id: str, sid: str, dashboard_base: str | None) -> str:
    """The shell command the job runs on the cluster."""
    args = ["python", "-m", "service.job_driver", exp_id, "--submission-id", sid]
    if dashboard_base:
        args += ["--dashboard-url", dashboard_base]
    return shlex.join(args)


class JobDispatcher:
    """Runs a claimed experiment as a Ray job (see the module docstring)."""

    def __init__(self, settings: Settings, store, *, stopping: Callable[[], bool] = lambda: False,
                 client=None, headers: dict[str, str] | None = None, poll_s: float = 1.0,
                 stop_timeout_s: float = 10.0,
                 unavailable_after_s: float = 60.0):
        if not settings.ray_jobs_address and client is None:
            raise ValueError("JobDispatcher needs Settings.ray_jobs_address")
        self.settings, self.store, self.stopping = settings, store, stopping
        self._client, self._headers = client, headers
        self.poll_s, self.stop_timeout_s, self.unavailable_after_s = poll_s, stop_timeout_s, unavailable_after_s

    @property
    def dashboard_base(self) -> str | None:
        return self.settings.ray_dashboard_url or self.settings.ray_jobs_address

    @property
    def client(self):
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            # Ray's token (RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH) is added by the SDK itself
            self._client = JobSubmissionClient(self.settings.ray_jobs_address, headers=self._headers)
        return self._client

    # -- the runner's run_fn ---------------------------------------------------------------
    def run(self, spec, sink, *, progress=None, should_cancel: Callable[[], bool] | None = None,
            run_id: str | None = None, **_ignored) -> Any:
        """Submit (or re-attach to) the experiment's job and wait for it; returns the driver's
        summary (attributes as :class:`search.driver.SearchSummary`)."""
        exp_id = run_id or sink.experiment_id
        sid = self.submit_or_attach(exp_id, getattr(spec, "name", exp_id))
        status = self.wait(exp_id, sid, should_cancel or (lambda: False))
        _, outcome = self.store.ray_job(exp_id)
        if outcome is not None:
            return SimpleNamespace(**{"dashboard_url": self.job_url(sid), **outcome})
        if status == "STOPPED":
            view = self.store.get_experiment(exp_id)
            return SimpleNamespace(trials_total=view.n_trials_total or 0, trials_done=view.n_trials_done,
                                   n_failed=0, cancelled=True, best=view.best, failures={},
                                   dashboard_url=self.job_url(sid))
        raise JobFailed(f"Ray job {sid} {status.lower()} without a result: {self._log_tail(sid)}")

    def job_url(self, sid: str) -> str | None:
        return job_page_url(self.dashboard_base, sid) if self.dashboard_base else None

    # -- submit, attach ----------------------------------------------------------------------
    def submit_or_attach(self, exp_id: str, name: str) -> str:
        """The id of the job that runs ``exp_id`` now: its recorded job when that is still pending
        or running, or finished with an outcome not yet collected; else a newly submitted one."""
        known, outcome = self.store.ray_job(exp_id)
        attempt = 0
        if known is not None:
            status = self.status(known)
            if status in ("PENDING", "RUNNING") or (status == "SUCCEEDED" and outcome is not None):
                log.info("experiment %s: re-attaching to Ray job %s (%s)", exp_id, known, status)
                return known
            attempt = _attempt_of(known, exp_id) + 1
        while True:
            sid = submission_id(exp_id, attempt)
            if self.status(sid) is None:
                break
            attempt += 1
        self.store.set_ray_job(exp_id, sid)
        entrypoint = driver_entrypoint(exp_id, sid, self.dashboard_base)
        try:
            self.client.submit_job(entrypoint=entrypoint, submission_id=sid, entrypoint_num_cpus=0,
                                   metadata={"rnnhpo_experiment": exp_id, "rnnhpo_name": str(name)[:200]})
        except Exception as exc:  # noqa: BLE001 - a race with another runner: attach to its job
            if self.status(sid) in ("PENDING", "RUNNING"):
                log.info("experiment %s: job %s was submitted by another runner; attaching", exp_id, sid)
                return sid
            raise JobsUnavailable(f"submitting Ray job {sid} failed: {exc}") from exc
        log.info("experiment %s: submitted Ray job %s (%s)", exp_id, sid, self.job_url(sid))
        self._link(exp_id, sid)
        return sid

    def _link(self, exp_id: str, sid: str) -> None:
        """Store the job page as the experiment's dashboard link straight away."""
        url = self.job_url(sid)
        if not url:
            return
        view = self.store.get_experiment(exp_id)
        progress = view.progress or {}
        self.store.set_progress(exp_id, total=view.n_trials_total or 0, done=view.n_trials_done or 0,
                                dashboard_url=url, eta_s=progress.get("eta_s"),
                                packs_total=progress.get("packs_total"), packs_done=progress.get("packs_done"),
                                phase=progress.get("phase"), packs_running=progress.get("packs_running"))

    def status(self, sid: str) -> str | None:
        """The job's status, or None when the cluster does not know it."""
        try:
            status = self.client.get_job_status(sid)
        except Exception as exc:  # noqa: BLE001 - the SDK raises RuntimeError for unknown ids
            if "404" in str(exc) or "does not exist" in str(exc) or "not found" in str(exc).lower():
                return None
            raise JobsUnavailable(f"Ray Jobs API at {self.settings.ray_jobs_address}: {exc}") from exc
        return str(getattr(status, "value", status))

    # -- wait, stop ------------------------------------------------------------------------------
    def wait(self, exp_id: str, sid: str, should_cancel: Callable[[], bool]) -> str:
        """Poll until the job ends; stop it on cancel. Returns its final status."""
        unreachable_since: float | None = None
        while True:
            if should_cancel():
                if self.stopping() and not self.store.cancel_requested(exp_id):
                    log.info("runner stopping: Ray job %s keeps running; experiment %s back to the queue",
                             sid, exp_id)
                    raise RunnerDetached(f"runner stopped; job {sid} left running")
                return self.stop(sid)
            try:
                status = self.status(sid)
                unreachable_since = None
            except JobsUnavailable:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > self.unavailable_after_s:
                    raise
                status = "UNKNOWN"
            if status is None:
                raise JobFailed(f"Ray job {sid} is unknown to the cluster (was the head restarted?)")
            if status in TERMINAL:
                return status
            time.sleep(self.poll_s)

    def stop(self, sid: str) -> str:
        """Stop the job and wait (up to ``stop_timeout_s``) until Ray reports it ended."""
        log.info("stopping Ray job %s", sid)
        try:
            self.client.stop_job(sid)
        except Exception as exc:  # noqa: BLE001 - it may have ended by itself meanwhile
            log.info("stop_job(%s): %s", sid, exc)
        deadline = time.monotonic() + self.stop_timeout_s
        status = self.status(sid) or "STOPPED"
        while status not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.2)
            status = self.status(sid) or "STOPPED"
        return status

    def _log_tail(self, sid: str, lines: int = 20) -> str:
        try:
            text = self.client.get_job_logs(sid)
        except Exception:  # noqa: BLE001
            return "(no logs)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def _attempt_of(sid: str, exp_id: str) -> int:
    rest = sid[len(submission_id(exp_id)):]
    return int(rest[1:]) if rest.startswith("-") and rest[1:].isdigit() else 0
