"""Comparing two PackResults of the same pack (the trainer engines' exactness tests)."""

from __future__ import annotations

import numpy as np


def max_result_diff(a, b) -> float:
    """Largest difference between two results of one pack: trace (relative to 1 + |value|), epoch
    records, weights; divergence and step counts must agree exactly."""
    err = 0.0
    for ma, mb in zip(a.members, b.members):
        assert set(ma.trace) == set(mb.trace)
        for c in ma.trace:
            assert len(ma.trace[c]) == len(mb.trace[c]), c
            err = max(err, float(np.max(np.abs(ma.trace[c] - mb.trace[c]) / (1 + np.abs(ma.trace[c])), initial=0)))
        for c in ma.epochs:
            if c != "wall_time":
                err = max(err, float(np.max(np.abs(ma.epochs[c] - mb.epochs[c]), initial=0)))
        for name in ma.weights:
            err = max(err, float(np.max(np.abs(ma.weights[name] - mb.weights[name]))))
        assert ma.diagnostics["diverged"] == mb.diagnostics["diverged"]
        assert ma.final["steps"] == mb.final["steps"]
    return err
