"""Paired statistics against scipy.stats and hand-computed values on known data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from service.reports.paired import (default_references, holm, pair_values, paired_comparisons,
                                    paired_test, with_holm)

A = [0.96, 0.93, 0.98, 0.95, 0.97, 0.91, 0.99, 0.94, 0.96, 0.92]
B = [0.95, 0.94, 0.96, 0.93, 0.95, 0.92, 0.96, 0.93, 0.93, 0.90]


def test_paired_test_matches_scipy():
    r = paired_test(A, B)
    d = np.subtract(A, B)
    tt = stats.ttest_rel(A, B)
    ci = tt.confidence_interval(0.95)
    assert r.n == 10
    assert r.mean_diff == pytest.approx(d.mean(), abs=1e-15)
    assert (r.ci_low, r.ci_high) == (pytest.approx(ci.low, rel=1e-12), pytest.approx(ci.high, rel=1e-12))
    assert r.p_t == pytest.approx(tt.pvalue, rel=1e-12)
    assert r.p_wilcoxon == pytest.approx(stats.wilcoxon(A, B).pvalue, rel=1e-12)
    assert r.effect_size == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)
    assert r.min_p == pytest.approx(2 / 1024)


def test_known_wilcoxon_value():
    # all 6 differences positive, no ties: exact two-sided p = 2 / 2^6
    r = paired_test([1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0.5])
    assert r.p_wilcoxon == pytest.approx(2 / 64)


def test_identical_and_constant_differences():
    same = paired_test(A, A)
    assert (same.mean_diff, same.p_t, same.p_wilcoxon, same.effect_size) == (0.0, 1.0, 1.0, 0.0)
    shift = paired_test(np.add(B, 0.01), B)
    assert shift.p_t is None and shift.p_wilcoxon == pytest.approx(2 / 1024) and math.isinf(shift.effect_size)
    assert paired_test([1.0], [0.5]).verdict == "too few pairs"
    nan = paired_test([1.0, np.nan, 3.0, 4.0], [0.0, 1.0, 1.0, 1.0])
    assert nan.n == 3


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, None, 0.9]) == [1.0, None, 1.0]  # m = 2: min(1, 2 * 0.5), then the running max
    assert holm([0.2, 0.6]) == pytest.approx([0.4, 0.6])


def test_verdict_uses_holm_adjusted_wilcoxon():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=12)
    res = with_holm({"big": paired_test(ref + 1.0 + 0.1 * rng.normal(size=12), ref),
                     "none": paired_test(ref + 0.01 * rng.normal(size=12), ref)})
    assert res["big"].distinguishable and res["big"].verdict == "distinguishable"
    assert not res["none"].distinguishable and res["none"].verdict == "not distinguishable"
    assert res["big"].p_holm == pytest.approx(min(1.0, 2 * res["big"].p_wilcoxon)) or \
        res["big"].p_holm >= res["big"].p_wilcoxon
    # five pairs can never reach 0.05 with a two-sided Wilcoxon test
    few = with_holm({"x": paired_test([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])})["x"]
    assert few.min_p == pytest.approx(0.0625) and not few.distinguishable


def test_pairing_by_seed_and_split_and_default_references():
    trials = [{"variant": v, "seed": s, "split": sp, "test_metric": 0.9 + 0.01 * s + (0.02 if v == "SL1" else 0),
               "status": "completed"} for v in ("GRU", "SL1") for s in range(3) for sp in range(2)]
    trials.append({"variant": "SL1", "seed": 9, "split": 0, "test_metric": 0.0, "status": "completed"})  # unpaired
    trials.append({"variant": "GRU", "seed": 0, "split": 5, "test_metric": 0.0, "status": "failed"})
    a, b, keys = pair_values(trials, "SL1", "GRU", "test_metric")
    assert len(keys) == 6 and np.allclose(np.subtract(a, b), 0.02)
    refs = default_references([{"name": "RNN", "family": "rnn"}, {"name": "GRU", "family": "gru"},
                               {"name": "L1", "family": "gru", "reg": "l1"},
                               {"name": "SL1", "family": "gru", "reg": "sl1"},
                               {"name": "T", "family": "lstm", "reg": "tikhonov"}])
    assert refs == {"L1": "GRU", "SL1": "GRU"}
    res = paired_comparisons(trials, {"SL1": "GRU"}, "test_metric")
    assert res["SL1"].n == 6 and res["SL1"].mean_diff == pytest.approx(0.02)


def test_compare_rows_carry_paired_statistics(sqlite_url):
    """The store's comparison rows (API, CLI, Markdown, CSV) use test trials only and carry the
    paired comparison with the unregularized variant of the same family."""
    from search.planning import TEST_NUMBER_BASE
    from search.sink import TrialPlan, TrialRecord
    from service.reports import tables
    from service.reports.compare import compare
    from service.store import Store

    spec = {"name": "p", "dataset": {"name": "iris"}, "variants": [
        {"name": "GRU", "family": "gru"}, {"name": "SL1-GRU", "family": "gru", "reg": "sl1"}]}
    store = Store(sqlite_url)
    exp = store.create_experiment("p", spec)
    rng = np.random.default_rng(1)
    values = {}
    plans = []
    n = TEST_NUMBER_BASE
    for v in ("GRU", "SL1-GRU"):
        for seed in range(4):
            for split in range(3):
                plans.append(TrialPlan(n, v, {}, seed, split, {"role": "test"}))
                values[n] = 0.9 + 0.02 * rng.random() + (0.01 if v == "SL1-GRU" else 0)
                n += 1
    plans.append(TrialPlan(7, "GRU", {"lr": 0.1}, 0, 0, {"role": "select"}))  # a selection trial
    ids = store.register_trials(exp, plans)
    for p in plans:
        final = {"val_metric": 0.5} if p.number == 7 else {"test_metric": values[p.number], "train_metric": 1.0}
        store.record_trial(ids[p.number], TrialRecord(status="completed", final=final, diagnostics={}, trace={},
                                                       epochs={}, wall_time=1.0, device="cpu", pack_id="x",
                                                       pack_size=1))
    rows = {r.variant: r for r in compare(store, [exp])}
    assert rows["GRU"].n_trials == 12 and rows["GRU"].reference is None
    sl1 = rows["SL1-GRU"]
    a = [values[p.number] for p in plans if p.variant == "SL1-GRU"]
    b = [values[p.number] for p in plans if p.variant == "GRU" and p.number != 7]
    want = paired_test(a, b)
    assert sl1.reference == "GRU" and sl1.n_pairs == 12
    assert sl1.diff_mean == pytest.approx(want.mean_diff) and sl1.p_wilcoxon == pytest.approx(want.p_wilcoxon)
    assert sl1.p_holm == pytest.approx(want.p_wilcoxon) and sl1.verdict == "distinguishable"
    md = tables.markdown(list(rows.values()))
    assert "paired verdict" in md and "distinguishable" in md
    assert "p_holm" in tables.csv_text(list(rows.values())).splitlines()[0]
    by_config = compare(store, [exp], by_config=True)
    assert {r.role for r in by_config} == {"select", "test"}


def test_reference_variant_is_chosen_over_the_api_and_the_cli(sqlite_url, tmp_path):
    """`?reference=` and `rnnhpo compare --reference` pair every other variant with that one."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from cli.main import app as cli_app
    from search.planning import TEST_NUMBER_BASE
    from search.sink import TrialPlan, TrialRecord
    from service.api.app import create_app
    from service.settings import Settings
    from service.store import Store

    spec = {"name": "r", "dataset": {"name": "iris"}, "variants": [
        {"name": "RNN", "family": "rnn"}, {"name": "GRU", "family": "gru"},
        {"name": "SL1-GRU", "family": "gru", "reg": "sl1"}]}
    store = Store(sqlite_url)
    exp = store.create_experiment("r", spec)
    plans = [TrialPlan(TEST_NUMBER_BASE + 10 * i + seed, v, {}, seed, 0, {"role": "test"})
             for i, v in enumerate(("RNN", "GRU", "SL1-GRU")) for seed in range(5)]
    ids = store.register_trials(exp, plans)
    for p in plans:
        store.record_trial(ids[p.number], TrialRecord(
            status="completed", final={"test_metric": 0.9 + 0.01 * p.seed + (0.02 if p.variant == "RNN" else 0)},
            diagnostics={}, trace={}, epochs={}, wall_time=1.0, device="cpu", pack_id="x", pack_size=1))
    settings = Settings(database_url=sqlite_url, data_dir=tmp_path / "data")
    with TestClient(create_app(settings)) as client:
        default = {r["variant"]: r for r in client.get(f"/api/v1/experiments/{exp}/compare").json()["rows"]}
        chosen = {r["variant"]: r for r in
                  client.get(f"/api/v1/experiments/{exp}/compare", params={"reference": "RNN"}).json()["rows"]}
    assert default["SL1-GRU"]["reference"] == "GRU" and default["RNN"]["reference"] is None
    assert chosen["GRU"]["reference"] == "RNN" and chosen["SL1-GRU"]["reference"] == "RNN"
    assert chosen["GRU"]["diff_mean"] == pytest.approx(-0.02) and chosen["RNN"]["reference"] is None
    result = CliRunner().invoke(cli_app, ["compare", exp, "--reference", "RNN", "--json", "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    rows = {r["variant"]: r for r in __import__("json").loads(result.stdout)}
    assert rows["GRU"]["reference"] == "RNN" and rows["GRU"]["diff_mean"] == pytest.approx(-0.02)
