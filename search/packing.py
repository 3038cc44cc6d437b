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
    """One task on a pack worker: K trials of one architecture trained together."""

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


# -- how large packs are and how many run at once ------------------------------------------------

#: Peak device memory of one Iris-shaped member (hidden 32, T = 4, D = 1, batch 32, float32),
#: measured on an H100 (~0.24 MB); :func:`member_bytes` scales this by the shape.
IRIS_MEMBER_BYTES = 0.24e6
_IRIS_SHAPE = {"hidden": 32, "seq_len": 4, "n_inputs": 1, "n_outputs": 3, "batch": 32, "itemsize": 4}
#: Largest pack the spec accepts (``execution.pack_size``'s bound).
MAX_PACK_SIZE = 4096
#: Share of a GPU's memory a pack may plan to use (CUDA context, allocator slack, data).
GPU_MEMORY_HEADROOM = 0.7
#: Assumed memory of a GPU whose size the cluster did not report.
DEFAULT_GPU_MEMORY_BYTES = 16 * 2**30


def _member_units(hidden: int, seq_len: int, n_inputs: int, n_outputs: int, batch: int) -> float:
    """Floats one member keeps on the device: parameters with gradients and optimizer state
    (4 copies of 3 gates' input, recurrent and bias weights plus the readout) and the
    activations kept for backpropagation (about 10 per unit, step and sample)."""
    params = 3 * (hidden * n_inputs + hidden * hidden + hidden) + hidden * n_outputs + n_outputs
    return 4 * params + 10 * batch * seq_len * hidden


def member_bytes(*, hidden: int, seq_len: int, n_inputs: int, n_outputs: int, batch: int,
                 itemsize: int = 4) -> float:
    """Estimated peak device memory of one pack member, calibrated so that the Iris shape gives
    the ~0.24 MB measured on an H100."""
    scale = IRIS_MEMBER_BYTES / (_member_units(**{k: v for k, v in _IRIS_SHAPE.items() if k != "itemsize"})
                                 * _IRIS_SHAPE["itemsize"])
    return scale * itemsize * _member_units(hidden, seq_len, n_inputs, n_outputs, batch)


@dataclass(frozen=True)
class ClusterShape:
    """What the Ray cluster offers: total CPUs and GPUs, and the smallest GPU's memory."""

    cpus: float
    gpus: float = 0.0
    gpu_memory_bytes: float | None = None


@dataclass(frozen=True)
class PackPlan:
    """How one round's trials are packed: at most ``pack_size`` members per pack, at least
    ``slots`` packs when there are enough trials, each asking Ray for these resources."""

    pack_size: int
    slots: int
    cpus_per_pack: float
    gpus_per_pack: float

    @property
    def on_gpu(self) -> bool:
        return self.gpus_per_pack > 0


def plan_packs(cluster: ClusterShape, *, cpus_per_pack: float, gpus_per_pack: float | str,
               pack_size: int | None, member_bytes: float = IRIS_MEMBER_BYTES) -> PackPlan:
    """Size packs to the cluster.

    * CPUs only (or ``gpus_per_pack`` 0): one pack per ``cpus_per_pack`` cores, at most
      ``pack_size`` members each (default 64) -- small packs spread over the cores.
    * GPUs (``gpus_per_pack`` ``"auto"`` = 1 on a cluster with GPUs, or the fraction asked): one pack
      per GPU share, each as large as that share's memory allows (``member_bytes`` per member,
      ``GPU_MEMORY_HEADROOM`` of the memory, at most ``MAX_PACK_SIZE``, at most ``pack_size``
      when the spec sets it); :func:`make_packs` splits further only so every share gets a pack.
    """
    if gpus_per_pack == "auto":
        gpus_per_pack = 1.0 if cluster.gpus >= 1 else (cluster.gpus or 0.0)
    gpus_per_pack = float(gpus_per_pack)
    if gpus_per_pack <= 0 or cluster.gpus <= 0:
        # an explicit GPU request on a cluster without GPUs is kept as asked: the driver's
        # resource check then refuses it (only ``auto`` falls back to CPUs)
        slots = max(1, int(cluster.cpus // cpus_per_pack))
        return PackPlan(pack_size or 64, slots, cpus_per_pack, max(gpus_per_pack, 0.0))
    slots = max(1, int(round(cluster.gpus / gpus_per_pack, 6)))
    memory = (cluster.gpu_memory_bytes or DEFAULT_GPU_MEMORY_BYTES) * min(gpus_per_pack, 1.0)
    fits = max(1, int(memory * GPU_MEMORY_HEADROOM // max(member_bytes, 1.0)))
    size = min(fits, MAX_PACK_SIZE, pack_size or MAX_PACK_SIZE)
    # a pack also needs CPUs; never ask for more than the cluster shares out per GPU slot
    cpus = min(cpus_per_pack, max(cluster.cpus / slots, 0.01)) if cluster.cpus else cpus_per_pack
    return PackPlan(size, slots, cpus, gpus_per_pack)
