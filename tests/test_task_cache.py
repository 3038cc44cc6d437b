"""A warm worker loads a pack's data once and keeps only the last few tasks."""

from __future__ import annotations

import search.execution as execution
from search.packing import PackJob


def job(seed: int) -> PackJob:
    return PackJob(pack_id="p", variant_family="gru", dataset={"name": "iris"}, fold=None, pack_settings={},
                   members=[], trial_ids=[], trial_numbers=[], data={"seed": seed, "options": {}})


def test_packs_share_a_loaded_task_and_the_cache_is_bounded(monkeypatch):
    loads: list[int] = []

    def load_task(name, seed, **options):
        loads.append(seed)
        return (name, seed)

    monkeypatch.setattr("trainer.tasks.load_task", load_task)
    monkeypatch.setattr(execution, "_TASK_CACHE", type(execution._TASK_CACHE)())
    assert execution.load_job_task(job(0)) == ("iris", 0)
    assert execution.load_job_task(job(0)) == ("iris", 0) and loads == [0]  # the second pack reuses it
    for seed in range(1, execution.TASK_CACHE_SIZE + 1):
        execution.load_job_task(job(seed))
    assert len(execution._TASK_CACHE) == execution.TASK_CACHE_SIZE
    execution.load_job_task(job(0))  # the least recently used one was dropped: loaded again
    assert loads.count(0) == 2 and loads.count(execution.TASK_CACHE_SIZE) == 1
