"""CLI command ``rnnhpo reproduce``: run a table or Fig. 3 of the SL1-GRU paper with the protocol
that matches it best and print our numbers beside the paper's, with paired statistics and a
verdict per claim.

Tables (``search.reference.reproduction_spec``): Table 2's eta, lambda, alpha and batch size, the
error summed over the batch as eq. 15 writes it, 10 seeds x 5 stratified random splits, every
variant evaluated on the test part of each split, pairs (seed, split). Fig. 3
(``search.reference.fig3_spec``): eq. 40's function, section 4.1's settings, full-batch descent
on the summed error; the report and both panels come from :mod:`service.reports.fig3`.
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


def _f(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and (abs(x) < 1e-3 and x != 0):
        return f"{x:.2e}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _d(x: float) -> str:
    """A signed difference: 4 decimals, or 3 significant digits when smaller than 1e-3."""
    return f"{x:+.3g}" if x != 0 and abs(x) < 1e-3 else f"{x:+.4f}"


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
        ci = f"{_d(p['ci_low'])}..{_d(p['ci_high'])}" if p.get("ci_low") is not None else "-"
        t.add_row(r["variant"], str(r["n"]),
                  f"{_f(r['train_mean'])} ± {_f(r['train_std'], 3)}", _f(r["paper_train"]),
                  f"{_f(r['test_mean'])} ± {_f(r['test_std'], 3)}", _f(r["paper_test"]),
                  _f(r["sparsity_out_1e-5"]), _f(r["sparsity_out_1e-3"]), _f(r["sparsity_out_1e-2"]),
                  _f(r["paper_sparsity"]),
                  f"{_d(p['mean_diff'])} vs {r['reference']}" if p.get("mean_diff") is not None else no_diff,
                  ci, _f(p.get("p_wilcoxon"), 3), _f(p.get("p_t"), 3), _f(p.get("p_holm"), 3),
                  _f(p.get("effect_size"), 2), p.get("verdict", ""))
    console.print(t)
    _render_claims(report)
    console.print("time: " + report["rows"][0]["time_is"] + "; pairs = (seed, split); verdicts use the "
                  "Holm-adjusted Wilcoxon signed-rank p < 0.05.", style="dim")
    _render_step_size(report)


def _render_claims(report: dict[str, Any]) -> None:
    from rich.table import Table

    c = Table(title="claims of the paper", show_lines=False)
    for col in ("claim", "verdict", "reason"):
        c.add_column(col, overflow="fold")
    colour = {"reproduced": "green", "not reproduced": "red", "not testable": "yellow"}
    for cl in report["claims"]:
        c.add_row(cl["claim"], f"[{colour[cl['verdict']]}]{cl['verdict']}[/]", cl["reason"])
    console.print(c)


def _render_step_size(report: dict[str, Any]) -> None:
    lines = []
    for r in report["rows"]:
        if r.get("step_size_bound") is None:
            lines.append(f"{r['variant']}: {r.get('step_size_note')}")
        else:
            lines.append(f"{r['variant']}: eta < {r['step_size_bound']:.4g} (median), met by "
                         f"{100 * r['step_size_ok_share']:.0f}% of runs ({r['step_size_note']})")
    console.print("step-size condition (A2) of the theorems:\n  " + "\n  ".join(lines), style="dim",
                  highlight=False)


def render_fig3(report: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"Fig. 3 (eq. 40, {report['pairs']} pairs): ours; the paper's figure gives curves, not numbers")
    for col in ("variant", "n", "iterations", "train MSE", "test MSE", "sparsity 1e-5", "1e-3", "1e-2",
                f"at {report['paper']['at_iteration']}: 1e-5", "1e-3", "1e-2", "Δ test vs ref", "95% CI",
                "p Holm", "verdict"):
        t.add_column(col, justify="left" if col in ("variant", "verdict") else "right", no_wrap=True)
    for r in report["rows"]:
        p = r["paired"] or {}
        at = r["sparsity_at_claim"] or {}
        ci = f"{_d(p['ci_low'])}..{_d(p['ci_high'])}" if p.get("ci_low") is not None else "-"
        t.add_row(r["variant"], str(r["n"]), str(r["steps"]),
                  f"{_f(r['train_mean'])} ± {_f(r['train_std'], 3)}", f"{_f(r['test_mean'])} ± {_f(r['test_std'], 3)}",
                  _f(r["sparsity_out_1e-5"]), _f(r["sparsity_out_1e-3"]), _f(r["sparsity_out_1e-2"]),
                  _f(at.get("sparsity_out_1e-05")), _f(at.get("sparsity_out_0.001")), _f(at.get("sparsity_out_0.01")),
                  f"{_d(p['mean_diff'])} vs {r['reference']}" if p.get("mean_diff") is not None else "-",
                  ci, _f(p.get("p_holm"), 3), p.get("verdict", ""))
    console.print(t)
    _render_claims(report)
    console.print("pairs = (seed, split); verdicts use the Holm-adjusted Wilcoxon signed-rank p < 0.05.",
                  style="dim")
    _render_step_size(report)


def reproduce(
    table: Annotated[str, typer.Argument(help="table3 (classification) | table5 (regression) | fig3 "
                                              "(function approximation, eq. 40)")],
    dataset: Annotated[Optional[list[str]], typer.Option("--dataset", help="dataset(s); default: every one "
                                                                            "of the table that can be loaded here")] = None,
    seeds: Annotated[int, typer.Option(help="seeds per split")] = 10,
    splits: Annotated[int, typer.Option(help="stratified random train/test splits")] = 5,
    epochs: Annotated[Optional[int], typer.Option(help="override the protocol's epochs")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="demo size: 5 seeds x 2 splits, <= 100 epochs "
                                                        "(fig3: <= 2000 iterations)")] = False,
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
    """Reproduce a table or Fig. 3 of the SL1-GRU paper; print ours beside the paper's with paired statistics."""
    from search.reference import TABLE_DATASETS
    from service.reproduce import open_experiment

    if table not in (*TABLE_DATASETS, "fig3"):
        _fail(f"unknown table {table!r}; use one of {', '.join(TABLE_DATASETS)} or fig3")
    if timing not in ("packed", "solo"):
        _fail("--timing: packed or solo")
    if experiment and open_experiment(db, experiment) is None:
        _fail(f"--experiment: no experiment {experiment}")
    if table == "fig3":
        if dataset:
            _fail("--dataset: fig3 is the function of eq. 40 (funcapprox); it takes no --dataset")
        if quick:
            seeds, splits, epochs = min(seeds, 5), min(splits, 2), min(epochs or 2000, 2000)
        report = _fig3(seeds, splits, epochs, timing, db, experiment, not no_plots, plots_dir)
        if as_json:
            print(json.dumps({"figure": "fig3", "reports": [report]}, indent=2, default=float))
        else:
            render_fig3(report)
        return
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
        out = plots_dir / name if plots_dir and len(names) > 1 else plots_dir  # one folder per dataset
        report = _table(table, name, seeds, splits, epochs, timing, db, experiment, not no_plots, out)
        reports.append(report)
        if not as_json:
            render(report)
    if as_json:
        print(json.dumps({"table": table, "reports": reports}, indent=2, default=float))


