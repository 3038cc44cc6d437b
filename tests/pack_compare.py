"""Comparing two PackResults of the same pack (the trainer engines' exactness tests)."""

from __future__ import annotations

import numpy as np


def _gap(x, y, relative: bool = False) -> float:
    """Largest |x - y| (relative to 1 + |x| when asked). Equal values (infinities of one sign too) and
    NaN against NaN count 0; any other pair with a NaN or an infinity counts inf (max() of a NaN
    would silently keep the old maximum)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(x - y)
        if relative:
            d = d / (1 + np.abs(x))
    d = np.where((x == y) | (np.isnan(x) & np.isnan(y)), 0.0, d)
    return float(np.where(np.isnan(d), np.inf, d).max(initial=0.0))


def max_result_diff(a, b) -> float:
    """Largest difference between two results of one pack: trace (relative to 1 + |value|), epoch
    records, weights; divergence and step counts must agree exactly."""
    err = 0.0
    for ma, mb in zip(a.members, b.members):
        assert set(ma.trace) == set(mb.trace)
        for c in ma.trace:
            assert len(ma.trace[c]) == len(mb.trace[c]), c
            err = max(err, _gap(ma.trace[c], mb.trace[c], relative=True))
        for c in ma.epochs:
            if c != "wall_time":
                err = max(err, _gap(ma.epochs[c], mb.epochs[c]))
        for name in ma.weights:
            err = max(err, _gap(ma.weights[name], mb.weights[name]))
        assert ma.diagnostics["diverged"] == mb.diagnostics["diverged"]
        assert ma.final["steps"] == mb.final["steps"]
    return err
