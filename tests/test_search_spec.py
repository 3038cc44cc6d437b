"""Experiment spec validation, planning and packing (no Ray, no database)."""

from __future__ import annotations

import itertools

import pytest
from pydantic import ValidationError

from search.packing import make_packs
from search.planning import Configuration, VariantStudy, grid_configurations, trial_plans
from search.spec import ExperimentSpec, load_spec

BASE = {
    "name": "t",
    "dataset": {"name": "iris"},
    "variants": [{"name": "GRU", "family": "gru"}, {"name": "SL1-GRU", "family": "gru", "reg": "sl1"}],
}


def spec(**overrides) -> ExperimentSpec:
    data = {**BASE, **overrides}
    return ExperimentSpec.model_validate(data)


def error_text(exc: ValidationError) -> str:
    return " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def test_grid_counts_configurations_times_seeds_and_folds():
    s = spec(search={"algorithm": "grid", "space": {
        "lr": {"type": "grid", "values": [1e-3, 1e-2]},
        "lam": {"type": "grid", "values": [1e-4, 1e-3, 1e-2]},
        "alpha": {"type": "choice", "values": [0.01, 0.1]}}},
        seeds=3, dataset={"name": "iris", "cv_folds": 2})
    # GRU (no regularizer) only searches lr; SL1-GRU searches lr x lam x alpha.
    assert s.configurations_per_variant(s.variants[0]) == 2
    assert s.configurations_per_variant(s.variants[1]) == 12
    # selection: configurations x seeds x validation folds; test: the selected one x seeds
    assert s.count_trials() == (2 + 12) * 3 * 2 + (1 + 1) * 3


def test_grid_configurations_are_exactly_the_cartesian_product():
    values = {"lr": [1e-3, 5e-3, 1e-2], "lam": [1e-5, 1e-4], "alpha": [0.001, 0.01]}
    s = spec(search={"algorithm": "grid", "space": {k: {"type": "grid", "values": v} for k, v in values.items()}})
    got = {tuple(sorted(c.items())) for c in grid_configurations(s, s.variants[1])}
    want = {tuple(sorted(zip(values, combo))) for combo in itertools.product(*values.values())}
    assert got == want and len(grid_configurations(s, s.variants[1])) == 12


@pytest.mark.parametrize("data, field", [
    ({"variants": [{"name": "x", "family": "transformer"}]}, "variants.0.family"),
    ({"search": {"algorithm": "grid", "space": {"lr": {"type": "log", "low": 1e-4, "high": 1e-2}}}}, "search.space.lr"),
    ({"search": {"algorithm": "tpe"}}, "search.n_trials"),
    ({"search": {"algorithm": "nsga2", "n_trials": 4}}, "search.objectives"),
    ({"search": {"algorithm": "grid", "space": {"learning_rate": {"type": "grid", "values": [1]}}}}, "learning_rate"),
    ({"training": {"alpha": -1}}, "training.alpha"),
    ({"seeds": 0}, "seeds"),
    ({"variants": [{"name": "a", "family": "gru"}, {"name": "a", "family": "rnn"}]}, "unique"),
])
def test_malformed_specs_name_the_field(data, field):
    with pytest.raises(ValidationError) as info:
        spec(**data)
    assert field in error_text(info.value)


def test_load_spec_rejects_non_mapping_and_bad_yaml():
    with pytest.raises(ValueError, match="mapping"):
        load_spec("- a\n- b\n")
    with pytest.raises(ValueError, match="not valid yaml"):
        load_spec("name: [unclosed\n")


def test_member_config_takes_training_defaults_variant_params_then_search_params():
    s = spec(training={"lr": 0.5, "lam": 0.1, "alpha": 0.2},
             variants=[{"name": "GRU", "family": "gru"},
                       {"name": "SL1", "family": "gru", "reg": "sl1", "params": {"alpha": 0.3, "hidden": 8}}])
    plain, sl1 = s.variants
    assert s.member_config_for(plain, {}, 0).lam == 0.0  # no regularizer: no penalty, whatever training says
    m = s.member_config_for(sl1, {"lr": 0.05}, seed=4)
    assert (m.lr, m.lam, m.alpha, m.seed, m.reg) == (0.05, 0.1, 0.3, 4, "sl1")
    assert s.pack_settings_for(sl1, {})["hidden"] == 8
    assert s.pack_settings_for(plain, {"batch_size": 16})["batch_size"] == 16


def test_trial_plans_number_every_seed_and_fold():
    s = spec(seeds=[3, 7], dataset={"name": "iris", "cv_folds": 3})
    plans = trial_plans(s, Configuration(s.variants[1], {"lr": 0.01}), first_number=10)
    assert [p.number for p in plans] == list(range(10, 16))
    assert {(p.seed, p.fold) for p in plans} == {(sd, f) for sd in (3, 7) for f in range(3)}
    assert all(p.config["member"]["lr"] == 0.01 and p.config["member"]["seed"] == p.seed for p in plans)


def test_packs_group_by_architecture_and_fold_and_respect_size():
    s = spec(seeds=5, dataset={"name": "iris", "cv_folds": 2},
             variants=[{"name": "GRU", "family": "gru"}, {"name": "RNN", "family": "rnn"},
                       {"name": "SL1", "family": "gru", "reg": "sl1"}])
    plans = []
    for v in s.variants:
        plans += trial_plans(s, Configuration(v, {}), len(plans))
    ids = {p.number: 100 + p.number for p in plans}
    jobs = make_packs(plans, ids, pack_size=4, slots=2, dataset={"name": "iris"}, objective="test_metric",
                      maximize=True)
    assert sorted(n for j in jobs for n in j.trial_numbers) == sorted(p.number for p in plans)
    by_number = {p.number: p for p in plans}
    for job in jobs:
        assert 1 <= job.size <= 4
        members = [by_number[n] for n in job.trial_numbers]
        assert len({m.fold for m in members}) == 1
        assert len({m.config["pack"]["family"] for m in members}) == 1
        assert job.trial_ids == [ids[n] for n in job.trial_numbers]
    # GRU and SL1-GRU share an architecture, so they may share packs; RNN never joins them.
    families = {j.variant_family for j in jobs}
    assert families == {"gru", "rnn"}


def test_small_workloads_split_to_fill_parallel_slots():
    s = spec(seeds=8, variants=[{"name": "GRU", "family": "gru"}])
    plans = trial_plans(s, Configuration(s.variants[0], {}), 0)
    jobs = make_packs(plans, {p.number: p.number for p in plans}, pack_size=64, slots=2,
                      dataset={"name": "iris"}, objective="test_metric", maximize=True)
    assert [j.size for j in jobs] == [4, 4]


def test_random_sampler_is_reproducible_and_grid_asks_each_point_once():
    s = spec(search={"algorithm": "random", "n_trials": 5, "sampler_seed": 3,
                     "space": {"lr": {"type": "log", "low": 1e-4, "high": 1e-1}}})
    a = [c.params for c in VariantStudy(s, 1, ["maximize"]).ask(10, set())]
    b = [c.params for c in VariantStudy(s, 1, ["maximize"]).ask(10, set())]
    assert a == b and len(a) == 5 and all(1e-4 <= p["lr"] <= 1e-1 for p in a)
    g = spec(search={"algorithm": "grid", "space": {"lr": {"type": "grid", "values": [1, 2, 3]}}})
    study = VariantStudy(g, 0, ["maximize"])
    first = study.ask(2, set())
    rest = study.ask(5, {tuple(sorted(first[0].params.items()))})
    assert [c.params["lr"] for c in first + rest] == [1, 2, 3]
    assert study.exhausted
