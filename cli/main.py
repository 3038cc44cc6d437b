"""Entry point of the ``rnnhpo`` console script."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import data, query, reproduce, run, serve, train

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="rnnhpo: hyperparameter search for regularized recurrent networks.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"rnnhpo {version('rnnhpo')}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="print the version and exit")] = False) -> None:
    """rnnhpo: hyperparameter search for regularized recurrent networks (SL1-GRU and baselines).

    Settings come from RNNHPO_* environment variables (see docs/service.md); the default
    database is the per-user SQLite file ~/.local/share/rnnhpo/rnnhpo.db."""


for module in (train, data, run, query, serve, reproduce):
    module.register(app)

if __name__ == "__main__":
    app()
