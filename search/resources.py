"""Whether one pack's resource request can ever be met by a cluster: the one feasibility rule.

Used twice, never rewritten: at submit, when the cluster is known (``service.submission``), and
by the driver before anything runs (:func:`search.driver.check_resources`). A node is
``{"CPU": n, "GPU": m}``; a pack asks for the CPUs and GPUs :func:`search.packing.plan_packs`
gives it on that cluster (``gpus_per_pack: auto`` is 1 GPU on a cluster with GPUs, none
otherwise, so it always fits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from search.packing import ClusterShape, plan_packs

Node = Mapping[str, float]


@dataclass(frozen=True)
class ResourceProblem:
    """A request no node can ever hold: the spec field to change and why."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def pack_request(nodes: Sequence[Node], *, cpus_per_pack: float, gpus_per_pack: float | str) -> tuple[float, float]:
    """``(cpus, gpus)`` one pack asks Ray for on a cluster of ``nodes`` (``auto`` resolved)."""
    shape = ClusterShape(sum(float(n.get("CPU", 0)) for n in nodes), sum(float(n.get("GPU", 0)) for n in nodes))
    plan = plan_packs(shape, cpus_per_pack=cpus_per_pack, gpus_per_pack=gpus_per_pack, pack_size=None)
    return plan.cpus_per_pack, plan.gpus_per_pack


def _plural(n: float, unit: str) -> str:
    return f"{n:g} {unit}{'' if n == 1 else 's'}"


def resource_problem(nodes: Sequence[Node], *, cpus_per_pack: float, gpus_per_pack: float | str,
                     cuda_only: tuple[str, str] | None = None) -> ResourceProblem | None:
    """None when some node can hold one pack (its CPUs and GPUs on that one node), else the
    problem, naming ``execution.gpus_per_pack`` or ``execution.cpus_per_pack``; ``cuda_only``
    (``TrainingSpec.cuda_only``: the field and why) also refuses packs that would get no GPU."""
    cpus, gpus = pack_request(nodes, cpus_per_pack=cpus_per_pack, gpus_per_pack=gpus_per_pack)
    if cuda_only is not None and gpus <= 0:
        return ResourceProblem(cuda_only[0], f"{cuda_only[1]}, but packs get no GPU on this cluster "
                                             f"(no node has one, or execution.gpus_per_pack is 0)")
    if any(float(n.get("CPU", 0)) >= cpus and float(n.get("GPU", 0)) >= gpus for n in nodes):
        return None
    most_cpus = max((float(n.get("CPU", 0)) for n in nodes), default=0.0)
    most_gpus = max((float(n.get("GPU", 0)) for n in nodes), default=0.0)
    if gpus > 0 and most_gpus <= 0:
        return ResourceProblem("execution.gpus_per_pack", f"{_plural(gpus, 'GPU')} per pack, but no node has a GPU")
    if gpus > most_gpus:
        return ResourceProblem("execution.gpus_per_pack",
                               f"{_plural(gpus, 'GPU')} per pack, but the largest node has {most_gpus:g}")
    if cpus > most_cpus:
        return ResourceProblem("execution.cpus_per_pack",
                               f"{_plural(cpus, 'CPU')} per pack, but the largest node has {most_cpus:g}")
    with_gpus = max(float(n.get("CPU", 0)) for n in nodes if float(n.get("GPU", 0)) >= gpus)
    return ResourceProblem("execution.cpus_per_pack",
                           f"{_plural(cpus, 'CPU')} and {_plural(gpus, 'GPU')} per pack, but the nodes with "
                           f"{_plural(gpus, 'GPU')} have at most {with_gpus:g} CPUs")
