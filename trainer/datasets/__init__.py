"""Dataset catalogue: importing this package registers every task with ``trainer.tasks``."""

from trainer.datasets import generated, packaged  # noqa: F401
