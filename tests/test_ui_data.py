"""The /ui routes without a browser (TestClient): pages render, data routes agree with the store
and the API, the editor locates fields, assets are served by the app and name no other host."""

from __future__ import annotations

import csv
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))
from ui_seed import GRID_SPEC, LONG_SPEC, seed_experiment  # noqa: E402

UI_DIR = Path(__file__).resolve().parents[1] / "service" / "ui"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from service.api.app import create_app
    from service.settings import Settings
    from service.store import Store

    root = tmp_path_factory.mktemp("ui-data")
    url = f"sqlite:///{root / 'ui.db'}"
    store = Store(url)
    exp_id, _ = seed_experiment(store)
    long_id, long_ids = seed_experiment(store, spec=LONG_SPEC, steps=3000)
    app = create_app(Settings(database_url=url, runner_in_process=False, home=root), store=store)
    with TestClient(app) as client:
        yield client, store, exp_id, long_ids[0]


def test_pages_render_and_unknown_ids_are_404(env):
    client, store, exp_id, trial_id = env
    for path in ("/ui", "/ui/", "/ui/submit", f"/ui/experiments/{exp_id}", f"/ui/trials/{trial_id}",
                 "/ui/partials/experiments", f"/ui/partials/experiments/{exp_id}/summary",
                 f"/ui/partials/experiments/{exp_id}/compare?by=config",
                 f"/ui/partials/experiments/{exp_id}/trials?sort=test_metric&order=desc"):
        r = client.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        assert r.headers["content-type"].startswith("text/html")
    assert client.get("/ui/experiments/" + "0" * 32).status_code == 404
    assert client.get("/ui/trials/999999").status_code == 404
    assert client.get("/ui/partials/experiments?status=bogus").status_code == 422
    assert "/ui" not in client.get("/openapi.json").text  # the pages stay out of the API's schema


def test_assets_are_served_by_the_app_and_no_page_names_another_host(env):
    client, _, exp_id, trial_id = env
    bundle = client.get("/ui/static/vendor/plotly.min.js")
    assert bundle.status_code == 200 and len(bundle.content) > 1_000_000
    assert b"plotly.js" in bundle.content[:2000]
    assert client.get("/ui/static/vendor/htmx.min.js").status_code == 200
    assert client.get("/ui/static/vendor/htmx.LICENSE").status_code == 200
    for path in ("/ui", "/ui/submit", f"/ui/experiments/{exp_id}", f"/ui/trials/{trial_id}"):
        html = client.get(path).text
        for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert not re.match(r"(https?:)?//", ref) or "127.0.0.1:8265" in ref, (path, ref)
    for asset in (UI_DIR / "static").glob("*.*"):
        assert "http" not in asset.read_text(), asset  # ui.js and ui.css load nothing from outside


def test_summary_triggers_a_refresh_when_trials_finish(env):
    client, store, exp_id, _ = env
    view = store.get_experiment(exp_id)
    same = client.get(f"/ui/partials/experiments/{exp_id}/summary?seen={view.n_trials_done}&seen_status=succeeded")
    assert "HX-Trigger" not in same.headers
    changed = client.get(f"/ui/partials/experiments/{exp_id}/summary?seen=3&seen_status=running")
    assert changed.headers["HX-Trigger"] == "rnnhpo:progress"
    assert "hx-trigger" not in changed.text  # finished: the block stops polling


def test_chart_csv_is_the_figure_data(env):
    client, _, exp_id, _ = env
    fig = client.get(f"/ui/data/experiments/{exp_id}/charts/convergence.json?metric=grad_norm&config=all").json()
    rows = list(csv.DictReader(io.StringIO(
        client.get(f"/ui/data/experiments/{exp_id}/charts/convergence.csv?metric=grad_norm&config=all").text)))
    for trace in (t for t in fig["data"] if t["meta"]["role"] == "mean"):
        mine = [r for r in rows if r["variant"] == trace["meta"]["variant"]]
        np.testing.assert_allclose([float(r["grad_norm_mean"]) for r in mine], trace["y"], rtol=1e-12)
        assert {int(r["n"]) for r in mine} == {16}  # config=all: every completed trial of the variant
    grid = client.get(f"/ui/data/experiments/{exp_id}/charts/grid.csv?x=lr&y=lam&facet=alpha").text
    assert grid.splitlines()[0] == "alpha,lr,lam,mean_test_metric" and len(grid.splitlines()) == 1 + 8


