"""Database layer: SQLAlchemy models, engine creation from one URL, Alembic migrations."""

from service.db.engine import dispose_engines, get_engine, make_engine, normalize_url
from service.db.migrate import current_revision, downgrade, head_revision, upgrade
from service.db.models import (
    Base,
    EpochMetric,
    Experiment,
    TracePoint,
    Trial,
)

__all__ = [
    "Base", "Experiment", "Trial", "TracePoint", "EpochMetric",
    "make_engine", "get_engine", "dispose_engines", "normalize_url",
    "upgrade", "downgrade", "current_revision", "head_revision",
]
