"""Run packs as Ray Tune trials.

Each :class:`~search.packing.PackJob` is one Ray Tune trial with its own resources (fractional
GPUs allowed). Inside the worker the pack trains with ``trainer.train.train_pack`` and every
member's result, trace included, is written through the sink in bulk, once per trial;
``tune.report`` carries only a small summary per pack.

Failures (:mod:`search.faults`): a deterministic error inside a pack (bad data, an invalid
setting) fails its members at once with a readable reason and is never retried. A pack lost to
the infrastructure (worker or node died, database unreachable) is run again in a fresh Tune run
after an exponential backoff with jitter, until the retry budget is spent; unknown errors get at
most ``max_failures`` such retries. Storing a member's result is retried from the result in
memory (the pack is not trained again) on infrastructure faults.

While a round runs, ``on_activity(running, waiting)`` hears how many packs are running and how
many wait for resources (their placement groups, created by this Ray job, pending because no
node has the CPUs or GPUs free), at most once a second and only when the counts change.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from ray import tune

from search.cluster import placement
from search.faults import RetryPolicy, call_with_retry, classify, reason, sleep_unless
from search.packing import PackJob
from search.sink import ResultSink, TrialRecord
from search.writer import HandOffSink

log = logging.getLogger("rnnhpo.search")


@dataclass
class PackOutcome:
    pack_id: str
    ok: bool
    error: str | None
    best_value: float | None
    best_trial_id: int | None
    members: int
    kind: str | None = None      # failure kind (search.faults.classify) when not ok
    attempts: int = 1


def resolve_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


#: tasks a worker process keeps (a long-lived worker serves many packs and experiments)
TASK_CACHE_SIZE = 8
_TASK_CACHE: OrderedDict[str, Any] = OrderedDict()


def load_job_task(job: PackJob):
    """Load the task a pack trains on, cached per worker process (the last few, least recently
    used dropped first), so the packs a warm worker runs share one copy of the data."""
    import json

    from trainer.tasks import load_task

    key = json.dumps([job.dataset, job.fold, job.data], sort_keys=True, default=str)
    if key in _TASK_CACHE:
        _TASK_CACHE.move_to_end(key)
        return _TASK_CACHE[key]
    if job.data is not None:
        task = load_task(job.dataset["name"], seed=job.data["seed"], **job.data["options"])
    else:
        options = dict(job.dataset.get("options") or {})
        if job.dataset.get("framing"):
            options["framing"] = job.dataset["framing"]
        if job.fold is not None:
            options.update(fold=job.fold, n_folds=job.dataset["cv_folds"])
        task = load_task(job.dataset["name"], seed=job.dataset.get("split_seed", 0), **options)
    _TASK_CACHE[key] = task
    while len(_TASK_CACHE) > TASK_CACHE_SIZE:
        _TASK_CACHE.popitem(last=False)
    return task


def successive_halving(job: PackJob) -> Callable[[int, dict[str, np.ndarray]], Iterable[int]] | None:
    """ASHA-style pruning inside a pack: at epochs grace*rf^k keep the best 1/rf of live members."""
    if not job.asha:
        return None
    grace, factor = int(job.asha["grace_epochs"]), int(job.asha["reduction_factor"])
    stopped: set[int] = set()
    # a selection pack's task holds the validation part where a task holds its test part
    metric = "test_metric" if job.objective in ("val_metric", "test_metric") else "train_metric"

    def on_epoch(epoch: int, metrics: dict[str, np.ndarray]) -> list[int]:
        done = epoch + 1
        if done < grace or not _is_rung(done, grace, factor):
            return []
        values = np.asarray(metrics[metric], dtype=float)
        live = [i for i in range(len(values)) if i not in stopped and np.isfinite(values[i])]
        keep = max(1, len(live) // factor)
        order = sorted(live, key=lambda i: values[i], reverse=job.maximize)
        newly = order[keep:]
        stopped.update(newly)
        return newly

    return on_epoch


def _is_rung(epochs_done: int, grace: int, factor: int) -> bool:
    rung = grace
    while rung < epochs_done:
        rung *= factor
    return rung == epochs_done


#: Points of a trial's stored weight path (``extra.weight_path``; the first and last always kept).
MAX_PATH_POINTS = 200


def _decimated(path: dict[str, np.ndarray], n: int) -> dict[str, list]:
    """At most ``n`` evenly spaced rows of a weight path (first and last kept), as lists."""
    length = len(path.get("step", ()))
    idx = np.unique(np.linspace(0, length - 1, min(n, length)).round().astype(int)) if length else []
    return {k: np.asarray(v)[idx].tolist() for k, v in path.items()}


def job_probe_meta(job: PackJob) -> dict[str, list]:
    """The raw x and the noiseless target of the probe of the task a pack trained on."""
    return load_job_task(job).meta["probe"]


def member_record(member, pack_result, job: PackJob, attempt: int) -> TrialRecord:
    """The stored record of one member. In a selection pack the task's "test" part is the
    validation part: its metric is stored as ``val_metric`` and ``test_metric`` stays empty.

    ``extra`` keeps the member's W_out path (norm and sparsity at 1e-5, 1e-3, 1e-2 after every
    epoch, at most ``MAX_PATH_POINTS`` rows) and, for a test-role member of a task with a probe
    (``funcapprox``), its output on the probe grid (``probe``: x, noiseless target, y_hat), so
    the service draws fitted curves (Fig. 3a) from stored numbers without model weights."""
    diagnostics = dict(member.diagnostics)
    if diagnostics.get("diverged"):
        status = "diverged"
    elif diagnostics.get("pruned"):
        status = "pruned"
    else:
        status = "completed"
    final = {k: float(v) for k, v in member.final.items()}
    epochs = {k: np.asarray(v) for k, v in member.epochs.items()}
    extra = {"role": job.role, "pack_composition": job.extra.get("composition"),
             "weight_path": _decimated(member.weight_path, MAX_PATH_POINTS)}
    if member.probe is not None and job.role != "select":
        meta = job_probe_meta(job)
        extra["probe"] = {"x": meta["x"], "y_true": meta["y_true"],
                          "y_hat": np.asarray(member.probe, dtype=float)[:, 0].tolist()}
    if job.role == "select":
        final["val_metric"] = final.pop("test_metric")
        extra["epoch_test_metric_is"] = "validation"
    return TrialRecord(
        status=status, final=final,
        diagnostics={k: (v.item() if isinstance(v, np.generic) else v) for k, v in diagnostics.items()},
        trace={k: np.asarray(v) for k, v in member.trace.items()}, epochs=epochs,
        wall_time=float(pack_result.wall_time), device=str(pack_result.device),
        pack_id=job.pack_id, pack_size=job.size, attempt=attempt, extra=extra)


def run_pack_job(job: PackJob, sink: ResultSink, policy: RetryPolicy | None = None) -> dict[str, Any]:
    """Train one pack and store every member; returns the small summary Tune reports, with the
    seconds spent setting up (imports, data), training and storing.

    A deterministic error (bad data, invalid settings) marks the members failed with its reason
    and returns ``{"error": ..., "error_kind": "deterministic"}`` instead of raising, so nothing
    retries it. Storing is retried from the in-memory result on infrastructure faults."""
    started = time.perf_counter()
    import torch

    from trainer.config import MemberConfig, PackConfig
    from trainer.train import train_pack

    policy = policy or RetryPolicy()
    torch.set_num_threads(1)
    attempt = int(job.extra.get("attempt", 0))
    device = resolve_device(job.pack_settings.get("device", "auto"))

    def store(fn, *args):
        return call_with_retry(lambda: fn(*args), policy, on_retry=lambda exc, wait: log.warning(
            "pack %s: storing failed (%s); retrying in %.1f s", job.pack_id, reason(exc), wait))

    counted = store(sink.pack_started, job.trial_ids, job.pack_id, attempt, device, placement(device))
    attempt = attempt if counted is None else int(counted)
    try:
        task = load_job_task(job)
        settings = {**job.pack_settings, "device": device}
        config = PackConfig(members=[MemberConfig(**m) for m in job.members], **settings)
        trained = time.perf_counter()
        result = train_pack(task, config, on_epoch=successive_halving(job))
    except Exception as exc:  # noqa: BLE001 - classified: deterministic ones end here
        if classify(exc) != "deterministic":
            raise
        why = reason(exc)
        for trial_id in job.trial_ids:
            store(sink.trial_failed, trial_id, why)
        return {"members": job.size, "error": why, "error_kind": "deterministic"}
    storing = time.perf_counter()
    best_value, best_trial = None, None
    try:
        for index, (member, trial_id) in enumerate(zip(result.members, job.trial_ids)):
            record = member_record(member, result, job, attempt)
            store(sink.record_trial, trial_id, record)
            if attempt < job.inject_failures and index == 0:
                if job.extra.get("inject_mode") == "exit":
                    os._exit(13)  # the worker process dies as if killed
                raise RuntimeError(f"injected failure in pack {job.pack_id} (attempt {attempt})")
            value = record.final.get(job.objective)
            if value is not None and np.isfinite(value) and not member.diverged:
                if best_value is None or (value > best_value if job.maximize else value < best_value):
                    best_value, best_trial = float(value), trial_id
    finally:
        if hasattr(sink, "flush"):  # a hand-off sink: what was recorded goes to the writer, even on failure
            store(sink.flush)
    return {"members": job.size, "best_value": best_value, "best_trial_id": best_trial,
            "wall_time": float(result.wall_time), "setup_s": trained - started,
            "train_s": storing - trained, "store_s": time.perf_counter() - storing}


def _pack_trainable(config: dict, jobs: list[PackJob], sink: ResultSink, policy: RetryPolicy) -> None:
    summary = run_pack_job(jobs[config["pack"]], sink, policy)
    tune.report({k: (-1 if v is None else v) for k, v in summary.items()})


def run_packs(jobs: list[PackJob], sink: ResultSink, *, cpus_per_pack: float, gpus_per_pack: float,
              max_failures: int, storage_dir: Path, name: str,
              should_cancel: Callable[[], bool] | None = None,
              on_pack_done: Callable[[PackOutcome], None] | None = None,
              time_budget_s: float | None = None,
              policy: RetryPolicy | None = None,
              writer: Callable[[], Any] | None = None,
              on_activity: Callable[[int, int], None] | None = None) -> list[PackOutcome]:
    """Run the packs as Ray Tune experiments (one Tune trial per pack) and wait for them.

    With ``writer`` (a callable returning a :class:`search.writer.TraceWriter` actor), packs get
    only a :class:`search.writer.HandOffSink` to it, never ``sink`` itself. Packs lost to
    infrastructure faults run again in a new Tune run after the policy's backoff (``max_failures``
    bounds the retries of unknown errors); ``on_pack_done`` is called once per pack, with its
    final outcome; ``on_activity`` as the module says."""
    if not jobs:
        return []
    if writer is not None:
        sink = HandOffSink(writer())
    policy = policy or RetryPolicy(max_unknown=max_failures)
    started = time.monotonic()
    final: dict[str, PackOutcome] = {}
    retries: dict[str, int] = {}
    first_failure: dict[str, float] = {}
    todo = list(jobs)
    round_no = 0
    while todo:
        remaining = None if time_budget_s is None else time_budget_s - (time.monotonic() - started)
        if remaining is not None and remaining <= 0:
            break
        outcomes = _run_round(todo, sink, cpus_per_pack=cpus_per_pack, gpus_per_pack=gpus_per_pack,
                              storage_dir=storage_dir, name=f"{name}-a{round_no}", should_cancel=should_cancel,
                              time_budget_s=None if remaining is None else max(1.0, remaining), policy=policy,
                              on_activity=on_activity)
        round_no += 1
        cancelled = bool(should_cancel and should_cancel())
        again: list[PackJob] = []
        for job, outcome in zip(todo, outcomes):
            outcome.attempts = retries.get(job.pack_id, 0) + 1
            if not outcome.ok and not cancelled and outcome.kind != "deterministic":
                now = time.monotonic()
                first = first_failure.setdefault(job.pack_id, now)
                if policy.should_retry(outcome.kind or "unknown", retries.get(job.pack_id, 0), first, now):
                    again.append(job)
                    log.warning("pack %s failed (%s: %s); retry %d", job.pack_id, outcome.kind,
                                outcome.error, retries.get(job.pack_id, 0) + 1)
                    continue
            final[job.pack_id] = outcome
            if on_pack_done:
                on_pack_done(outcome)
        if not again:
            break
        wait = max(policy.delay(retries.get(j.pack_id, 0)) for j in again)
        if not sleep_unless(wait, should_cancel):
            for job in again:
                final[job.pack_id] = PackOutcome(job.pack_id, False, "cancelled", None, None, job.size,
                                                 "cancelled", retries.get(job.pack_id, 0) + 1)
            break
        for job in again:
            retries[job.pack_id] = retries.get(job.pack_id, 0) + 1
            job.extra["attempt"] = int(job.extra.get("attempt", 0)) + 1
        todo = again
    return [final.get(j.pack_id, PackOutcome(j.pack_id, False, "not finished", None, None, j.size, "unknown"))
            for j in jobs]


def _run_round(jobs: list[PackJob], sink: ResultSink, *, cpus_per_pack: float, gpus_per_pack: float,
               storage_dir: Path, name: str, should_cancel: Callable[[], bool] | None,
               time_budget_s: float | None, policy: RetryPolicy,
               on_activity: Callable[[int, int], None] | None = None) -> list[PackOutcome]:
    outcomes: dict[str, PackOutcome] = {}
    key = uuid.uuid4().hex
    _LIVE_RUNS[key] = _LiveRun(jobs, outcomes, should_cancel, on_activity)
    try:
        return _fit(key, jobs, sink, cpus_per_pack=cpus_per_pack, gpus_per_pack=gpus_per_pack,
                    storage_dir=storage_dir, name=name, time_budget_s=time_budget_s, policy=policy)
    finally:
        _LIVE_RUNS.pop(key, None)


@dataclass
class _LiveRun:
    """A round in flight: its packs, their outcomes so far, and the caller's callables."""

    jobs: list[PackJob]
    outcomes: dict[str, PackOutcome]
    should_cancel: Callable[[], bool] | None
    on_activity: Callable[[int, int], None] | None
    activity: tuple[int, int] | None = None
    activity_at: float = 0.0


