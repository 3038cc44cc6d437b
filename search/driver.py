"""Run an experiment end to end: plan trials, pack them, run them on pack workers, tell Optuna.

Resumable: trials already finished in the sink are never re-run; trials registered but not
finished (a crash mid-round, a failure) are re-run with the parameters recorded for them.

Before anything runs, the packs' resource request is checked against the cluster: one that no
node can ever satisfy raises :class:`~search.faults.ResourceUnsatisfiable` naming the field.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from search.cluster import cluster_shape, joined_nodes
from search.execution import PackOutcome, load_job_task, run_packs
from search.faults import ResourceUnsatisfiable, RetryPolicy
from search.packing import ClusterShape, PackPlan, make_packs, member_bytes, plan_packs
from search.planning import (Configuration, VariantStudy, grid_configurations, is_test_number,
                             select_configurations, test_plans, trial_plans)
from search import pack_pool
from search.ray_runtime import ensure_ray, run_label
from search.resources import resource_problem
from search.sink import ResultSink, TrialPlan
from search.spec import ExperimentSpec
from search.writer import start_writer

log = logging.getLogger("rnnhpo.search")

FINISHED = ("completed", "diverged", "pruned")


@dataclass
class SearchProgress:
    trials_total: int
    trials_done: int
    packs_total: int
    packs_done: int
    best: dict | None
    eta_s: float | None
    dashboard_url: str | None
    elapsed_s: float
    #: connecting (to Ray) | starting (planning, pack workers starting) | waiting for resources
    #: (packs wait for CPUs/GPUs another holds, none of this run's running) | running
    phase: str = "starting"
    packs_running: int = 0


@dataclass
class SearchSummary:
    trials_total: int
    trials_done: int
    n_failed: int
    cancelled: bool
    best: dict | None
    dashboard_url: str | None
    wall_time: float
    pareto: list[dict] = field(default_factory=list)
    #: readable failure reason -> number of trials that failed with it
    failures: dict[str, int] = field(default_factory=dict)


def task_kind(spec: ExperimentSpec) -> str:
    """classification or regression, from the catalogue when it knows the dataset."""
    from trainer.tasks import load_task

    try:
        from trainer.datasets import catalogue

        for entry in catalogue():
            if getattr(entry, "name", None) == spec.dataset.name and "|" not in entry.kind:
                return str(entry.kind)
        stated = spec.dataset.options.get("kind")
        if stated in ("classification", "regression"):
            return str(stated)
    except ImportError:
        pass
    options = dict(spec.dataset.options)
    if spec.dataset.framing:
        options["framing"] = spec.dataset.framing
    return load_task(spec.dataset.name, seed=0, **options).kind


def _objective_values(spec: ExperimentSpec, finals: list[dict]) -> list[float] | None:
    values = []
    for obj in spec.search.objectives:
        xs = [f.get(obj.metric) for f in finals]
        xs = [x for x in xs if x is not None and np.isfinite(x)]
        if not xs:
            return None
        values.append(float(np.mean(xs)))
    return values


def _params_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


class _Run:
    """State of one run of an experiment (one call of run_experiment)."""

    def __init__(self, spec: ExperimentSpec, sink: ResultSink, progress, should_cancel,
                 run_id: str | None = None, retry: RetryPolicy | None = None, keep_workers_s: float = 0.0):
        self.spec, self.sink = spec, sink
        self.keep_workers_s = keep_workers_s
        self.label = run_label(run_id or getattr(sink, "experiment_id", None))
        base = retry or RetryPolicy()
        # unknown errors get the spec's max_failures retries; the budget and backoff are the service's
        self.retry = RetryPolicy(base.budget_s, base.base_s, base.max_delay_s,
                                 max_unknown=spec.execution.max_failures)
        self.failures: dict[str, int] = defaultdict(int)
        self.rounds = 0
        self.progress_cb, self.should_cancel = progress, should_cancel
        self.started = time.monotonic()
        self.dashboard_url: str | None = None
        self._cluster: ClusterShape | None = None
        self._member_bytes = 0.0
        self.kind = task_kind(spec)
        self.directions = spec.objective_directions(self.kind)
        self.studies = [VariantStudy(spec, i, self.directions) for i, v in enumerate(spec.variants)
                        if spec.needs_selection(v)]
        self.reps = len(spec.seed_list) * len(spec.split_list) * len(spec.val_list)
        self.total = spec.count_trials()
        self.done = 0
        self.packs_total = 0
        self.packs_done = 0
        self.best: dict | None = None
        self.cancelled = False
        self.phase = "connecting"
        self.packs_running = 0
        #: the run's writer actor: packs hand their results to it (started with the first round)
        self.writer = None

    # -- progress ----------------------------------------------------------------------
    def emit(self) -> None:
        if not self.progress_cb:
            return
        elapsed = time.monotonic() - self.started
        eta = None
        if self.done and self.done < self.total:
            eta = elapsed / self.done * (self.total - self.done)
        self.progress_cb(SearchProgress(self.total, self.done, self.packs_total, self.packs_done,
                                        self.best, eta, self.dashboard_url, elapsed, self.phase, self.packs_running))

    def on_activity(self, running: int, waiting: int) -> None:
        """The round's activity: packs training, packs waiting for resources."""
        self.packs_running = running
        self.phase = "running" if running else ("waiting for resources" if waiting else "starting")
        self.emit()

    def consider_best(self, number: int, value: float | None, params: dict, variant: str) -> None:
        if value is None or not np.isfinite(value):
            return
        maximize = self.directions[0] == "maximize"
        if self.best is None or (value > self.best["value"] if maximize else value < self.best["value"]):
            self.best = {"number": number, "value": float(value), "params": params, "variant": variant,
                         "metric": self.spec.search.objectives[0].metric}

    # -- resume --------------------------------------------------------------------------
    def resume(self) -> tuple[list[Configuration], dict[tuple, list[int]], int]:
        """Replay finished configurations into Optuna; return unfinished ones to re-run."""
        states = self.sink.trial_states()
        groups: dict[tuple, list[tuple[int, dict]]] = defaultdict(list)
        for number, state in states.items():
            if is_test_number(number):
                self.done += state["status"] in FINISHED
                continue
            groups[(state["variant"], _params_key(state["params"]))].append((number, state))
        by_name = {s.variant.name: s for s in self.studies}
        pending: list[Configuration] = []
        first_numbers: dict[tuple, list[int]] = {}
        for (variant, _), members in sorted(groups.items(), key=lambda kv: min(n for n, _ in kv[1])):
            study = by_name.get(variant)
            if study is None:
                continue
            params = members[0][1]["params"]
            finished = [s for _, s in members if s["status"] in FINISHED]
            for number, s in members:
                if s["status"] in FINISHED:
                    self.done += 1
                    self.consider_best(number, (s.get("final") or {}).get(self.spec.search.objectives[0].metric),
                                       params, variant)
            if len(finished) == self.reps:
                usable = [s.get("final") or {} for s in finished if s["status"] != "diverged"]
                study.replay(params, _objective_values(self.spec, usable))
            else:
                study.asked += 1
                config = Configuration(study.variant, dict(params))
                pending.append(config)
                first_numbers[(variant, _params_key(params))] = sorted(n for n, _ in members)
        next_number = max(states) + 1 if states else 0
        return pending, first_numbers, next_number

    # -- main loop -----------------------------------------------------------------------
    def round_quota(self) -> int:
        if self.spec.search.algorithm in ("grid", "random"):
            return 10**9
        if self.spec.search.round_size:
            return self.spec.search.round_size
        slots = self.parallel_slots()
        per_variant = max(s.target for s in self.studies)
        return max(2 * slots, math.ceil(per_variant / 4))

    def parallel_slots(self) -> int:
        """Packs the cluster can run at once (see :meth:`pack_plan`)."""
        return self.pack_plan().slots

    def pack_plan(self) -> PackPlan:
        """Pack sizes and resources for the cluster: its total CPUs and GPUs, not the ones free
        right now (actors of the previous round may still be releasing theirs)."""
        ex = self.spec.execution
        if self._cluster is None:
            self._cluster = cluster_shape()
            self._member_bytes = spec_member_bytes(self.spec)
        explicit = ex.pack_size if "pack_size" in ex.model_fields_set else None
        return plan_packs(self._cluster, cpus_per_pack=ex.cpus_per_pack, gpus_per_pack=ex.gpus_per_pack,
                          pack_size=explicit, member_bytes=self._member_bytes)

    def run(self) -> SearchSummary:
        self.emit()
        self.dashboard_url = ensure_ray(self.spec.execution.ray_address, should_cancel=self.should_cancel)
        try:
            return self.search()
        finally:
            if self.writer is not None:
                pack_pool.keep_writer(self.writer)
                self.writer = None
            pack_pool.release(self.keep_workers_s)

    def search(self) -> SearchSummary:
        check_resources(self.spec)
        pending, known_numbers, next_number = self.resume()
        self.phase = "starting"
        self.emit()
        n_failed = 0
        budget = self.spec.execution.time_budget_s
        while True:
            if self.should_cancel and self.should_cancel():
                self.cancelled = True
                break
            if budget is not None and time.monotonic() - self.started >= budget:
                break
            quota = self.round_quota()
            configs = list(pending)
            pending = []
            taken = {_params_key(c.params) for c in configs}
            for study in self.studies:
                configs.extend(study.ask(quota, taken))
            if not configs:
                break
            plans: list[TrialPlan] = []
            config_plans: list[tuple[Configuration, list[TrialPlan]]] = []
            for config in configs:
                numbers = known_numbers.get((config.variant.name, _params_key(config.params)))
                first = numbers[0] if numbers else next_number
                these = trial_plans(self.spec, config, first)
                if not numbers:
                    next_number += len(these)
                config_plans.append((config, these))
                plans.extend(these)
            ids = self.sink.register_trials(plans)
            states = self.sink.trial_states()
            to_run = [p for p in plans if states.get(p.number, {}).get("status") not in FINISHED]
            n_failed += self.execute(to_run, ids, budget)
            states = self.sink.trial_states()
            for config, these in config_plans:
                finals = [states[p.number].get("final") or {} for p in these
                          if states.get(p.number, {}).get("status") in ("completed", "pruned")]
                values = _objective_values(self.spec, finals) if len(finals) == len(these) else None
                study = next(s for s in self.studies if s.variant is config.variant)
                study.tell(config, values)
            if self.cancelled:
                break
        if not self.cancelled and (budget is None or time.monotonic() - self.started < budget):
            n_failed += self.test_phase(budget)
        return SearchSummary(self.total, self.done, n_failed, self.cancelled, self.best,
                             self.dashboard_url, time.monotonic() - self.started, self.pareto(),
                             dict(self.failures))

    def selected(self, variant_index: int) -> list[dict[str, Any]]:
        """The configurations of a variant to evaluate on the test split, chosen on validation
        values of finished selection trials only (a variant without a choice: its one configuration)."""
        variant = self.spec.variants[variant_index]
        if not self.spec.needs_selection(variant):
            return grid_configurations(self.spec, variant)[:1]
        groups: dict[tuple, list[dict]] = defaultdict(list)
        params_of: dict[tuple, dict] = {}
        for number, st in sorted(self.sink.trial_states().items()):
            if is_test_number(number) or st["variant"] != variant.name:
                continue
            key = _params_key(st["params"])
            params_of.setdefault(key, st["params"])
            groups[key].append(st)
        candidates = []
        for key, members in groups.items():
            finals = [m.get("final") or {} for m in members if m["status"] in ("completed", "pruned")]
            values = _objective_values(self.spec, finals) if len(finals) == self.reps else None
            candidates.append((params_of[key], values))
        return select_configurations(candidates, self.directions, self.spec.selected_per_variant(variant))

    def test_phase(self, budget: float | None) -> int:
        """Train the selected configuration(s) of every variant on each split's whole training
        part and evaluate them once on its test part."""
        plans: list[TrialPlan] = []
        for i in range(len(self.spec.variants)):
            for rank, params in enumerate(self.selected(i)):
                plans.extend(test_plans(self.spec, i, rank, params))
        if not plans:
            return 0
        ids = self.sink.register_trials(plans)
        states = self.sink.trial_states()
        to_run = [p for p in plans if states.get(p.number, {}).get("status") not in FINISHED]
        return self.execute(to_run, ids, budget, role="test")

    def execute(self, plans: list[TrialPlan], ids: dict[int, int], budget: float | None,
                role: str = "select") -> int:
        if not plans:
            return 0
        ex = self.spec.execution
        plan = self.pack_plan()
        objective = self.spec.search.objectives[0].metric if role == "select" else "test_metric"
        dataset = {**self.spec.dataset.model_dump(mode="json")}
        jobs = make_packs(plans, ids, pack_size=1 if ex.timing == "solo" else plan.pack_size, slots=plan.slots,
                          dataset=dataset,
                          objective=objective, maximize=self.directions[0] == "maximize",
                          asha=ex.asha.model_dump() if ex.scheduler == "asha" else None)
        if ex.inject_failure:
            target = ex.inject_failure.get("pack", 0)
            if 0 <= target < len(jobs):
                jobs[target].inject_failures = ex.inject_failure.get("times", 1)
                jobs[target].extra["inject_mode"] = "exit" if ex.inject_failure.get("exit") else "raise"
        self.packs_total += len(jobs)
        self.emit()
        number_of = {ids[p.number]: p for p in plans}

        def on_pack_done(outcome: PackOutcome) -> None:
            self.packs_done += 1
            if outcome.ok:
                self.done += outcome.members
                if outcome.best_trial_id is not None and role == "select":
                    plan = number_of[outcome.best_trial_id]
                    self.consider_best(plan.number, outcome.best_value, plan.params, plan.variant)
            self.emit()

        remaining = None if budget is None else max(1.0, budget - (time.monotonic() - self.started))
        self.rounds += 1
        try:
            outcomes = run_packs(
                jobs, self.sink, writer=self.result_writer,
                cpus_per_pack=plan.cpus_per_pack, gpus_per_pack=plan.gpus_per_pack,
                max_failures=ex.max_failures, slots=plan.slots,
                name=f"{self.label}-r{self.rounds}-{int(time.time() * 1000)}", should_cancel=self.should_cancel,
                on_pack_done=on_pack_done, time_budget_s=remaining, policy=self.retry,
                on_activity=self.on_activity)
        finally:
            self.phase, self.packs_running = "starting", 0
            if self.writer is not None:
                self.store_failures()
        failed = 0
        if self.should_cancel and self.should_cancel():
            self.cancelled = True
        states = self.sink.trial_states()
        for job, outcome in zip(jobs, outcomes):
            if self.cancelled:
                continue
            for trial_id, number in zip(job.trial_ids, job.trial_numbers):
                status = states.get(number, {}).get("status")
                if status not in FINISHED:
                    why = (outcome.error or "pack failed") if not outcome.ok else \
                        "the pack finished but its result was not stored (writer lost)"
                    if status != "failed":
                        self.sink.trial_failed(trial_id, why)
                    self.failures[why] += 1
                    failed += 1
        return failed

    def result_writer(self):
        """The run's writer actor, started on first use; packs hand their results to it."""
        if self.writer is None:
            self.writer = start_writer(self.sink, self.retry, reuse=pack_pool.take_writer())
        return self.writer

    def store_failures(self) -> None:
        """Wait for the writer to store every handed-off result; trials it could not store fail
        (with the reason), so a resume runs them again."""
        import ray

        try:
            failed = ray.get(self.writer.drain.remote())
        except Exception:  # noqa: BLE001 - the writer died: what it held is found missing by execute
            log.exception("the result writer was lost; the next round starts a new one")
            self.writer = None
            return
        for trial_id, why in failed.items():
            self.sink.trial_failed(trial_id, why)

    def pareto(self) -> list[dict]:
        if len(self.spec.search.objectives) < 2:
            return []
        front = []
        for study in self.studies:
            for t in study.study.best_trials:
                front.append({"variant": study.variant.name, "params": t.params, "values": list(t.values)})
        return front