def _run_or_open(spec: dict[str, Any] | None, db: str | None, experiment: str | None):
    from service.reproduce import open_experiment, run_spec

    if experiment:
        return open_experiment(db, experiment), experiment
    store, exp_id, status = run_spec(spec, db, say=lambda line: err_console.print(line, highlight=False))
    if status != "succeeded":
        _fail(f"{spec['name']}: experiment {exp_id} {status}")
    return store, exp_id


def _plots_out(plots_dir: Path | None, exp_id: str) -> Path:
    from service.reproduce import default_plots_dir

    return plots_dir or default_plots_dir(exp_id)


def _table(table, name, seeds, splits, epochs, timing, db, experiment, plots, plots_dir) -> dict[str, Any]:
    from search.reference import reproduction_spec
    from service.reports.reproduction import reproduction_report, save_reproduction_plots

    spec = None
    if not experiment:
        spec = reproduction_spec(table, name, seeds=seeds, splits=splits, epochs=epochs)
        spec["execution"]["timing"] = timing
    store, exp_id = _run_or_open(spec, db, experiment)
    exp = store.get_experiment(exp_id)
    _, trials = store.trial_finals([exp_id])
    kind = "classification" if table == "table3" else "regression"
    report = reproduction_report(exp.spec, trials, task_kind=kind)
    report.update(experiment=exp_id, seeds=len(exp.spec["seeds"]) if isinstance(exp.spec["seeds"], list)
                  else exp.spec["seeds"], splits=exp.spec["dataset"]["splits"]["n"],
                  epochs=exp.spec["training"]["epochs"],
                  protocol="summed loss (eq. 15), Table 2 settings, stratified random splits")
    if plots:
        report["plots"] = [str(p) for p in save_reproduction_plots(store, exp_id, trials, report,
                                                                   _plots_out(plots_dir, exp_id))]
        for p in report["plots"]:
            err_console.print(f"plot: {p}")
    return report


def _fig3(seeds, splits, epochs, timing, db, experiment, plots, plots_dir) -> dict[str, Any]:
    from search.reference import fig3_spec
    from service.reports.fig3 import fig3_report, save_fig3_plots

    spec = None
    if not experiment:
        spec = fig3_spec(seeds=seeds, splits=splits, epochs=epochs)
        spec["execution"]["timing"] = timing
    store, exp_id = _run_or_open(spec, db, experiment)
    exp = store.get_experiment(exp_id)
    _, trials = store.trial_finals([exp_id])
    views, _ = store.list_trials(exp_id, limit=100_000)
    report = fig3_report(exp.spec, trials, views)
    report.update(experiment=exp_id, seeds=len(exp.spec["seeds"]) if isinstance(exp.spec["seeds"], list)
                  else exp.spec["seeds"], splits=exp.spec["dataset"]["splits"]["n"],
                  epochs=exp.spec["training"]["epochs"],
                  protocol="eq. 40, section 4.1 settings, full-batch gradient descent on the summed error")
    if plots:
        report["plots"] = [str(p) for p in save_fig3_plots(views, report, _plots_out(plots_dir, exp_id))]
        for p in report["plots"]:
            err_console.print(f"plot: {p}")
    return report


def register(app: typer.Typer) -> None:
    """Add this module's commands to app."""
    app.command("reproduce")(reproduce)
