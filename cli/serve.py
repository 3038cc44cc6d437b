"""CLI commands of the service: ``serve`` (the REST API, with a queue runner in-process unless
``--no-runner``) and ``runner`` (more runners on one database)."""

from __future__ import annotations

import ipaddress
import logging
from typing import Annotated, Optional

import typer

from cli.common import DbOpt, err_console as err
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
    """Start the REST API (and, unless --no-runner, the queue runner in a background thread)."""
    import uvicorn

    from service.api.app import create_app

    settings = _settings(db, host=host, port=port, runner_in_process=not no_runner)
    _logging(log_level)
    if not _is_loopback(settings.host) and settings.token is None:
        err.print(f"[yellow]warning:[/yellow] binding {settings.host} without RNNHPO_API_TOKEN: anyone who can "
                  "reach this port can submit, cancel and delete experiments")
    app = create_app(settings)
    err.print(f"rnnhpo API on http://{settings.host}:{settings.port}/docs  "
              f"(runner: {'in-process' if settings.runner_in_process else 'external'}; "
              f"database {settings.database_label()})")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level.lower())


def runner(db: DbOpt = None,
           once: Annotated[bool, typer.Option("--once", help="exit after one experiment")] = False,
           log_level: Annotated[str, typer.Option(help="log level")] = "info") -> None:
    """Claim queued experiments from the database and run them until SIGINT/SIGTERM."""
    from service.runner import main

    _logging(log_level)
    settings = _settings(db)
    from service.store import Store

    Store(settings.database_url)  # migrate once before claiming
    main(settings, once=once)


def register(app: typer.Typer) -> None:
    """Add this module's commands to app."""
    app.command("serve")(serve)
    app.command("runner")(runner)