def test_chart_parameters_are_checked(env):
    client, _, exp_id, _ = env
    r = client.get(f"/ui/data/experiments/{exp_id}/charts/grid.json?x=hidden")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "x"]
    r = client.get(f"/ui/data/experiments/{exp_id}/charts/grid.json?facet=nope")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "facet"]
    assert client.get(f"/ui/data/experiments/{exp_id}/charts/convergence.json?metric=bogus").status_code == 422
    assert client.get(f"/ui/data/experiments/{exp_id}/charts/nope.json").status_code == 422
    assert client.get("/ui/data/experiments/" + "0" * 32 + "/charts/grid.json").status_code == 404


def test_grid_without_facet_is_the_api_grid(env):
    from service.reports import figures, ui_data

    _, store, exp_id, _ = env
    panels, x, y, facet = ui_data.grid_facets(store, exp_id, x="lr", y="alpha", facet="none")
    xs, ys, grid, _, _ = figures.grid_cells(store, exp_id, x="lr", y="alpha")
    assert facet is None and len(panels) == 1 and (panels[0].xs, panels[0].ys) == (xs, ys)
    np.testing.assert_array_equal(panels[0].grid, grid)
    # faceted: each panel averages the trials with that facet value, checked by hand
    panels, *_ = ui_data.grid_facets(store, exp_id, x="lr", y="alpha", facet="lam", agg="max")
    trials = figures.completed(store, exp_id)
    for p in panels:
        for yi, a in enumerate(p.ys):
            for xi, lr in enumerate(p.xs):
                vals = [t.test_metric for t in trials if t.params == {"lr": lr, "lam": p.value, "alpha": a}]
                assert p.grid[yi, xi] == max(vals)


@pytest.mark.parametrize("start,stop,max_points", [(None, None, 100), (None, None, 5000), (1000, 1400, 50),
                                                    (1000, 1400, 401), (2990, None, 3), (5000, 6000, 10)])
