"""The results explorer (/ui) in a real headless Chromium (Debian's ``chromium`` driven by
Playwright's Python client): live list, charts and their numbers against the API's, the trace
explorer's zoom and down-sampling, the spec editor's inline errors, cancel with and without the
token. Every request to a host other than the app is blocked and counted (must be 0).
Screenshots of each page go to var/screenshots/.

Without Chromium (or Playwright) the tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ui_seed import GRID_SPEC, LONG_SPEC, plans, record, seed_experiment  # noqa: E402

CHROMIUM = os.environ.get("RNNHPO_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"
TOKEN = "ui-test-token"
pytestmark = pytest.mark.slow


def _need(what: str, why: str):
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI: {why}")
    pytest.skip(f"{what} not available: {why}")


@pytest.fixture(scope="module")
def playwright_browser():
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).is_file()):
        _need("Chromium", f"{CHROMIUM} not found (make install runs apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _need("playwright", str(exc))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The app (with an API token) served by uvicorn in a thread of this process."""

    def __init__(self, store, settings):
        import uvicorn

        from service.api.app import create_app

        self.store = store
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        app = create_app(settings, store=store)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def api(self, path: str, **params):
        r = httpx.get(self.base + "/api/v1" + path, params=params, timeout=30)
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from service.settings import Settings
    from service.store import Store

    root = tmp_path_factory.mktemp("ui")
    url = f"sqlite:///{root / 'ui.db'}"
    settings = Settings(database_url=url, api_token=TOKEN, runner_in_process=False, home=root)
    with LiveServer(Store(url), settings) as live:
        yield live


@pytest.fixture(scope="module")
def grid_exp(server):
    exp_id, _ = seed_experiment(server.store)
    return exp_id


class Guard:
    """Requests to any host but the app are aborted and counted; page errors collected."""

    def __init__(self, app_host: str):
        self.app_host, self.blocked, self.errors = app_host, [], []

    def route(self, r):
        u = urlparse(r.request.url)
        if u.scheme in ("http", "https", "ws", "wss") and u.netloc != self.app_host:
            self.blocked.append(r.request.url)
            return r.abort()
        return r.continue_()


@pytest.fixture(scope="module")
def browser_context(playwright_browser, server):
    """One context for the module (Plotly's 4.8 MB bundle is fetched once), guarded."""
    context = playwright_browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    guard = Guard(urlparse(server.base).netloc)
    context.route("**/*", guard.route)
    yield context, guard
    context.close()


@pytest.fixture
def page(browser_context):
    """A fresh page; at the end no request may have left the app and no script may have failed."""
    context, guard = browser_context
    guard.blocked.clear()
    guard.errors.clear()
    pg = context.new_page()
    pg.on("pageerror", lambda e: guard.errors.append(str(e)))
    pg.on("dialog", lambda d: d.accept())
    pg.add_init_script("localStorage.clear()")
    yield pg
    pg.close()
    assert guard.blocked == [], f"the page requested other hosts: {guard.blocked}"
    assert guard.errors == [], f"script errors on the page: {guard.errors}"


