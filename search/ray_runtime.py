"""Start or join Ray once per process, in directories the project owns."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

_dashboard_url: str | None = None


def project_var_dir() -> Path:
    """``$RNNHPO_VAR_DIR`` or ``./var``: where the project keeps Ray's and Tune's files."""
    path = Path(os.environ.get("RNNHPO_VAR_DIR", "var")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def ray_temp_dir() -> Path:
    """Ray's session directory. Unix socket paths are limited to ~107 bytes, so a deep project
    path falls back to a per-user directory under the system temp dir."""
    configured = os.environ.get("RAY_TMPDIR") or os.environ.get("RNNHPO_RAY_TMPDIR")
    path = Path(configured) if configured else project_var_dir() / "ray"
    if len(str(path)) > 40:
        path = Path(tempfile.gettempdir()) / f"rnnhpo-ray-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def tune_storage_dir() -> Path:
    path = project_var_dir() / "ray_results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> str | None:
    """Start a local Ray (dashboard on) or join ``address`` / ``$RAY_ADDRESS``; idempotent.

    Returns the dashboard URL, or None when Ray runs headless.
    """
    global _dashboard_url
    import ray

    if ray.is_initialized():
        return _dashboard_url
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"ignore_reinit_error": True, "log_to_driver": False,
                    "logging_level": logging.WARNING, "configure_logging": True}
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if address:
        context = ray.init(address=address, **kwargs)
    else:
        context = ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                           _temp_dir=str(ray_temp_dir()), **kwargs)
    url = getattr(context, "dashboard_url", None)
    _dashboard_url = f"http://{url}" if url and not str(url).startswith("http") else (url or None)
    return _dashboard_url
