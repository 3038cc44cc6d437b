"""CLI command ``rnnhpo train``: train one model (a pack of one) and report, trace, export weights."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Optional

import typer

#: pydantic field -> the command-line option that sets it
OPTION_OF = {"lr": "--lr", "lam": "--lam", "alpha": "--alpha", "reg": "--reg", "scope": "--scope",
             "seed": "--seed", "family": "--model", "hidden": "--hidden", "epochs": "--epochs",
             "max_steps": "--max-steps", "batch_size": "--batch-size", "dtype": "--dtype",
             "optimizer": "--optimizer", "device": "--device", "trace_every": "--trace-every",
             "tikhonov_beta": "--beta", "init_scale": "--init-scale", "rho": "--rho", "rho_u": "--rho-u",
             "tikhonov_lambda1": "--lambda1", "tikhonov_lambda2": "--lambda2", "loss": "--loss",
             "reduction": "--reduction", "train_readout": "--train-readout", "engine": "--engine",
             "fast_backend": "--fast-backend", "precision": "--precision"}


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _describe(err: dict) -> str:
    """One line for one pydantic error: the option it concerns and what is wrong."""
    loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
    field = next((p for p in reversed(loc) if p in OPTION_OF), None)
    msg = str(err.get("msg", "invalid"))
    ctx = err.get("ctx") or {}
    kind = err.get("type", "")
    if kind == "greater_than":
        msg = f"must be > {ctx.get('gt')}"
    elif kind == "greater_than_equal":
        msg = f"must be >= {ctx.get('ge')}"
    elif kind == "less_than_equal":
        msg = f"must be <= {ctx.get('le')}"
    elif kind == "literal_error":
        msg = f"must be {ctx.get('expected')}"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if field is None:  # model-level checks name the field in the message ("members[0].reg: ...")
        for name, opt in OPTION_OF.items():
            if msg.startswith(f"{name}:") or f".{name}:" in msg.split(" ")[0]:
                field, msg = name, msg.split(":", 1)[1].strip()
                break
    return f"{OPTION_OF[field]}: {msg}" if field else msg


def _beta(text: str):
    if text in ("paper", "bound"):
        return text
    try:
        return float(text)
    except ValueError:
        _fail(f"--beta: must be 'paper', 'bound' or a number, got {text!r}")


def _data_options(items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings as loader options (numbers and true/false parsed, the rest text)."""
    import yaml

    options: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(f"--data-option: expected KEY=VALUE, got {item!r}")
        parsed = yaml.safe_load(value) if value.strip() else ""
        options[key.strip()] = parsed if isinstance(parsed, (bool, int, float, str)) else value
    return options


def _default_data_dir() -> Path:
    from cli.common import settings

    return settings().data_dir


