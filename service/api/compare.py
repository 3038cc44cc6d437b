"""/api/v1/experiments/{id}/compare and /api/v1/compare?experiments=a,b: the paper's Table 3/5
layout -- one row per (experiment, variant), mean ± std over seeds of the train/test metric,
sparsity, wall time, loss, and the convergence diagnostics. Rows come from
:mod:`service.reports.compare`, tables from :mod:`service.reports.tables` (as in the CLI)."""

from __future__ import annotations

import re
from typing import Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field

from service.api.deps import EXP_ID_PATTERN, NO_NUL_PATTERN, ExpIdPath, StoreDep
from service.reports.compare import VariantSummary, compare
from service.reports.tables import csv_text, markdown, paper_protocol
from service.store import NotFound

router = APIRouter(tags=["compare"])

class Comparison(BaseModel):
    experiments: list[str] = Field(examples=[["3f2a9c1e0b7d4c58"]])
    rows: list[VariantSummary]
    table: str = Field(description="the same rows as a Markdown table (mean ± std)",
                       examples=["| experiment | variant | n | train | test | ... |"])


def _render(store, ids: list[str], fmt: str, by: str = "variant", reference: str | None = None):
    try:
        rows = compare(store, ids, by_config=by == "config", reference=reference)
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from None
    paper = paper_protocol(store.get_experiment(ids[0]).spec) if len(ids) == 1 else None
    if fmt == "markdown":
        return PlainTextResponse(markdown(rows, paper), media_type="text/markdown")
    if fmt == "csv":
        return Response(csv_text(rows), media_type="text/csv")
    return Comparison(experiments=ids, rows=rows, table=markdown(rows, paper))


_RESPONSES = {200: {"content": {"text/markdown": {"schema": {"type": "string"}},
                                "text/csv": {"schema": {"type": "string"}}},
                    "description": "the comparison (JSON, Markdown or CSV by `format`)"},
              404: {"description": "an experiment does not exist"}}

FormatQ = Query("json", description="json (rows + Markdown), markdown (the paper layout) or csv")
ByQ = Query("variant", description="one row per variant, or per (variant, configuration) — "
                                   "e.g. every point of a grid search")
ReferenceQ = Query(None, max_length=64, pattern=NO_NUL_PATTERN,
                   description="variant every other variant is compared with, paired over (seed, "
                               "split); default: the unregularized variant of the same family")


@router.get("/experiments/{exp_id}/compare", response_model=Comparison, responses=_RESPONSES,
            summary="Variants of one experiment side by side (Table 3/5 layout)")
def compare_experiment(exp_id: ExpIdPath, store: StoreDep,
                       format: Literal["json", "markdown", "csv"] = FormatQ,
                       by: Literal["variant", "config"] = ByQ, reference: str | None = ReferenceQ):
    return _render(store, [exp_id], format, by, reference)


@router.get("/compare", response_model=Comparison, responses=_RESPONSES,
            summary="Variants across experiments side by side")
def compare_experiments(
    store: StoreDep,
    experiments: list[str] = Query(..., min_length=1, max_length=50,
                                   description="experiment ids: repeat the parameter or comma-separate",
                                   examples=[["3f2a9c1e0b7d4c58,7d0e11aa9b3c4f21"]]),
    format: Literal["json", "markdown", "csv"] = FormatQ,
    by: Literal["variant", "config"] = ByQ,
    reference: str | None = ReferenceQ,
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
    return _render(store, ids, format, by, reference)
