"""What every CLI verb shares: the settings, the backend, the consoles and one error style.

Every verb reports a problem the same way: ``error: ...`` on one line (one per problem) on
stderr, exit status 2 for bad input, 1 for anything missing or unreachable; never a traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 100, soft_wrap=False)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

ServerOpt = Annotated[Optional[str], typer.Option(
    "--server", help="query this rnnhpo API server (e.g. http://127.0.0.1:8000) instead of the database")]
DbOpt = Annotated[Optional[str], typer.Option(
    "--db", help="database URL (default: RNNHPO_DATABASE_URL, else the per-user SQLite database)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
WideOpt = Annotated[bool, typer.Option("--wide", help="show every column, however wide")]


def settings(db: str | None = None, **updates: Any):
    """The one Settings object, with the command line's overrides applied."""
    from pydantic import ValidationError

    from service.settings import Settings

    values = {k: v for k, v in updates.items() if v is not None}
    if db:
        values["database_url"] = db
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        fail([f"RNNHPO_{str(first['loc'][0]).upper()}: {first['msg']}"], 2)


def backend(db: str | None = None, server: str | None = None):
    """The local or remote backend; the database layer's retry warnings are kept out of the
    verbs' output (their one error line says what failed)."""
    import logging

    from service.backend import open_backend

    logging.getLogger("service.db").setLevel(logging.ERROR)

    return open_backend(settings(db), server)


def fail(lines: list[str] | str, code: int = 2) -> None:
    """Print ``error: line`` for each line and exit with ``code``."""
    for line in [lines] if isinstance(lines, str) else lines:
        err_console.print(f"[red]error:[/red] {line}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def one_line_errors(verb: Callable) -> Callable:
    """Turn backend errors (and anything unexpected) into the one error style."""

    @functools.wraps(verb)
    def wrapper(*args, **kwargs):
        from service.backend import BackendError, InvalidInput

        try:
            return verb(*args, **kwargs)
        except InvalidInput as exc:
            fail(exc.lines, exc.exit_code)
        except BackendError as exc:
            fail(str(exc), exc.exit_code)
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            fail(f"{type(exc).__name__}: {text}", 1)

    return wrapper


def dump_json(data: Any) -> None:
    import json

    print(json.dumps(data, indent=2, default=str))