def train(
    task: str = typer.Option(..., "--task", help="task name (see `rnnhpo datasets`), e.g. iris, funcapprox"),
    model: str = typer.Option("gru", "--model", help="rnn | lstm | gru | diag_rnn"),
    reg: str = typer.Option("none", "--reg", help="none | l1 | l2 | sl1 | tikhonov (lstm only)"),
    lr: float = typer.Option(0.01, "--lr", help="learning rate eta"),
    lam: float = typer.Option(0.0, "--lam", help="regularization coefficient lambda"),
    alpha: float = typer.Option(0.01, "--alpha", help="smoothing width alpha of the SL1 penalty"),
    scope: str = typer.Option("output", "--scope", help="penalize W_out (output, paper) or all weights"),
    beta: str = typer.Option("paper", "--beta", help="Tikhonov beta: paper (17/161), bound (1) or a number"),
    lambda1: float = typer.Option(1.0, "--lambda1", help="Tikhonov: weight of (rho_h^2 - 1)_+ (eq. 57)"),
    lambda2: float = typer.Option(1.0, "--lambda2", help="Tikhonov: weight of (beta ||W_oh|| - 1)_+ (eq. 57)"),
    loss: str = typer.Option("auto", "--loss", help="cross_entropy | squared_error (eq. 11) | auto"),
    reduction: str = typer.Option("mean", "--reduction", help="mean over the batch, or sum (eq. 15)"),
    init_scale: float = typer.Option(0.5, "--init-scale", help="weights start U[-a, a] (paper: 0.5)"),
    rho: float = typer.Option(1.0, "--rho", help="projected GD radius of the recurrent weights (rho/sqrt(m))"),
    rho_u: float = typer.Option(1.0, "--rho-u", help="projected GD radius of the input weights (rho_u/sqrt(m))"),
    train_readout: bool = typer.Option(False, "--train-readout", help="diag_rnn: train the readout too"),
    epochs: Optional[int] = typer.Option(100, "--epochs", help="training epochs"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="stop after this many updates"),
    batch_size: int = typer.Option(32, "--batch-size", help="minibatch size (1: per-sample SGD, Algorithm 1)"),
    full_batch: bool = typer.Option(False, "--full-batch", help="full-batch gradient descent"),
    hidden: int = typer.Option(32, "--hidden", help="hidden units"),
    no_bias: bool = typer.Option(False, "--no-bias", help="drop the biases (paper eq. 7-10)"),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd | projected_gd | adam | prox_sgd (proximal, beyond the papers)"),
    seed: int = typer.Option(0, "--seed", help="seeds initialisation and data order"),
    task_seed: int = typer.Option(0, "--task-seed", help="seeds the train/test split"),
    data_option: list[str] = typer.Option([], "--data-option", "-o",
                                          help="dataset option KEY=VALUE, repeatable (e.g. -o path=my.csv -o target=y)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir",
                                            help="dataset files (default RNNHPO_DATA_DIR, else ~/.local/share/rnnhpo/data)"),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | float64"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present) | cpu | cuda | cuda:N"),
    trace_every: int = typer.Option(1, "--trace-every", help="record every n-th iteration"),
    engine: str = typer.Option("auto", "--engine", help="eager (reference loop) | fast (one compiled step) | "
                               "auto (fast on CPU with the native kernels; eager on CUDA until "
                               "the captured step is measured on a GPU)"),
    fast_backend: str = typer.Option("auto", "--fast-backend", help="fast engine backend: auto | eager | compile | "
                                     "cuda_graph | native (fused C++ kernels, CPU, every family) | "
                                     "triton (fused Triton kernels, CUDA)"),
    precision: str = typer.Option("float32", "--precision", help="float32 (exact) | tf32 | bf16 (opt-in)"),
    threads: int = typer.Option(1, "--threads", help="torch intra-op threads"),
    trace_out: Optional[Path] = typer.Option(None, "--trace-out", help="write the per-iteration trace as CSV"),
    weights_out: Optional[Path] = typer.Option(None, "--weights-out", help="write paper-named weights (.npz)"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON summary on stdout"),
) -> None:
    """Train one model and report its final loss, metrics, sparsity and convergence diagnostics."""
    from pydantic import ValidationError

    from trainer.config import MemberConfig, PackConfig

    try:
        member = MemberConfig(lr=lr, reg=reg, lam=lam, alpha=alpha, scope=scope, seed=seed,
                              tikhonov_beta=_beta(beta), tikhonov_lambda1=lambda1, tikhonov_lambda2=lambda2,
                              rho=rho, rho_u=rho_u)
        config = PackConfig(family=model, hidden=hidden, bias=not no_bias, optimizer=optimizer,
                            loss=loss, reduction=reduction, init_scale=init_scale, train_readout=train_readout,
                            batch_size=None if full_batch else batch_size,
                            epochs=None if (epochs is None and max_steps) else epochs, max_steps=max_steps,
                            dtype=dtype, device=device, trace_every=trace_every, engine=engine,
                            fast_backend=fast_backend, precision=precision, members=[member])
    except ValidationError as exc:
        _fail(_describe(exc.errors()[0]))

    import numpy as np
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from trainer.step import unavailable
    from trainer.tasks import load_task
    from trainer.train import train_pack

    problem = unavailable(config)
    if problem is not None:
        _fail(f"{OPTION_OF[problem[0]]}: {problem[1]}")
    torch.set_num_threads(max(1, threads))
    options = _data_options(data_option)
    options["data_dir"] = str(data_dir or _default_data_dir())
    try:
        data = load_task(task, seed=task_seed, **options)
    except KeyError as exc:
        _fail(f"--task: {exc.args[0]}")
    except Exception as exc:  # noqa: BLE001 - a dataset that cannot be loaded: say why, in one line
        _fail(f"--task: cannot load {task!r}: {exc}")

    n_train = len(data.x_train)
    per_epoch = 1 if config.batch_size is None else math.ceil(n_train / min(config.batch_size, n_train))
    total = config.epochs or math.ceil(config.max_steps / per_epoch)
    if config.max_steps and config.epochs:
        total = min(total, math.ceil(config.max_steps / per_epoch))
    metric = "acc" if data.kind == "classification" else "mse"
    progress = Progress(TextColumn(f"{model}/{reg} on {task}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("E={task.fields[E]}  test {task.fields[m]}"), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=False, disable=not sys.stderr.isatty())
    with progress:
        bar = progress.add_task("train", total=total, E="-", m="-")

        def on_epoch(epoch, m):
            progress.update(bar, advance=1, E=f"{m['train_loss'][0]:.5g}",
                            m=f"{metric} {m['test_metric'][0]:.4g}")

        result = train_pack(data, config, on_epoch=on_epoch)
    r = result.members[0]

    if trace_out is not None:
        from trainer.result import TRACE_COLUMNS

        trace_out.parent.mkdir(parents=True, exist_ok=True)
        with trace_out.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(TRACE_COLUMNS)
            cols = [r.trace[c] for c in TRACE_COLUMNS]
            for row in zip(*cols):
                w.writerow([int(v) if c in ("step", "epoch") else repr(float(v)) for c, v in zip(TRACE_COLUMNS, row)])
    if weights_out is not None:
        weights_out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(weights_out, **r.weights)

    summary = {
        "task": task, "model": model, "reg": reg, "lr": lr, "lam": lam, "alpha": alpha, "seed": seed,
        "metric": "accuracy" if metric == "acc" else "mse",
        "final": {k: r.final[k] for k in r.final},
        "diagnostics": r.diagnostics, "device": result.device, "engine": result.engine,
        "wall_time": result.wall_time,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=float))
    else:
        f = r.final
        typer.echo(f"{model}/{reg} on {task}: E={f['loss']:.6g} (data {f['data_loss']:.6g} + penalty "
                   f"{f['penalty']:.6g})  train {metric} {f['train_metric']:.4g}  test {metric} "
                   f"{f['test_metric']:.4g}  sparsity W_out {f['sparsity_out']:.3f} all "
                   f"{f['sparsity_all']:.3f}  steps {f['steps']}  {result.wall_time:.2f}s"
                   + ("  DIVERGED" if r.diverged else ""))
    if r.diverged:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to app."""
    app.command("train")(train)