#: State of the runs in flight, by key. Tune pickles its callbacks and stoppers with the
#: experiment state, so they hold only the key, never closures, locks or connections.
_LIVE_RUNS: dict[str, _LiveRun] = {}


class _PackProgress(tune.Callback):
    """Tune callback: records each pack's outcome as it completes or fails for good."""

    def __init__(self, key: str):
        self.key = key

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, False)

    def _finish(self, trial, ok: bool) -> None:
        live = _LIVE_RUNS.get(self.key)
        if live is None:
            return
        job = live.jobs[trial.config["pack"]]
        r = (trial.last_result or {}) if ok else {}
        best, best_id = r.get("best_value"), r.get("best_trial_id")
        error, kind = None, None
        if ok and r.get("error") not in (None, -1):
            ok, error, kind = False, str(r["error"]), str(r.get("error_kind") or "deterministic")
        elif not ok:
            error, kind = _trial_error(trial)
        outcome = PackOutcome(job.pack_id, ok, error,
                              None if best in (None, -1) else float(best),
                              None if best_id in (None, -1) else int(best_id), job.size, kind)
        live.outcomes[job.pack_id] = outcome


class _PackActivity(tune.Callback):
    """Tune callback: tells the run's ``on_activity`` how many packs run and how many wait for
    resources, at most once a second, when the counts change."""

    EVERY_S = 1.0

    def __init__(self, key: str):
        self.key = key

    def on_step_end(self, iteration, trials, **info):
        live = _LIVE_RUNS.get(self.key)
        now = time.monotonic()
        if live is None or live.on_activity is None or now - live.activity_at < self.EVERY_S:
            return
        live.activity_at = now
        running = sum(t.status == "RUNNING" for t in trials)
        pending = sum(t.status == "PENDING" for t in trials)
        counts = (running, min(pending, _placement_groups_waiting()) if pending else 0)
        if counts != live.activity:
            live.activity = counts
            live.on_activity(*counts)


