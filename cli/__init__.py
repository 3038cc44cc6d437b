"""The ``rnnhpo`` command line (Typer). Each module registers one group of commands."""