def test_trace_window_follows_the_store_rule(env, start, stop, max_points):
    """The window's down-sampling is Store.get_trace's rule applied to the step range: an even
    stride ceil((n-1)/(m-1)) over the range's rows, the last row kept, never more than m rows."""
    from service.reports import ui_data

    _, store, _, trial_id = env
    full = store.get_trace(trial_id, metrics=["loss"])
    keep = (full["step"] >= (start or 0)) & (full["step"] <= (stop if stop is not None else 10**9))
    steps, loss = full["step"][keep], full["loss"][keep]
    w = ui_data.trace_window(store, trial_id, ["loss"], start=start, stop=stop, max_points=max_points)
    n = len(steps)
    assert (w.rows_in_range, w.total_rows) == (n, 3000)
    if n > max_points:
        stride = -(-(n - 1) // (max_points - 1))
        idx = sorted(set(range(0, n, stride)) | {n - 1})
    else:
        idx = list(range(n))
    np.testing.assert_array_equal(w.columns["step"], steps[idx])
    np.testing.assert_array_equal(w.columns["loss"], loss[idx])
    assert len(w.columns["step"]) <= max_points
    if start is None and stop is None:
        api = store.get_trace(trial_id, metrics=["loss"], max_points=max_points)
        np.testing.assert_array_equal(w.columns["step"], api["step"])


def test_trace_route_checks_its_input(env):
    client, _, _, trial_id = env
    r = client.get(f"/ui/data/trials/{trial_id}/trace.json?metrics=loss&start=10&stop=20")
    body = r.json()
    assert body["window"] == {"rows_in_range": 11, "total_rows": 3000, "returned": 11, "stride": 1,
                              "start": 10, "stop": 20}
    assert body["data"][0]["x"] == list(range(10, 21))
    assert client.get(f"/ui/data/trials/{trial_id}/trace.json?metrics=bogus").status_code == 422
    assert client.get(f"/ui/data/trials/{trial_id}/trace.json?start=20&stop=10").status_code == 422
    text = client.get(f"/ui/data/trials/{trial_id}/trace.csv?metrics=loss,lr&start=0&stop=2").text
    assert text.splitlines()[0] == "step,loss,lr" and len(text.splitlines()) == 4
    assert client.get(f"/ui/data/trials/{trial_id}/weights.json").status_code == 404


SPEC_WITH_ERRORS = """\
name: x
dataset: {name: iris}
variants:
  - {name: GRU, family: gru}
  - {name: L1, family: gru, reg: lasso}
training:
  epochs: 0
  lr: 0.1
search: {algorithm: grid}
"""


def test_editor_locates_fields_in_yaml_and_json():
    import json

    from service.ui import editor

    assert editor.locate(SPEC_WITH_ERRORS, ["body", "training", "epochs"])["line"] == 7
    assert editor.locate(SPEC_WITH_ERRORS, ["body", "variants", 1, "reg"]) == {
        "line": 5, "column": 29, "path": "variants.1.reg", "exact": True}
    missing = editor.locate(SPEC_WITH_ERRORS, ["body", "training", "hidden"])
    assert (missing["line"], missing["exact"]) == (6, False)  # the closest parent that exists
    text = json.dumps(GRID_SPEC, indent=2)
    line = text.splitlines().index('    "epochs": 6,') + 1
    assert editor.locate(text, ["body", "training", "epochs"])["line"] == line
    assert editor.syntax_error("a: [1, 2\nb: 3\n")["line"] == 2


def test_validate_route_reports_every_error_with_its_line(env):
    client, *_ = env
    body = client.post("/ui/data/validate", content=SPEC_WITH_ERRORS,
                       headers={"Content-Type": "application/yaml"}).json()
    assert body["ok"] is False
    where = {e["path"]: e["line"] for e in body["errors"]}
    assert where["training.epochs"] == 7 and where["variants.1.reg"] == 5
    ok = client.post("/ui/data/validate", content=SPEC_WITH_ERRORS.replace("epochs: 0", "epochs: 2")
                     .replace("reg: lasso", "reg: l1"), headers={"Content-Type": "application/yaml"}).json()
    assert ok == {"ok": True, "name": "x", "trials_planned": 2, "errors": []}
    located = client.post("/ui/data/locate", json={"text": SPEC_WITH_ERRORS, "detail": [
        {"loc": ["body", "training", "epochs"], "msg": "m", "type": "t"}]}).json()
    assert located[0]["line"] == 7 and located[0]["msg"] == "m"


def test_comparison_table_is_the_api_rows_with_a_selectable_reference(env):
    client, store, exp_id, _ = env
    html = client.get(f"/ui/partials/experiments/{exp_id}/compare").text
    api = client.get(f"/api/v1/experiments/{exp_id}/compare").json()["rows"]
    for r in api:
        assert f'data-variant="{r["variant"]}" data-test-mean="{r["test_metric_mean"]}"' in html
    ref = client.get(f"/ui/partials/experiments/{exp_id}/compare?reference=SL1-GRU").text
    assert re.search(r'<option selected>SL1-GRU</option>', ref)
    api_ref = client.get(f"/api/v1/experiments/{exp_id}/compare").json()["rows"]  # default reference
    assert any(r.get("reference") == "GRU" for r in api_ref)
    gru_row = re.search(r'<tr data-variant="GRU".*?</tr>', ref, re.S).group(0)
    assert "vs SL1-GRU" in gru_row  # GRU is now compared with the chosen reference


def test_trials_partial_filters_sorts_and_pages(env):
    client, store, exp_id, _ = env
    html = client.get(f"/ui/partials/experiments/{exp_id}/trials?variant=SL1-GRU&sort=test_metric&order=desc"
                      "&limit=5&offset=5").text
    ids = [int(i) for i in re.findall(r'data-trial-id="(\d+)"', html)]
    expected, total = store.list_trials(exp_id, variant="SL1-GRU", sort="test_metric", descending=True,
                                        limit=5, offset=5)
    assert ids == [t.id for t in expected] and total == 16
    assert "6–10 of 16" in html and "← previous" in html and "next →" in html
