"""Loading without scikit-learn: the bundled CSV reader and the numpy train/test split equal
scikit-learn's own loaders and train_test_split; ``rnnhpo train`` does not import sklearn/scipy/pandas."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from trainer.datasets.base import split_indices
from trainer.datasets.packaged import _sklearn_csv


@pytest.mark.parametrize("name,loader", [("iris", "load_iris"), ("wine", "load_wine"),
                                         ("breast_cancer_wdbc", "load_breast_cancer")])
def test_csv_reader_equals_sklearn_loader(name, loader):
    from sklearn import datasets

    ref = getattr(datasets, loader)()
    raw = _sklearn_csv(name)
    assert np.array_equal(raw.x, ref.data) and np.array_equal(raw.y, ref.target)
    assert list(raw.feature_names) == [str(f) for f in ref.feature_names]
    assert list(raw.classes) == [str(c) for c in ref.target_names]


@pytest.mark.parametrize("seed", [0, 1, 7, 123, 2024])
@pytest.mark.parametrize("labels", [
    np.repeat([0, 1, 2], 50),                                   # iris-like, balanced
    np.repeat([0, 1, 2], [59, 71, 48]),                         # wine-like, ties in the remainders
    np.random.default_rng(3).integers(0, 5, size=97),           # random counts
    np.array([0] * 10 + [1] * 3 + [2]),                         # a singleton class: unstratified
])
@pytest.mark.parametrize("fraction", [0.3, 0.2, 0.5])
def test_split_equals_sklearn_train_test_split(labels, seed, fraction):
    from sklearn.model_selection import train_test_split

    tr, te, stratified = split_indices(labels, "classification", fraction, seed)
    n_test = int(round(fraction * len(labels)))
    idx = np.arange(len(labels))
    try:
        ref_tr, ref_te = train_test_split(idx, test_size=n_test, stratify=labels, random_state=seed)
        ref_strat = True
    except ValueError:
        ref_tr, ref_te = train_test_split(idx, test_size=n_test, random_state=seed)
        ref_strat = False
    assert stratified == ref_strat
    assert np.array_equal(tr, ref_tr) and np.array_equal(te, ref_te)


def test_regression_split_equals_sklearn():
    from sklearn.model_selection import train_test_split

    y = np.linspace(0, 1, 61)
    tr, te, stratified = split_indices(y, "regression", 0.25, 5)
    ref_tr, ref_te = train_test_split(np.arange(61), test_size=15, random_state=5)
    assert not stratified and np.array_equal(tr, ref_tr) and np.array_equal(te, ref_te)


def test_train_command_imports_no_sklearn_scipy_pandas():
    code = ("import sys; from typer.testing import CliRunner; from cli.main import app; "
            "r = CliRunner().invoke(app, ['train', '--task', 'iris', '--epochs', '1', '--json']); "
            "assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('sklearn', 'scipy', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
