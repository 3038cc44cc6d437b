"""Splits as a replicate axis, and model selection that never reads the test split.

The split generator is checked on index level (stratified, disjoint, reproducible, k-fold
covering) and on loaded tasks (rows conserved). Selection is run end to end through the driver
with an in-process pack executor (no Ray): poisoning every test label leaves the selection
trials, their validation scores and the selected configuration unchanged, while the test
scores move.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

import search.driver as driver_mod
from search.execution import PackOutcome, run_pack_job
from search.planning import is_test_number, select_configurations
from search.spec import ExperimentSpec
from trainer.datasets.base import SPECS, kfold_indices, register_dataset, split_indices
from trainer.tasks import load_task


def iris_y() -> np.ndarray:
    return SPECS["iris"].raw_loader(SPECS["iris"], data_dir=None, seed=0, test_fraction=0.3).y


def test_random_splits_are_stratified_disjoint_and_reproducible():
    y = iris_y()
    seen = []
    for i in range(5):
        tr, te, strat = split_indices(y, "classification", 0.3, 10 + i)
        tr2, te2, _ = split_indices(y, "classification", 0.3, 10 + i)
        assert strat and np.array_equal(te, te2) and np.array_equal(tr, tr2)
        assert not set(tr) & set(te) and len(tr) + len(te) == len(y)
        assert Counter(y[te].tolist()) == {0: 15, 1: 15, 2: 15}  # 45 test rows, 15 per class
        seen.append(frozenset(te.tolist()))
    assert len(set(seen)) == 5  # different splits


def test_kfold_splits_cover_every_row_once():
    y = iris_y()
    folds, strat = kfold_indices(y, "classification", 5, 3)
    tests = np.concatenate([te for _, te in folds])
    assert strat and sorted(tests.tolist()) == list(range(len(y)))
    for tr, te in folds:
        assert not set(tr) & set(te)
        assert Counter(y[te].tolist()) == {0: 10, 1: 10, 2: 10}


def _rows(x: np.ndarray) -> Counter:
    return Counter(map(tuple, x.reshape(len(x), -1).round(6).tolist()))


@pytest.mark.parametrize("splits", [{"kind": "random", "n": 3, "seed": 4}, {"kind": "kfold", "n": 3, "seed": 4}])
def test_spec_splits_and_validation_carve(splits):
    spec = ExperimentSpec.model_validate({
        "name": "s", "dataset": {"name": "iris", "options": {"scaling": "none"}, "splits": splits},
        "variants": [{"name": "GRU", "family": "gru"}]})
    everything = _rows(np.concatenate([load_task("iris", seed=0, scaling="none").x_train,
                                       load_task("iris", seed=0, scaling="none").x_test]))
    test_parts = Counter()
    for split in spec.split_list:
        seed, opts = spec.dataset.split_options(split)
        task = load_task("iris", seed=seed, **opts)
        assert _rows(task.x_train) + _rows(task.x_test) == everything
        test_parts += _rows(task.x_test)
        vseed, vopts = spec.validation_options(split, None)
        sel = load_task("iris", seed=vseed, **vopts)
        # selection sees exactly the split's training rows, cut in two; no test row
        assert _rows(sel.x_train) + _rows(sel.x_test) == _rows(task.x_train)
        assert len(sel.x_test) == round(0.2 * len(task.x_train))
    if splits["kind"] == "kfold":
        assert test_parts == everything


def test_select_configurations_single_and_pareto():
    cands = [({"lr": 1}, [0.9]), ({"lr": 2}, [0.95]), ({"lr": 3}, None), ({"lr": 4}, [0.95])]
    assert select_configurations(cands, ["maximize"], 2) == [{"lr": 2}, {"lr": 4}]
    assert select_configurations(cands, ["minimize"], 1) == [{"lr": 1}]
    multi = [({"a": 1}, [0.9, 0.1]), ({"a": 2}, [0.8, 0.5]), ({"a": 3}, [0.7, 0.4]), ({"a": 4}, [0.95, 0.0])]
    assert select_configurations(multi, ["maximize", "maximize"], 10) == [{"a": 4}, {"a": 1}, {"a": 2}]


# ------------------------------------------------------------------ end to end, in process
class MemorySink:
    def __init__(self):
        self.trials: dict[int, dict] = {}
        self.ids: dict[int, int] = {}

    def register_trials(self, plans):
        for p in plans:
            if p.number not in self.ids:
                self.ids[p.number] = len(self.ids) + 1
                self.trials[p.number] = {"status": "pending", "variant": p.variant, "params": p.params,
                                         "seed": p.seed, "fold": p.fold, "final": None, "config": p.config}
        return {p.number: self.ids[p.number] for p in plans}

    def finished_trials(self):
        return {n: t for n, t in self.trials.items() if t["status"] in ("completed", "diverged")}

    def trial_states(self):
        return {n: dict(t) for n, t in self.trials.items()}

    def pack_started(self, trial_ids, pack_id, attempt, device, *rest, **kw):
        pass

    def record_trial(self, trial_id, record, *rest, **kw):
        number = next(n for n, i in self.ids.items() if i == trial_id)
        self.trials[number].update(status=record.status, final=dict(record.final), extra=record.extra)

    def trial_failed(self, trial_id, error, *rest, **kw):
        pass


def run_in_process(spec: ExperimentSpec, monkeypatch) -> MemorySink:
    def run_packs(jobs, sink, *, on_pack_done=None, **_):
        out = []
        for job in jobs:
            s = run_pack_job(job, sink)
            o = PackOutcome(job.pack_id, True, None, s["best_value"], s["best_trial_id"], job.size)
            if on_pack_done:
                on_pack_done(o)
            out.append(o)
        return out

    from search.cluster import ClusterShape

    monkeypatch.setattr(driver_mod, "run_packs", run_packs)
    monkeypatch.setattr(driver_mod, "ensure_ray", lambda *a, **k: None)
    monkeypatch.setattr(driver_mod, "check_resources", lambda *a, **k: None)
    monkeypatch.setattr(driver_mod, "cluster_shape", lambda *a, **k: ClusterShape(1.0, 0.0, None))
    sink = MemorySink()
    driver_mod.run_experiment(spec, sink)
    return sink


def _poisoned_iris():
    base = SPECS["iris"]

    def raw_loader(spec, *, data_dir=None, seed=0, test_fraction=0.3, **kw):
        raw = base.raw_loader(base, data_dir=data_dir, seed=seed, test_fraction=test_fraction, **kw)
        # the clean split, fixed (a stratified split of poisoned labels would pick other rows)
        tr, te, _ = split_indices(raw.y, "classification", test_fraction, seed)
        y = raw.y.copy()
        y[te] = (y[te] + 1) % 3  # every test label wrong
        return dataclasses.replace(raw, y=y, predefined_split=(tr, te))

    if "iris_poisoned" not in SPECS:
        register_dataset(dataclasses.replace(base, name="iris_poisoned", raw_loader=raw_loader))


def test_poisoned_test_labels_do_not_change_selection(monkeypatch):
    _poisoned_iris()
    results = {}
    for name in ("iris", "iris_poisoned"):
        spec = ExperimentSpec.model_validate({
            "name": name, "dataset": {"name": name, "splits": {"kind": "random", "n": 2, "seed": 1}},
            "variants": [{"name": "GRU", "family": "gru"}],
            "training": {"epochs": 4, "hidden": 6, "batch_size": 16, "dtype": "float64", "device": "cpu"},
            "search": {"algorithm": "grid", "space": {"lr": {"type": "grid", "values": [0.001, 0.03, 0.3]}}},
            "seeds": 2, "execution": {"pack_size": 64}})
        results[name] = run_in_process(spec, monkeypatch).trials
    clean, poisoned = results["iris"], results["iris_poisoned"]
    assert clean.keys() == poisoned.keys()
    select = [n for n in clean if not is_test_number(n)]
    test = [n for n in clean if is_test_number(n)]
    assert len(select) == 3 * 2 * 2 and len(test) == 2 * 2
    for n in select:  # identical selection inputs: the test rows were never loaded
        assert clean[n]["status"] == "completed" and "test_metric" not in clean[n]["final"]
        assert clean[n]["final"]["val_metric"] == poisoned[n]["final"]["val_metric"]
    assert {clean[n]["params"]["lr"] for n in test} == {poisoned[n]["params"]["lr"] for n in test}
    assert len({clean[n]["params"]["lr"] for n in test}) == 1
    # ... and the poison did reach the test evaluation
    assert np.mean([poisoned[n]["final"]["test_metric"] for n in test]) < \
        np.mean([clean[n]["final"]["test_metric"] for n in test])
    assert {clean[n]["config"]["split"] for n in test} == {0, 1}
