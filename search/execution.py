"""Run packs on the cluster: train one pack in a worker, run many with retries from the driver.

Each :class:`~search.packing.PackJob` runs as one task on a long-lived pack worker
(:mod:`search.pack_pool`) holding the pack's resources (fractional GPUs allowed). In the worker
the pack trains with ``trainer.train.train_pack`` and every member's result, trace included, is
handed to the run's writer in bulk, once per trial; the driver gets only a small summary.

Failures (:mod:`search.faults`): a deterministic error inside a pack (bad data, an invalid
setting) fails its members at once with a readable reason and is never retried. A pack lost to
the infrastructure (worker or node died, database unreachable) is run again in a next round,
on a new worker, after an exponential backoff with jitter, until the retry budget is spent;
unknown errors get at most ``max_failures`` such retries. Storing a member's result is retried
from the result in memory (the pack is not trained again) on infrastructure faults.

While a round runs, ``on_activity(running, waiting)`` hears how many packs are training and how
many wait for resources (their worker cannot start: no node has the CPUs or GPUs free), when the
counts change.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from search.cluster import placement
from search.faults import RetryPolicy, call_with_retry, classify, reason, sleep_unless
from search.pack_pool import PackDone, run_round
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
    """Train one pack and store every member; returns the small summary the driver gets, with the
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


def run_packs(jobs: list[PackJob], sink: ResultSink, *, cpus_per_pack: float, gpus_per_pack: float,
              max_failures: int, name: str, slots: int = 1,
              should_cancel: Callable[[], bool] | None = None,
              on_pack_done: Callable[[PackOutcome], None] | None = None,
              time_budget_s: float | None = None,
              policy: RetryPolicy | None = None,
              writer: Callable[[], Any] | None = None,
              on_activity: Callable[[int, int], None] | None = None) -> list[PackOutcome]:
    """Run the packs on at most ``slots`` long-lived pack workers (:mod:`search.pack_pool`) and
    wait for them.

    With ``writer`` (a callable returning a :class:`search.writer.TraceWriter` actor), packs get
    only a :class:`search.writer.HandOffSink` to it, never ``sink`` itself. Packs lost to
    infrastructure faults run again, in a next round, after the policy's backoff (``max_failures``
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
        done = run_round(todo, sink, cpus_per_pack=cpus_per_pack, gpus_per_pack=gpus_per_pack, slots=slots,
                         name=name if round_no == 0 else f"{name}-a{round_no}", policy=policy,
                         should_cancel=should_cancel, time_budget_s=remaining, on_activity=on_activity)
        round_no += 1
        cancelled = bool(should_cancel and should_cancel())
        again: list[PackJob] = []
        for job, pack in zip(todo, done):
            outcome = _outcome(job, pack)
            outcome.attempts = retries.get(job.pack_id, 0) + 1
            if not outcome.ok and not cancelled and outcome.kind not in ("deterministic", "stopped"):
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
                                                 "stopped", retries.get(job.pack_id, 0) + 1)
            break
        for job in again:
            retries[job.pack_id] = retries.get(job.pack_id, 0) + 1
            job.extra["attempt"] = int(job.extra.get("attempt", 0)) + 1
        todo = again
    return [final.get(j.pack_id, PackOutcome(j.pack_id, False, "not finished", None, None, j.size, "unknown"))
            for j in jobs]


def _outcome(job: PackJob, pack: PackDone) -> PackOutcome:
    """A pack's outcome from what its worker returned (or why it failed)."""
    if pack.error is not None:
        return PackOutcome(job.pack_id, False, pack.error, None, None, job.size, pack.kind)
    summary = pack.summary or {}
    best, best_id = summary.get("best_value"), summary.get("best_trial_id")
    return PackOutcome(job.pack_id, True, None, None if best is None else float(best),
                       None if best_id is None else int(best_id), job.size)
