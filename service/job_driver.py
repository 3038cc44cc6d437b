"""The driver of an experiment's Ray job: ``python -m service.job_driver EXP_ID``.

Ray runs it on the cluster (the head, by default) when a runner submits the experiment
(:mod:`service.dispatch`). It reads its settings from the environment of the node it runs on
(``RNNHPO_DATABASE_URL``, ``RNNHPO_DATA_DIR``: the deployment gives them to the Ray nodes, the
runner never ships them), joins the cluster, runs (or resumes) the search, writes progress, trials
and traces to the database and, at the end, its summary (``Store.set_outcome``) for the runner.

It stops its packs when the experiment's cancel flag is set in the database or when Ray stops
the job (SIGTERM), and leaves the experiment's status to the runner that dispatched it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from dataclasses import asdict, is_dataclass
from typing import Any

from service.settings import Settings

log = logging.getLogger("rnnhpo.job_driver")


class _Cancel:
    """``should_cancel``: SIGTERM from Ray, or the cancel flag in the database (polled at most
    every ``poll_s`` seconds). Pickles to an inert probe (as the runner's callables)."""

    def __init__(self, store, exp_id: str, poll_s: float):
        self.store, self.exp_id, self.poll_s = store, exp_id, poll_s
        self.signalled = threading.Event()
        self._t, self._v = 0.0, False
        self._live = True

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._live = False

    def __call__(self) -> bool:
        if not self._live:
            return False
        if self.signalled.is_set():
            return True
        now = time.monotonic()
        if not self._v and now - self._t >= self.poll_s:
            self._t = now
            try:
                self._v = bool(self.store.cancel_requested(self.exp_id))
            except Exception:  # noqa: BLE001 - a database hiccup is not a cancel
                log.exception("cancel check failed")
        return self._v


class _Progress:
    """Writes the search's progress to the experiment row, with the job page as its link."""

    def __init__(self, store, exp_id: str, job_url: str | None):
        self.store, self.exp_id, self.job_url = store, exp_id, job_url
        self._live = True

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._live = False

    def __call__(self, p) -> None:
        if not self._live:
            return
        try:
            self.store.set_progress(self.exp_id, total=int(p.trials_total or 0), done=int(p.trials_done or 0),
                                    best=p.best, eta_s=p.eta_s, dashboard_url=self.job_url or p.dashboard_url,
                                    packs_total=p.packs_total, packs_done=p.packs_done,
                                    phase=p.phase, packs_running=p.packs_running)
        except Exception:  # noqa: BLE001 - progress is best effort; results are in the sink
            log.exception("experiment %s: set_progress failed", self.exp_id)


def outcome_of(summary: Any) -> dict[str, Any]:
    """The parts of a :class:`search.driver.SearchSummary` the runner needs, as JSON."""
    data = asdict(summary) if is_dataclass(summary) else dict(vars(summary))
    keep = ("trials_total", "trials_done", "n_failed", "cancelled", "best", "failures", "wall_time")
    return {k: data.get(k) for k in keep}


def run_job(settings: Settings, exp_id: str, *, submission_id: str | None = None,
            dashboard_url: str | None = None) -> dict[str, Any]:
    """Run experiment ``exp_id`` inside a Ray job; returns (and stores) the outcome."""
    from search.driver import run_experiment
    from search.ray_runtime import ensure_ray
    from service.dispatch import job_page_url
    from service.sink import SqlResultSink
    from service.store import Store
    from service.submission import with_data_dir
    from search.spec import ExperimentSpec

    store = Store(settings.database_url, migrate=False)
    view = store.get_experiment(exp_id)
    if view is None:
        raise SystemExit(f"no experiment {exp_id} in {settings.database_label()}")
    spec = with_data_dir(ExperimentSpec.model_validate(view.spec), settings.data_dir)
    cancel = _Cancel(store, exp_id, settings.cancel_poll_s)
    signal.signal(signal.SIGTERM, lambda *_: cancel.signalled.set())
    cluster_url = ensure_ray(None)  # inside a job Ray sets RAY_ADDRESS
    base = dashboard_url or settings.ray_dashboard_url or cluster_url
    job_url = job_page_url(base, submission_id) if base and submission_id else None
    summary = run_experiment(spec, SqlResultSink(settings.database_url, exp_id),
                             progress=_Progress(store, exp_id, job_url), should_cancel=cancel, run_id=exp_id)
    outcome = outcome_of(summary)
    store.set_outcome(exp_id, outcome)
    log.info("experiment %s: %s of %s trials done, %s failed%s", exp_id, outcome["trials_done"],
             outcome["trials_total"], outcome["n_failed"], " (cancelled)" if outcome["cancelled"] else "")
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.job_driver", description=__doc__.splitlines()[0])
    parser.add_argument("experiment_id")
    parser.add_argument("--submission-id", help="this job's submission id (for the dashboard link)")
    parser.add_argument("--dashboard-url", help="public base URL of the Ray dashboard")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_job(Settings(), args.experiment_id, submission_id=args.submission_id, dashboard_url=args.dashboard_url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
