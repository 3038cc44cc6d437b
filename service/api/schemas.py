"""Response models of the API (request bodies are the search layer's ExperimentSpec)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.db.models import FINAL_EXPERIMENT_STATUSES

EXAMPLE_SPEC_YAML = """\
name: iris-quick
dataset: {name: iris}
variants:
  - {name: GRU, family: gru}
  - {name: SL1-GRU, family: gru, reg: sl1}
training: {epochs: 2, batch_size: 16, lr: 0.05}
search:
  algorithm: grid
  space:
    lam: {type: grid, values: [0.0003, 0.001]}
seeds: 2
execution: {pack_size: 8}
"""

EXAMPLE_SPEC_JSON: dict[str, Any] = {
    "name": "iris-quick",
    "dataset": {"name": "iris"},
    "variants": [{"name": "GRU", "family": "gru"}, {"name": "SL1-GRU", "family": "gru", "reg": "sl1"}],
    "training": {"epochs": 2, "batch_size": 16, "lr": 0.05},
    "search": {"algorithm": "grid", "space": {"lam": {"type": "grid", "values": [0.0003, 0.001]}}},
    "seeds": 2,
    "execution": {"pack_size": 8},
}


class Links(BaseModel):
    self: str = Field(examples=["/api/v1/experiments/3f2a9c"])
    trials: str = Field(examples=["/api/v1/experiments/3f2a9c/trials"])
    compare: str = Field(examples=["/api/v1/experiments/3f2a9c/compare"])
    cancel: str = Field(examples=["/api/v1/experiments/3f2a9c/cancel"])
    plots: dict[str, str] = Field(default_factory=dict)


def links_for(exp_id: str, prefix: str = "/api/v1") -> Links:
    base = f"{prefix}/experiments/{exp_id}"
    return Links(self=base, trials=f"{base}/trials", compare=f"{base}/compare", cancel=f"{base}/cancel",
                 plots={k: f"{base}/plots/{k}.png" for k in ("convergence", "sparsity", "grid", "pareto")})


class Progress(BaseModel):
    trials_total: int | None = Field(None, examples=[8], description="planned trials")
    trials_done: int = Field(0, examples=[5], description="trials finished (completed, diverged or failed)")
    fraction: float | None = Field(None, examples=[0.625])
    best: dict[str, Any] | None = Field(None, description="best trial so far (number, variant, params, objective)")
    elapsed_s: float | None = Field(None, examples=[12.5])
    eta_s: float | None = Field(None, examples=[7.5], description="estimated seconds left")
    phase: str | None = Field(None, examples=["running"],
                              description="running experiments only: connecting (to Ray) | starting | "
                                          "waiting for resources (its packs wait for CPUs/GPUs others hold) "
                                          "| running")
    packs_running: int | None = Field(None, examples=[2], description="packs training now (running experiments)")


class SubmitResponse(BaseModel):
    id: str = Field(examples=["3f2a9c1e0b7d4c58"])
    status: str = Field(examples=["queued"])
    name: str = Field(examples=["iris-quick"])
    trials_planned: int = Field(examples=[8])
    links: Links


class ExperimentOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "3f2a9c1e0b7d4c58", "name": "iris-quick", "status": "running", "cancel_requested": False,
        "created_at": "2026-01-01T12:00:00Z", "started_at": "2026-01-01T12:00:01Z", "finished_at": None,
        "error": None, "runner_id": "host:1234:ab12cd", "attempts": 1,
        "progress": {"trials_total": 8, "trials_done": 5, "fraction": 0.625, "best": None,
                     "elapsed_s": 12.5, "eta_s": 7.5, "phase": "running", "packs_running": 2},
        "dashboard_url": "http://127.0.0.1:8265",
        "links": links_for("3f2a9c1e0b7d4c58").model_dump()}]})

    id: str
    name: str
    status: str = Field(description="queued | running | succeeded | partial | failed | cancelled")
    cancel_requested: bool = False
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    error: str | None = None
    runner_id: str | None = None
    attempts: int | None = None
    progress: Progress
    dashboard_url: str | None = Field(None, description="Ray dashboard of the cluster running it")
    spec: dict[str, Any] | None = Field(None, description="the submitted spec (single-experiment view only)")
    links: Links


class ExperimentPage(BaseModel):
    items: list[ExperimentOut]
    total: int = Field(examples=[42])
    limit: int = Field(examples=[50])
    offset: int = Field(examples=[0])


class TrialPage(BaseModel):
    items: list[dict[str, Any]]
    total: int = Field(examples=[8])
    limit: int = Field(examples=[100])
    offset: int = Field(examples=[0])


def _dump(view: Any) -> dict[str, Any]:
    if view is None:
        return {}
    if isinstance(view, dict):
        return dict(view)
    if hasattr(view, "model_dump"):
        return view.model_dump()
    return dict(vars(view))


def experiment_out(view: Any, *, with_spec: bool = False, dashboard_url: str | None = None,
                   prefix: str = "/api/v1") -> ExperimentOut:
    d = _dump(view)
    total, done = d.get("n_trials_total"), int(d.get("n_trials_done") or 0)
    started, finished = d.get("started_at"), d.get("finished_at")
    elapsed = eta = None
    if isinstance(started, datetime):
        end = finished if isinstance(finished, datetime) else datetime.now(timezone.utc)
        if started.tzinfo is None:
            started = started.replace(tzinfo=timezone.utc)
        if end.tzinfo is None:
            end = end.replace(tzinfo=timezone.utc)
        elapsed = max(0.0, (end - started).total_seconds())
    if d.get("eta_s") is not None:
        eta = float(d["eta_s"])
    elif d.get("status") == "running" and elapsed is not None and total and done:
        eta = max(0.0, elapsed / done * (total - done))
    elif d.get("status") in FINAL_EXPERIMENT_STATUSES:
        eta = 0.0
    status = d.get("status") or "queued"
    live = (d.get("progress") or {}) if status == "running" else {}
    progress = Progress(trials_total=total, trials_done=done,
                        fraction=(done / total) if total else None, best=d.get("best"),
                        elapsed_s=elapsed, eta_s=eta, phase=live.get("phase"), packs_running=live.get("packs_running"))
    return ExperimentOut(
        id=str(d.get("id")), name=str(d.get("name") or ""), status=status,
        cancel_requested=bool(d.get("cancel_requested") or False),
        created_at=d.get("created_at"), started_at=d.get("started_at"), finished_at=d.get("finished_at"),
        heartbeat_at=d.get("heartbeat_at"), error=d.get("error"), runner_id=d.get("runner_id"),
        attempts=d.get("attempts"), progress=progress,
        dashboard_url=d.get("dashboard_url") or dashboard_url,
        spec=d.get("spec") if with_spec else None, links=links_for(str(d.get("id")), prefix))
