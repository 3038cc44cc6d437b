"""The one table renderer: Markdown a CommonMark+GFM parser reads as a table, terminal tables that
fit 100 columns, an experiment column for several experiments, paper columns only under the
paper's protocol."""

from __future__ import annotations

import io

import pytest
from markdown_it import MarkdownIt
from rich.console import Console

from service.reports.compare import VariantSummary
from service.reports.tables import csv_text, markdown, paper_protocol, rich_table


def row(exp: str, variant: str, **kw) -> VariantSummary:
    base = dict(experiment_id=exp, experiment_name=f"name-{exp}", variant=variant, n_trials=10,
                n_completed=10, n_diverged=0, n_failed=0, train_metric_mean=0.9248, train_metric_std=0.012,
                test_metric_mean=0.8511, test_metric_std=0.045, sparsity_out_mean=0.0,
                sparsity_out_std=0.0, sparsity_all_mean=3.064e-05, sparsity_all_std=9.7e-05,
                wall_time_mean=5.46, wall_time_std=0.0, loss_mean=0.5, loss_std=0.1,
                monotonicity_violations_mean=593.4, grad_norm_ratio_mean=0.461)
    base.update(kw)
    return VariantSummary(**base)


ROWS = [row("a", v) for v in ("GRU", "L1-GRU", "L2-GRU", "LSTM", "RNN", "SL1-GRU")]
IRIS_SPEC = {"dataset": {"name": "iris"}, "variants": [{"name": "GRU"}], "search": {"space": {}},
             "training": {"optimizer": "sgd"}}


def render(table, width: int = 100) -> list[str]:
    buf = io.StringIO()
    Console(file=buf, width=width, force_terminal=False, color_system=None).print(table)
    return buf.getvalue().splitlines()


def test_markdown_is_a_commonmark_gfm_table_with_every_cell():
    text = markdown(ROWS + [row("b", "odd|name")], paper_dataset=None)
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    types = [t.type for t in tokens]
    assert types[0] == "table_open" and types.count("tr_open") == 1 + len(ROWS) + 1
    headers = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "th_open"]
    assert headers[:3] == ["experiment", "variant", "n ok/div/fail"] and "‖∇E‖ last/first" in headers
    cells = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "td_open"]
    assert "odd|name" in cells and len(cells) == (len(ROWS) + 1) * len(headers)


def test_experiment_column_only_for_several_experiments():
    one = markdown(ROWS)
    assert "| experiment |" not in one and one.startswith("| variant |")
    assert markdown(ROWS + [row("b", "GRU")]).startswith("| experiment | variant |")


@pytest.mark.parametrize("spec, expected", [
    (IRIS_SPEC, "iris"),
    ({**IRIS_SPEC, "search": {"space": {"lr": {"type": "grid", "values": [0.1]}}}}, None),
    ({**IRIS_SPEC, "dataset": {"name": "funcapprox"}}, None),
    ({**IRIS_SPEC, "training": {"optimizer": "adam"}}, None),
])
def test_paper_columns_only_under_the_papers_protocol(spec, expected):
    assert paper_protocol(spec) == expected


def test_terminal_table_fits_100_columns_and_says_what_it_dropped():
    lines = render(rich_table(ROWS, title="t", paper_dataset="iris", width=100), width=100)
    assert max(len(line) for line in lines) <= 100
    text = "\n".join(lines)
    assert "variant" in text and "test" in text and "GRU" in text and "SL1-GRU" in text
    assert "not shown:" in text and "--wide" in text
    wide = render(rich_table(ROWS, title="t", paper_dataset="iris", width=None), width=400)
    assert "paper sparsity" in "\n".join(wide) and "not shown" not in "\n".join(wide)


def test_csv_has_every_field():
    lines = csv_text(ROWS).splitlines()
    assert lines[0].split(",") == list(VariantSummary.model_fields)
    assert len(lines) == 1 + len(ROWS)
