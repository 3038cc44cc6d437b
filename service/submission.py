"""Submitting an experiment: validate it completely at the edge, then queue it.

The one path from a spec (request body or file) to a ``queued`` row, used by
``POST /experiments``, ``rnnhpo submit`` and ``rnnhpo run``. Nothing is stored unless the whole
spec is valid; every problem is raised at once as a :class:`~service.validation.SpecError`.

When the cluster that will run it is known (:func:`known_nodes`), a pack resource request no
node can ever hold is refused here too, naming the field; otherwise the driver refuses it
within seconds of starting.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.settings import Settings
from service.validation import check_fits, spec_from_body


@dataclass(frozen=True)
class Submitted:
    """A queued experiment: its id, name and planned number of trials."""

    id: str
    name: str
    n_trials: int


def known_nodes(settings: Settings, spec, *, runs_here: bool) -> list[dict[str, float]] | None:
    """The nodes of the cluster that will run ``spec``, when known; None when not.

    * Ray Jobs mode (``ray_jobs_address``): the cluster's dashboard, asked with a short timeout.
    * Run by this process (``rnnhpo run``, ``serve`` with its runner): the Ray it joined; else,
      with no address configured, this machine (the local Ray it will start); else, with
      ``ray_address`` and ``ray_dashboard_url`` configured, that dashboard.
    * Otherwise (a runner elsewhere, a cluster without a dashboard URL): unknown.
    """
    from search.cluster import dashboard_nodes, joined_nodes, local_machine_nodes
    from search.ray_runtime import starts_local_ray

    if settings.ray_jobs_address:
        return dashboard_nodes(settings.ray_jobs_address)
    address = settings.ray_address or spec.execution.ray_address
    if runs_here:
        nodes = joined_nodes()
        if nodes is not None:
            return nodes
        if starts_local_ray(address):
            return local_machine_nodes()
    if settings.ray_address and settings.ray_dashboard_url:
        return dashboard_nodes(settings.ray_dashboard_url)
    return None


def validate(settings: Settings, raw: bytes, content_type: str | None, *, runs_here: bool = False):
    """``(spec, n_trials)`` of a completely valid spec, else :class:`SpecError` (every problem).
    ``runs_here``: this process will run it (see :func:`known_nodes`)."""
    spec, n_trials = spec_from_body(raw, content_type, data_dir=settings.data_dir,
                                    max_trials=settings.max_trials_per_experiment,
                                    allow_test_hooks=settings.allow_test_hooks)
    check_fits(spec, known_nodes(settings, spec, runs_here=runs_here))
    return spec, n_trials


def store_queued(store, spec, n_trials: int) -> Submitted:
    """Store a validated spec as a queued experiment."""
    exp_id = store.create_experiment(spec.name, spec.model_dump(mode="json"), n_trials_total=n_trials)
    return Submitted(exp_id, spec.name, n_trials)


def enqueue(store, settings: Settings, raw: bytes, content_type: str | None) -> Submitted:
    """Validate ``raw`` (JSON or YAML) completely and store it as a queued experiment (the
    cluster is known when this process's runner runs it: ``settings.runner_in_process``)."""
    return store_queued(store, *validate(settings, raw, content_type, runs_here=settings.runner_in_process))


def with_data_dir(spec, data_dir) -> object:
    """A copy of ``spec`` whose dataset loader reads files from ``data_dir`` (the deployment's
    data directory; specs name files relative to it and never carry it themselves)."""
    options = {**spec.dataset.options, "data_dir": str(data_dir)}
    return spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"options": options})})
