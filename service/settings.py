"""Configuration: one pydantic-settings object, read once at the edge and passed down.

Every field is an ``RNNHPO_*`` environment variable (``RNNHPO_DATABASE_URL``, ``RNNHPO_DATA_DIR``,
``RNNHPO_HOME``, ``RNNHPO_RAY_ADDRESS``, ``RNNHPO_API_TOKEN``, ...). Nothing else in the project
reads the environment: the CLI and the API build a :class:`Settings` and hand its values down.

The embedded default needs no configuration: everything lives under one per-user home,
``$XDG_DATA_HOME/rnnhpo`` (``~/.local/share/rnnhpo``), whatever the current directory:
the SQLite database ``rnnhpo.db``, dataset files in ``data/``, plots, Ray's files.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    """``$XDG_DATA_HOME/rnnhpo``, else ``~/.local/share/rnnhpo``."""
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "rnnhpo"


class Settings(BaseSettings):
    """Everything the API, the runner and the CLI read from the environment."""

    model_config = SettingsConfigDict(env_prefix="RNNHPO_", env_file=None, extra="ignore")

    home: Path = Field(default_factory=default_home,
                       description="Per-user state directory: default database, data, plots, Ray files")
    database_url: str = Field(
        default="", description="SQLAlchemy URL: SQLite (default HOME/rnnhpo.db) or postgresql+psycopg://...")
    data_dir: Path | None = Field(
        default=None, description="Dataset files (default HOME/data); specs cannot name files outside it")
    var_dir: Path | None = Field(
        default=None, description="Plots and Ray temp (default HOME)")
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster to join (e.g. 'auto', '10.0.0.5:6379'); unset starts a local Ray")
    ray_dashboard_url: str | None = Field(
        default=None, description="Public base URL of the Ray dashboard (links to experiments' job pages)")
    ray_jobs_address: str | None = Field(
        default=None,
        description="Ray Jobs API of the cluster (e.g. http://ray-head:8265): set, runners submit each "
                    "experiment as a Ray job `rnnhpo-<id>` and need no local Ray")
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token required by mutating endpoints when set")
    host: str = Field(default="127.0.0.1", description="Bind address of `rnnhpo serve`")
    port: int = Field(default=8000, ge=0, le=65535, description="Bind port of `rnnhpo serve`")
    max_body_bytes: int = Field(default=1_000_000, ge=1, description="Largest accepted request body")
    max_trials_per_experiment: int = Field(default=10_000, ge=1,
                                           description="Largest accepted search (spec.count_trials())")
    allow_test_hooks: bool = Field(
        default=False, description="Accept test hooks (execution.inject_failure) in specs: tests only")
    runner_in_process: bool = Field(
        default=False, description="Run the queue runner as a background thread of the API process")
    runner_poll_s: float = Field(default=1.0, gt=0, description="Idle runner: seconds between claims")
    runner_heartbeat_s: float = Field(default=5.0, gt=0, description="Seconds between heartbeats")
    runner_stale_after_s: float = Field(
        default=30.0, gt=0, description="A running experiment whose heartbeat is older is reclaimed")
    cancel_poll_s: float = Field(default=0.5, ge=0,
                                 description="Shortest interval between cancel checks in the database")
    retry_budget_s: float = Field(default=300.0, ge=0, description="Infrastructure faults (lost worker, "
                                  "database unreachable) are retried with backoff for this many seconds")
    retry_backoff_s: float = Field(default=1.0, gt=0, description="First retry delay; doubles per retry")
    retry_max_delay_s: float = Field(default=30.0, gt=0, description="Longest delay between retries")
    ray_connect_timeout_s: float = Field(default=120.0, gt=0,
                                         description="Starting or joining Ray fails after this many seconds")
    pack_worker_keep_s: float = Field(
        default=60.0, ge=0, description="An embedded runner keeps its pack workers (warm processes "
        "holding their CPUs/GPUs) this many seconds after an experiment for the next one; 0 ends them")
    stop_grace_s: float = Field(default=3.0, gt=0, description="On SIGTERM/SIGINT: seconds to stop packs "
                                "before the claim is released anyway and the process exits")
    min_free_disk_mb: float = Field(default=64.0, ge=0,
                                    description="/readyz is 503 when the SQLite file's disk has less free")

    @field_validator("api_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, v):
        return None if v in ("", None) else v

    @field_validator("ray_address", "ray_dashboard_url", "ray_jobs_address", mode="before")
    @classmethod
    def _empty_is_none(cls, v):
        return None if v in ("",) else v

    @model_validator(mode="after")
    def _derive_paths(self) -> "Settings":
        """Fill the paths left unset from ``home``; relative paths become absolute (Ray's worker
        processes do not run in this directory)."""
        self.home = self.home.expanduser().resolve()
        self.data_dir = (self.data_dir or self.home / "data").expanduser().resolve()
        self.var_dir = (self.var_dir or self.home).expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'rnnhpo.db'}"
        return self

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token is not None else None

    @property
    def plots_dir(self) -> Path:
        return self.var_dir / "plots"

    def database_label(self) -> str:
        """The database URL with any password hidden, for messages."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.database_url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - a malformed URL is shown as given, minus nothing secret
            return self.database_url.split("@")[-1]

    def ensure_dirs(self) -> None:
        """Create the data directory and, for SQLite, the database file's directory."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        url = self.database_url
        if url.startswith("sqlite:///") and ":memory:" not in url:
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
