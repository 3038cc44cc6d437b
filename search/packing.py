"""Group trials into packs: members that share architecture, training settings and data."""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from search.sink import TrialPlan


@dataclass
class PackJob:
    """One Ray Tune trial: K trials of one architecture trained together."""

    pack_id: str
    variant_family: str
    dataset: dict[str, Any]          # DatasetSpec as dict (+ split_seed)
    fold: int | None
    pack_settings: dict[str, Any]    # PackConfig fields except members
    members: list[dict[str, Any]]    # MemberConfig dumps, one per trial
    trial_ids: list[int]
    trial_numbers: list[int]
    objective: str = "test_metric"
    maximize: bool = True
    asha: dict[str, int] | None = None
    inject_failures: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] | None = None   # {"seed", "options"} for load_task: the split (and validation carve)
    role: str = "test"                   # "select" (scored on validation) or "test"

    @property
    def size(self) -> int:
        return len(self.members)


def group_key(plan: TrialPlan) -> str:
    """Trials with equal keys may share a pack: same pack settings (family included), role and data."""
    return json.dumps({"pack": plan.config["pack"], "fold": plan.fold, "role": plan.config.get("role"),
                       "data": plan.config.get("data")}, sort_keys=True)


def make_packs(plans: list[TrialPlan], trial_ids: dict[int, int], *, pack_size: int, slots: int,
               dataset: dict[str, Any], objective: str, maximize: bool,
               asha: dict[str, int] | None = None) -> list[PackJob]:
    """Split plans into packs of at most ``pack_size`` members.

    Groups larger than one pack are split evenly; small workloads are split further so that at
    least ``slots`` packs run in parallel when there are enough trials to share.
    """
    groups: dict[str, list[TrialPlan]] = {}
    for plan in plans:
        groups.setdefault(group_key(plan), []).append(plan)
    total = len(plans)
    jobs: list[PackJob] = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda p: p.number)
        share = max(1, round(slots * len(members) / max(total, 1)))
        n_packs = max(math.ceil(len(members) / pack_size), min(share, len(members)))
        size = math.ceil(len(members) / n_packs)
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            first = chunk[0]
            jobs.append(PackJob(
                pack_id=uuid.uuid4().hex[:12],
                variant_family=first.config["pack"]["family"],
                dataset=dataset, fold=first.fold,
                pack_settings=dict(first.config["pack"]),
                members=[p.config["member"] for p in chunk],
                trial_ids=[trial_ids[p.number] for p in chunk],
                trial_numbers=[p.number for p in chunk],
                objective=objective, maximize=maximize,
                asha=asha if first.config.get("role", "test") == "select" else None,
                data=first.config.get("data"), role=first.config.get("role", "test"),
                extra={"composition": dict(Counter(p.variant for p in chunk))}))
    return jobs
