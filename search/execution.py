"""Run packs as Ray Tune trials.

Each :class:`~search.packing.PackJob` is one Ray Tune trial with its own resources (fractional
GPUs allowed); Ray Tune retries a failed pack ``max_failures`` times. Inside the worker the pack
trains with ``trainer.train.train_pack`` and every member's result, trace included, is written
through the sink in bulk, once per trial; ``tune.report`` carries only a small summary per pack.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from ray import tune

from search.packing import PackJob
from search.sink import ResultSink, TrialRecord


@dataclass
class PackOutcome:
    pack_id: str
    ok: bool
    error: str | None
    best_value: float | None
    best_trial_id: int | None
    members: int


def resolve_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


_TASK_CACHE: dict[str, Any] = {}


def load_job_task(job: PackJob):
    """Load (and cache per worker process) the task a pack trains on."""
    import json

    from trainer.tasks import load_task

    key = json.dumps([job.dataset, job.fold, job.data], sort_keys=True, default=str)
    if key not in _TASK_CACHE and job.data is not None:
        _TASK_CACHE[key] = load_task(job.dataset["name"], seed=job.data["seed"], **job.data["options"])
    if key not in _TASK_CACHE:
        options = dict(job.dataset.get("options") or {})
        if job.dataset.get("framing"):
            options["framing"] = job.dataset["framing"]
        if job.fold is not None:
            options.update(fold=job.fold, n_folds=job.dataset["cv_folds"])
        _TASK_CACHE[key] = load_task(job.dataset["name"], seed=job.dataset.get("split_seed", 0), **options)
    return _TASK_CACHE[key]


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


def member_record(member, pack_result, job: PackJob, attempt: int) -> TrialRecord:
    """The stored record of one member. In a selection pack the task's "test" part is the
    validation part: its metric is stored as ``val_metric`` and ``test_metric`` stays empty."""
    diagnostics = dict(member.diagnostics)
    if diagnostics.get("diverged"):
        status = "diverged"
    elif diagnostics.get("pruned"):
        status = "pruned"
    else:
        status = "completed"
    final = {k: float(v) for k, v in member.final.items()}
    epochs = {k: np.asarray(v) for k, v in member.epochs.items()}
    extra = {"role": job.role, "pack_composition": job.extra.get("composition")}
    if job.role == "select":
        final["val_metric"] = final.pop("test_metric")
        extra["epoch_test_metric_is"] = "validation"
    return TrialRecord(
        status=status, final=final,
        diagnostics={k: (v.item() if isinstance(v, np.generic) else v) for k, v in diagnostics.items()},
        trace={k: np.asarray(v) for k, v in member.trace.items()}, epochs=epochs,
        wall_time=float(pack_result.wall_time), device=str(pack_result.device),
        pack_id=job.pack_id, pack_size=job.size, attempt=attempt, extra=extra)


def _next_attempt() -> int:
    """Count this Ray Tune trial's attempts in its trial directory (kept across retries)."""
    try:
        trial_dir = Path(tune.get_context().get_trial_dir())
    except Exception:  # noqa: BLE001 - outside Tune (direct calls) there is no trial dir
        return 0
    marker = trial_dir / "rnnhpo_attempts"
    attempt = int(marker.read_text()) if marker.exists() else 0
    trial_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(attempt + 1))
    return attempt


def run_pack_job(job: PackJob, sink: ResultSink) -> dict[str, Any]:
    """Train one pack and store every member; returns the small summary Tune reports, with the
    seconds spent setting up (imports, data), training and storing."""
    started = time.perf_counter()
    import torch

    from trainer.config import MemberConfig, PackConfig
    from trainer.train import train_pack

    torch.set_num_threads(1)
    attempt = _next_attempt()
    device = resolve_device(job.pack_settings.get("device", "auto"))
    sink.pack_started(job.trial_ids, job.pack_id, attempt, device)
    task = load_job_task(job)
    settings = {**job.pack_settings, "device": device}
    config = PackConfig(members=[MemberConfig(**m) for m in job.members], **settings)
    trained = time.perf_counter()
    result = train_pack(task, config, on_epoch=successive_halving(job))
    storing = time.perf_counter()
    best_value, best_trial = None, None
    for index, (member, trial_id) in enumerate(zip(result.members, job.trial_ids)):
        record = member_record(member, result, job, attempt)
        sink.record_trial(trial_id, record)
        if attempt < job.inject_failures and index == 0:
            if job.extra.get("inject_mode") == "exit":
                os._exit(13)  # the worker process dies as if killed
            raise RuntimeError(f"injected failure in pack {job.pack_id} (attempt {attempt})")
        value = record.final.get(job.objective)
        if value is not None and np.isfinite(value) and not member.diverged:
            if best_value is None or (value > best_value if job.maximize else value < best_value):
                best_value, best_trial = float(value), trial_id
    return {"members": job.size, "best_value": best_value, "best_trial_id": best_trial,
            "wall_time": float(result.wall_time), "setup_s": trained - started,
            "train_s": storing - trained, "store_s": time.perf_counter() - storing}


