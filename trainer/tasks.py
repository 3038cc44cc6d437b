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
    #: inputs ``(P, T, D)`` framed as ``x_*`` on which the trained models' outputs are recorded
    #: (``meta["probe"]`` holds their first raw feature and the noiseless target), or None
    x_probe: np.ndarray | None = None

    def __post_init__(self) -> None:
        for part in ("x_train", "x_test"):
            arr = getattr(self, part)
            if arr.ndim != 3:
                raise ValueError(f"{self.name}: {part} must be (N, T, D), got shape {arr.shape}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"{self.name}: train and test differ in (T, D)")
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise ValueError(f"{self.name}: inputs and targets differ in length")
        if self.x_probe is not None and self.x_probe.shape[1:] != self.x_train.shape[1:]:
            raise ValueError(f"{self.name}: x_probe must be (P, T, D) like x_train")

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

    Options every catalogue dataset accepts (see ``docs/datasets.md``): ``framing``
    (``features_as_steps`` | ``single_step`` | ``rows`` | ``window:k``), ``scaling``
    (``standard`` | ``minmax`` | ``none``), ``scale_target`` (regression), ``test_fraction``,
    ``fold`` + ``n_folds`` (+ ``fold_seed``, default ``seed``): return fold ``fold`` of a k-fold
    split of the training split as train/test, with scaling refitted on the fold's training
    part; ``data_dir`` for local-file datasets. Dataset-specific options are listed in the
    catalogue. Raises ``KeyError`` naming the known tasks when ``name`` is unknown and
    ``trainer.datasets.DatasetError`` (a ``ValueError``) for a missing/corrupt file or bad option.
    """
    _ensure_catalogue()
    try:
        loader = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return loader(seed=seed, **options)


def cv_folds(task: Task, n_folds: int, seed: int, *, refit: bool = True) -> list[Task]:
    """k-fold cross-validation splits of ``task``'s *training* split (the paper's Fig. 5).

    Fold ``i`` is a :class:`Task` whose train part is the other folds and whose test part is
    fold ``i`` of ``task.x_train``; ``meta`` records ``fold``, ``n_folds`` and ``fold_seed``.
    Folds are seeded by ``seed`` and stratified for classification (when every class has at
    least ``n_folds`` members; chronological contiguous blocks for ``window:k`` framings).

    Scaling: with ``refit=True`` (default) and a task that came from :func:`load_task`, each
    fold is reloaded as ``load_task(name, seed=task_seed, fold=i, n_folds=n_folds,
    fold_seed=seed, **options)``, so imputation and scaling are refitted on the fold's training
    part only (no leakage from the held-out fold). Otherwise (``refit=False`` or a hand-made
    task) the task's arrays are cut as they are: they keep the scaling fitted on the whole
    training split, which includes the held-out fold. Both paths give the same partition.
    """
    from trainer.datasets.base import SPECS, kfold_indices

    meta = task.meta or {}
    if refit and meta.get("dataset") == task.name and task.name in SPECS and "fold" not in meta:
        return [load_task(task.name, seed=meta.get("seed", 0), fold=i, n_folds=n_folds,
                          fold_seed=seed, **meta.get("options", {})) for i in range(n_folds)]
    n = len(task.y_train)
    if meta.get("split") == "chronological":
        blocks = np.array_split(np.arange(n), n_folds)
        folds = [(np.concatenate([b for j, b in enumerate(blocks) if j != i]), blocks[i])
                 for i in range(n_folds)]
    else:
        folds, _ = kfold_indices(task.y_train, task.kind, n_folds, seed)
    out = []
    for i, (tr, te) in enumerate(folds):
        m = dict(meta, fold=i, n_folds=n_folds, fold_seed=seed, split="cv",
                 n_train=len(tr), n_test=len(te), refit=False)
        out.append(Task(task.name, task.kind, task.x_train[tr], task.y_train[tr],
                        task.x_train[te], task.y_train[te], task.n_outputs, meta=m))
    return out


def _ensure_catalogue() -> None:
    from trainer import datasets  # noqa: F401  (registers the catalogue)
