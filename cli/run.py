"""CLI commands that run experiments and query results: run, experiments, compare, trials, trace."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

ServerOpt = Annotated[Optional[str], typer.Option("--server", help="query a remote rnnhpo service instead of the local database")]
DbOpt = Annotated[Optional[str], typer.Option("--db", help="database URL (default: RNNHPO_DATABASE_URL or the embedded SQLite)")]


def _fail(message: str) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(2)


def _store(db: str | None):
    from service.settings import Settings
    from service.store import Store

    return Store(db or Settings().database_url)


def _client(server: str):
    from service.client import Client
    from service.settings import Settings

    token = Settings().api_token
    return Client(server, token=token.get_secret_value() if token else None)


def _load_spec_file(path: Path):
    from pydantic import ValidationError

    from search.spec import load_spec

    if not path.is_file():
        _fail(f"spec file {path} does not exist")
    fmt = "json" if path.suffix.lower() == ".json" else "yaml"
    try:
        return load_spec(path.read_text(), fmt)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        _fail(f"{path}: {where}: {first['msg']}")
    except ValueError as exc:
        _fail(f"{path}: {exc}")


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


def _fmt(mean: Any, std: Any = None, digits: int = 4) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{mean:.{digits}g}" if abs(mean) < 1e-3 and mean != 0 else f"{mean:.{digits}f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {std:.2g}"
    return text


def render_compare(rows: list[dict], dataset: str | None = None, title: str = "comparison") -> None:
    """Print the paper's Table 3/5 layout: per variant mean ± std over seeds, with the paper's
    own numbers beside ours when the dataset and model name match."""
    from rich.table import Table

    from search.reference import paper_row

    table = Table(title=title, show_lines=False)
    for col in ("variant", "n", "train", "test", "sparsity W_out", "sparsity all", "time (s)",
                "Thm1 viol.", "‖∇E‖ ratio", "diverged"):
        table.add_column(col, justify="right" if col != "variant" else "left", no_wrap=True)
    show_paper = any(dataset and paper_row(dataset, r["variant"]) for r in rows)
    if show_paper:
        for col in ("paper train", "paper test", "paper sparsity"):
            table.add_column(col, justify="right", style="dim", no_wrap=True)
    for r in rows:
        name = r["variant"] if not r.get("params") else f"{r['variant']} {json.dumps(r['params'], sort_keys=True)}"
        cells = [
            name, str(r["n_completed"]),
            _fmt(r.get("train_metric_mean"), r.get("train_metric_std")),
            _fmt(r.get("test_metric_mean"), r.get("test_metric_std")),
            _fmt(r.get("sparsity_out_mean"), r.get("sparsity_out_std")),
            _fmt(r.get("sparsity_all_mean"), r.get("sparsity_all_std")),
            _fmt(r.get("wall_time_mean"), None, 2),
            _fmt(r.get("monotonicity_violations_mean"), None, 1),
            _fmt(r.get("grad_norm_ratio_mean"), None, 3),
            str(r.get("n_diverged", 0)),
        ]
        if show_paper:
            ref = paper_row(dataset or "", r["variant"])
            cells += [_fmt(ref[0]), _fmt(ref[1]), _fmt(ref[2])] if ref else ["", "", ""]
        table.add_row(*cells)
    console.print(table)


def save_plots(store, exp_id: str, out_dir: Path) -> list[Path]:
    """Write the experiment's figures: convergence bands (Fig. 6) and sparsity (Fig. 3b) always,
    the grid heatmap (Fig. 5) when hyperparameters were searched, the Pareto front when the search
    had several objectives."""
    from service.api.plots import convergence_plot, grid_plot, pareto_plot, sparsity_plot

    spec = store.get_experiment(exp_id).spec
    figures = {
        "convergence.png": lambda: convergence_plot(
            exp_id, store, metrics="loss,grad_norm,weight_norm", config="best", points=500, variants=None,
            log=True, width=1500, height=450, dpi=100),
        "sparsity.png": lambda: sparsity_plot(exp_id, store, metric="sparsity_out", config="best", points=500,
                                              variants=None, width=800, height=500, dpi=100),
    }
    if spec["search"].get("space") or any(v.get("space") for v in spec["variants"]):
        figures["grid.png"] = lambda: grid_plot(exp_id, store, x=None, y=None, metric="test_metric", variant=None,
                                                agg="mean", width=800, height=600, dpi=100)
    if len(spec["search"].get("objectives", [])) >= 2:
        figures["pareto.png"] = lambda: pareto_plot(exp_id, store, x=None, y=None, per="config", width=800,
                                                    height=600, dpi=100)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, render in figures.items():
        path = out_dir / name
        path.write_bytes(render().body)
        paths.append(path)
    return paths


def _compare_rows(store, exp_ids: list[str], by_config: bool = False) -> list[dict]:
    from service.reports.compare import compare as reports_compare

    return [s.model_dump(mode="json") for s in reports_compare(store, exp_ids, by_config=by_config)]


def run(spec_file: Annotated[Optional[Path], typer.Argument(help="experiment spec (YAML or JSON); not with --resume")] = None,
        quick: Annotated[bool, typer.Option("--quick", help="demo size: 3 seeds, <= 60 epochs")] = False,
        db: DbOpt = None,
        resume: Annotated[Optional[str], typer.Option("--resume", help="resume this experiment id: re-run its "
                                                                       "failed and missing trials (no spec needed)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the comparison as JSON")] = False,
        plots_dir: Annotated[Optional[Path], typer.Option(help="where to save the PNG plots (default var/plots/ID)")] = None,
        no_plots: Annotated[bool, typer.Option("--no-plots", help="do not save plots")] = False) -> None:
    """Run an experiment end to end on local Ray (or RAY_ADDRESS) and print the comparison.

    Ctrl-C (or SIGTERM) stops the packs and leaves the experiment cancelled; `rnnhpo run --resume ID`
    continues it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from service.runner import run_local
    from service.settings import Settings
    from service.store import ExperimentRunning, NotFound

    settings = Settings()
    if db:
        settings = settings.model_copy(update={"database_url": db})
    if resume and spec_file:
        _fail("give a spec file or --resume ID, not both (a resumed experiment keeps its stored spec)")
    spec_model = None
    if not resume:
        if spec_file is None:
            _fail("a spec file is required (or --resume ID)")
        spec_model = _load_spec_file(spec_file)
        if quick:
            spec_model = quick_version(spec_model)

    def hint(exp_id: str) -> None:
        err_console.print(f"interrupted: experiment {exp_id} cancelled; resume it with "
                          f"`rnnhpo run --resume {exp_id}`", highlight=False)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} trials"),
                  TextColumn("{task.fields[packs]}"), TextColumn("{task.fields[best]}"),
                  TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
                  console=err_console, transient=False) as bar:
        task_id = bar.add_task(spec_model.name if spec_model else resume, total=None, packs="", best="", eta="-")
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
            err_console.print(f"experiment [bold]{exp_id}[/bold]  database {settings.database_url}")

        try:
            outcome = run_local(settings, spec=spec_model, resume_id=resume, progress=show, on_start=started,
                                on_interrupt_exit=hint)
        except NotFound:
            _fail(f"--resume: no experiment {resume}")
        except ExperimentRunning as exc:
            _fail(f"--resume: {exc}; cancel it first or wait")
        except ValueError as exc:
            _fail(f"--resume: {exc}")
    exp_id, status = outcome.exp_id, outcome.status
    if outcome.interrupted or status == "cancelled":
        hint(exp_id)
        raise typer.Exit(130 if outcome.interrupted else 1)
    store = _store(settings.database_url)
    final = store.get_experiment(exp_id)
    rows = _compare_rows(store, [exp_id])
    if status in ("succeeded", "partial") and not no_plots:
        for path in save_plots(store, exp_id, plots_dir or Path(os.environ.get("RNNHPO_VAR_DIR", "var")) / "plots" / exp_id):
            err_console.print(f"plot: {path}")
    if as_json:
        print(json.dumps({"experiment": exp_id, "status": final.status, "variants": rows}, indent=2))
    else:
        render_compare(rows, dataset=final.spec["dataset"]["name"], title=f"{final.name} ({exp_id}) — {status}")
    if status != "succeeded":
        if final.error:
            err_console.print(final.error.splitlines()[0], highlight=False)
        if status in ("partial", "failed"):
            err_console.print(f"`rnnhpo run --resume {exp_id}` re-runs the failed trials", highlight=False)
        raise typer.Exit(1)


