"""Dataset catalogue: importing this package registers every task with ``trainer.tasks``.

Public API: :func:`catalogue`, :class:`DatasetError`, :func:`default_data_dir`, ``SPECS``.
See ``docs/datasets.md``.
"""

from trainer.datasets.base import (  # noqa: F401
    ENV_DATA_DIR,
    FRAMINGS,
    SPECS,
    CatalogueEntry,
    DatasetError,
    DatasetSpec,
    catalogue,
    clear_cache,
    default_data_dir,
)
from trainer.datasets import generated, packaged  # noqa: F401,E402
from trainer.datasets import local  # noqa: F401,E402

__all__ = ["catalogue", "CatalogueEntry", "DatasetError", "DatasetSpec", "default_data_dir",
           "clear_cache", "ENV_DATA_DIR", "FRAMINGS", "SPECS"]
