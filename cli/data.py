"""CLI commands: ``rnnhpo datasets`` and ``rnnhpo data export``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

data_app = typer.Typer(no_args_is_help=True, add_completion=False,
                       help="Dataset tools (export the arrays a model is fed).")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            _fail(f"option {pair!r} is not KEY=VALUE")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = _parse_value(value.strip())
    return out


def datasets(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Directory with local data files "
                                            "(default $RNNHPO_DATA_DIR, else ~/.cache/rnnhpo/data)."),
    as_json: bool = typer.Option(False, "--json", help="Print the catalogue as JSON."),
) -> None:
    """List the dataset catalogue with availability (ready / needs FILE in DIR)."""
    from trainer.datasets import catalogue, default_data_dir

    entries = catalogue(data_dir)
    if as_json:
        typer.echo(json.dumps([e.as_dict() for e in entries], indent=2))
        return
    rows = [("NAME", "KIND", "SHAPE", "CLASSES", "SPLIT", "FRAMING", "AVAILABILITY")]
    for e in entries:
        rows.append((e.name, e.kind, e.shape, str(e.n_classes or "-"), e.split, e.default_framing,
                     e.availability))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    typer.echo(f"\ndata directory: {data_dir or default_data_dir()} (docs/datasets.md lists sources)")


@data_app.command("export")
def export(
    name: str = typer.Argument(..., help="Dataset name (see `rnnhpo datasets`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npz file."),
    seed: int = typer.Option(0, "--seed", help="Split seed."),
    framing: Optional[str] = typer.Option(None, "--framing",
                                          help="features_as_steps | single_step | rows | window:k"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Directory with local data files."),
    fold: Optional[int] = typer.Option(None, "--fold", help="Export this CV fold (needs --n-folds)."),
    n_folds: Optional[int] = typer.Option(None, "--n-folds", help="Number of CV folds."),
    option: Optional[List[str]] = typer.Option(None, "--option", "-O",
                                               help="Dataset option KEY=VALUE (repeatable), "
                                                    "e.g. -O path=my.csv -O target=y"),
) -> None:
    """Write x_train, y_train, x_test, y_test exactly as the model is fed them (framed, scaled)."""
    import numpy as np

    from trainer.datasets import DatasetError
    from trainer.tasks import load_task

    opts = parse_options(option)
    if framing:
        opts["framing"] = framing
    if data_dir is not None:
        opts["data_dir"] = str(data_dir)
    if fold is not None or n_folds is not None:
        opts.update(fold=fold, n_folds=n_folds)
    try:
        task = load_task(name, seed=seed, **opts)
    except KeyError as exc:
        _fail(str(exc.args[0]) if exc.args else str(exc))
    except (DatasetError, ValueError, TypeError) as exc:
        _fail(str(exc))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as fh:
            np.savez(fh, x_train=task.x_train, y_train=task.y_train, x_test=task.x_test,
                     y_test=task.y_test)
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror or exc}")
    typer.echo(f"{name}: x_train {task.x_train.shape}, y_train {task.y_train.shape}, "
               f"x_test {task.x_test.shape}, y_test {task.y_test.shape} "
               f"(framing {task.meta.get('framing')}) -> {out}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to app."""
    app.command("datasets")(datasets)
    app.add_typer(data_app, name="data")
