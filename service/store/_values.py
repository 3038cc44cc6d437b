"""Value plumbing shared by the store's parts: JSON-safe values, numbers, status and trace-column checks."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import numpy as np

_INT32_MAX = 2**31 - 1


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _jsonable(x: Any) -> Any:
    """Plain JSON: numpy scalars/arrays to Python, NaN/inf to None, pydantic models dumped."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (str, int, bool)):
        return x
    if isinstance(x, datetime):
        return x.isoformat()
    if hasattr(x, "model_dump"):
        return _jsonable(x.model_dump(mode="json"))
    return str(x)


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _int(x: Any) -> int | None:
    v = _num(x)
    return None if v is None else int(v)


def _check_status(status: str | None, allowed: tuple[str, ...], what: str) -> None:
    if status is not None and status not in allowed:
        raise ValueError(f"unknown {what} status {status!r}; allowed: {', '.join(allowed)}")


def _columns(data: dict[str, Any], columns: tuple[str, ...], ints: tuple[str, ...],
             what: str) -> tuple[int, dict[str, np.ndarray]]:
    """Validate a trace/epochs dict: known names, equal lengths, int columns present & finite.

    Missing float columns are filled with NaN. Returns (n_rows, arrays in ``columns`` order).
    """
    unknown = set(data) - set(columns)
    if unknown:
        raise ValueError(f"unknown {what} column(s) {sorted(unknown)}; allowed: {list(columns)}")
    lengths = {k: len(np.asarray(v).reshape(-1)) for k, v in data.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{what} columns have different lengths: {lengths}")
    n = next(iter(lengths.values())) if lengths else 0
    out: dict[str, np.ndarray] = {}
    for c in columns:
        if c in ints:
            if c not in data:
                if n == 0:
                    out[c] = np.zeros(0, dtype=np.int64)
                    continue
                raise ValueError(f"{what} column {c!r} is required")
            a = np.asarray(data[c]).reshape(-1)
            if a.dtype.kind == "f":
                if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                    raise ValueError(f"{what} column {c!r} must hold finite integers")
            elif a.dtype.kind not in "iub":
                raise ValueError(f"{what} column {c!r} must be integer, got dtype {a.dtype}")
            a = a.astype(np.int64)
            if n and (a.min() < 0 or a.max() > _INT32_MAX):
                raise ValueError(f"{what} column {c!r} out of range [0, 2**31)")
            out[c] = a
        else:
            if c in data:
                a = np.asarray(data[c]).reshape(-1)
                if a.dtype.kind not in "fiub":
                    raise ValueError(f"{what} column {c!r} must be numeric, got dtype {a.dtype}")
                out[c] = a.astype(np.float64)
            else:
                out[c] = np.full(n, np.nan)
    return n, out

