"""Entry point of the ``rnnhpo`` console script."""

from __future__ import annotations

import typer

from cli import data, reproduce, run, serve, train

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="rnnhpo: hyperparameter search for regularized recurrent networks.")

for module in (train, data, run, serve, reproduce):
    module.register(app)

if __name__ == "__main__":
    app()