def shot(pg, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pg.evaluate("window.scrollTo(0, 0)")
    pg.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def wait_chart(pg, chart_id: str, timeout: float = 30_000) -> dict:
    """The drawn figure of a chart (scrolled into view first: charts are drawn lazily)."""
    pg.locator(f"#{chart_id}").scroll_into_view_if_needed()
    pg.wait_for_function(f"document.getElementById('{chart_id}')?.dataset.state === 'ready'", timeout=timeout)
    return pg.evaluate(f"""() => {{ const gd = document.getElementById('{chart_id}');
        return {{data: gd.data, layout: {{yaxis: gd.layout.yaxis}}}}; }}""")


# -- experiments list ----------------------------------------------------------------------------------
def test_list_updates_while_an_experiment_runs(page, server):
    """The list polls: trials recorded through the Store while the page is open appear as
    progress without a reload."""
    spec = {**GRID_SPEC, "name": "live-progress-ui"}
    exp_id, ids = seed_experiment(server.store, spec=spec, n_done=4, status="running")
    page.goto(server.base + "/ui")
    row = page.locator(f"tr[data-exp-id='{exp_id}']")
    row.wait_for()
    assert row.locator(".trials").inner_text() == "4/32"
    assert "running" in row.locator(".badge").inner_text()
    assert row.locator("a.ray-link").get_attribute("href") == f"http://127.0.0.1:8265/#/jobs/rnnhpo-{exp_id}"
    shot(page, "experiments-running")
    ps = plans(spec)
    for p in ps[4:20]:
        server.store.record_trial(ids[p.number], record(p))
    server.store.set_progress(exp_id, total=32, done=20, packs_total=4, packs_done=2, eta_s=12.0)
    page.wait_for_function(f"""document.querySelector("tr[data-exp-id='{exp_id}'] .trials")?.textContent === '20/32'""",
                           timeout=15_000)
    assert row.locator("td.num").first.inner_text() == "2/4"  # packs
    server.store.finish_experiment(exp_id, "succeeded")
    page.wait_for_function(f"""document.querySelector("tr[data-exp-id='{exp_id}']")?.dataset.status === 'succeeded'""",
                           timeout=15_000)
    # filters: by status and by name
    page.select_option("#status-filter", "running")
    page.wait_for_function(f"""!document.querySelector("tr[data-exp-id='{exp_id}']")""", timeout=10_000)
    page.select_option("#status-filter", "")
    page.fill("#q", "live-prog")
    page.wait_for_function(f"""document.querySelectorAll("tr[data-exp-id]").length === 1 &&
        !!document.querySelector("tr[data-exp-id='{exp_id}']")""", timeout=10_000)
    shot(page, "experiments")


def test_cancel_needs_the_token(page, server):
    spec = {**GRID_SPEC, "name": "cancel-me-ui"}
    exp_id, _ = seed_experiment(server.store, spec=spec, n_done=2, status="running")
    page.goto(server.base + "/ui")
    button = page.locator(f"tr[data-exp-id='{exp_id}'] button[data-cancel]")
    button.click()
    toast = page.locator(".toast.error")
    toast.wait_for()
    assert "401" in toast.inner_text() and "token" in toast.inner_text()
    assert server.store.get_experiment(exp_id).cancel_requested is False
    page.fill("#token-input", TOKEN)
    page.dispatch_event("#token-input", "change")
    assert page.locator("#token-state").inner_text() == "set"
    page.locator(f"tr[data-exp-id='{exp_id}'] button[data-cancel]").click()
    page.locator(".toast.ok").wait_for()
    assert server.store.get_experiment(exp_id).cancel_requested is True
    page.wait_for_function(f"""document.querySelector("tr[data-exp-id='{exp_id}'] .badge")?.textContent.includes('cancelling')""",
                           timeout=10_000)
    # a wrong token is refused as well
    page.fill("#token-input", "wrong")
    page.dispatch_event("#token-input", "change")
    queued = server.store.create_experiment("queued-ui", GRID_SPEC, n_trials_total=1)
    page.locator(f"tr[data-exp-id='{queued}'] button[data-cancel]").click()  # appears with the next poll
    page.locator(".toast.error").last.wait_for()
    assert server.store.get_experiment(queued).status == "queued"


# -- experiment page -------------------------------------------------------------------------------------
CHARTS = ("chart-convergence", "chart-sparsity", "chart-learning", "chart-pareto", "chart-grid", "chart-parallel")


def test_experiment_charts_render_and_match_the_api(page, server, grid_exp):
    """Series per chart, PNG/SVG/CSV downloads, log/metric controls, the comparison table; then
    every chart's numbers against the API (same page load: the parallel-coordinates chart is
    WebGL and costs seconds in a GPU-less browser)."""
    page.goto(server.base + f"/ui/experiments/{grid_exp}")
    figs = {c: wait_chart(page, c) for c in CHARTS}
    charts_match_the_api(page, server, grid_exp, figs)
    variants = ["GRU", "SL1-GRU"]

    def roles(fig, role):
        return [t for t in fig["data"] if (t.get("meta") or {}).get("role") == role]

    for c in ("chart-convergence", "chart-sparsity"):
        assert [t["meta"]["variant"] for t in roles(figs[c], "mean")] == variants
        assert len(roles(figs[c], "band")) == 2 and len(figs[c]["data"]) == 4
    assert len(roles(figs["chart-learning"], "mean")) == 4  # (train, test) x 2 variants
    assert len(figs["chart-grid"]["data"]) == 2  # one heatmap per value of the third parameter (alpha)
    assert [t["meta"]["facet"] for t in figs["chart-grid"]["data"]] == [0.01, 0.1]
    objs = _objectives(server, grid_exp)
    assert [d["label"] for d in figs["chart-parallel"]["data"][0]["dimensions"]] == [
        "variant", "lr", "lam", "alpha", *dict.fromkeys(objs + ["test_metric"])]
    assert [t["name"] for t in figs["chart-pareto"]["data"]] == ["GRU", "SL1-GRU", "Pareto front"]
    # plotly's modebar offers PNG and our SVG download; every chart links its CSV
    page.hover("#chart-convergence")
    assert page.locator("#chart-convergence .modebar-btn[data-title='Download plot as a PNG']").count() == 1
    assert page.locator("#chart-convergence .modebar-btn[data-title='Download plot as SVG']").count() == 1
    with page.expect_download() as dl:
        page.locator("#card-convergence a.csv").click()
    text = Path(dl.value.path()).read_text()
    assert text.splitlines()[0] == "variant,step,n,loss_mean,loss_std"
    with page.expect_download() as dl:
        page.locator("#chart-convergence .modebar-btn[data-title='Download plot as SVG']").click()
    assert dl.value.suggested_filename == "rnnhpo-convergence.svg"
    assert Path(dl.value.path()).read_text().startswith("<svg")
    page.hover("#chart-grid")
    with page.expect_download() as dl:
        page.locator("#chart-grid .modebar-btn[data-title='Download plot as a PNG']").click()
    assert Path(dl.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # log scale and a different metric re-draw from the server
    page.select_option("#card-convergence select[name=log]", "true")
    page.select_option("#card-convergence select[name=metric]", "grad_norm")
    page.wait_for_function("document.getElementById('chart-convergence').layout.yaxis.type === 'log' &&"
                           "document.getElementById('chart-convergence').layout.title.text.includes('∂E')")
    page.select_option("#card-convergence select[name=log]", "false")
    page.select_option("#card-convergence select[name=metric]", "loss")
    page.wait_for_function("document.getElementById('chart-convergence').layout.yaxis.type !== 'log'")
    wait_chart(page, "chart-convergence")
    # the comparison table is the API's rows
    api_rows = server.api(f"/experiments/{grid_exp}/compare")["rows"]
    for r in api_rows:
        cell = page.locator(f"#compare-table tr[data-variant='{r['variant']}']").get_attribute("data-test-mean")
        assert float(cell) == pytest.approx(r["test_metric_mean"], rel=1e-12)
    shot(page, "experiment")


def _final(t: dict, metric: str) -> float:
    """A trial's final metric as the API returns it (column, else the ``final`` JSON)."""
    return t[metric] if t.get(metric) is not None else t["final"][metric]


def _best_config(trials: list[dict], metric: str) -> list[dict]:
    """Independent of service.reports: the configuration with the largest mean metric."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for t in sorted(trials, key=lambda t: t["number"]):
        groups[json.dumps(t["params"], sort_keys=True)].append(t)
    return max(groups.values(), key=lambda g: (np.mean([_final(t, metric) for t in g]), len(g)))


def _objectives(server, exp_id: str) -> list[str]:
    """The search's objectives as the API reports the stored spec."""
    return [o["metric"] for o in server.api(f"/experiments/{exp_id}")["spec"]["search"]["objectives"]]


def charts_match_the_api(page, server, grid_exp, figs):
    """Each chart's numbers, read from the drawn Plotly figure, equal what the REST API returns
    for the same experiment (traces, epochs, trials), aggregated here with numpy."""
    trials = server.api(f"/experiments/{grid_exp}/trials", status="completed", limit=10_000)["items"]
    by_variant = defaultdict(list)
    for t in trials:
        by_variant[t["variant"]].append(t)
    objs = _objectives(server, grid_exp)
    chosen = {v: _best_config(ts, objs[0]) for v, ts in by_variant.items()}

    def mean_line(fig, variant):
        return next(t for t in fig["data"] if t["meta"].get("role") == "mean" and t["meta"]["variant"] == variant
                    and t["meta"].get("metric", "test_metric") == "test_metric")

    for chart, metric in (("chart-convergence", "loss"), ("chart-sparsity", "sparsity_out")):
        for variant, ts in chosen.items():
            traces = [server.api(f"/trials/{t['id']}/trace", metrics=metric, max_points=500) for t in ts]
            n = min(len(tr["rows"]) for tr in traces)
            values = np.array([[row[1] for row in tr["rows"][:n]] for tr in traces], dtype=float)
            line = mean_line(figs[chart], variant)
            np.testing.assert_allclose(line["y"], values.mean(axis=0), rtol=1e-12)
            np.testing.assert_allclose(line["customdata"], values.std(axis=0), rtol=1e-9, atol=1e-15)
            assert line["x"] == [row[0] for row in traces[0]["rows"][:n]]
            assert line["meta"]["n"] == len(ts)
    for variant, ts in chosen.items():
        epochs = [server.api(f"/trials/{t['id']}/epochs")["columns"] for t in ts]
        line = mean_line(figs["chart-learning"], variant)
        np.testing.assert_allclose(line["y"], np.mean([e["test_metric"] for e in epochs], axis=0), rtol=1e-12)
    # grid: mean of the first objective per (alpha panel, lr column, lam row)
    for panel in figs["chart-grid"]["data"]:
        for yi, lam in enumerate(panel["y"]):
            for xi, lr in enumerate(panel["x"]):
                vals = [_final(t, objs[0]) for t in trials if t["params"]["alpha"] == panel["meta"]["facet"]
                        and t["params"]["lr"] == float(lr) and t["params"]["lam"] == float(lam)]
                assert panel["z"][yi][xi] == pytest.approx(np.mean(vals), rel=1e-12)
    # parallel coordinates: one line per completed trial with its parameters and final metrics
    par = figs["chart-parallel"]["data"][0]
    order = {t["id"]: t for t in trials}
    dims = {d["label"]: d["values"] for d in par["dimensions"]}
    for i, tid in enumerate(par["meta"]["trials"]):
        t = order[tid]
        assert (dims["lr"][i], dims["lam"][i], dims["alpha"][i]) == (t["params"]["lr"], t["params"]["lam"],
                                                                   t["params"]["alpha"])
        assert dims["test_metric"][i] == pytest.approx(t["test_metric"], rel=1e-12)
    assert sorted(par["meta"]["trials"]) == sorted(order)
    # Pareto: mean (test, sparsity) per configuration; the front is the non-dominated set
    groups = defaultdict(list)
    for t in trials:
        groups[(t["variant"], json.dumps(t["params"], sort_keys=True))].append(t)
    pts = np.array([(np.mean([_final(t, objs[0]) for t in g]), np.mean([_final(t, objs[1]) for t in g]))
                    for g in groups.values()])
    drawn = np.array([(x, y) for tr in figs["chart-pareto"]["data"][:-1] for x, y in zip(tr["x"], tr["y"])])
    np.testing.assert_allclose(sorted(map(tuple, drawn)), sorted(map(tuple, pts)), rtol=1e-12)
    front = [p for p in pts if not any((q >= p).all() and (q > p).any() for q in pts)]
    line = figs["chart-pareto"]["data"][-1]
    np.testing.assert_allclose(sorted(zip(line["x"], line["y"])), sorted(map(tuple, front)), rtol=1e-12)


def test_experiment_page_follows_a_running_experiment(page, server):
    spec = {**GRID_SPEC, "name": "follow-ui"}
    exp_id, ids = seed_experiment(server.store, spec=spec, n_done=8, status="running")
    page.goto(server.base + f"/ui/experiments/{exp_id}")
    wait_chart(page, "chart-convergence")
    assert page.locator("#summary .trials").inner_text() == "8/32"
    sl1 = "#compare-table tr[data-variant='SL1-GRU']"
    assert page.locator(sl1).get_attribute("data-test-mean") == ""  # no SL1-GRU trial finished yet
    assert [t["meta"]["variant"] for t in wait_chart(page, "chart-convergence")["data"]] == ["GRU", "GRU"]
    for p in plans(spec)[8:32]:
        server.store.record_trial(ids[p.number], record(p))
    server.store.set_progress(exp_id, total=32, done=32)
    server.store.finish_experiment(exp_id, "succeeded")
    page.wait_for_function("document.querySelector('#summary')?.dataset.status === 'succeeded'", timeout=15_000)
    page.wait_for_function(f"document.querySelector(\"{sl1}\")?.dataset.testMean !== ''", timeout=15_000)
    page.wait_for_function("document.getElementById('chart-convergence').data.filter("
                           "t => t.meta.role === 'mean').length === 2", timeout=15_000)


# -- trial page --------------------------------------------------------------------------------------------
def test_trial_page_zooms_and_downsamples(page, server):
    exp_id, ids = seed_experiment(server.store, spec=LONG_SPEC, steps=20_000)
    trial_id = ids[0]
    page.goto(server.base + f"/ui/trials/{trial_id}")
    fig = wait_chart(page, "chart-trace")
    assert [t["meta"]["metric"] for t in fig["data"]] == ["loss", "grad_norm", "weight_norm"]
    returned = int(page.locator("#chart-trace").get_attribute("data-returned"))
    assert 900 < returned <= 1000 and len(fig["data"][0]["x"]) == returned
    full = server.api(f"/trials/{trial_id}/trace", metrics="loss", max_points=1000)
    assert [r[0] for r in full["rows"]] == fig["data"][0]["x"]  # the API's own down-sampling
    assert page.locator("#trace-info").inner_text().startswith(f"showing {returned} of 20000 rows")
    epochs = wait_chart(page, "chart-epochs")
    api_epochs = server.api(f"/trials/{trial_id}/epochs")["columns"]
    for t in epochs["data"]:
        assert t["y"] == pytest.approx(api_epochs[t["meta"]["metric"]], rel=1e-12)
    assert [t["meta"]["metric"] for t in epochs["data"]] == ["train_metric", "test_metric", "train_loss"]
    page.evaluate("window.scrollTo(0, 0)")
    # zoom by dragging across the top panel: the server sends the range again, in full detail
    box = page.locator("#chart-trace .nsewdrag").first.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.40, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.42, y, steps=5)
    page.mouse.up()
    page.wait_for_function("document.getElementById('trace-form').elements.start.value !== '' &&"
                           "document.getElementById('chart-trace').dataset.state === 'ready' &&"
                           "document.getElementById('chart-trace').dataset.stride === '1'", timeout=15_000)
    start = int(page.input_value("input[name=start]"))
    stop = int(page.input_value("input[name=stop]"))
    assert 7000 < start < stop < 9000 and stop - start < 1000
    fig = wait_chart(page, "chart-trace")
    xs = fig["data"][0]["x"]
    assert xs == list(range(start, stop + 1))  # every step of the window
    api = server.api(f"/trials/{trial_id}/trace", metrics="loss")
    np.testing.assert_allclose(fig["data"][0]["y"], [r[1] for r in api["rows"][start:stop + 1]], rtol=1e-12)
    shot(page, "trial-zoomed")
    # coarser: at most 50 points over the window, the window's last step kept
    page.fill("input[name=max_points]", "50")
    page.dispatch_event("input[name=max_points]", "change")
    page.wait_for_function("Number(document.getElementById('chart-trace').dataset.returned) <= 50")
    xs = wait_chart(page, "chart-trace")["data"][0]["x"]
    assert len(xs) <= 50 and xs[0] == start and xs[-1] == stop
    # pick metrics
    page.uncheck("input[value=grad_norm]")
    page.check("input[value=sparsity_out]")
    page.wait_for_function("document.getElementById('chart-trace').data.map(t => t.meta.metric).join() ==="
                           "'loss,weight_norm,sparsity_out'")
    page.click("#trace-reset")
    page.wait_for_function("document.getElementById('trace-form').elements.start.value === '' &&"
                           "document.getElementById('chart-trace').data[0].x.at(-1) === 19999")
    shot(page, "trial")


# -- submit ---------------------------------------------------------------------------------------------------
BAD_SPEC = """\
name: bad-epochs
dataset: {name: iris}
variants:
  - {name: GRU, family: gru}
training:
  batch_size: 16
  epochs: -3
seeds: 1
"""


def test_bad_spec_shows_the_field_error_inline(page, server):
    before = server.api("/experiments")["total"]
    page.goto(server.base + "/ui/submit")
    page.wait_for_function("document.getElementById('spec-status').classList.contains('ok')", timeout=15_000)
    page.fill("#spec", BAD_SPEC)
    page.fill("#token-input", TOKEN)
    page.dispatch_event("#token-input", "change")
    page.click("#submit")
    err = page.locator(".inline-error[data-path='training.epochs']")
    err.wait_for(timeout=15_000)
    assert "greater than or equal to 1" in err.inner_text()
    line = page.locator(".backdrop .line.err")
    assert line.get_attribute("data-line") == "7"  # the line of `epochs: -3`
    assert page.locator("#gutter .err").inner_text() == "7"
    assert "422" in page.locator("#spec-status").inner_text()
    assert page.locator("#spec-errors li[data-path='training.epochs']").count() == 1
    assert server.api("/experiments")["total"] == before  # nothing queued
    shot(page, "submit-error")
    # fixing it and submitting queues the experiment and opens its page
    page.fill("#spec", BAD_SPEC.replace("epochs: -3", "epochs: 2"))
    page.click("#submit")
    page.wait_for_url("**/ui/experiments/*", timeout=15_000)
    assert server.api("/experiments")["total"] == before + 1
    assert page.locator("#summary .badge").inner_text().startswith("queued")


def test_submit_without_token_is_refused_and_examples_load(page, server):
    page.goto(server.base + "/ui/submit")
    names = page.locator("#example option").all_inner_texts()
    assert "iris-table3" in names and "wine-grid" in names
    page.select_option("#example", "wine-grid")
    assert "name: wine-grid" in page.input_value("#spec")
    page.wait_for_function("document.getElementById('spec-status').textContent.includes('trials planned')",
                           timeout=20_000)
    before = server.api("/experiments")["total"]
    page.click("#submit")
    page.locator(".toast.error").wait_for()
    assert "401" in page.locator("#spec-status").inner_text()
    assert server.api("/experiments")["total"] == before
