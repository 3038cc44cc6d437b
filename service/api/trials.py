"""/api/v1/experiments/{id}/trials, /api/v1/trials/{id}, its trace (JSON or CSV, down-sampled,
streamed) and its per-epoch metrics."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import threading
from collections.abc import Iterator
from typing import Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from search.sink import EPOCH_COLUMNS, TRACE_COLUMNS, TrialStatus
from service.api.deps import NO_NUL_PATTERN, ExpIdPath, StoreDep, TrialIdPath
from service.api.schemas import TrialPage, _dump

router = APIRouter(tags=["trials"])

SortKey = Literal["number", "id", "variant", "status", "test_metric", "train_metric", "loss",
                  "sparsity_out", "sparsity_all", "wall_time", "seed"]

#: Rows read from the database per query while streaming, and rows formatted at once: a reader
#: holds about one chunk as Python objects (~1 MB), whatever the trace length.
CHUNK_ROWS = 2_000
FORMAT_ROWS = 500
#: Chunk queries running at once across all trace readers: the database connections (and their
#: page caches) that streaming holds stay bounded however many clients read.
_CHUNK_QUERIES = threading.BoundedSemaphore(4)


def _bounded(chunks: Iterator[dict]) -> Iterator[dict]:
    while True:
        with _CHUNK_QUERIES:
            chunk = next(chunks, None)
        if chunk is None:
            return
        yield chunk
_NONFINITE_CSV = re.compile(r"(?<![^,\n])(-?inf|nan)(?![^,\n])")


def _clean(obj):
    """JSON-safe copy: NaN/inf become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def _trial_json(view) -> dict:
    d = _dump(view)
    for k, v in list(d.items()):
        if hasattr(v, "isoformat"):
            d[k] = v.isoformat()
    return _clean(d)


@router.get("/experiments/{exp_id}/trials", response_model=TrialPage,
            responses={404: {"description": "no such experiment"}},
            summary="Trials of an experiment: sort, filter by variant/status, paginate")
def list_trials(
    exp_id: ExpIdPath, store: StoreDep,
    status: TrialStatus | None = Query(None, description="only trials with this status"),
    variant: str | None = Query(None, max_length=200, pattern=NO_NUL_PATTERN,
                                description="only this variant, e.g. SL1-GRU"),
    sort: SortKey = Query("number", description="sort key"),
    order: Literal["asc", "desc"] = Query("asc"),
    limit: int = Query(100, ge=1, le=10_000),
    offset: int = Query(0, ge=0, le=10**9),
) -> TrialPage:
    if store.get_experiment(exp_id) is None:
        raise HTTPException(404, detail=f"experiment {exp_id!r} not found")
    try:
        items, total = store.list_trials(exp_id, status=status, variant=variant, sort=sort,
                                         descending=(order == "desc"), limit=limit, offset=offset)
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    return TrialPage(items=[_trial_json(t) for t in items], total=total, limit=limit, offset=offset)


def _trial_or_404(store, trial_id: int):
    view = store.get_trial(trial_id)
    if view is None:
        raise HTTPException(404, detail=f"trial {trial_id} not found")
    return view


TrialId = TrialIdPath


@router.get("/trials/{trial_id}", response_model=dict, responses={404: {"description": "no such trial"}},
            summary="One trial: params, config, status, final metrics, diagnostics, pack")
def get_trial(trial_id: TrialId, store: StoreDep) -> dict:
    if not -2**63 <= trial_id < 2**63:
        raise HTTPException(404, detail=f"trial {trial_id} not found")
    return _trial_json(_trial_or_404(store, trial_id))


def _parse_metrics(metrics: str | None, allowed: tuple[str, ...], field: str = "metrics") -> list[str]:
    if not metrics:
        return list(allowed)
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    unknown = [m for m in names if m not in allowed]
    if unknown or not names:
        raise HTTPException(422, detail=[{"loc": ["query", field], "type": "value_error",
                                          "msg": f"unknown metric(s) {unknown}; allowed: {list(allowed)}"}])
    cols = ["step"] + [m for m in names if m != "step"] if "step" in allowed else names
    return list(dict.fromkeys(cols))