def _pack_trainable(config: dict, jobs: list[PackJob], sink: ResultSink) -> None:
    summary = run_pack_job(jobs[config["pack"]], sink)
    tune.report({k: (-1 if v is None else v) for k, v in summary.items()})


def run_packs(jobs: list[PackJob], sink: ResultSink, *, cpus_per_pack: float, gpus_per_pack: float,
              max_failures: int, storage_dir: Path, name: str,
              should_cancel: Callable[[], bool] | None = None,
              on_pack_done: Callable[[PackOutcome], None] | None = None,
              time_budget_s: float | None = None) -> list[PackOutcome]:
    """Run the packs as one Ray Tune experiment (one Tune trial per pack) and wait for them."""
    if not jobs:
        return []
    outcomes: dict[str, PackOutcome] = {}
    key = uuid.uuid4().hex
    _LIVE_RUNS[key] = (jobs, outcomes, should_cancel, on_pack_done)
    try:
        return _fit(key, jobs, sink, cpus_per_pack=cpus_per_pack, gpus_per_pack=gpus_per_pack,
                    max_failures=max_failures, storage_dir=storage_dir, name=name,
                    time_budget_s=time_budget_s)
    finally:
        _LIVE_RUNS.pop(key, None)


#: State of the runs in flight, by key. Tune pickles its callbacks and stoppers with the
#: experiment state, so they hold only the key, never closures, locks or connections.
_LIVE_RUNS: dict[str, tuple] = {}


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
        jobs, outcomes, _, on_pack_done = live
        job = jobs[trial.config["pack"]]
        r = (trial.last_result or {}) if ok else {}
        best, best_id = r.get("best_value"), r.get("best_trial_id")
        outcome = PackOutcome(job.pack_id, ok, None if ok else str(trial.error_file or "pack failed"),
                              None if best in (None, -1) else float(best),
                              None if best_id in (None, -1) else int(best_id), job.size)
        outcomes[job.pack_id] = outcome
        if on_pack_done:
            on_pack_done(outcome)


class _CancelStopper(tune.Stopper):
    """Stops every pack in flight once the run's ``should_cancel`` says so."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, trial_id, result):
        return False

    def stop_all(self):
        live = _LIVE_RUNS.get(self.key)
        return bool(live and live[2] and live[2]())


def _fit(key: str, jobs: list[PackJob], sink: ResultSink, *, cpus_per_pack: float, gpus_per_pack: float,
         max_failures: int, storage_dir: Path, name: str, time_budget_s: float | None) -> list[PackOutcome]:
    resources = {"cpu": cpus_per_pack, "gpu": gpus_per_pack}
    trainable = tune.with_resources(tune.with_parameters(_pack_trainable, jobs=jobs, sink=sink), resources)
    tuner = tune.Tuner(
        trainable,
        param_space={"pack": tune.grid_search(list(range(len(jobs))))},
        tune_config=tune.TuneConfig(reuse_actors=True, time_budget_s=time_budget_s),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage_dir), verbose=0,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            stop=_CancelStopper(key), callbacks=[_PackProgress(key)], log_to_file=False),
    )
    tuner.fit()
    outcomes = _LIVE_RUNS[key][1]
    return [outcomes.get(j.pack_id, PackOutcome(j.pack_id, False, "not finished", None, None, j.size))
            for j in jobs]
