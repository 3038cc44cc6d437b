"""Builds the fused CPU kernels of ``trainer/csrc`` once per machine and loads them with ctypes.

``g++ -O3 -march=native -fopenmp`` (no ``-ffast-math``: NaN and inf must reach the divergence check) into
``~/.cache/rnnhpo/native`` (``$XDG_CACHE_HOME`` when set), named by a hash of the source, the flags,
the compiler and the CPU's feature flags, so an edit, a new compiler or another CPU model builds
anew and every later process loads the library in milliseconds. The build writes to a temporary
name and renames it into place, so concurrent workers never load half a file. No compiler, or a
failed build, gives ``None`` and the reason: the fast engine then uses its PyTorch step.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Optional

SOURCE = Path(__file__).parent / "csrc" / "pack_kernels.cpp"
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno", "-fopenmp", "-fPIC", "-shared",
         "-std=c++17")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rnnhpo" / "native"


def _cpu_features() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


def _build(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", tmp], check=True, capture_output=True, text=True)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@lru_cache(maxsize=None)
def load_library() -> tuple[Optional[ctypes.CDLL], str]:
    """(the loaded kernel library, "") or (None, why it is not available)."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        return None, "no C++ compiler (g++) on PATH"
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
        key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join(FLAGS).encode(), version.encode(),
                                         platform.machine().encode(), _cpu_features().encode()])).hexdigest()[:24]
        target = _cache_dir() / f"pack_kernels-{key}.so"
        if not target.exists():
            _build(compiler, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        return None, f"building the native kernels failed: {detail.strip()[:500]}"
    ptr = ctypes.c_void_p
    n_args = {"gru_forward": 8, "gru_backward": 9, "lstm_forward": 8, "lstm_backward": 9, "rnn_forward": 5,
              "rnn_backward": 6, "diag_rnn_forward": 5, "diag_rnn_backward": 6}
    for kernel, n in n_args.items():
        for suffix in ("f32", "f64"):
            getattr(lib, f"{kernel}_{suffix}").argtypes = [ptr] * n
            getattr(lib, f"{kernel}_{suffix}").restype = None
    for name in ("sgd_step_f32", "sgd_step_f64"):
        getattr(lib, name).argtypes = [ptr] * 13 + [ctypes.c_double]
        getattr(lib, name).restype = None
    return lib, ""
