"""What the Ray cluster offers, read from Ray: CPUs, GPUs and GPU memory; and where a pack runs.

:func:`cluster_shape` feeds :func:`search.packing.plan_packs`; :func:`placement` names the node,
host and device a pack trains on (stored with every trial). The nodes' resources
(``{"CPU": n, "GPU": m}`` each, for :func:`search.resources.resource_problem`) are read from the
Ray this process joined (:func:`joined_nodes`), from this machine for a local Ray not started yet
(:func:`local_machine_nodes`, without importing torch), or from a cluster's dashboard
(:func:`dashboard_nodes`, Ray's state API, a short timeout, cached briefly).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
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


def joined_nodes() -> list[dict[str, float]] | None:
    """``{"CPU": n, "GPU": m}`` of every alive node of the Ray cluster this process joined; None
    when this process has no Ray (Ray is not imported for the question) or Ray does not answer."""
    is_initialized = getattr(sys.modules.get("ray"), "is_initialized", None)
    if is_initialized is None:  # no Ray here, or another thread is still importing it
        return None
    try:
        if not is_initialized():
            return None
        nodes = _alive_nodes()
    except Exception:  # noqa: BLE001 - Ray still starting, or going away: not known
        return None
    return [{"CPU": float(n.get("Resources", {}).get("CPU", 0)), "GPU": float(n.get("Resources", {}).get("GPU", 0))}
            for n in nodes]


@functools.lru_cache(maxsize=1)
def local_gpu_count() -> int:
    """NVIDIA GPUs a local Ray would see here: ``CUDA_VISIBLE_DEVICES`` when set, else the lines of
    ``nvidia-smi -L``, else the driver's ``/proc/driver/nvidia/gpus``, else 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=True).stdout
            return sum(1 for line in out.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            pass
    proc = Path("/proc/driver/nvidia/gpus")
    return len(list(proc.iterdir())) if proc.is_dir() else 0


def local_machine_nodes() -> list[dict[str, float]]:
    """The one node a local Ray started here would have: this process's CPUs and the GPUs of
    :func:`local_gpu_count`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return [{"CPU": float(cpus), "GPU": float(local_gpu_count())}]


#: Dashboard answers (or failures) kept this many seconds, by URL.
DASHBOARD_CACHE_S = 15.0
_dashboard_cache: dict[str, tuple[float, list[dict[str, float]] | None]] = {}
_dashboard_lock = threading.Lock()


def _ray_token() -> str | None:
    """Ray's token from the environment, as Ray's own clients read it."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    if token:
        return token.strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    try:
        return Path(path).read_text().strip() if path else None
    except OSError:
        return None


def dashboard_nodes(url: str, *, timeout_s: float = 3.0) -> list[dict[str, float]] | None:
    """``{"CPU": n, "GPU": m}`` of the alive nodes, asked of the dashboard at ``url`` (Ray's state
    API ``/api/v0/nodes``, with Ray's token when one is configured); None when it does not answer
    within ``timeout_s`` or answers nothing usable. Answers are cached ``DASHBOARD_CACHE_S``."""
    base = url.rstrip("/")
    with _dashboard_lock:
        cached = _dashboard_cache.get(base)
        if cached is not None and time.monotonic() - cached[0] < DASHBOARD_CACHE_S:
            return cached[1]
        nodes = _fetch_dashboard_nodes(base, timeout_s)
        _dashboard_cache[base] = (time.monotonic(), nodes)
        return nodes


def _fetch_dashboard_nodes(base: str, timeout_s: float) -> list[dict[str, float]] | None:
    token = _ray_token()
    request = urllib.request.Request(f"{base}/api/v0/nodes?limit=10000",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 - the operator's URL
            body = json.loads(resp.read(10_000_000))
        rows = body["data"]["result"]["result"]
        nodes = [{"CPU": float((r.get("resources_total") or {}).get("CPU", 0)),
                  "GPU": float((r.get("resources_total") or {}).get("GPU", 0))}
                 for r in rows if r.get("state", "ALIVE") == "ALIVE"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.info("cluster resources unknown: %s/api/v0/nodes gave no answer (%s)", base, type(exc).__name__)
        return None
    return nodes or None


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
