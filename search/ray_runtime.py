"""Start or join Ray once per process, in directories the project owns, safely.

* Local Ray (no address): the dashboard binds 127.0.0.1 and Ray's token authentication is on,
  with a token file the project creates (``<var>/ray/auth_token``, mode 0600) unless the operator
  configured ``RAY_AUTH_MODE`` / ``RAY_AUTH_TOKEN(_PATH)`` themselves. Ray 2.60's gRPC servers
  listen on the host's interface whatever address is asked for; the token is what keeps others
  out. Open the dashboard with that token (``ray get-auth-token`` prints it).
* Joining a cluster (``address``): the address is probed with a TCP connect first, and
  ``ray.init`` runs in a helper thread, so an unreachable address fails within
  ``connect_timeout_s`` with :class:`RayUnavailable` and a cancel is honoured while connecting.
* Ray's own SIGTERM handlers (``sys.exit`` from ``ray.init``, the C++ failure-signal handler of
  the driver's core worker) and Tune's SIGINT handler (which advises ``Tuner.restore``) are kept
  out: the process's own handlers stay in charge.
* Files are named from ids, never from an experiment's name: Ray's session directory and Tune's
  storage live under the project's var directory.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from search.faults import TransientFault

log = logging.getLogger("rnnhpo.ray")

_dashboard_url: str | None = None
_init_lock = threading.Lock()
_init_thread: threading.Thread | None = None
_init_result: dict = {}
_init_done = threading.Event()

#: Tune's SIGINT handler would swallow Ctrl-C and advise ``Tuner.restore``; ours decides.
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")


class RayUnavailable(TransientFault):
    """Ray could not be started or joined within the connect timeout."""


class RayConnectCancelled(Exception):
    """The caller cancelled while Ray was still starting or connecting."""


_var_dir: Path | None = None


def project_var_dir() -> Path:
    """Where the project keeps Ray's and Tune's files: the var directory the caller gave
    :func:`ensure_ray` (the service passes ``Settings.var_dir``), else ``$RNNHPO_VAR_DIR`` or
    ``./var`` for standalone use."""
    path = (_var_dir or Path(os.environ.get("RNNHPO_VAR_DIR", "var"))).resolve()
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


def dashboard_available() -> bool:
    """Whether Ray's dashboard can start here (``ray[default]`` installed). Without it Ray runs
    headless: one warning, and experiments have no dashboard link."""
    import ray._private.utils as ray_utils

    error = ray_utils.get_dashboard_dependency_error()
    if error:
        log.warning("Ray runs headless: the dashboard needs ray[default] (%s)", error)
    return not error


def run_label(run_id: str | None) -> str:
    """A name-safe label for a run (its packs' task names), from an id (never from a user's name)."""
    safe = "".join(ch for ch in (run_id or "") if ch.isascii() and (ch.isalnum() or ch in "-_"))[:64]
    return safe or f"run-{secrets.token_hex(6)}"


def configure_token_auth() -> Path | None:
    """Turn Ray's token authentication on for a Ray this process starts (unless the operator
    configured it); returns the token file, or None when the operator's settings stand."""
    if any(os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        return None
    path = project_var_dir() / "ray" / "auth_token"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    try:  # Ray read its config when it was imported: make it read the environment again
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # pragma: no cover - other Ray versions
        pass
    return path


def probe_address(address: str, timeout: float = 5.0) -> None:
    """Raise :class:`RayUnavailable` when ``address`` (``host:port`` or ``ray://host:port``) does
    not accept a TCP connection within ``timeout`` seconds. ``auto`` is not probed."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or (10001 if parsed.scheme == "ray" else 6379)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise RayUnavailable(f"Ray at {host}:{port} unreachable: {exc}") from None


def starts_local_ray(address: str | None) -> bool:
    """Whether :func:`ensure_ray` with ``address`` starts a Ray here (no address given, none in
    ``$RAY_ADDRESS``) rather than joining one."""
    return not (address or os.environ.get("RAY_ADDRESS"))


class _KeepSignalHandlers:
    """Restore SIGTERM/SIGINT handlers that ``ray.init`` replaces (main thread only)."""

    def __enter__(self):
        self.saved = {}
        if threading.current_thread() is threading.main_thread():
            self.saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def _init(kwargs: dict, done: threading.Event) -> None:
    import ray
    from ray._private import ray_constants

    # Ray's C++ failure-signal handler would take SIGTERM from the process's own handler (and end
    # the process without releasing anything): the driver goes without it; workers keep theirs
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    try:
        with _KeepSignalHandlers():
            _init_result["context"] = ray.init(**kwargs)
    except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
        _init_result["error"] = exc
        done.set()
        return
    done.set()
    # Ray's driver stops answering once the thread that called ray.init has ended (observed with
    # Ray 2.60): this thread lives as long as the process.
    threading.Event().wait()


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None,
               connect_timeout_s: float = 120.0,
               should_cancel: Callable[[], bool] | None = None,
               var_dir: Path | str | None = None) -> str | None:
    """Start a local Ray (dashboard on loopback, token auth on) or join ``address`` /
    ``$RAY_ADDRESS``; idempotent. Returns the dashboard URL, or None when Ray runs headless.

    ``var_dir`` is where Ray's session, its token and Tune's results go (kept for later calls).
    Raises :class:`RayUnavailable` when Ray is not up within ``connect_timeout_s`` and
    :class:`RayConnectCancelled` as soon as ``should_cancel()`` turns true while waiting.
    """
    global _dashboard_url, _init_thread, _var_dir
    import ray

    if var_dir is not None:
        _var_dir = Path(var_dir)
    if ray.is_initialized() and (_init_thread is None or _init_done.is_set()):
        return _dashboard_url
    address = None if starts_local_ray(address) else (address or os.environ["RAY_ADDRESS"])
    with _init_lock:
        if _init_thread is None or (_init_done.is_set() and not ray.is_initialized()):
            kwargs: dict = {"ignore_reinit_error": True, "log_to_driver": False,
                            "logging_level": logging.WARNING, "configure_logging": True}
            os.environ.setdefault("RAY_DEDUP_LOGS", "0")
            os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
            if address:
                probe_address(address, timeout=min(5.0, connect_timeout_s))
                kwargs["address"] = address
            else:
                configure_token_auth()
                kwargs.update(num_cpus=num_cpus, include_dashboard=dashboard_available(), dashboard_host="127.0.0.1",
                              _temp_dir=str(ray_temp_dir()))
            _init_result.clear()
            _init_done.clear()
            _init_thread = threading.Thread(target=_init, args=(kwargs, _init_done), name="rnnhpo-ray-init",
                                            daemon=True)
            _init_thread.start()
    deadline = time.monotonic() + connect_timeout_s
    while not _init_done.is_set():
        if should_cancel is not None and should_cancel():
            raise RayConnectCancelled("cancelled while Ray was starting")
        if time.monotonic() > deadline:
            raise RayUnavailable(f"Ray {'at ' + address if address else '(local)'} not up within "
                                 f"{connect_timeout_s:.0f} s")
        _init_done.wait(0.1)
    error = _init_result.get("error")
    if error is not None and not ray.is_initialized():
        raise RayUnavailable(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    url = getattr(_init_result.get("context"), "dashboard_url", None)
    _dashboard_url = f"http://{url}" if url and not str(url).startswith("http") else (url or _dashboard_url)
    return _dashboard_url
