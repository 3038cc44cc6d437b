"""What the store returns: typed views of experiments and trials, and its errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field

from service.store._values import _now

#: Columns ``list_trials`` may sort by.
TRIAL_SORT_COLUMNS: tuple[str, ...] = (
    "number", "id", "variant", "status", "seed", "fold", "attempt", "pack_size", "train_metric",
    "test_metric", "loss", "data_loss", "penalty", "sparsity_out", "sparsity_all", "weight_norm",
    "steps", "wall_time", "monotonicity_violations", "grad_norm_ratio", "started_at", "finished_at",
)


class NotFound(KeyError):
    """No experiment / trial with that id."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "not found"


class ExperimentRunning(RuntimeError):
    """The operation needs an experiment that is not running."""


class ExperimentView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    spec: dict[str, Any]
    status: str
    cancel_requested: bool
    runner_id: str | None = None
    heartbeat_at: datetime | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    n_trials_total: int | None = None
    n_trials_done: int = 0
    best: dict[str, Any] | None = None
    attempts: int = 0
    progress: dict[str, Any] | None = None
    ray_job_id: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def dashboard_url(self) -> str | None:
        """Ray dashboard of the cluster running the experiment, as its runner reported it."""
        return (self.progress or {}).get("dashboard_url")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def eta_s(self) -> float | None:
        """The driver's last ETA, less the time passed since it reported it."""
        progress = self.progress or {}
        if self.status != "running" or progress.get("eta_s") is None:
            return None
        since = (_now() - datetime.fromisoformat(progress["updated_at"])).total_seconds()
        return max(0.0, float(progress["eta_s"]) - since)


class TrialView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    experiment_id: str
    number: int
    variant: str
    params: dict[str, Any]
    config: dict[str, Any]
    seed: int
    fold: int | None = None
    pack_id: str | None = None
    pack_size: int | None = None
    attempt: int = 0
    status: str
    train_metric: float | None = None
    test_metric: float | None = None
    loss: float | None = None
    data_loss: float | None = None
    penalty: float | None = None
    sparsity_out: float | None = None
    sparsity_all: float | None = None
    weight_norm: float | None = None
    steps: int | None = None
    wall_time: float | None = None
    device: str | None = None
    node_id: str | None = None
    host: str | None = None
    device_name: str | None = None
    diagnostics: dict[str, Any] | None = None
    monotonicity_violations: int | None = None
    grad_norm_ratio: float | None = None
    diverged: bool | None = None
    final: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
