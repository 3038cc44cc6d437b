"""Figures a reader can trust: CI bands clipped to the metric's range, identical curves labelled,
faceted heatmaps, learning curves and the forest plot at their exact pixel sizes."""

from __future__ import annotations

import io

import matplotlib.image
import numpy as np
import pytest
from scipy import stats

from service import plots


def _size(png: bytes) -> tuple[int, int]:
    img = matplotlib.image.imread(io.BytesIO(png), format="png")
    return img.shape[1], img.shape[0]


def test_ci_band_is_the_t_interval_clipped_to_range():
    v = np.array([[0.0, 0.1], [0.0, 0.3], [0.3, 0.2]])
    mean, lo, hi = plots.ci_band(v)
    for j in range(2):
        ci = stats.t.interval(0.95, 2, loc=v[:, j].mean(), scale=stats.sem(v[:, j]))
        assert (lo[j], hi[j]) == (pytest.approx(ci[0]), pytest.approx(ci[1]))
    _, lo01, _ = plots.ci_band(v, (0.0, 1.0))
    assert lo01[0] == 0.0 and lo[0] < 0  # the unclipped band would dip below zero sparsity
    one = plots.ci_band(v[:1])
    assert np.array_equal(one[1], one[2])


def test_identical_curves_are_marked():
    a = np.linspace(1, 0, 50)
    styles = plots._styles({"GRU": a, "L2-GRU": a + 1e-4, "SL1-GRU": a * 0.9})
    assert styles["L2-GRU"][1] == "GRU" and styles["L2-GRU"][0]["marker"]
    assert styles["GRU"][1] is None and styles["SL1-GRU"][1] is None


def test_new_figures_have_their_pixel_size():
    curves = {v: (np.arange(20), {"train_metric": np.random.default_rng(i).uniform(0.8, 1, (5, 20)),
                                   "test_metric": np.full((5, 20), 0.9)}) for i, v in enumerate(("GRU", "SL1"))}
    assert _size(plots.learning_curves_png(curves, width=900, height=300)) == (900, 300)
    facets = [("alpha=0.001", np.arange(6.0).reshape(2, 3)), ("alpha=0.1", np.full((2, 3), np.nan))]
    assert _size(plots.grid_facets_png([1, 2, 3], [0.1, 0.2], facets, width=1000, height=400)) == (1000, 400)
    rows = [{"label": "SL1 - GRU", "mean_diff": 0.01, "ci_low": -0.01, "ci_high": 0.03,
             "verdict": "not distinguishable"}, {"label": "L1 - GRU", "mean_diff": None}]
    assert _size(plots.forest_png(rows, width=700, height=300)) == (700, 300)
    pts = np.array([[0.9, 0.1], [0.8, 0.5], [0.7, 0.2], [0.95, 0.0]])
    assert _size(plots.pareto_png(pts, ["a"] * 4, width=600, height=500)) == (600, 500)
