"""Generated function-approximation tasks of the SL1-GRU paper (eq. 40 and 41).

Both are 100 points with noise N(0, noise_std^2), noise_std = 0.01 (the paper's "N(0, 0.01)"
read as a standard deviation), seeded by the task seed. Inputs and targets are *not* scaled by
default (``scaling='none'``, ``scale_target=False``) so the eq. 40/41 values are fitted as-is.
The split is a seeded 80/20 permutation (the paper gives no split for these). ``funcapprox``
also carries a probe: the noiseless f on a dense grid, where every trained model's output is
recorded (``Task.x_probe``) so Fig. 3a's fitted curves can be drawn without the weights.
"""

from __future__ import annotations

import numpy as np

from trainer.datasets.base import DatasetSpec, Raw, cached_raw, register_dataset

#: Points of the dense grid over [-0.5, 3.5] on which funcapprox models' outputs are recorded
#: (the fitted curves of Fig. 3a).
PROBE_POINTS = 161


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


def _split(n: int, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return order[n_test:], order[:n_test]


def _funcapprox_raw(spec, *, seed: int, test_fraction: float, n_points: int = 100,
                    noise_std: float = 0.01, **_) -> Raw:
    def make() -> Raw:
        rng = np.random.default_rng(seed)
        x = np.linspace(-0.5, 3.5, int(n_points))
        y = oscillatory_function(x) + rng.normal(0.0, noise_std, size=len(x))
        grid = np.linspace(-0.5, 3.5, PROBE_POINTS)
        return Raw(x.reshape(-1, 1), y.reshape(-1, 1), "regression", feature_names=("x",),
                   target_names=("f",), predefined_split=_split(len(x), seed, test_fraction),
                   info={"equation": 40, "noise_std": noise_std},
                   probe=(grid.reshape(-1, 1), oscillatory_function(grid).reshape(-1, 1)))

    return cached_raw(("funcapprox", seed, test_fraction, int(n_points), float(noise_std)), make)


def _peaks_raw(spec, *, seed: int, test_fraction: float, n_points: int = 100,
               noise_std: float = 0.01, **_) -> Raw:
    def make() -> Raw:
        rng = np.random.default_rng(seed)
        side = int(round(np.sqrt(n_points)))
        g = np.linspace(-2.5, 2.5, side)
        gx, gy = np.meshgrid(g, g)
        x = np.stack([gx.ravel(), gy.ravel()], axis=1)
        y = peaks_function(x[:, 0], x[:, 1]) + rng.normal(0.0, noise_std, size=len(x))
        return Raw(x, y.reshape(-1, 1), "regression", feature_names=("x", "y"), target_names=("q",),
                   predefined_split=_split(len(x), seed, test_fraction),
                   info={"equation": 41, "noise_std": noise_std})

    return cached_raw(("peaks", seed, test_fraction, int(n_points), float(noise_std)), make)


_COMMON = dict(kind="regression", n_classes=None, licence="generated (no licence needed)",
               default_framing="single_step", test_fraction=0.2, default_scaling="none",
               default_scale_target=False, options={"n_points": 100, "noise_std": 0.01})

register_dataset(DatasetSpec(
    name="funcapprox", shape="100x1",
    source="generated: f(x) = 8 + 2e^{1-x^2} cos(2 pi x), x evenly spaced on [-0.5, 3.5] (paper eq. 40)",
    sequences="one step with one feature (x); window:k cuts the x-ordered series into windows",
    raw_loader=_funcapprox_raw, **_COMMON))

register_dataset(DatasetSpec(
    name="peaks", shape="100x2",
    source="generated: peaks q(x, y) on a 10x10 grid over [-2.5, 2.5]^2 (paper eq. 41)",
    sequences="one step with two features (x, y)",
    raw_loader=_peaks_raw, **_COMMON))


def load_funcapprox(seed: int = 0, **options) -> "Task":  # noqa: F821 - kept for old imports
    from trainer.tasks import load_task

    return load_task("funcapprox", seed=seed, **options)


def load_peaks(seed: int = 0, **options) -> "Task":  # noqa: F821
    from trainer.tasks import load_task

    return load_task("peaks", seed=seed, **options)
