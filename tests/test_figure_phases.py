"""Curves draw the final test evaluation of the selected configuration, never its selection trials:
both share their parameters, so grouping by configuration alone mixed the two phases in one band."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ui_seed import GRID_SPEC, plans, record, spec_dict  # noqa: E402

from search.planning import TEST_NUMBER_BASE  # noqa: E402
from search.sink import TrialPlan  # noqa: E402

TEST_LOSS = 7.0  # a value no selection trace reaches


@pytest.fixture()
def store_with_phases(tmp_path):
    from service.store import Store

    store = Store(f"sqlite:///{tmp_path / 'phases.db'}")
    d = spec_dict(GRID_SPEC)
    selection = plans(GRID_SPEC)
    best = {"lr": 0.01, "lam": 0.0001, "alpha": 0.1}  # the seeded data's best configuration
    tests = [TrialPlan(TEST_NUMBER_BASE + i, v["name"], dict(best), seed, 0, {"variant": v["name"], "role": "test"})
             for i, (v, seed) in enumerate((v, s) for v in GRID_SPEC["variants"] for s in range(GRID_SPEC["seeds"]))]
    exp_id = store.create_experiment(d["name"], d, n_trials_total=len(selection) + len(tests))
    ids = store.register_trials(exp_id, selection + tests)
    for p in selection:
        store.record_trial(ids[p.number], record(p))
    for p in tests:
        r = record(p)
        r.trace["loss"] = np.full(len(r.trace["loss"]), TEST_LOSS)
        r.final.pop("val_metric")
        store.record_trial(ids[p.number], r)
    return store, exp_id


def test_best_mode_draws_only_the_test_evaluation(store_with_phases):
    from service.reports import figures, ui_data

    store, exp_id = store_with_phases
    curves = figures.curves(store, exp_id, ["loss"])
    assert sorted(curves) == ["GRU", "SL1-GRU"]
    for variant, (_, data) in curves.items():
        assert data["loss"].shape[0] == GRID_SPEC["seeds"], variant  # the test trials, one per seed
        assert np.all(data["loss"] == TEST_LOSS), variant
    chosen = ui_data.chosen_trials(store, exp_id)
    assert all(t.number >= TEST_NUMBER_BASE for ts in chosen.values() for t in ts)


def test_all_mode_labels_each_phase(store_with_phases):
    from service.reports import figures

    store, exp_id = store_with_phases
    curves = figures.curves(store, exp_id, ["loss"], mode="all")
    assert sorted(curves) == ["GRU (selection)", "GRU (test)", "SL1-GRU (selection)", "SL1-GRU (test)"]
    assert np.all(curves["GRU (test)"][1]["loss"] == TEST_LOSS)
    assert not np.any(curves["GRU (selection)"][1]["loss"] == TEST_LOSS)
    assert curves["GRU (selection)"][1]["loss"].shape[0] == 8 * GRID_SPEC["seeds"]
