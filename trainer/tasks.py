"""The task interface: what a model is trained and evaluated on.

A :class:`Task` holds arrays exactly as the model is fed them (after sequence framing and
scaling): inputs of shape ``(N, T, D)`` and targets (class indices for classification,
``(N, n_outputs)`` floats for regression). Loaders are registered by name with
:func:`register_task`; :func:`load_task` is the one entry point the rest of the project uses.
The dataset catalogue (``trainer.datasets``) extends the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np

TaskKind = Literal["classification", "regression"]


@dataclass(frozen=True)
class Task:
    """Train/test arrays of one dataset, framed as sequences.

    ``x_*``: float arrays ``(N, T, D)``. ``y_*``: int64 class indices ``(N,)`` for
    classification, float ``(N, n_outputs)`` for regression.
    """

    name: str
    kind: TaskKind
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_outputs: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for part in ("x_train", "x_test"):
            arr = getattr(self, part)
            if arr.ndim != 3:
                raise ValueError(f"{self.name}: {part} must be (N, T, D), got shape {arr.shape}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"{self.name}: train and test differ in (T, D)")
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise ValueError(f"{self.name}: inputs and targets differ in length")

    @property
    def seq_len(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_inputs(self) -> int:
        return int(self.x_train.shape[2])


TaskLoader = Callable[..., Task]
_REGISTRY: dict[str, TaskLoader] = {}


def register_task(name: str) -> Callable[[TaskLoader], TaskLoader]:
    """Register ``loader(seed=..., **options) -> Task`` under ``name``."""

    def wrap(loader: TaskLoader) -> TaskLoader:
        _REGISTRY[name] = loader
        return loader

    return wrap


def task_names() -> list[str]:
    _ensure_catalogue()
    return sorted(_REGISTRY)


def load_task(name: str, *, seed: int = 0, **options: Any) -> Task:
    """Load the task ``name`` with the split seeded by ``seed``.

    Raises ``KeyError`` naming the known tasks when ``name`` is unknown.
    """
    _ensure_catalogue()
    try:
        loader = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return loader(seed=seed, **options)


def _ensure_catalogue() -> None:
    from trainer import datasets  # noqa: F401  (registers the catalogue)