def _fmt_row_block(cols: list[str], chunk: dict[str, np.ndarray], fmt: str) -> str:
    """Rows of a chunk as CSV lines or comma-separated JSON arrays; non-finite values become an
    empty CSV field or JSON null. Formatting goes through the C encoders of json and csv."""
    arrays = []
    finite = True
    for c in cols:
        a = np.asarray(chunk[c])
        if c in ("step", "epoch") and a.dtype.kind == "f" and np.isfinite(a).all():
            a = a.astype(np.int64)
        elif a.dtype.kind == "f" and finite and not np.isfinite(a).all():
            finite = False
        arrays.append(a.tolist())
    if not arrays or not arrays[0]:
        return ""
    rows = list(zip(*arrays))
    if fmt == "csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        block = out.getvalue()
        if not finite:
            block = _NONFINITE_CSV.sub("", block)
        return block
    block = json.dumps(rows, separators=(",", ":"))[1:-1]
    if not finite:
        block = block.replace("-Infinity", "null").replace("Infinity", "null").replace("NaN", "null")
    return block


def _stream(store, trial_id: int, cols: list[str], every: int, max_points: int | None, fmt: str,
            total: int) -> Iterator[str]:
    if fmt == "csv":
        yield ",".join(cols) + "\n"
    else:
        head = {"trial_id": trial_id, "columns": cols, "every": every, "max_points": max_points,
                "total_rows": total}
        yield json.dumps(head)[:-1] + ',"rows":['
    if max_points is not None:
        # down-sampled in SQL to at most max_points rows: small by construction
        data = store.get_trace(trial_id, metrics=cols, every=every, max_points=max_points)
        n = len(data["step"])
        chunks = ({c: v[i:i + CHUNK_ROWS] for c, v in data.items()} for i in range(0, n, CHUNK_ROWS))
    else:
        chunks = store.iter_trace(trial_id, metrics=cols, every=every, chunk_rows=CHUNK_ROWS)
    first = True
    for big in _bounded(iter(chunks)):
        n = len(big[cols[0]]) if cols else 0
        for i in range(0, n, FORMAT_ROWS):
            block = _fmt_row_block(cols, {c: v[i:i + FORMAT_ROWS] for c, v in big.items()}, fmt)
            if not block:
                continue
            if fmt == "json" and not first:
                yield ","
            first = False
            yield block
    if fmt == "json":
        yield "]}"


@router.get(
    "/trials/{trial_id}/trace",
    summary="Per-iteration convergence trace, down-sampled server-side, streamed",
    description="`every=n` keeps the iterations with `step % n == 0` (and the last); `max_points=m` "
                "keeps at most m rows by an even stride. JSON is `{trial_id, columns, every, max_points, "
                "total_rows, rows: [[...], ...]}` (non-finite values are null); CSV has a header row. "
                "Both stream in chunks of 2,000 rows.",
    responses={200: {"content": {"application/json": {"example": {
                        "trial_id": 1, "columns": ["step", "loss"], "every": 10, "max_points": None,
                        "total_rows": 20, "rows": [[0, 1.12], [10, 0.93], [19, 0.9]]}},
                                 "text/csv": {"example": "step,loss\n0,1.12\n10,0.93\n"}},
                     "description": "the trace"},
               404: {"description": "no such trial"}, 422: {"description": "unknown metric"}},
)
def get_trace(
    trial_id: TrialId, store: StoreDep,
    metrics: str | None = Query(None, max_length=1000, description="comma-separated trace columns "
                                f"(default all): {', '.join(TRACE_COLUMNS)}", examples=["loss,grad_norm"]),
    every: int = Query(1, ge=1, le=10**9, description="keep rows with step % every == 0"),
    max_points: int | None = Query(None, ge=1, le=10**8, description="at most this many rows"),
    format: Literal["json", "csv"] = Query("json"),
) -> StreamingResponse:
    if not -2**63 <= trial_id < 2**63:
        raise HTTPException(404, detail=f"trial {trial_id} not found")
    _trial_or_404(store, trial_id)
    cols = _parse_metrics(metrics, TRACE_COLUMNS)
    total = store.trace_row_count(trial_id=trial_id)
    media = "text/csv" if format == "csv" else "application/json"
    headers = {"X-Trace-Total-Rows": str(total)}
    if format == "csv":
        headers["Content-Disposition"] = f'attachment; filename="trial-{trial_id}-trace.csv"'
    return StreamingResponse(_stream(store, trial_id, cols, every, max_points, format, total),
                             media_type=media, headers=headers)


@router.get("/trials/{trial_id}/epochs", response_model=dict, responses={404: {"description": "no such trial"}},
            summary="Per-epoch train/test metric and loss of a trial (columnar)")
def get_epochs(trial_id: TrialId, store: StoreDep) -> dict:
    if not -2**63 <= trial_id < 2**63:
        raise HTTPException(404, detail=f"trial {trial_id} not found")
    _trial_or_404(store, trial_id)
    data = store.get_epochs(trial_id)
    return {"trial_id": trial_id,
            "columns": {c: _clean(np.asarray(data.get(c, []), dtype=float).tolist()) for c in EPOCH_COLUMNS}}
