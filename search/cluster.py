"""What the Ray cluster offers, read from Ray: CPUs, GPUs and GPU memory; and where a pack runs.

:func:`cluster_shape` feeds :func:`search.packing.plan_packs`; :func:`placement` names the node,
host and device a pack trains on (stored with every trial).
"""

from __future__ import annotations

import logging
import platform
import socket
from typing import Any

from search.packing import ClusterShape

log = logging.getLogger("rnnhpo.search")

#: Memory of common data-centre GPUs by Ray's ``accelerator_type:*`` resource, used when the
#: cluster's GPUs cannot be asked directly.
KNOWN_GPU_MEMORY_GB = {"H100": 80, "H200": 141, "A100": 40, "A10G": 24, "L4": 24, "L40S": 48,
                       "T4": 16, "V100": 16, "B200": 180}


def _alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive", True)]


def _probe_gpu_memory(timeout_s: float) -> float | None:
    """Total memory of one GPU, asked of the cluster by a tiny task holding 1% of a GPU."""
    import ray

    @ray.remote(num_gpus=0.01, num_cpus=0, max_retries=0)
    def total_memory() -> float | None:
        import torch

        return float(torch.cuda.get_device_properties(0).total_memory) if torch.cuda.is_available() else None

    ref = total_memory.options(name="rnnhpo-gpu-memory-probe").remote()
    try:
        return ray.get(ref, timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - a busy or odd cluster falls back to the table
        ray.cancel(ref, force=True)
        log.info("GPU memory probe gave no answer (%s); using the accelerator table", type(exc).__name__)
        return None


def cluster_shape(*, probe_timeout_s: float = 30.0) -> ClusterShape:
    """Total CPUs and GPUs of the alive nodes, and a GPU's memory (probed, else from the
    accelerator type, else unknown)."""
    nodes = _alive_nodes()
    cpus = sum(float(n.get("Resources", {}).get("CPU", 0)) for n in nodes)
    gpus = sum(float(n.get("Resources", {}).get("GPU", 0)) for n in nodes)
    if gpus <= 0:
        return ClusterShape(cpus, 0.0, None)
    memory = _probe_gpu_memory(probe_timeout_s)
    if memory is None:
        kinds = {k.split(":", 1)[1] for n in nodes for k in n.get("Resources", {})
                 if k.startswith("accelerator_type:")}
        known = [KNOWN_GPU_MEMORY_GB[k] for k in kinds if k in KNOWN_GPU_MEMORY_GB]
        memory = min(known) * 1e9 if known else None
    return ClusterShape(cpus, gpus, memory)


def placement(device: str) -> dict[str, str | None]:
    """Where this process trains: Ray node id (None outside Ray), host name and device name."""
    node_id = None
    try:
        import ray

        if ray.is_initialized():
            node_id = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray there is no node
        node_id = None
    name = platform.processor() or platform.machine() or "cpu"
    if device.startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name(torch.device(device))
    return {"node_id": node_id, "host": socket.gethostname(), "device_name": name[:200]}
