"""PostgreSQL binary COPY, encoded and decoded with numpy (no Python object per value).

psycopg has ``COPY`` but no numpy bulk encoder; this is the one hand-written codec of the store.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_PG_COPY_TRAILER = struct.pack(">h", -1)
_COPY_CHUNK_ROWS = 100_000


def _pg_copy_chunks(trial_id: int, n: int, cols: dict[str, np.ndarray],
                    columns: tuple[str, ...], ints: tuple[str, ...]) -> Iterator[bytes]:
    """PostgreSQL binary COPY payload for (trial_id, *columns), built with numpy (no per-row
    Python). Integer columns are int4, float columns float8; all values non-NULL."""
    fields: list[tuple[str, str]] = [("nf", ">i2"), ("l_tid", ">i4"), ("v_tid", ">i4")]
    for j, c in enumerate(columns):
        fields += [(f"l{j}", ">i4"), (f"v{j}", ">i4" if c in ints else ">f8")]
    dtype = np.dtype(fields)  # packed: no alignment padding, exactly the COPY row layout
    yield _PG_COPY_HEADER
    for start in range(0, n, _COPY_CHUNK_ROWS):
        stop = min(n, start + _COPY_CHUNK_ROWS)
        rec = np.empty(stop - start, dtype=dtype)
        rec["nf"] = len(columns) + 1
        rec["l_tid"] = 4
        rec["v_tid"] = trial_id
        for j, c in enumerate(columns):
            rec[f"l{j}"] = 4 if c in ints else 8
            rec[f"v{j}"] = cols[c][start:stop]
        yield rec.tobytes()
    yield _PG_COPY_TRAILER


def _parse_pg_binary(data: bytes, names: list[str], ints: tuple[str, ...]
                     ) -> dict[str, np.ndarray] | None:
    """Parse a binary ``COPY ... TO STDOUT`` of int4/float8 columns into numpy arrays; ``None``
    when the payload has NULLs or unexpected field sizes (the caller then falls back)."""
    if len(data) < 21 or not data.startswith(b"PGCOPY\n\xff\r\n\x00"):
        return None
    (ext,) = struct.unpack(">i", data[15:19])
    body = memoryview(data)[19 + ext: len(data) - 2]
    fields: list[tuple[str, str]] = [("nf", ">i2")]
    for j, c in enumerate(names):
        fields += [(f"l{j}", ">i4"), (f"v{j}", ">i4" if c in ints else ">f8")]
    dtype = np.dtype(fields)
    if len(body) % dtype.itemsize:
        return None
    rec = np.frombuffer(body, dtype=dtype)
    if rec.size and not np.all(rec["nf"] == len(names)):
        return None
    out: dict[str, np.ndarray] = {}
    for j, c in enumerate(names):
        if rec.size and not np.all(rec[f"l{j}"] == (4 if c in ints else 8)):
            return None
        out[c] = rec[f"v{j}"].astype(np.int64 if c in ints else np.float64)
    return out