def experiments(status: Annotated[Optional[str], typer.Option(help="filter by status")] = None,
                limit: int = 50, db: DbOpt = None, server: ServerOpt = None) -> None:
    """List experiments."""
    from rich.table import Table

    if server:
        items = [e if isinstance(e, dict) else e.model_dump(mode="json") for e in _client(server).list_experiments(status=status, limit=limit)]
    else:
        views, _ = _store(db).list_experiments(status=status, limit=limit)
        items = [v.model_dump(mode="json") for v in views]
    table = Table(title="experiments")
    for col in ("id", "name", "status", "trials", "created"):
        table.add_column(col)
    for e in items:
        table.add_row(e["id"], e["name"], e["status"], f"{e.get('n_trials_done') or 0}/{e.get('n_trials_total') or '?'}",
                      str(e.get("created_at", ""))[:19])
    console.print(table)


def compare(exp_ids: Annotated[list[str], typer.Argument(help="one or more experiment ids")],
            as_json: Annotated[bool, typer.Option("--json")] = False,
            by_config: Annotated[bool, typer.Option("--by-config", help="one row per configuration (grid point)")] = False,
            db: DbOpt = None, server: ServerOpt = None) -> None:
    """Per variant mean ± std over seeds (the paper's Table 3/5 layout)."""
    if server:
        client = _client(server)
        rows = client.compare(exp_ids, by="config" if by_config else "variant")
        rows = [r if isinstance(r, dict) else r.model_dump(mode="json") for r in rows]
        dataset = None
    else:
        store = _store(db)
        missing = [e for e in exp_ids if store.get_experiment(e) is None]
        if missing:
            _fail(f"no experiment {', '.join(missing)}")
        rows = _compare_rows(store, exp_ids, by_config=by_config)
        dataset = store.get_experiment(exp_ids[0]).spec["dataset"]["name"]
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        render_compare(rows, dataset=dataset, title=", ".join(exp_ids))


