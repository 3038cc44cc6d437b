"""The one reporting interface results travel up through.

The search layer never talks to a database: the caller (the service, or a test) hands it a
:class:`ResultSink`. The sink is used by the driver and by one writer actor per round on the
driver's node (:mod:`search.writer`), never inside the packs, so it must be picklable (hold a URL,
not a connection) and safe to call from several threads at once.

Traces travel as whole numpy arrays per trial, written once per trial in bulk; they never pass
through per-iteration ``tune.report`` calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args, runtime_checkable

import numpy as np

from trainer.result import EPOCH_COLUMNS, TRACE_COLUMNS

__all__ = ["EPOCH_COLUMNS", "TRACE_COLUMNS", "TRIAL_STATUSES", "FINISHED_TRIAL_STATUSES", "TrialPlan",
           "TrialRecord", "ResultSink", "TrialStatus"]

TrialStatus = Literal["pending", "running", "completed", "diverged", "failed", "pruned"]
#: Every trial status, declared once (the database, the API and the CLI use this tuple).
TRIAL_STATUSES: tuple[str, ...] = get_args(TrialStatus)
#: Statuses of a trial that has a result and is not run again on resume.
FINISHED_TRIAL_STATUSES: tuple[str, ...] = ("completed", "diverged")


@dataclass(frozen=True)
class TrialPlan:
    """One trial as the search layer plans it, before it runs.

    ``number`` is unique and stable within an experiment (resume relies on it); ``params`` are
    the searched hyperparameters; ``config`` the full member + pack settings as JSON-able dict.
    """

    number: int
    variant: str
    params: dict[str, Any]
    seed: int
    fold: int | None
    config: dict[str, Any]


@dataclass
class TrialRecord:
    """Everything one finished trial produced, as plain numbers and numpy arrays."""

    status: TrialStatus
    final: dict[str, float]
    diagnostics: dict[str, Any]
    trace: dict[str, np.ndarray]   # columns: trainer.result.TRACE_COLUMNS, equal lengths
    epochs: dict[str, np.ndarray]  # columns: trainer.result.EPOCH_COLUMNS, equal lengths
    wall_time: float               # the pack's wall time (shared by its members)
    device: str
    pack_id: str
    pack_size: int
    attempt: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class ResultSink(Protocol):
    """Where an experiment's trials and results are kept."""

    def register_trials(self, plans: list[TrialPlan]) -> dict[int, int]:
        """Create the trials that do not exist yet; return ``number -> trial id`` for all plans.

        Idempotent: registering the same numbers again returns the same ids and keeps results.
        """

    def finished_trials(self) -> dict[int, dict[str, Any]]:
        """``number -> {"status", "params", "final"}`` for trials already completed or diverged
        (used to resume an experiment and to replay results into Optuna)."""

    def trial_states(self) -> dict[int, dict[str, Any]]:
        """``number -> {"status", "variant", "params", "seed", "fold", "final"}`` for every
        registered trial (used to resume: finished ones are replayed, the rest re-run)."""

    def pack_started(self, trial_ids: list[int], pack_id: str, attempt: int, device: str,
                     placement: dict[str, Any] | None = None) -> int | None:
        """Mark these trials running in ``pack_id`` on ``device``; ``placement`` names the Ray
        node, host and device (``node_id``, ``host``, ``device_name``). Returns the attempt the
        sink counted (a trial started before and not finished is on its next attempt), or None
        to keep ``attempt``."""

    def record_trial(self, trial_id: int, record: TrialRecord) -> None:
        """Store a trial's result atomically, replacing any earlier trace of the same trial."""

    def trial_failed(self, trial_id: int, error: str) -> None:
        """Mark a trial failed after its retries ran out."""