def spec_member_bytes(spec: ExperimentSpec) -> float:
    """Estimated device memory of one member of ``spec``: its hidden size and batch on its
    dataset's shape (the Iris shape when the data cannot be read here)."""
    dataset = spec.dataset.model_dump(mode="json")
    try:
        task = load_job_task(_TaskRef(dataset))
        seq_len, n_inputs, n_train = task.x_train.shape[1], task.x_train.shape[2], task.x_train.shape[0]
        n_outputs = task.n_outputs
    except Exception:  # noqa: BLE001 - the estimate is a plan, never a reason to fail
        seq_len, n_inputs, n_outputs, n_train = 4, 1, 3, 128
    t = spec.training
    hidden = t.hidden
    for variant in spec.variants:
        searched = spec.space_for(variant).get("hidden")
        hidden = max([hidden, int(variant.params.get("hidden", 0)), *getattr(searched, "values", ()),
                      int(getattr(searched, "high", 0) or 0)])
    batch = min(t.batch_size or n_train, n_train)
    return member_bytes(hidden=hidden, seq_len=seq_len, n_inputs=n_inputs, n_outputs=n_outputs,
                        batch=batch, itemsize=8 if t.dtype == "float64" else 4)


@dataclass
class _TaskRef:
    """As much of a PackJob as ``load_job_task`` reads."""

    dataset: dict
    fold: int | None = None
    data: dict | None = None


