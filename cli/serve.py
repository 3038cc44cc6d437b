"""CLI commands of the service: ``serve``, ``runner``, ``submit``, ``status``, ``cancel``.

``submit``/``status``/``cancel`` talk to a server with ``--server URL`` (token from
``RNNHPO_API_TOKEN``); without it they use the database directly (``--db`` or
``RNNHPO_DATABASE_URL``), where ``rnnhpo serve`` or ``rnnhpo runner`` picks submissions up.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)

ServerOpt = Annotated[Optional[str], typer.Option("--server", help="URL of an rnnhpo API server "
                                                                  "(default: the database directly)")]
DbOpt = Annotated[Optional[str], typer.Option("--db", help="database URL (default: RNNHPO_DATABASE_URL "
                                                          "or the embedded SQLite)")]


def _settings(db: str | None = None, **updates):
    from service.settings import Settings

    s = Settings()
    upd = {k: v for k, v in updates.items() if v is not None}
    if db:
        upd["database_url"] = db
    return s.model_copy(update=upd) if upd else s


def _fail(msg: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {msg}", highlight=False)
    raise typer.Exit(code)


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
    import socket
    import threading

    import uvicorn

    from service.api.app import create_app
    from service.logs import install_repeat_filter

    settings = _settings(db, host=host, port=port)
    settings = settings.model_copy(update={"runner_in_process": not no_runner})
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
        _fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc} "
              "(nothing was claimed from the queue)", 1)
    sock.listen(2048)
    sock.set_inheritable(True)
    app = create_app(settings)
    err.print(f"rnnhpo API on http://{settings.host}:{settings.port}/docs  "
              f"(runner: {'in-process' if settings.runner_in_process else 'external'})")
    config = uvicorn.Config(app, log_level=log_level.lower(), timeout_graceful_shutdown=1)
    uvicorn.Server(config).run(sockets=[sock])
    # Ray's atexit shutdown of a local cluster can take seconds; the claim is released by now
    if any(t.name == "rnnhpo-runner" and t.is_alive() for t in threading.enumerate()) or "ray" in sys.modules:
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
    from service.runner import main

    _logging(log_level)
    install_repeat_filter()
    settings = _settings(db)
    from service.store import Store

    Store(settings.database_url)  # migrate once before claiming
    main(settings, once=once)


def _read_spec(path: Path) -> tuple[bytes, str]:
    if not path.is_file():
        _fail(f"spec file {path} does not exist")
    ctype = "application/json" if path.suffix.lower() == ".json" else "application/yaml"
    return path.read_bytes(), ctype


def _client(server: str):
    from service.client import Client

    return Client(server, token=_settings().token)


def _show(exp) -> None:
    from service.client import render_experiment

    render_experiment(exp, console)


def submit(spec_file: Annotated[Path, typer.Argument(help="experiment spec (.yaml/.yml or .json)")],
           wait: Annotated[bool, typer.Option("--wait", help="wait until it finishes and print the comparison")] = False,
           server: ServerOpt = None, db: DbOpt = None,
           timeout: Annotated[Optional[float], typer.Option(help="--wait at most this many seconds")] = None) -> None:
    """Queue an experiment (validated like the API does); prints its id."""
    from service.client import ApiError, format_detail, render_compare

    raw, ctype = _read_spec(spec_file)
    if server:
        c = _client(server)
        try:
            sub = c.submit(raw.decode("utf-8", "replace"), fmt="json" if ctype.endswith("json") else "yaml")
        except ApiError as exc:
            _fail(f"{spec_file}: {format_detail(exc.detail)} (HTTP {exc.status})")
        except Exception as exc:  # noqa: BLE001 - connection problems
            _fail(f"cannot reach {server}: {exc}")
        console.print(sub.id)
        err.print(f"queued {sub.name!r}: {sub.trials_planned} trials; {server.rstrip('/')}{sub.links.self}")
        if not wait:
            return
        last = {"done": -1}

        def update(e):
            if e.progress.trials_done != last["done"]:
                last["done"] = e.progress.trials_done
                err.print(f"{e.status}: {e.progress.trials_done}/{e.progress.trials_total} trials"
                          + (f", ETA {e.progress.eta_s:.0f} s" if e.progress.eta_s else ""))

        try:
            exp = c.wait(sub.id, timeout=timeout, on_update=update)
        except TimeoutError as exc:
            _fail(str(exc), 1)
        _show(exp)
        if exp.status == "succeeded":
            render_compare(c.compare(sub.id), console)
        raise typer.Exit(0 if exp.status == "succeeded" else 1)

    from service.api.validation import SpecError, spec_from_body
    from service.store import Store

    settings = _settings(db)
    try:
        spec, n = spec_from_body(raw, ctype, data_dir=settings.data_dir,
                                 max_trials=settings.max_trials_per_experiment)
    except SpecError as exc:
        _fail(f"{spec_file}: {exc}")
    store = Store(settings.database_url)
    exp_id = store.create_experiment(spec.name, spec.model_dump(mode="json"), n_trials_total=n)
    console.print(exp_id)
    err.print(f"queued {spec.name!r}: {n} trials in {settings.database_url}; `rnnhpo serve` or "
              "`rnnhpo runner` runs it")
    if not wait:
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    done = -1
    while True:
        view = store.get_experiment(exp_id)
        if view.n_trials_done != done:
            done = view.n_trials_done
            err.print(f"{view.status}: {view.n_trials_done}/{view.n_trials_total} trials")
        if view.status in ("succeeded", "failed", "cancelled"):
            break
        if deadline is not None and time.monotonic() > deadline:
            _fail(f"experiment {exp_id} still {view.status} after {timeout} s", 1)
        time.sleep(1.0)
    from service.api.schemas import experiment_out

    _show(experiment_out(view))
    if view.status == "succeeded":
        from service.reports.compare import compare as reports_compare

        render_compare([r.model_dump() for r in reports_compare(store, [exp_id])], console)
    raise typer.Exit(0 if view.status == "succeeded" else 1)


def status(exp_id: Annotated[str, typer.Argument(help="experiment id")], server: ServerOpt = None,
           db: DbOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Status and progress of an experiment (trials done/total, best so far, ETA, dashboard)."""
    from service.client import ApiError

    if server:
        try:
            exp = _client(server).get(exp_id)
        except ApiError as exc:
            _fail(str(exc.detail), 1)
    else:
        from service.api.schemas import experiment_out
        from service.store import Store

        view = Store(_settings(db).database_url).get_experiment(exp_id)
        if view is None:
            _fail(f"no experiment {exp_id}", 1)
        exp = experiment_out(view)
    if as_json:
        print(json.dumps(exp.model_dump(mode="json"), indent=2))
    else:
        _show(exp)


def cancel(exp_id: Annotated[str, typer.Argument(help="experiment id")], server: ServerOpt = None,
           db: DbOpt = None) -> None:
    """Cancel an experiment: a queued one at once, a running one stops its packs in flight."""
    from service.client import ApiError

    if server:
        try:
            exp = _client(server).cancel(exp_id)
        except ApiError as exc:
            _fail(str(exc.detail), 1)
    else:
        from service.api.schemas import experiment_out
        from service.store import NotFound, Store

        try:
            exp = experiment_out(Store(_settings(db).database_url).request_cancel(exp_id))
        except NotFound:
            _fail(f"no experiment {exp_id}", 1)
    err.print(f"{exp_id}: {exp.status}" + (" (cancel requested; the runner stops its packs)"
                                           if exp.status == "running" else ""))


def register(app: typer.Typer) -> None:
    """Add this module's commands to app."""
    app.command("serve")(serve)
    app.command("runner")(runner)
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("cancel")(cancel)
