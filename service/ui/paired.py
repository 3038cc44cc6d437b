"""The experiment page's comparison table: the columns of :mod:`service.reports.tables` over the
rows of :func:`service.reports.compare.compare`, plus -- where the reports layer has paired
statistics (:mod:`service.reports.paired`) -- each variant against a selectable reference
variant, paired over (seed, split): mean difference, 95% CI, paired t and Wilcoxon p, Holm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from service.reports import tables

#: Metrics the paired comparison may use.
PAIRED_METRICS = ("test_metric", "train_metric", "sparsity_out", "sparsity_all", "loss")
PAIRED_TITLES = ("Δ vs ref", "95% CI", "p (t)", "p (Wilcoxon)", "p Holm", "n pairs", "verdict")


@dataclass
class ComparisonTable:
    columns: list[tuple[str, bool]]  # (title, right-aligned)
    rows: list[list[str]]
    variants: list[str]
    reference: str | None = None
    metric: str = "test_metric"
    paired: bool = False
    note: str | None = None
    metrics: tuple[str, ...] = PAIRED_METRICS
    raw: list[dict[str, Any]] = field(default_factory=list)


def _p(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.2g}" if v >= 1e-3 else f"{v:.1e}"


def _paired_module():
    try:
        from service.reports import paired
    except ImportError:
        return None
    return paired if hasattr(paired, "paired_comparisons") else None


def comparison_table(store, exp_id: str, rows: list, paper: str | None, *, reference: str | None = None,
                     metric: str = "test_metric") -> ComparisonTable:
    """Cells of the comparison; paired columns against ``reference`` (default: the first
    unregularized variant of the spec, else the first variant) when the rows are per variant."""
    cols = tables.columns_for(rows, paper)
    table = ComparisonTable([(c.title, c.right) for c in cols], tables.cells(rows, cols),
                            list(dict.fromkeys(r.variant for r in rows)),
                            metric=metric if metric in PAIRED_METRICS else "test_metric",
                            raw=[r.model_dump() for r in rows])
    paired = _paired_module()
    by_config = any(r.params for r in rows)
    if paired is None or by_config or len(table.variants) < 2:
        if paired is None:
            table.note = "paired statistics are not available in this version"
        elif by_config:
            table.note = "paired statistics compare variants: switch to one row per variant"
        return table
    spec = store.get_experiment(exp_id).spec or {}
    if reference not in table.variants:
        plain = [v["name"] for v in spec.get("variants", []) if v.get("reg", "none") == "none"
                 and v.get("name") in table.variants]
        reference = plain[0] if plain else table.variants[0]
    _, trials = store.trial_finals([exp_id])
    refs = {v: reference for v in table.variants if v != reference}
    results = paired.paired_comparisons(trials, refs, table.metric)
    table.reference, table.paired = reference, True
    table.columns += [(t, t != "verdict") for t in PAIRED_TITLES]
    for row, r in zip(table.rows, rows):
        res = results.get(r.variant)
        if r.variant == reference:
            row += ["reference", "", "", "", "", "", ""]
        elif res is None:
            row += ["–"] * len(PAIRED_TITLES)
        else:
            ci = "–" if res.ci_low is None else f"[{res.ci_low:+.3g}, {res.ci_high:+.3g}]"
            diff = "–" if res.mean_diff is None else f"{res.mean_diff:+.4g}"
            row += [diff, ci, _p(res.p_t), _p(res.p_wilcoxon), _p(res.p_holm), str(res.n), res.verdict]
    table.note = (f"paired over (seed, split) on {table.metric}: variant − {reference}; "
                  "Holm-adjusted Wilcoxon p decides the verdict")
    return table
