"""Turn a spec into trials: configurations per variant (grid, or Optuna samplers via ask/tell),
each repeated over seeds and folds.

Optuna owns the suggestions. To Optuna a trial is one *configuration* of one variant; its value is
the mean of the objective over the configuration's seeds and folds (the paper averages 10 runs).
To the user and the database every (configuration, seed, fold) is its own trial.
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


def trial_plans(spec: ExperimentSpec, config: Configuration, first_number: int) -> list[TrialPlan]:
    """The trials of one configuration: one per (seed, fold), numbered from ``first_number``."""
    plans = []
    number = first_number
    for seed in spec.seed_list:
        for fold in spec.fold_list:
            member = spec.member_config_for(config.variant, config.params, seed)
            pack = spec.pack_settings_for(config.variant, config.params)
            plans.append(TrialPlan(
                number=number, variant=config.variant.name, params=dict(config.params), seed=seed,
                fold=fold, config={"member": member.model_dump(mode="json"), "pack": pack}))
            number += 1
    return plans