def _placement_groups_waiting() -> int:
    """Placement groups of this Ray job (the packs Tune asked resources for) still pending."""
    import ray
    from ray.util.placement_group import placement_group_table

    try:
        job = ray.get_runtime_context().get_job_id()
        table = placement_group_table()
    except Exception:  # noqa: BLE001 - a GCS hiccup: nothing known to wait
        return 0
    return sum(1 for pg_id, pg in table.items() if str(pg_id).endswith(job) and pg.get("state") == "PENDING")


def _trial_error(trial) -> tuple[str, str]:
    """The readable reason and fault kind of a failed Tune trial (never the error file's path)."""
    exc = None
    try:  # Tune writes the error to the trial's local directory first, synced to storage later
        path = trial.pickled_error_file
        if path and os.path.exists(path):
            import cloudpickle

            with open(path, "rb") as f:
                exc = cloudpickle.load(f)
        else:
            exc = trial.get_pickled_error()
    except Exception:  # noqa: BLE001 - an unreadable error is an unknown one
        exc = None
    if isinstance(exc, BaseException):
        return reason(exc), classify(exc)
    try:
        path = trial.error_file
        text = Path(path).read_text() if path and os.path.exists(path) else (trial.get_error() or "")
    except Exception:  # noqa: BLE001
        text = ""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip() and not ln.startswith(" ")]
    return (lines[-1][:500] if lines else "the pack's worker failed"), "unknown"


