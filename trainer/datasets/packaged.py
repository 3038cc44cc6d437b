"""Datasets shipped inside installed packages (scikit-learn)."""

from __future__ import annotations

import numpy as np

from trainer.tasks import Task, register_task


@register_task("iris")
def load_iris(seed: int = 0, test_size: int = 45) -> Task:
    """Iris (150x4, 3 classes), stratified 105/45 split, standardised on the training split,
    each feature one time step of width 1 (T=4, D=1)."""
    from sklearn.datasets import load_iris as sk_load
    from sklearn.model_selection import train_test_split

    data = sk_load()
    x, y = data.data.astype(np.float64), data.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    mean, std = xtr.mean(axis=0), xtr.std(axis=0)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    return Task("iris", "classification", xtr[:, :, None], ytr, xte[:, :, None], yte, 3,
                meta={"framing": "features_as_steps"})