def trials(exp_id: str, sort: Annotated[str, typer.Option(help="trial column to sort by")] = "number",
           desc: bool = False, status: Optional[str] = None, variant: Optional[str] = None,
           limit: int = 100, as_json: Annotated[bool, typer.Option("--json")] = False,
           db: DbOpt = None, server: ServerOpt = None) -> None:
    """List the trials of an experiment."""
    from rich.table import Table

    try:
        if server:
            items = _client(server).trials(exp_id, sort=sort, descending=desc, status=status, variant=variant, limit=limit)
            items = [t if isinstance(t, dict) else t.model_dump(mode="json") for t in items]
        else:
            views, _ = _store(db).list_trials(exp_id, status=status, variant=variant, sort=sort,
                                              descending=desc, limit=limit)
            items = [v.model_dump(mode="json") for v in views]
    except ValueError as exc:
        _fail(f"--sort: {exc}")
    if as_json:
        print(json.dumps(items, indent=2))
        return
    table = Table(title=f"trials of {exp_id}")
    for col in ("id", "#", "variant", "seed", "fold", "status", "params", "train", "test", "sparsity", "pack"):
        table.add_column(col)
    for t in items:
        table.add_row(str(t["id"]), str(t["number"]), t["variant"], str(t["seed"]), str(t.get("fold")),
                      t["status"], json.dumps(t.get("params") or {}), _fmt(t.get("train_metric")),
                      _fmt(t.get("test_metric")), _fmt(t.get("sparsity_out")), str(t.get("pack_id") or ""))
    console.print(table)


def trace(trial_id: int, csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout")] = False,
          every: Annotated[int, typer.Option(min=1, help="keep every n-th step")] = 1,
          metrics: Annotated[Optional[str], typer.Option(help="comma-separated columns")] = None,
          db: DbOpt = None, server: ServerOpt = None) -> None:
    """Print a trial's per-iteration convergence trace."""
    names = metrics.split(",") if metrics else None
    try:
        if server:
            data = _client(server).trace(trial_id, metrics=names, every=every)
        else:
            store = _store(db)
            if store.get_trial(trial_id) is None:
                _fail(f"no trial {trial_id}")
            data = store.get_trace(trial_id, metrics=names, every=every)
    except ValueError as exc:
        _fail(f"--metrics: {exc}")
    columns = list(data)
    n = len(next(iter(data.values()))) if data else 0
    if csv:
        out = sys.stdout
        out.write(",".join(columns) + "\n")
        for i in range(n):
            out.write(",".join(repr(float(data[c][i])) if c not in ("step", "epoch") else str(int(data[c][i]))
                               for c in columns) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"trace of trial {trial_id} ({n} points)")
    for c in columns:
        table.add_column(c, justify="right")
    for i in range(n):
        table.add_row(*(str(int(data[c][i])) if c in ("step", "epoch") else f"{float(data[c][i]):.6g}" for c in columns))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("run")(run)
    app.command("experiments")(experiments)
    app.command("compare")(compare)
    app.command("trials")(trials)
    app.command("trace")(trace)
