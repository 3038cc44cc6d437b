"""The experiment page's comparison table: the rows of :func:`service.reports.compare.compare`
in the columns of :mod:`service.reports.tables` (as the API's Markdown and the CLI print them).

Per variant, the reports layer compares each variant with a reference paired over (seed, split):
rows carry the ``reference`` and the paired difference, CI, p-values, Holm and verdict, which
:func:`service.reports.tables.columns_for` adds as columns. The page offers every variant as the
reference (``compare(..., reference=)``); the default is the reports layer's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.reports import tables
from service.reports.compare import compare


@dataclass
class ComparisonTable:
    columns: list[tuple[str, bool]]  # (title, right-aligned)
    rows: list[list[str]]
    variants: list[str]
    reference: str | None = None
    paired: bool = False
    note: str | None = None
    raw: list[dict[str, Any]] = field(default_factory=list)


def comparison_table(store, exp_id: str, *, by_config: bool = False, reference: str | None = None,
                     paper: str | None = None) -> ComparisonTable:
    """The comparison of one experiment, per variant (paired against ``reference``, default the
    reports layer's choice) or per configuration."""
    paired = not by_config
    variants = [r.variant for r in compare(store, [exp_id])] if paired else []
    if reference not in variants:
        reference = None
    rows = compare(store, [exp_id], by_config=by_config, reference=reference)
    cols = tables.columns_for(rows, paper)
    table = ComparisonTable([(c.title, c.right) for c in cols], tables.cells(rows, cols),
                            variants or list(dict.fromkeys(r.variant for r in rows)),
                            raw=[r.model_dump() for r in rows])
    if paired:
        refs = sorted({r.reference for r in rows if getattr(r, "reference", None)})
        table.reference = reference or (refs[0] if len(refs) == 1 else None)
        table.paired = True
        table.note = ("paired over (seed, split) on the test metric: Δ = variant − reference, 95% t CI, "
                      "Holm-adjusted Wilcoxon p decides the verdict" if refs else
                      "no variant has a reference to be paired with: pick one")
    else:
        table.note = "one row per configuration; paired statistics compare variants (rows per variant)"
    return table
