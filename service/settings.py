"""Service configuration: one pydantic-settings class, every field an ``RNNHPO_*`` env var.

``RNNHPO_DATABASE_URL``, ``RNNHPO_RAY_ADDRESS``, ``RNNHPO_DATA_DIR``, ``RNNHPO_API_TOKEN``,
``RNNHPO_HOST``, ``RNNHPO_PORT``, ... (see :class:`Settings`). The embedded default needs no
configuration at all: a SQLite file and the data directory under ``./var`` and a local Ray.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Project-owned state directory of the embedded default (git-ignored).
VAR_DIR = Path("var")


class Settings(BaseSettings):
    """Everything the API, the runner and the CLI read from the environment."""

    model_config = SettingsConfigDict(env_prefix="RNNHPO_", env_file=None, extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{VAR_DIR / 'rnnhpo.db'}",
        description="SQLAlchemy URL: SQLite (embedded default) or postgresql+psycopg://...",
    )
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster to join (e.g. 'auto', '10.0.0.5:6379', 'ray://head:10001'); "
                    "unset starts a local Ray in the runner process",
    )
    ray_dashboard_url: str | None = Field(
        default=None, description="Dashboard URL to show when the runner cannot report one")
    data_dir: Path = Field(default=VAR_DIR / "data",
                           description="Root for dataset files; specs cannot name files outside it")
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token required by mutating endpoints when set")
    host: str = Field(default="127.0.0.1", description="Bind address of `rnnhpo serve`")
    port: int = Field(default=8000, ge=0, le=65535, description="Bind port of `rnnhpo serve`")
    max_body_bytes: int = Field(default=1_000_000, ge=1, description="Largest accepted request body")
    max_trials_per_experiment: int = Field(default=10_000, ge=1,
                                           description="Largest accepted search (spec.count_trials())")
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
    stop_grace_s: float = Field(default=3.0, gt=0, description="On SIGTERM/SIGINT: seconds to stop packs "
                                "before the claim is released anyway and the process exits")
    min_free_disk_mb: float = Field(default=64.0, ge=0,
                                    description="/readyz is 503 when the SQLite file's disk has less free")

    @field_validator("api_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, v):
        return None if v in ("", None) else v

    @field_validator("ray_address", "ray_dashboard_url", mode="before")
    @classmethod
    def _empty_is_none(cls, v):
        return None if v in ("",) else v

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token is not None else None

    def ensure_dirs(self) -> None:
        """Create the data directory and, for SQLite, the database file's directory."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        url = self.database_url
        if url.startswith("sqlite:///") and ":memory:" not in url:
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
