"""Generated function-approximation tasks of the SL1-GRU paper (eq. 40 and 41)."""

from __future__ import annotations

import numpy as np

from trainer.tasks import Task, register_task


def oscillatory_function(x: np.ndarray) -> np.ndarray:
    """f(x) = 8 + 2 e^{1 - x^2} cos(2 pi x)  (eq. 40)."""
    return 8.0 + 2.0 * np.exp(1.0 - x**2) * np.cos(2.0 * np.pi * x)


def peaks_function(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The peaks function q(x, y)  (eq. 41)."""
    return (
        3.0 * (1.0 - x) ** 2 * np.exp(-(x**2) - (y + 1.0) ** 2)
        - 10.0 * (x / 5.0 - x**3 - y**5) * np.exp(-(x**2) - y**2)
        - np.exp(-((x + 1.0) ** 2) - y**2) / 3.0
    )


def _split(x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float) -> tuple:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


@register_task("funcapprox")
def load_funcapprox(seed: int = 0, n_points: int = 100, noise_std: float = 0.01,
                    test_fraction: float = 0.2) -> Task:
    """100 points uniform on [-0.5, 3.5], targets f(x) + N(0, noise_std^2); one step, one feature."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-0.5, 3.5, n_points)
    y = oscillatory_function(x) + rng.normal(0.0, noise_std, size=n_points)
    xs, ys = x.reshape(-1, 1, 1), y.reshape(-1, 1)
    xtr, ytr, xte, yte = _split(xs, ys, seed, test_fraction)
    return Task("funcapprox", "regression", xtr, ytr, xte, yte, 1,
                meta={"equation": 40, "noise_std": noise_std})


@register_task("peaks")
def load_peaks(seed: int = 0, n_points: int = 100, noise_std: float = 0.01,
               test_fraction: float = 0.2) -> Task:
    """A 10x10 grid on [-2.5, 2.5]^2, targets q(x, y) + noise; one step with two features."""
    rng = np.random.default_rng(seed)
    side = int(round(np.sqrt(n_points)))
    g = np.linspace(-2.5, 2.5, side)
    gx, gy = np.meshgrid(g, g)
    x = np.stack([gx.ravel(), gy.ravel()], axis=1)
    y = peaks_function(x[:, 0], x[:, 1]) + rng.normal(0.0, noise_std, size=len(x))
    xtr, ytr, xte, yte = _split(x.reshape(-1, 1, 2), y.reshape(-1, 1), seed, test_fraction)
    return Task("peaks", "regression", xtr, ytr, xte, yte, 1,
                meta={"equation": 41, "noise_std": noise_std})
