"""The Ray job of an experiment: its submission id, and the outcome its driver reports."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from service.store._values import _jsonable
from service.store.base import E, StoreBase
from service.store.views import NotFound


class JobStore(StoreBase):
    """Which Ray job runs an experiment, and what its driver reported at the end."""

    def set_ray_job(self, exp_id: str, submission_id: str | None) -> None:
        """Record the Ray job now running ``exp_id``; its previous outcome is forgotten."""
        with self._write() as conn:
            res = conn.execute(E.update().where(E.c.id == exp_id).values(ray_job_id=submission_id,
                                                                         outcome=None))
            if res.rowcount != 1:
                raise NotFound(f"experiment {exp_id!r} not found")

    def set_outcome(self, exp_id: str, outcome: dict[str, Any]) -> None:
        """The job driver's summary of its run (read back by the runner that dispatched it)."""
        with self._write() as conn:
            res = conn.execute(E.update().where(E.c.id == exp_id).values(outcome=_jsonable(outcome)))
            if res.rowcount != 1:
                raise NotFound(f"experiment {exp_id!r} not found")

    def ray_job(self, exp_id: str) -> tuple[str | None, dict[str, Any] | None]:
        """``(submission id, outcome)`` of the experiment's Ray job (None, None before any)."""
        with self._read() as conn:
            row = conn.execute(sa.select(E.c.ray_job_id, E.c.outcome).where(E.c.id == exp_id)).first()
        if row is None:
            raise NotFound(f"experiment {exp_id!r} not found")
        return row.ray_job_id, row.outcome
