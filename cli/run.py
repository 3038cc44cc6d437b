"""``rnnhpo run``: validate a spec, queue it, run it here on local Ray (or RAY_ADDRESS), then
print the comparison and save the plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import DbOpt, WideOpt, err_console, fail, settings as make_settings
from cli.query import read_spec_file, show_comparison


def quick_version(spec):
    """The demo-sized version of a spec: at most 3 seeds, 60 epochs, 8 configurations per variant."""
    data = spec.model_dump(mode="json")
    seeds = spec.seed_list[:3]
    data["seeds"] = seeds
    data["training"]["epochs"] = min(spec.training.epochs, 60)
    if data["search"].get("n_trials"):
        data["search"]["n_trials"] = min(data["search"]["n_trials"], 8)
    data["name"] = f"{spec.name}-quick"
    return type(spec).model_validate(data)


def run(spec_file: Annotated[Optional[Path], typer.Argument(help="experiment spec (YAML or JSON); not needed with --resume")] = None,
        quick: Annotated[bool, typer.Option("--quick", help="demo size: 3 seeds, <= 60 epochs")] = False,
        db: DbOpt = None,
        resume: Annotated[Optional[str], typer.Option("--resume", help="resume this experiment id: re-run its failed and "
                                                                       "missing trials (its stored spec is used)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the comparison as JSON")] = False,
        wide: WideOpt = False,
        plots_dir: Annotated[Optional[Path], typer.Option(help="where to save the PNG plots (default HOME/plots/ID)")] = None,
        no_plots: Annotated[bool, typer.Option("--no-plots", help="do not save plots")] = False) -> None:
    """Run an experiment end to end on local Ray (or RAY_ADDRESS) and print the comparison.

    Ctrl-C (or SIGTERM) stops the packs and leaves the experiment cancelled; `rnnhpo run --resume ID`
    continues it. A server on the same database never takes it over while this runs."""
    from service.backend import LocalBackend
    from service.runner_process import run_local
    from service.store import ExperimentRunning, NotFound
    from service.submission import validate
    from service.validation import SpecError, format_errors

    settings = make_settings(db)
    local = LocalBackend(settings)
    spec = None
    if resume:
        if spec_file is not None:
            err_console.print(f"--resume: {spec_file} is not read; the experiment's stored spec is used",
                              highlight=False)
    elif spec_file is None:
        fail("give a SPEC_FILE, or --resume ID", 2)
    else:
        raw, ctype = read_spec_file(spec_file)
        if quick:
            raw, ctype = _quick_body(raw, ctype), "application/json"
        try:
            spec, _ = validate(settings, raw, ctype, runs_here=True)
        except SpecError as exc:
            fail([f"{spec_file}: {line}" for line in format_errors(exc.errors)], 2)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    def hint(exp_id: str) -> None:
        err_console.print(f"interrupted: experiment {exp_id} cancelled; resume it with "
                          f"`rnnhpo run --resume {exp_id}`", highlight=False)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} trials"),
                  TextColumn("{task.fields[packs]}"), TextColumn("{task.fields[best]}"),
                  TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
                  console=err_console, transient=False) as bar:
        task_id = bar.add_task(spec.name if spec is not None else resume, total=None, packs="", best="", eta="-")
        shown = {"url": False}

        def show(p) -> None:
            if p.dashboard_url and not shown["url"]:
                err_console.print(f"Ray dashboard: {p.dashboard_url}")
                shown["url"] = True
            best = f"best {p.best['variant']} {p.best['metric']}={p.best['value']:.4f}" if p.best else ""
            eta = f"{p.eta_s:.0f}s" if p.eta_s is not None else "-"
            bar.update(task_id, total=p.trials_total, completed=p.trials_done,
                       packs=f"packs {p.packs_done}/{p.packs_total}", best=best, eta=eta)

        def started(exp_id: str) -> None:
            err_console.print(f"experiment [bold]{exp_id}[/bold]  {local.label}")

        try:
            outcome = run_local(settings, spec=spec, resume_id=resume, progress=show, on_start=started,
                                on_interrupt_exit=hint)
        except NotFound:
            fail(f"--resume: no experiment {resume} in {local.label}", 1)
        except ExperimentRunning as exc:
            fail(f"--resume: {exc}; cancel it first or wait", 1)
        except ValueError as exc:
            fail(f"--resume: {exc}", 2)
    exp_id, status = outcome.exp_id, outcome.status
    if outcome.interrupted or status == "cancelled":
        hint(exp_id)
        raise typer.Exit(130 if outcome.interrupted else 1)
    store = local.store
    final = store.get_experiment(exp_id)
    if status in ("succeeded", "partial") and not no_plots:
        from service.reports.figures import save_figures

        for path in save_figures(store, exp_id, plots_dir or settings.plots_dir / exp_id):
            err_console.print(f"plot: {path}")
    if as_json:
        rows = local.compare([exp_id])
        print(json.dumps({"experiment": exp_id, "status": final.status,
                          "variants": [r.model_dump(mode="json") for r in rows]}, indent=2))
    else:
        show_comparison(local, [exp_id], wide=wide, title=f"{final.name} ({exp_id}) — {status}")
    if status != "succeeded":
        if final.error:
            err_console.print(final.error.splitlines()[0], highlight=False)
        if status in ("partial", "failed"):
            err_console.print(f"`rnnhpo run --resume {exp_id}` re-runs the failed trials", highlight=False)
        raise typer.Exit(1)


def _quick_body(raw: bytes, content_type: str) -> bytes:
    """The demo-sized version of a spec document (see :func:`quick_version`), as JSON."""
    from service.validation import SpecError, format_errors, parse_document, validate_spec

    try:
        spec = validate_spec(parse_document(raw, content_type))
    except SpecError as exc:
        fail(format_errors(exc.errors), 2)
    return json.dumps(quick_version(spec).model_dump(mode="json")).encode()


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("run")(run)
