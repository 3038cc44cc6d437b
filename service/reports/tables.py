"""The one table renderer of comparisons: the same columns and cells for the terminal (Rich),
Markdown (CommonMark + GFM tables) and CSV, over the API and the CLI alike.

Columns have a priority; :func:`fit_columns` keeps the most important ones that fit a width
(100 characters by default in the terminal, everything with ``wide``). The experiment column
appears whenever rows come from several experiments; the paper's numbers appear only where the
experiment follows the paper's protocol (:func:`paper_protocol`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.reports.compare import VariantSummary


@dataclass(frozen=True)
class Column:
    """One column: title, how to get its cell from a row, justification, and priority
    (lower is more important; dropped last when the table must fit a width)."""

    title: str
    cell: Callable[[VariantSummary], str]
    priority: int
    right: bool = True


def fmt(mean: float | None, std: float | None = None, digits: int = 4) -> str:
    """``mean ± std`` with ``digits`` significant digits (std to 2); ``-`` when missing."""
    if mean is None:
        return "-"
    text = f"{mean:.{digits}g}"
    return text if std is None else f"{text} ± {std:.2g}"


def _variant(r: VariantSummary) -> str:
    if not r.params:
        return r.variant
    return f"{r.variant} " + " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in sorted(r.params.items()))


COLUMNS: list[Column] = [
    Column("variant", _variant, 0, right=False),
    Column("n ok/div/fail", lambda r: f"{r.n_completed}/{r.n_diverged}/{r.n_failed}", 1),
    Column("train", lambda r: fmt(r.train_metric_mean, r.train_metric_std), 2),
    Column("test", lambda r: fmt(r.test_metric_mean, r.test_metric_std), 1),
    Column("sparsity W_out", lambda r: fmt(r.sparsity_out_mean, r.sparsity_out_std, 3), 3),
    Column("sparsity all", lambda r: fmt(r.sparsity_all_mean, r.sparsity_all_std, 3), 5),
    Column("time [s]", lambda r: fmt(r.wall_time_mean, None, 3), 6),
    Column("loss", lambda r: fmt(r.loss_mean, r.loss_std, 3), 4),
    Column("Thm 1 viol.", lambda r: fmt(r.monotonicity_violations_mean, None, 3), 7),
    Column("‖∇E‖ last/first", lambda r: fmt(r.grad_norm_ratio_mean, None, 3), 7),
]
#: Shown when some row is compared with a reference (paired over seed and split).
PAIRED_COLUMNS: list[Column] = [
    Column("Δ test vs ref [95% CI]", lambda r: _diff(r), 2),
    Column("p Holm (Wilcoxon)", lambda r: fmt(r.p_holm, None, 2), 3),
    Column("paired verdict", lambda r: r.verdict or "", 2, right=False),
]


def _diff(r: VariantSummary) -> str:
    """``+d [lo, hi] vs REF (n)`` for a row compared with a reference; empty otherwise."""
    if r.diff_mean is None:
        return ""
    ci = f" [{r.diff_ci_low:+.3g}, {r.diff_ci_high:+.3g}]" if r.diff_ci_low is not None else ""
    return f"{r.diff_mean:+.3g}{ci} vs {r.reference} (n={r.n_pairs})"
EXPERIMENT = Column("experiment", lambda r: r.experiment_name, 0, right=False)


def paper_protocol(spec: dict[str, Any] | None) -> str | None:
    """The dataset whose paper numbers apply to this experiment, or None.

    The paper's Tables 3 and 5 train each model once per seed with Table 2's fixed settings and
    plain SGD: the columns appear for experiments that search nothing and use ``sgd`` on a
    dataset the paper reports."""
    from search.reference import PAPER_TABLES

    if not spec:
        return None
    name = spec.get("dataset", {}).get("name")
    searched = spec.get("search", {}).get("space") or any(v.get("space") for v in spec.get("variants", []))
    optimizer = spec.get("training", {}).get("optimizer", "sgd")
    return name if name in PAPER_TABLES and not searched and optimizer == "sgd" else None


def paper_columns(dataset: str) -> list[Column]:
    from search.reference import paper_row

    def cell(i: int, digits: int) -> Callable[[VariantSummary], str]:
        def get(r: VariantSummary) -> str:
            ref = paper_row(dataset, r.variant)
            return fmt(ref[i], None, digits) if ref else ""
        return get

    return [Column("paper train", cell(0, 4), 3), Column("paper test", cell(1, 4), 2),
            Column("paper sparsity", cell(2, 3), 4)]


def columns_for(rows: list[VariantSummary], paper_dataset: str | None = None) -> list[Column]:
    """Every column that applies to these rows."""
    cols = list(COLUMNS)
    if any(r.diff_mean is not None for r in rows):
        cols += PAIRED_COLUMNS
    if len({r.experiment_id for r in rows}) > 1:
        cols.insert(0, EXPERIMENT)
    if paper_dataset:
        cols += paper_columns(paper_dataset)
    return cols


def cells(rows: list[VariantSummary], cols: list[Column]) -> list[list[str]]:
    return [[c.cell(r) for c in cols] for r in rows]


def fit_columns(rows: list[VariantSummary], cols: list[Column], width: int | None) -> list[Column]:
    """The most important columns whose rendered width (cells + 3 per column) fits ``width``;
    all of them when ``width`` is None. Order is kept."""
    if width is None:
        return cols
    body = cells(rows, cols)
    need = [max([len(c.title)] + [len(row[i]) for row in body]) + 3 for i, c in enumerate(cols)]
    keep = set(range(len(cols)))
    for i in sorted(range(len(cols)), key=lambda j: (-cols[j].priority, -j)):
        if sum(need[j] for j in keep) + 1 <= width or cols[i].priority == 0:
            continue
        keep.discard(i)
    return [c for i, c in enumerate(cols) if i in keep]


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def markdown(rows: list[VariantSummary], paper_dataset: str | None = None) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped), every applicable column."""
    cols = columns_for(rows, paper_dataset)
    lines = ["| " + " | ".join(_md_cell(c.title) for c in cols) + " |",
             "| " + " | ".join("---:" if c.right else ":---" for c in cols) + " |"]
    lines += ["| " + " | ".join(_md_cell(x) for x in row) + " |" for row in cells(rows, cols)]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[VariantSummary]) -> str:
    """Every field of every row (params as JSON)."""
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(VariantSummary.model_fields))
    w.writeheader()
    for r in rows:
        d = r.model_dump()
        d["params"] = json.dumps(d["params"], sort_keys=True) if d["params"] is not None else ""
        w.writerow(d)
    return out.getvalue()


def rich_table(rows: list[VariantSummary], *, title: str, paper_dataset: str | None = None,
               width: int | None = 100):
    """A Rich table of the columns that fit ``width`` (None: all); dropped columns are named in
    the caption, with the hint to use ``--wide``."""
    from rich.markup import escape
    from rich.table import Table

    every = columns_for(rows, paper_dataset)
    cols = fit_columns(rows, every, width)
    table = Table(title=escape(title), title_justify="left", caption_justify="left")
    for c in cols:
        table.add_column(escape(c.title), justify="right" if c.right else "left",
                         style="dim" if c.title.startswith("paper") else None,
                         overflow="fold", no_wrap=c.priority > 0)
    for row in cells(rows, cols):
        table.add_row(*(escape(x) for x in row))
    dropped = [c.title for c in every if c not in cols]
    if dropped:
        table.caption = escape(f"not shown: {', '.join(dropped)} (--wide shows every column)")
    return table
