"""Turn a spec into trials: configurations per variant (grid, or Optuna samplers via ask/tell),
each repeated over seeds and splits.

Two roles of trial. *Selection* trials (``role: select``) train a configuration on the training
part of a split minus a validation part and are scored on that validation part (``val_metric``);
the test rows are not even loaded. To Optuna a trial is one *configuration* of one variant; its
value is the mean of the objective over the configuration's seeds, splits and validation folds.
*Test* trials (``role: test``) train each selected configuration on the whole training part of
every split, for every seed, and are evaluated once on the split's test part (``test_metric``).
A variant with a single configuration has nothing to select: it only gets test trials.
To the user and the database every (configuration, seed, split[, validation fold]) is its own trial.
Test trials are numbered from :data:`TEST_NUMBER_BASE`, so a trial's number says its role.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from search.sink import TrialPlan
from search.spec import Choice, ExperimentSpec, IntRange, LogUniform, Uniform, VariantSpec

#: Test-phase trials are numbered from here (selection trials below it).
TEST_NUMBER_BASE = 1_000_000_000

optuna.logging.set_verbosity(optuna.logging.WARNING)
logging.getLogger("optuna").setLevel(logging.WARNING)


@dataclass
class Configuration:
    """One suggested configuration of one variant, with its Optuna trial (if any)."""

    variant: VariantSpec
    params: dict[str, Any]
    optuna_trial: optuna.trial.Trial | None = None


def grid_configurations(spec: ExperimentSpec, variant: VariantSpec) -> list[dict[str, Any]]:
    """Every point of the variant's grid, in a fixed order (the last key varies fastest)."""
    space = spec.space_for(variant)
    keys = sorted(space)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(space[k].values for k in keys))]


def optuna_distributions(spec: ExperimentSpec, variant: VariantSpec) -> dict[str, optuna.distributions.BaseDistribution]:
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for key, dist in sorted(spec.space_for(variant).items()):
        if isinstance(dist, LogUniform):
            out[key] = optuna.distributions.FloatDistribution(dist.low, dist.high, log=True)
        elif isinstance(dist, Uniform):
            out[key] = optuna.distributions.FloatDistribution(dist.low, dist.high)
        elif isinstance(dist, IntRange):
            out[key] = optuna.distributions.IntDistribution(dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, Choice):
            out[key] = optuna.distributions.CategoricalDistribution(list(dist.values))
    return out


def make_sampler(spec: ExperimentSpec, variant_index: int) -> optuna.samplers.BaseSampler:
    seed = spec.search.sampler_seed + 7919 * variant_index
    algo = spec.search.algorithm
    if algo == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if algo == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if algo == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