class _PackName:
    """Tune trial (and trial directory) name: the run's name (the experiment id leads it) and the
    pack's index, as the dashboard and Tune's logs show it."""

    def __init__(self, run_name: str):
        self.run_name = run_name

    def __call__(self, trial) -> str:
        return f"{self.run_name}-pack{trial.config['pack']}"


class _CancelStopper(tune.Stopper):
    """Stops every pack in flight once the run's ``should_cancel`` says so."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, trial_id, result):
        return False

    def stop_all(self):
        live = _LIVE_RUNS.get(self.key)
        return bool(live and live.should_cancel and live.should_cancel())


def _fit(key: str, jobs: list[PackJob], sink: ResultSink, *, cpus_per_pack: float, gpus_per_pack: float,
         storage_dir: Path, name: str, time_budget_s: float | None, policy: RetryPolicy) -> list[PackOutcome]:
    resources = {"cpu": cpus_per_pack, "gpu": gpus_per_pack}
    trainable = tune.with_resources(tune.with_parameters(_pack_trainable, jobs=jobs, sink=sink, policy=policy),
                                    resources)
    tuner = tune.Tuner(
        trainable,
        param_space={"pack": tune.grid_search(list(range(len(jobs))))},
        tune_config=tune.TuneConfig(reuse_actors=True, time_budget_s=time_budget_s,
                                    trial_name_creator=_PackName(name), trial_dirname_creator=_PackName(name)),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage_dir), verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
            stop=_CancelStopper(key), callbacks=[_PackProgress(key), _PackActivity(key)], log_to_file=False),
    )
    tuner.fit()
    outcomes = _LIVE_RUNS[key].outcomes
    return [outcomes.get(j.pack_id, PackOutcome(j.pack_id, False, "not finished", None, None, j.size, "unknown"))
            for j in jobs]