def check_resources(spec: ExperimentSpec, nodes: list[dict[str, float]] | None = None) -> None:
    """Raise :class:`ResourceUnsatisfiable` when no node of the cluster (``nodes``, default: the
    alive nodes of the Ray cluster this process joined) can ever hold one pack
    (:func:`search.resources.resource_problem`)."""
    ex = spec.execution
    if nodes is None:
        nodes = joined_nodes() or []
    problem = resource_problem(nodes, cpus_per_pack=ex.cpus_per_pack, gpus_per_pack=ex.gpus_per_pack,
                               cuda_only=spec.training.cuda_only)
    if problem is not None:
        raise ResourceUnsatisfiable(str(problem))


def run_experiment(spec: ExperimentSpec, sink: ResultSink, *,
                   progress: Callable[[SearchProgress], None] | None = None,
                   should_cancel: Callable[[], bool] | None = None,
                   run_id: str | None = None, retry: RetryPolicy | None = None,
                   keep_workers_s: float = 0.0) -> SearchSummary:
    """Run (or resume) ``spec``, storing every trial through ``sink``. ``run_id`` (the experiment
    id) leads the names of the packs' tasks; ``retry`` sets the backoff and budget for pack
    failures; the pack workers stay ``keep_workers_s`` seconds after the run for the next one in
    this process (a long-lived runner), then end."""
    return _Run(spec, sink, progress, should_cancel, run_id, retry, keep_workers_s).run()