class VariantStudy:
    """The Optuna study of one variant (ask/tell), plus its grid when the search is a grid."""

    def __init__(self, spec: ExperimentSpec, variant_index: int, directions: list[str]):
        self.spec = spec
        self.variant = spec.variants[variant_index]
        self.distributions = optuna_distributions(spec, self.variant)
        self.study = optuna.create_study(directions=directions, sampler=make_sampler(spec, variant_index))
        self.target = spec.configurations_per_variant(self.variant)
        self.grid = grid_configurations(spec, self.variant) if spec.search.algorithm == "grid" else None
        self.asked = 0

    @property
    def exhausted(self) -> bool:
        return self.asked >= self.target

    def replay(self, params: dict[str, Any], values: list[float] | None) -> None:
        """Tell Optuna a configuration finished in an earlier run (resume)."""
        self.asked += 1
        if self.grid is not None or values is None or any(not np.isfinite(v) for v in values):
            return
        known = {k: v for k, v in params.items() if k in self.distributions}
        if set(known) != set(self.distributions):
            return
        self.study.add_trial(optuna.trial.create_trial(
            params=known, distributions=self.distributions, values=values))

    def ask(self, n: int, taken: set[tuple]) -> list[Configuration]:
        """Up to ``n`` new configurations; ``taken`` holds already planned parameter tuples."""
        out: list[Configuration] = []
        while len(out) < n and not self.exhausted:
            if self.grid is not None:
                params = self.grid[self.asked]
                self.asked += 1
                if _key(params) in taken:
                    continue
                out.append(Configuration(self.variant, params))
                continue
            trial = self.study.ask(self.distributions)
            self.asked += 1
            out.append(Configuration(self.variant, dict(trial.params), trial))
        return out

    def tell(self, config: Configuration, values: list[float] | None) -> None:
        if config.optuna_trial is None:
            return
        if values is None or any(not np.isfinite(v) for v in values):
            self.study.tell(config.optuna_trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(config.optuna_trial, values)


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


def is_test_number(number: int) -> bool:
    return number >= TEST_NUMBER_BASE


def trial_plans(spec: ExperimentSpec, config: Configuration, first_number: int) -> list[TrialPlan]:
    """The selection trials of one configuration: one per (seed, split, validation fold), numbered
    from ``first_number``. Each trains on a split's training part minus its validation part."""
    plans = []
    number = first_number
    vals = spec.val_list
    for seed in spec.seed_list:
        for split in spec.split_list:
            for val in vals:
                data_seed, options = spec.validation_options(split, val)
                plans.append(_plan(spec, config.variant, config.params, seed, number,
                                   split * len(vals) + (val or 0),
                                   {"role": "select", "split": split, "val_fold": val,
                                    "data": {"seed": data_seed, "options": options}}))
                number += 1
    return plans


def test_plans(spec: ExperimentSpec, variant_index: int, rank: int, params: dict[str, Any]) -> list[TrialPlan]:
    """The test trials of the ``rank``-th selected configuration of a variant: one per (seed,
    split), trained on the split's whole training part and evaluated on its test part. Numbers
    are a function of (variant, rank, seed, split), so a resumed run plans the same trials."""
    variant = spec.variants[variant_index]
    seeds, splits = spec.seed_list, spec.split_list
    plans = []
    for i, seed in enumerate(seeds):
        for split in splits:
            number = TEST_NUMBER_BASE + ((variant_index * spec.search.select + rank) * len(seeds) + i) \
                * len(splits) + split
            data_seed, options = spec.dataset.split_options(split)
            plans.append(_plan(spec, variant, params, seed, number, split,
                               {"role": "test", "split": split, "rank": rank,
                                "data": {"seed": data_seed, "options": options}}))
    return plans


def _plan(spec: ExperimentSpec, variant: VariantSpec, params: dict[str, Any], seed: int, number: int,
          fold: int, extra: dict[str, Any]) -> TrialPlan:
    member = spec.member_config_for(variant, params, seed)
    pack = spec.pack_settings_for(variant, params)
    return TrialPlan(number=number, variant=variant.name, params=dict(params), seed=seed, fold=fold,
                     config={"member": member.model_dump(mode="json"), "pack": pack, **extra})


def select_configurations(candidates: list[tuple[dict[str, Any], list[float]]], directions: list[str],
                          k: int) -> list[dict[str, Any]]:
    """The configurations to evaluate on the test split, from their *validation* objective values.

    One objective: the ``k`` best (ties: the earlier candidate). Several: the Pareto set of the
    validation values, at most ``k`` of it, in order of the first objective. Test metrics are not
    an input: this function cannot read them.
    """
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in directions])
    scored = [(i, p, signs * np.asarray(v, dtype=float)) for i, (p, v) in enumerate(candidates)
              if v is not None and np.all(np.isfinite(v))]
    if len(directions) > 1:
        scored = [c for c in scored
                  if not any(np.all(o[2] >= c[2]) and np.any(o[2] > c[2]) for o in scored)]
    scored.sort(key=lambda c: (-c[2][0], c[0]))
    return [p for _, p, _ in scored[:k]]
