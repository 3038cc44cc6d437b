"""The verbs that submit and query experiments: submit, experiments, status, cancel, compare,
trials, trace. Each works on the database (``--db``, default the per-user SQLite) or on an API
server (``--server``) through one :class:`~service.backend.Backend`: no verb branches on which."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import (DbOpt, JsonOpt, ServerOpt, WideOpt, backend, console, dump_json, err_console,
                        fail, one_line_errors)



def read_spec_file(path: Path) -> tuple[bytes, str]:
    """The bytes and content type of a spec file (.json is JSON, anything else YAML)."""
    if not path.is_file():
        fail(f"spec file {path} does not exist", 2)
    return path.read_bytes(), "application/json" if path.suffix.lower() == ".json" else "application/yaml"


def show_comparison(b, exp_ids: list[str], *, by: str = "variant", as_json: bool = False,
                    wide: bool = False, title: str | None = None, reference: str | None = None) -> None:
    """Print the comparison of these experiments (paper columns where the protocol matches)."""
    from service.reports.tables import paper_protocol, rich_table

    rows = b.compare(exp_ids, by=by, reference=reference)
    if as_json:
        dump_json([r.model_dump(mode="json") for r in rows])
        return
    paper = paper_protocol(b.get(exp_ids[0]).spec) if len(exp_ids) == 1 else None
    console.print(rich_table(rows, title=title or ", ".join(exp_ids), paper_dataset=paper,
                             width=None if wide else 100))


def show_experiment(exp) -> None:
    from service.client import render_experiment

    render_experiment(exp, console)


@one_line_errors
def submit(spec_file: Annotated[Path, typer.Argument(help="experiment spec (.yaml/.yml or .json)")],
           wait: Annotated[bool, typer.Option("--wait", help="wait until it finishes, then print the comparison")] = False,
           timeout: Annotated[Optional[float], typer.Option(help="with --wait: give up after this many seconds")] = None,
           server: ServerOpt = None, db: DbOpt = None) -> None:
    """Validate a spec completely and queue it; prints the experiment id. `rnnhpo serve` or
    `rnnhpo runner` runs it."""
    raw, ctype = read_spec_file(spec_file)
    b = backend(db, server)
    sub = b.submit(raw, ctype)
    console.print(sub.id)
    err_console.print(f"queued {sub.name!r}: {sub.trials_planned} trials in {b.label}")
    if not wait:
        return
    from service.db.models import FINAL_EXPERIMENT_STATUSES

    deadline = None if timeout is None else time.monotonic() + timeout
    done = -1
    while True:
        exp = b.get(sub.id)
        if exp.progress.trials_done != done:
            done = exp.progress.trials_done
            err_console.print(f"{exp.status}: {done}/{exp.progress.trials_total} trials")
        if exp.status in FINAL_EXPERIMENT_STATUSES:
            break
        if deadline is not None and time.monotonic() > deadline:
            fail(f"experiment {sub.id} still {exp.status} after {timeout} s", 1)
        time.sleep(1.0)
    show_experiment(exp)
    if exp.status == "succeeded":
        show_comparison(b, [sub.id])
    raise typer.Exit(0 if exp.status == "succeeded" else 1)


@one_line_errors
def experiments(status: Annotated[Optional[str], typer.Option(help="only this status (queued, running, succeeded, failed, cancelled)")] = None,
                limit: Annotated[int, typer.Option(min=1, max=1000, help="at most this many, newest first")] = 50,
                as_json: JsonOpt = False, db: DbOpt = None, server: ServerOpt = None) -> None:
    """List experiments, newest first."""
    from rich.table import Table

    b = backend(db, server)
    page = b.list(status=status, limit=limit)
    if as_json:
        dump_json(page.model_dump(mode="json"))
        return
    err_console.print(f"{page.total} experiment(s) in {b.label}")
    table = Table(title_justify="left")
    for col in ("id", "name", "status", "trials", "created"):
        table.add_column(col, overflow="fold")
    for e in page.items:
        table.add_row(e.id, e.name, e.status, f"{e.progress.trials_done}/{e.progress.trials_total or '?'}",
                      e.created_at.isoformat(timespec="seconds") if e.created_at else "")
    console.print(table)


@one_line_errors
def status(exp_id: Annotated[str, typer.Argument(help="experiment id")], as_json: JsonOpt = False,
           server: ServerOpt = None, db: DbOpt = None) -> None:
    """Status and progress of an experiment (trials done/total, best so far, ETA, dashboard)."""
    exp = backend(db, server).get(exp_id)
    if as_json:
        dump_json(exp.model_dump(mode="json"))
    else:
        show_experiment(exp)


@one_line_errors
def cancel(exp_id: Annotated[str, typer.Argument(help="experiment id")], server: ServerOpt = None,
           db: DbOpt = None) -> None:
    """Cancel an experiment: a queued one at once, a running one stops its packs in flight."""
    exp = backend(db, server).cancel(exp_id)
    err_console.print(f"{exp_id}: {exp.status}" + (" (cancel requested; the runner stops its packs)"
                                                   if exp.status == "running" else ""))


@one_line_errors
def compare(exp_ids: Annotated[list[str], typer.Argument(help="one or more experiment ids")],
            by_config: Annotated[bool, typer.Option("--by-config", help="one row per configuration (grid point)")] = False,
            reference: Annotated[Optional[str], typer.Option(help="variant the others are compared with, paired over (seed, split); default: the unregularized one of the same family")] = None,
            as_json: JsonOpt = False, wide: WideOpt = False, db: DbOpt = None, server: ServerOpt = None) -> None:
    """Variants side by side: mean ± std over seeds and splits, with paired statistics against a
    reference variant (the paper's Table 3/5 layout)."""
    show_comparison(backend(db, server), exp_ids, by="config" if by_config else "variant",
                    as_json=as_json, wide=wide, reference=reference)


@one_line_errors
def trials(exp_id: Annotated[str, typer.Argument(help="experiment id")],
           sort: Annotated[str, typer.Option(help="column to sort by, e.g. test_metric, variant, status, seed")] = "number",
           desc: Annotated[bool, typer.Option("--desc", help="sort descending")] = False,
           status: Annotated[Optional[str], typer.Option(help="only trials with this status")] = None,
           variant: Annotated[Optional[str], typer.Option(help="only trials of this variant")] = None,
           limit: Annotated[int, typer.Option(min=1, max=10_000, help="at most this many")] = 100,
           as_json: JsonOpt = False, db: DbOpt = None, server: ServerOpt = None) -> None:
    """List the trials of an experiment."""
    from rich.table import Table

    from service.reports.tables import fmt

    page = backend(db, server).trials(exp_id, sort=sort, descending=desc, status=status,
                                      variant=variant, limit=limit)
    if as_json:
        dump_json(page.items)
        return
    table = Table(title=f"trials of {exp_id} ({len(page.items)} of {page.total})", title_justify="left")
    for col in ("id", "#", "variant", "seed", "fold", "status", "params", "train", "test", "sparsity"):
        table.add_column(col, overflow="fold")
    for t in page.items:
        params = " ".join(f"{k}={v}" for k, v in sorted((t.get("params") or {}).items()))
        table.add_row(str(t["id"]), str(t["number"]), t["variant"], str(t["seed"]),
                      "" if t.get("fold") is None else str(t["fold"]), t["status"], params,
                      fmt(t.get("train_metric")), fmt(t.get("test_metric")), fmt(t.get("sparsity_out"), None, 3))
    console.print(table)


@one_line_errors
def trace(trial_id: Annotated[int, typer.Argument(help="trial id (see `rnnhpo trials`)")],
          csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout")] = False,
          every: Annotated[int, typer.Option(min=1, help="keep every n-th step (the last is always kept)")] = 1,
          metrics: Annotated[Optional[str], typer.Option(help="comma-separated columns, e.g. loss,grad_norm")] = None,
          db: DbOpt = None, server: ServerOpt = None) -> None:
    """Print a trial's per-iteration convergence trace."""
    data = backend(db, server).trace(trial_id, metrics=metrics.split(",") if metrics else None, every=every)
    columns = list(data)
    n = len(next(iter(data.values()))) if data else 0
    ints = ("step", "epoch")
    if csv:
        out = sys.stdout
        out.write(",".join(columns) + "\n")
        for i in range(n):
            out.write(",".join(str(int(data[c][i])) if c in ints else repr(float(data[c][i]))
                               for c in columns) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"trace of trial {trial_id} ({n} points)", title_justify="left")
    for c in columns:
        table.add_column(c, justify="right")
    for i in range(n):
        table.add_row(*(str(int(data[c][i])) if c in ints else f"{float(data[c][i]):.6g}" for c in columns))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    for name, fn in (("submit", submit), ("experiments", experiments), ("status", status),
                     ("cancel", cancel), ("compare", compare), ("trials", trials), ("trace", trace)):
        app.command(name)(fn)


__all__ = ["register", "show_comparison", "read_spec_file"]
