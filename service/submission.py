"""Submitting an experiment: validate it completely at the edge, then queue it.

The one path from a spec (request body or file) to a ``queued`` row, used by
``POST /experiments``, ``rnnhpo submit`` and ``rnnhpo run``. Nothing is stored unless the whole
spec is valid; every problem is raised at once as a :class:`~service.validation.SpecError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.settings import Settings
from service.validation import spec_from_body


@dataclass(frozen=True)
class Submitted:
    """A queued experiment: its id, name and planned number of trials."""

    id: str
    name: str
    n_trials: int


def validate(settings: Settings, raw: bytes, content_type: str | None):
    """``(spec, n_trials)`` of a completely valid spec, else :class:`SpecError` (every problem)."""
    return spec_from_body(raw, content_type, data_dir=settings.data_dir,
                          max_trials=settings.max_trials_per_experiment,
                          allow_test_hooks=settings.allow_test_hooks)


def store_queued(store, spec, n_trials: int) -> Submitted:
    """Store a validated spec as a queued experiment."""
    exp_id = store.create_experiment(spec.name, spec.model_dump(mode="json"), n_trials_total=n_trials)
    return Submitted(exp_id, spec.name, n_trials)


def enqueue(store, settings: Settings, raw: bytes, content_type: str | None) -> Submitted:
    """Validate ``raw`` (JSON or YAML) completely and store it as a queued experiment."""
    return store_queued(store, *validate(settings, raw, content_type))


def with_data_dir(spec, data_dir) -> object:
    """A copy of ``spec`` whose dataset loader reads files from ``data_dir`` (the deployment's
    data directory; specs name files relative to it and never carry it themselves)."""
    options = {**spec.dataset.options, "data_dir": str(data_dir)}
    return spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"options": options})})
