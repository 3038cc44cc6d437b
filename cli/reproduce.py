"""CLI command ``rnnhpo reproduce``: run a table of the SL1-GRU paper with the protocol that matches
it best and print our numbers beside the paper's, with paired statistics and a verdict per claim.

The protocol (``search.reference.reproduction_spec``): Table 2's eta, lambda, alpha and batch
size, the error summed over the batch as eq. 15 writes it, 10 seeds x 5 stratified random splits,
every variant evaluated on the test part of each split, pairs (seed, split).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 220)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 220)


def _fail(message: str) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(2)


def _available(dataset: str) -> bool:
    from trainer.datasets import catalogue

    entry = next((e for e in catalogue() if e.name == dataset), None)
    return entry is not None and str(entry.availability).startswith("ready")


def run_spec(spec_dict: dict[str, Any], db: str | None) -> tuple[Any, str, str]:
    """Create, claim and run one experiment in this process (local Ray); ``(store, id, status)``."""
    from search.driver import run_experiment
    from search.spec import ExperimentSpec
    from service.runner import Runner, default_runner_id
    from service.settings import Settings
    from service.store import Store

    spec = ExperimentSpec.model_validate(spec_dict)
    settings = Settings()
    if db:
        settings = settings.model_copy(update={"database_url": db})
    store = Store(settings.database_url)
    exp_id = store.create_experiment(spec.name, spec.model_dump(mode="json"), n_trials_total=spec.count_trials())
    runner_id = default_runner_id()
    view = store.claim_experiment(runner_id, exp_id=exp_id)
    runner = Runner(settings, store=store, runner_id=runner_id, run_fn=run_experiment, init_ray=True)
    err_console.print(f"{spec.name}: experiment [bold]{exp_id}[/bold], {spec.count_trials()} trials, "
                      f"database {settings.database_url}")
    return store, exp_id, runner.execute(view)


def _f(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and (abs(x) < 1e-3 and x != 0):
        return f"{x:.2e}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def render(report: dict[str, Any]) -> None:
    from rich.table import Table

    m = report["metric"]
    t = Table(title=f"{report['dataset']}: ours (mean ± std over {report['pairs']} pairs) beside the paper",
              show_lines=False)
    for col in ("variant", "n", f"train {m}", "paper", f"test {m}", "paper", "sparsity 1e-5", "1e-3", "1e-2",
                "paper sp.", "Δ test vs ref", "95% CI", "p Wilcoxon", "p t", "p Holm", "d_z", "verdict"):
        t.add_column(col, justify="left" if col in ("variant", "verdict") else "right", no_wrap=True)
    references = {r["reference"] for r in report["rows"]}
    for r in report["rows"]:
        p = r["paired"] or {}
        no_diff = "(reference)" if r["variant"] in references else "-"
        ci = f"{p['ci_low']:+.4f}..{p['ci_high']:+.4f}" if p.get("ci_low") is not None else "-"
        t.add_row(r["variant"], str(r["n"]),
                  f"{_f(r['train_mean'])} ± {_f(r['train_std'], 3)}", _f(r["paper_train"]),
                  f"{_f(r['test_mean'])} ± {_f(r['test_std'], 3)}", _f(r["paper_test"]),
                  _f(r["sparsity_out_1e-5"]), _f(r["sparsity_out_1e-3"]), _f(r["sparsity_out_1e-2"]),
                  _f(r["paper_sparsity"]),
                  f"{p['mean_diff']:+.4f} vs {r['reference']}" if p.get("mean_diff") is not None else no_diff,
                  ci, _f(p.get("p_wilcoxon"), 3), _f(p.get("p_t"), 3), _f(p.get("p_holm"), 3),
                  _f(p.get("effect_size"), 2), p.get("verdict", ""))
    console.print(t)
    c = Table(title="claims of the paper", show_lines=False)
    for col in ("claim", "verdict", "reason"):
        c.add_column(col, overflow="fold")
    colour = {"reproduced": "green", "not reproduced": "red", "not testable": "yellow"}
    for cl in report["claims"]:
        c.add_row(cl["claim"], f"[{colour[cl['verdict']]}]{cl['verdict']}[/]", cl["reason"])
    console.print(c)
    console.print("time: " + report["rows"][0]["time_is"] + "; pairs = (seed, split); verdicts use the "
                  "Holm-adjusted Wilcoxon signed-rank p < 0.05.", style="dim")


def save_plots(store, exp_id: str, trials: list[dict[str, Any]], report: dict[str, Any], out: Path) -> list[Path]:
    """Learning curves (train/test per epoch), convergence (E, ||grad E||, sparsity per iteration)
    and the paired-difference forest plot of one reproduction."""
    from service import plots as figs
    from service.reports.reproduction import replicate_curves

    out.mkdir(parents=True, exist_ok=True)
    name = report["dataset"]
    m = report["metric"]
    forest_rows = [{"label": f"{r['variant']} - {r['reference']}", **(r["paired"] or {})}
                   for r in report["rows"] if r["paired"]]
    figures = {
        "learning_curves.png": lambda: figs.learning_curves_png(
            replicate_curves(store, exp_id, trials), metric_label=m,
            title=f"{name}: {m} per epoch, mean and 95% CI over (seed, split)"),
        "convergence.png": lambda: figs.convergence_png(
            replicate_curves(store, exp_id, trials, source="trace",
                             metrics=("loss", "grad_norm", "sparsity_out")),
            ("loss", "grad_norm", "sparsity_out"), log=True, width=1500, height=450,
            title=f"{name}: minibatch E, gradient norm and W_out sparsity per iteration (95% CI)"),
        "paired_differences.png": lambda: figs.forest_png(
            forest_rows, x_label=f"test {m}: variant - reference (paired over seed, split)",
            title=f"{name}: paired differences, 95% CI"),
    }
    paths = []
    for fname, draw in figures.items():
        path = out / fname
        path.write_bytes(draw())
        paths.append(path)
    return paths


def reproduce(
    table: Annotated[str, typer.Argument(help="table3 (classification) | table5 (regression)")],
    dataset: Annotated[Optional[list[str]], typer.Option("--dataset", help="dataset(s); default: every one "
                                                                            "of the table that can be loaded here")] = None,
    seeds: Annotated[int, typer.Option(help="seeds per split")] = 10,
    splits: Annotated[int, typer.Option(help="stratified random train/test splits")] = 5,
    epochs: Annotated[Optional[int], typer.Option(help="override the protocol's epochs")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="demo size: 5 seeds x 2 splits, <= 100 epochs")] = False,
    timing: Annotated[str, typer.Option(help="packed | solo (each member alone: comparable times)")] = "packed",
    db: Annotated[Optional[str], typer.Option("--db", help="database URL (default: RNNHPO_DATABASE_URL or "
                                                           "the embedded SQLite)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report rows as JSON")] = False,
    experiment: Annotated[Optional[str], typer.Option("--experiment", help="report on this finished "
                                                                           "experiment instead of running")] = None,
    plots_dir: Annotated[Optional[Path], typer.Option(help="where to save the PNG plots (default "
                                                           "var/plots/ID); --no-plots to skip")] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="do not save plots")] = False,
) -> None:
    """Reproduce a table of the SL1-GRU paper; print ours beside the paper's with paired statistics."""
    from search.reference import TABLE_DATASETS, reproduction_spec
    from service.reports.reproduction import reproduction_report

    if table not in TABLE_DATASETS:
        _fail(f"unknown table {table!r}; use one of {', '.join(TABLE_DATASETS)}")
    if timing not in ("packed", "solo"):
        _fail("--timing: packed or solo")
    if quick:
        seeds, splits, epochs = min(seeds, 5), min(splits, 2), min(epochs or 100, 100)
    names = dataset or [d for d in TABLE_DATASETS[table] if _available(d)]
    reports = []
    for name in names:
        if name not in TABLE_DATASETS[table]:
            _fail(f"--dataset: {table} has {', '.join(TABLE_DATASETS[table])}, not {name!r}")
        if not _available(name):
            err_console.print(f"{name}: not available here (see `rnnhpo datasets`); skipped")
            continue
        if experiment:
            from service.settings import Settings
            from service.store import Store

            store, exp_id = Store(db or Settings().database_url), experiment
            if store.get_experiment(exp_id) is None:
                _fail(f"--experiment: no experiment {exp_id}")
        else:
            spec = reproduction_spec(table, name, seeds=seeds, splits=splits, epochs=epochs)
            spec["execution"]["timing"] = timing
            store, exp_id, status = run_spec(spec, db)
            if status != "succeeded":
                _fail(f"{name}: experiment {exp_id} {status}")
        exp = store.get_experiment(exp_id)
        _, trials = store.trial_finals([exp_id])
        kind = "classification" if table == "table3" else "regression"
        report = reproduction_report(exp.spec, trials, task_kind=kind)
        report.update(experiment=exp_id, seeds=len(exp.spec["seeds"]) if isinstance(exp.spec["seeds"], list)
                      else exp.spec["seeds"], splits=exp.spec["dataset"]["splits"]["n"],
                      epochs=exp.spec["training"]["epochs"],
                      protocol="summed loss (eq. 15), Table 2 settings, stratified random splits")
        reports.append(report)
        if not no_plots:
            from service.settings import Settings

            out = plots_dir or Settings().plots_dir / exp_id
            report["plots"] = [str(p) for p in save_plots(store, exp_id, trials, report, out)]
            for p in report["plots"]:
                err_console.print(f"plot: {p}")
        if not as_json:
            render(report)
    if as_json:
        print(json.dumps({"table": table, "reports": reports}, indent=2, default=float))


def register(app: typer.Typer) -> None:
    """Add this module's commands to app."""
    app.command("reproduce")(reproduce)
