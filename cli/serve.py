"""CLI commands of the service: ``serve`` (the REST API, with a queue runner in-process unless
``--no-runner``) and ``runner`` (more runners on one database)."""

from __future__ import annotations

import ipaddress
import logging
from typing import Annotated, Optional

import typer

from cli.common import DbOpt, err_console as err
from cli.common import fail
from cli.common import settings as _settings


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(host: Annotated[Optional[str], typer.Option(help="bind address (RNNHPO_HOST, default 127.0.0.1)")] = None,
          port: Annotated[Optional[int], typer.Option(help="port (RNNHPO_PORT, default 8000)")] = None,
          no_runner: Annotated[bool, typer.Option("--no-runner", help="do not run experiments in this "
                                                                      "process (separate `rnnhpo runner`s do)")] = False,
          db: DbOpt = None,
          log_level: Annotated[str, typer.Option(help="uvicorn/rnnhpo log level")] = "info") -> None:
    """Start the REST API (and, unless --no-runner, the queue runner in a background thread).

    The port is bound before anything is claimed (a busy port exits at once, having claimed
    nothing). SIGTERM/SIGINT: the experiment in flight goes back to the queue and the process
    exits within a few seconds."""
    import os
    import signal
    import socket
    import sys

    import uvicorn

    from service.api.app import create_app
    from service.logs import install_repeat_filter

    settings = _settings(db, host=host, port=port, runner_in_process=not no_runner)
    _logging(log_level)
    install_repeat_filter()
    _limit_malloc_arenas()
    if not _is_loopback(settings.host) and settings.token is None:
        err.print(f"[yellow]warning:[/yellow] binding {settings.host} without RNNHPO_API_TOKEN: anyone who can "
                  "reach this port can submit, cancel and delete experiments")
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc} "
             "(nothing was claimed from the queue)", 1)
    sock.listen(2048)
    app = create_app(settings)
    err.print(f"rnnhpo API on http://{settings.host}:{settings.port}/docs  "
              f"(runner: {'in-process' if settings.runner_in_process else 'external'}; "
              f"database {settings.database_label()})")
    config = uvicorn.Config(app, log_level=log_level.lower(), timeout_graceful_shutdown=1)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM (the runner hands its experiment back), then
    # re-raises the signal with the handlers it found: make both end here, not in Ray's atexit
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    if "ray" in sys.modules:
        # the claim is released by now; Ray's atexit shutdown of a local cluster can take seconds
        # (its processes share the driver's fate and end with it)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives each of the threadpool's threads its own malloc arena, which it rarely hands
    back: the server's memory grows with the number of concurrent readers. Two arenas keep it
    flat (what MALLOC_ARENA_MAX=2 does); a no-op off glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, n)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def runner(db: DbOpt = None,
           once: Annotated[bool, typer.Option("--once", help="exit after one experiment")] = False,
           log_level: Annotated[str, typer.Option(help="log level")] = "info") -> None:
    """Claim queued experiments from the database and run them until SIGINT/SIGTERM (which hand
    the experiment in flight back to the queue and exit within a few seconds)."""
    from service.logs import install_repeat_filter
    from service.runner_process import main

    _logging(log_level)
    install_repeat_filter()
    settings = _settings(db)
    from service.api.degraded import open_store

    open_store(settings)  # migrate once before claiming (later, when the database is down now)
    main(settings, once=once)


def register(app: typer.Typer) -> None:
    """Add this module's commands to app."""
    app.command("serve")(serve)
    app.command("runner")(runner)
