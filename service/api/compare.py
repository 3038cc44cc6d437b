"""/api/v1/experiments/{id}/compare and /api/v1/compare?experiments=a,b: the paper's Table 3/5
layout -- one row per (experiment, variant), mean ± std over seeds of the train/test metric,
sparsity, wall time, loss, and the convergence diagnostics."""

from __future__ import annotations

import csv
import json
import io
from typing import Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field

import re

from service.api.deps import EXP_ID_PATTERN, ExpIdPath, StoreDep
from service.reports.compare import VariantSummary, compare
from service.store import NotFound

router = APIRouter(tags=["compare"])

#: (column title, summary field prefix, has std)
TABLE_COLUMNS: list[tuple[str, str, bool]] = [
    ("train", "train_metric", True),
    ("test", "test_metric", True),
    ("sparsity W_out", "sparsity_out", True),
    ("sparsity all", "sparsity_all", True),
    ("time [s]", "wall_time", True),
    ("loss", "loss", True),
    ("mono. viol.", "monotonicity_violations", False),
    ("|∇E| ratio", "grad_norm_ratio", False),
]


class Comparison(BaseModel):
    experiments: list[str] = Field(examples=[["3f2a9c1e0b7d4c58"]])
    rows: list[VariantSummary]
    table: str = Field(description="the same rows as a Markdown table (mean ± std)",
                       examples=["| experiment | variant | n | train | test | ... |"])


def _pm(mean, std) -> str:
    if mean is None:
        return "–"
    if std is None:
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {std:.2g}"


def table_rows(rows: list[VariantSummary]) -> tuple[list[str], list[list[str]]]:
    header = ["experiment", "variant", "n (ok/div/fail)"] + [t for t, _, _ in TABLE_COLUMNS]
    body = []
    for r in rows:
        d = r.model_dump()
        variant = r.variant if r.params is None else f"{r.variant} {json.dumps(r.params, sort_keys=True)}"
        cells = [r.experiment_name, variant, f"{r.n_completed}/{r.n_diverged}/{r.n_failed}"]
        for _, key, has_std in TABLE_COLUMNS:
            cells.append(_pm(d.get(f"{key}_mean"), d.get(f"{key}_std") if has_std else None))
        body.append(cells)
    return header, body


def markdown_table(rows: list[VariantSummary]) -> str:
    header, body = table_rows(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[VariantSummary]) -> str:
    out = io.StringIO()
    fields = list(VariantSummary.model_fields)
    w = csv.DictWriter(out, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow(r.model_dump())
    return out.getvalue()


def _render(store, ids: list[str], fmt: str, by: str = "variant"):
    try:
        rows = compare(store, ids, by_config=by == "config")
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from None
    if fmt == "markdown":
        return PlainTextResponse(markdown_table(rows), media_type="text/markdown")
    if fmt == "csv":
        return Response(csv_table(rows), media_type="text/csv")
    return Comparison(experiments=ids, rows=rows, table=markdown_table(rows))


_RESPONSES = {200: {"content": {"text/markdown": {"schema": {"type": "string"}},
                                "text/csv": {"schema": {"type": "string"}}},
                    "description": "the comparison (JSON, Markdown or CSV by `format`)"},
              404: {"description": "an experiment does not exist"}}

FormatQ = Query("json", description="json (rows + Markdown), markdown (the paper layout) or csv")
ByQ = Query("variant", description="one row per variant, or per (variant, configuration) — "
                                   "e.g. every point of a grid search")


@router.get("/experiments/{exp_id}/compare", response_model=Comparison, responses=_RESPONSES,
            summary="Variants of one experiment side by side (Table 3/5 layout)")
def compare_experiment(exp_id: ExpIdPath, store: StoreDep,
                       format: Literal["json", "markdown", "csv"] = FormatQ,
                       by: Literal["variant", "config"] = ByQ):
    return _render(store, [exp_id], format, by)


@router.get("/compare", response_model=Comparison, responses=_RESPONSES,
            summary="Variants across experiments side by side")
def compare_experiments(
    store: StoreDep,
    experiments: list[str] = Query(..., min_length=1, max_length=50,
                                   description="experiment ids: repeat the parameter or comma-separate",
                                   examples=[["3f2a9c1e0b7d4c58,7d0e11aa9b3c4f21"]]),
    format: Literal["json", "markdown", "csv"] = FormatQ,
    by: Literal["variant", "config"] = ByQ,
):
    ids = [i.strip() for item in experiments for i in item.split(",") if i.strip()]
    if not ids:
        raise HTTPException(422, detail=[{"loc": ["query", "experiments"], "type": "missing",
                                          "msg": "give at least one experiment id"}])
    if len(ids) > 50:
        raise HTTPException(422, detail=[{"loc": ["query", "experiments"], "type": "too_long",
                                          "msg": "at most 50 experiments"}])
    bad = [i for i in ids if not re.match(EXP_ID_PATTERN, i)]
    if bad:
        raise HTTPException(404, detail=f"experiment(s) not found: {', '.join(map(repr, bad[:5]))}")
    return _render(store, ids, format, by)
