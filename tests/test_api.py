"""In-process API tests: FastAPI TestClient over a SQLite Store (no Ray, no training).

Results are inserted through the Store the way the search layer's sink would, so every read route
(trials, traces, compare, plots) is exercised without the driver.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from search.sink import TrialPlan, TrialRecord
from service.api.app import create_app
from service.settings import Settings
from service.store import Store
from trainer.result import EPOCH_COLUMNS, TRACE_COLUMNS

TOKEN = "s3cret-token"

SPEC = {
    "name": "iris-api-test",
    "dataset": {"name": "iris"},
    "variants": [{"name": "GRU", "family": "gru"}, {"name": "SL1-GRU", "family": "gru", "reg": "sl1"}],
    "training": {"epochs": 2, "batch_size": 16, "lr": 0.05},
    "search": {"algorithm": "grid", "space": {"lr": {"type": "grid", "values": [0.01, 0.05]},
                                              "lam": {"type": "grid", "values": [0.001, 0.01]}}},
    "seeds": 2,
}


@pytest.fixture
def settings(sqlite_url, tmp_path):
    return Settings(database_url=sqlite_url, data_dir=tmp_path / "data", api_token=None,
                    max_body_bytes=20_000, max_trials_per_experiment=100)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def auth_client(settings):
    with TestClient(create_app(Settings(**{**settings.model_dump(), "api_token": TOKEN}))) as c:
        yield c


def _submit(client, spec=SPEC, **kw):
    return client.post("/api/v1/experiments", json=spec, **kw)


def fake_results(store: Store, exp_id: str, *, steps: int = 40, seeds=(0, 1)) -> list[int]:
    """Register and record a grid of trials the way the search layer's sink would."""
    plans, number = [], 0
    for variant in ("GRU", "SL1-GRU"):
        for lr in (0.01, 0.05):
            for lam in (0.001, 0.01):
                for seed in seeds:
                    params = {"lr": lr} if variant == "GRU" else {"lr": lr, "lam": lam}
                    if variant == "GRU" and lam != 0.001:
                        continue
                    plans.append(TrialPlan(number, variant, params, seed, None, {"family": "gru"}))
                    number += 1
    ids = store.register_trials(exp_id, plans)
    rng = np.random.default_rng(0)
    for p in plans:
        k = np.arange(steps)
        loss = np.exp(-k / 10) * (1 + 0.1 * rng.random(steps)) + p.params["lr"]
        trace = {c: rng.random(steps) for c in TRACE_COLUMNS}
        trace.update(step=k, epoch=k // 20, loss=loss, grad_norm=loss / 2, weight_norm=1 + k / steps,
                     sparsity_out=np.minimum(1, k / steps * (2 if p.variant == "SL1-GRU" else 0.1)))
        if p.number == 0:
            trace["update_norm"][3] = np.nan
        epochs = {c: rng.random(2) for c in EPOCH_COLUMNS}
        epochs["epoch"] = np.arange(2)
        acc = 0.8 + 0.1 * rng.random() + (0.05 if p.variant == "SL1-GRU" else 0)
        final = {"loss": float(loss[-1]), "train_metric": acc, "test_metric": acc - 0.02,
                 "sparsity_out": float(trace["sparsity_out"][-1]), "sparsity_all": 0.01,
                 "weight_norm": 2.0, "steps": steps, "epochs": 2, "wall_time": 1.5}
        store.record_trial(ids[p.number], TrialRecord(
            status="completed", final=final,
            diagnostics={"monotonicity_violations": 1, "grad_norm_ratio": 0.1, "diverged": False},
            trace=trace, epochs=epochs, wall_time=1.5, device="cpu", pack_id="p0", pack_size=4))
    return [ids[p.number] for p in plans]


# ------------------------------------------------------------------------- submit & lifecycle

def test_submit_json_get_list(client):
    r = _submit(client)
    assert r.status_code == 202, r.text
    body = r.json()
    exp_id = body["id"]
    # selection (configurations x seeds) + the selected configuration of each variant on test x seeds
    assert body["status"] == "queued" and body["trials_planned"] == 2 * 2 + 2 * 2 * 2 + 2 * 2
    assert r.headers["location"] == f"/api/v1/experiments/{exp_id}"
    assert body["links"]["trials"].endswith(f"/experiments/{exp_id}/trials")
    g = client.get(f"/api/v1/experiments/{exp_id}").json()
    assert g["status"] == "queued" and g["progress"]["trials_total"] == 16
    assert g["progress"]["trials_done"] == 0 and g["spec"]["name"] == "iris-api-test"
    lst = client.get("/api/v1/experiments", params={"status": "queued"}).json()
    assert lst["total"] == 1 and lst["items"][0]["id"] == exp_id
    assert client.get("/api/v1/experiments", params={"status": "running"}).json()["total"] == 0


def test_submit_yaml_and_pagination(client):
    text = yaml.safe_dump(SPEC)
    ids = []
    for i in range(3):
        r = client.post("/api/v1/experiments", content=text.replace("iris-api-test", f"y{i}"),
                        headers={"content-type": "application/yaml"})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    page = client.get("/api/v1/experiments", params={"limit": 2, "offset": 0}).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    page2 = client.get("/api/v1/experiments", params={"limit": 2, "offset": 2}).json()
    assert len(page2["items"]) == 1
    assert {i["id"] for i in page["items"] + page2["items"]} == set(ids)


def test_cancel_and_delete(client):
    exp_id = _submit(client).json()["id"]
    r = client.post(f"/api/v1/experiments/{exp_id}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert client.delete(f"/api/v1/experiments/{exp_id}").status_code == 204
    assert client.get(f"/api/v1/experiments/{exp_id}").status_code == 404
    assert client.delete(f"/api/v1/experiments/{exp_id}").status_code == 404
    assert client.post("/api/v1/experiments/nope/cancel").status_code == 404


def test_delete_running_is_409(client):
    store = client.app.state.store
    exp_id = _submit(client).json()["id"]
    assert store.claim_experiment("r1").id == exp_id
    r = client.delete(f"/api/v1/experiments/{exp_id}")
    assert r.status_code == 409
    r = client.post(f"/api/v1/experiments/{exp_id}/cancel")
    assert r.json()["cancel_requested"] is True and r.json()["status"] == "running"
    g = client.get(f"/api/v1/experiments/{exp_id}").json()
    assert g["status"] == "running" and g["runner_id"] == "r1"


def test_progress_eta_best(client):
    store = client.app.state.store
    exp_id = _submit(client).json()["id"]
    store.claim_experiment("r1")
    store.set_progress(exp_id, total=16, done=4, best={"number": 3, "value": 0.9, "variant": "GRU"})
    p = client.get(f"/api/v1/experiments/{exp_id}").json()["progress"]
    assert p["trials_done"] == 4 and p["fraction"] == 0.25 and p["best"]["number"] == 3
    assert p["eta_s"] is not None and p["eta_s"] >= 0


# ------------------------------------------------------------------------- security & validation

MUTATING = [("post", "/api/v1/experiments"), ("post", "/api/v1/experiments/{id}/cancel"),
            ("delete", "/api/v1/experiments/{id}")]


def test_token_required_on_every_mutating_route(auth_client):
    ok = _submit(auth_client, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 202
    exp_id = ok.json()["id"]
    for method, path in MUTATING:
        url = path.format(id=exp_id)
        kw = {"json": SPEC} if method == "post" and path.endswith("experiments") else {}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            r = auth_client.request(method.upper(), url, headers=headers, **kw)
            assert r.status_code == 401, (method, url, headers, r.text)
            assert r.headers.get("www-authenticate") == "Bearer"
    # reads stay open
    assert auth_client.get(f"/api/v1/experiments/{exp_id}").status_code == 200
    # and the token works on each mutating route
    h = {"Authorization": f"Bearer {TOKEN}"}
    assert auth_client.post(f"/api/v1/experiments/{exp_id}/cancel", headers=h).status_code == 202
    assert auth_client.delete(f"/api/v1/experiments/{exp_id}", headers=h).status_code == 204
    # every mutating route in the OpenAPI document declares the bearer scheme
    doc = auth_client.get("/openapi.json").json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in ("post", "put", "patch", "delete"):
                assert op.get("security"), (method, path)


def _loc(r):
    assert r.status_code == 422, r.text
    return [tuple(e["loc"]) for e in r.json()["detail"]]


def test_malformed_spec_names_the_field(client):
    bad = json.loads(json.dumps(SPEC))
    bad["training"]["epochs"] = -1
    assert ("body", "training", "epochs") in _loc(_submit(client, bad))
    bad = json.loads(json.dumps(SPEC))
    bad["variants"][0]["family"] = "transformer"
    assert any(loc[:4] == ("body", "variants", 0, "family") for loc in _loc(_submit(client, bad)))
    bad = json.loads(json.dumps(SPEC))
    del bad["dataset"]
    assert ("body", "dataset") in _loc(_submit(client, bad))
    bad = dict(SPEC, bogus=1)
    assert ("body", "bogus") in _loc(_submit(client, bad))
    r = client.post("/api/v1/experiments", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid json" in r.text
    r = client.post("/api/v1/experiments", content=b"- a\n- b\n", headers={"content-type": "application/yaml"})
    assert r.status_code == 422 and "mapping" in r.text
    r = client.post("/api/v1/experiments", content=b"", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post("/api/v1/experiments", content=b"\xff\xfe", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post("/api/v1/experiments", content=b"a: 1", headers={"content-type": "image/png"})
    assert r.status_code == 415


def test_yaml_aliases_rejected(client):
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"
    r = client.post("/api/v1/experiments", content=bomb, headers={"content-type": "application/yaml"})
    assert r.status_code == 422 and "aliases" in r.text


@pytest.mark.parametrize("path", ["/etc/passwd", "../secret.csv", "a/../../b.csv", "~/x.csv",
                                  "C:\\\\x.csv"])
def test_paths_outside_data_dir_rejected(client, path):
    spec = json.loads(json.dumps(SPEC))
    spec["dataset"] = {"name": "csv", "options": {"path": path, "target": "y"}}
    locs = _loc(_submit(client, spec))
    assert ("body", "dataset", "options", "path") in locs


def test_csv_in_the_data_dir_is_accepted_and_a_missing_one_named(client, settings):
    spec = json.loads(json.dumps(SPEC))
    spec["dataset"] = {"name": "csv", "options": {"path": "sub/dir/file.csv", "target": "y"}}
    r = _submit(client, spec)
    assert r.status_code == 422 and ("body", "dataset", "options", "path") in _loc(r)
    assert "no file sub/dir/file.csv" in r.text
    target = settings.data_dir / "sub" / "dir" / "file.csv"
    target.parent.mkdir(parents=True)
    target.write_text("a,b,y\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(40)))
    r = _submit(client, spec)
    assert r.status_code == 202, r.text
    stored = client.get(f"/api/v1/experiments/{r.json()['id']}").json()["spec"]
    assert stored["dataset"]["options"]["kind"] == "classification"


def test_unknown_dataset_and_bad_values_are_422_naming_each_field(client):
    spec = json.loads(json.dumps(SPEC))
    spec["dataset"] = {"name": "irs"}
    spec["search"] = {"algorithm": "grid", "space": {"lr": {"type": "grid", "values": [-0.1, 0.1]}}}
    r = _submit(client, spec)
    assert r.status_code == 422
    assert {("body", "dataset", "name"), ("body", "search", "space", "lr")} <= set(_loc(r))
    assert "did you mean 'iris'" in r.text and "/" not in r.json()["detail"][0]["msg"].split("Known")[0]


def test_body_and_search_bounds(client):
    big = json.dumps(dict(SPEC, description="x" * 30_000))
    r = client.post("/api/v1/experiments", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.text

    def chunks():
        for _ in range(30):
            yield b" " * 1000

    r = client.post("/api/v1/experiments", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    spec = json.loads(json.dumps(SPEC))
    spec["search"]["space"]["lr"]["values"] = [0.001 * (i + 1) for i in range(100)]
    locs = _loc(_submit(client, spec))
    assert ("body", "search", "space") in locs
    assert client.get("/api/v1/experiments").json()["total"] == 0


# ------------------------------------------------------------------------- results

@pytest.fixture
def populated(client):
    exp_id = _submit(client).json()["id"]
    ids = fake_results(client.app.state.store, exp_id)
    return client, exp_id, ids


def test_trials_sort_filter_paginate(populated):
    client, exp_id, ids = populated
    r = client.get(f"/api/v1/experiments/{exp_id}/trials").json()
    assert r["total"] == len(ids) == 12 and [t["number"] for t in r["items"]] == list(range(12))
    r = client.get(f"/api/v1/experiments/{exp_id}/trials",
                   params={"variant": "SL1-GRU", "sort": "test_metric", "order": "desc", "limit": 3}).json()
    assert r["total"] == 8 and len(r["items"]) == 3
    vals = [t["test_metric"] for t in r["items"]]
    assert vals == sorted(vals, reverse=True) and all(t["variant"] == "SL1-GRU" for t in r["items"])
    assert client.get(f"/api/v1/experiments/{exp_id}/trials", params={"status": "failed"}).json()["total"] == 0
    assert client.get(f"/api/v1/experiments/{exp_id}/trials", params={"sort": "bogus"}).status_code == 422
    assert client.get("/api/v1/experiments/nope/trials").status_code == 404
    t = client.get(f"/api/v1/trials/{ids[0]}").json()
    assert t["id"] == ids[0] and t["status"] == "completed" and t["params"]["lr"] == 0.01
    assert client.get("/api/v1/trials/999999").status_code == 404


def test_trace_json_csv_downsampled(populated):
    client, _, ids = populated
    r = client.get(f"/api/v1/trials/{ids[0]}/trace", params={"metrics": "loss,update_norm"})
    assert r.status_code == 200
    d = r.json()
    assert d["columns"] == ["step", "loss", "update_norm"] and len(d["rows"]) == 40
    assert d["rows"][3][2] is None  # NaN becomes null
    assert r.headers["x-trace-total-rows"] == "40"
    d = client.get(f"/api/v1/trials/{ids[0]}/trace", params={"every": 10}).json()
    assert [row[0] for row in d["rows"]] == [0, 10, 20, 30, 39]
    d = client.get(f"/api/v1/trials/{ids[0]}/trace", params={"max_points": 5, "metrics": "loss"}).json()
    assert len(d["rows"]) <= 5 and d["rows"][-1][0] == 39
    r = client.get(f"/api/v1/trials/{ids[0]}/trace", params={"format": "csv", "metrics": "loss"})
    lines = r.text.strip().splitlines()
    assert r.headers["content-type"].startswith("text/csv")
    assert lines[0] == "step,loss" and len(lines) == 41 and lines[1].startswith("0,")
    r = client.get(f"/api/v1/trials/{ids[0]}/trace", params={"metrics": "loss,nope"})
    assert r.status_code == 422 and "nope" in r.text
    assert client.get("/api/v1/trials/999999/trace").status_code == 404
    e = client.get(f"/api/v1/trials/{ids[0]}/epochs").json()
    assert e["columns"]["epoch"] == [0, 1]


def test_compare_single_and_across(populated):
    client, exp_id, _ = populated
    r = client.get(f"/api/v1/experiments/{exp_id}/compare").json()
    assert [row["variant"] for row in r["rows"]] == ["GRU", "SL1-GRU"]
    assert r["rows"][1]["n_completed"] == 8 and r["rows"][1]["test_metric_std"] is not None
    assert "±" in r["table"] and "SL1-GRU" in r["table"]
    md = client.get(f"/api/v1/experiments/{exp_id}/compare", params={"format": "markdown"})
    assert md.headers["content-type"].startswith("text/markdown") and "| variant" in md.text
    other = _submit(client).json()["id"]
    fake_results(client.app.state.store, other, seeds=(0,))
    r = client.get("/api/v1/compare", params={"experiments": f"{exp_id},{other}"}).json()
    assert len(r["rows"]) == 4 and r["experiments"] == [exp_id, other]
    r2 = client.get(f"/api/v1/compare?experiments={exp_id}&experiments={other}&format=csv")
    assert r2.status_code == 200 and r2.text.count("\n") == 5
    assert client.get("/api/v1/compare", params={"experiments": "nope"}).status_code == 404
    assert client.get("/api/v1/compare").status_code == 422


def _png_shape(content: bytes):
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(content), format="png").shape


@pytest.mark.parametrize("kind,params,shape", [
    ("convergence", {"width": 900, "height": 300}, (300, 900)),
    ("convergence", {"config": "all", "metrics": "loss", "log": "true"}, (400, 1200)),
    ("sparsity", {}, (500, 800)),
    ("grid", {"variant": "SL1-GRU", "width": 640, "height": 480}, (480, 640)),
    ("grid", {"x": "lr", "y": "variant"}, (600, 800)),
    ("pareto", {"x": "sparsity_out", "y": "test_metric"}, (600, 800)),
])
def test_plots_are_pngs_of_the_requested_size(populated, kind, params, shape):
    client, exp_id, _ = populated
    r = client.get(f"/api/v1/experiments/{exp_id}/plots/{kind}.png", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert _png_shape(r.content)[:2] == shape


def test_plots_errors_and_empty(client):
    exp_id = _submit(client).json()["id"]
    for kind in ("convergence", "sparsity", "grid", "pareto"):
        r = client.get(f"/api/v1/experiments/{exp_id}/plots/{kind}.png")
        assert r.status_code == 200 and _png_shape(r.content)[2] in (3, 4)  # "no data" figure
        assert client.get(f"/api/v1/experiments/nope/plots/{kind}.png").status_code == 404
    assert client.get(f"/api/v1/experiments/{exp_id}/plots/convergence.png",
                      params={"metrics": "bogus"}).status_code == 422
    assert client.get(f"/api/v1/experiments/{exp_id}/plots/sparsity.png",
                      params={"width": 10}).status_code == 422


# ------------------------------------------------------------------------- health

def test_health_ready_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz").json()
    assert r["status"] == "ready" and r["checks"]["database"]["ok"]
    client.get("/api/v1/experiments")
    m = client.get("/metrics")
    assert m.status_code == 200 and "rnnhpo_http_requests_total" in m.text
    assert 'rnnhpo_experiments{status="queued"}' in m.text


def test_ready_reports_unreachable_ray(settings):
    s = Settings(**{**settings.model_dump(), "ray_address": "127.0.0.1:1"})
    with TestClient(create_app(s)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and not r.json()["checks"]["ray"]["ok"]


def test_openapi_complete(client):
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for p in ["/api/v1/experiments", "/api/v1/experiments/{exp_id}", "/api/v1/experiments/{exp_id}/cancel",
              "/api/v1/experiments/{exp_id}/trials", "/api/v1/trials/{trial_id}",
              "/api/v1/trials/{trial_id}/trace", "/api/v1/experiments/{exp_id}/compare", "/api/v1/compare",
              "/api/v1/experiments/{exp_id}/plots/convergence.png", "/healthz", "/readyz", "/metrics"]:
        assert p in paths, p
    body = paths["/api/v1/experiments"]["post"]["requestBody"]["content"]
    assert set(body) >= {"application/json", "application/yaml"}
    assert body["application/json"]["examples"]["iris"]["value"]["name"] == "iris-quick"
    assert "DatasetSpec" in doc["components"]["schemas"]


@pytest.mark.postgres
def test_hostile_inputs_on_postgres_are_4xx(pg_url, tmp_path):
    """NUL bytes, huge ids and odd strings never reach PostgreSQL as errors (no 5xx)."""
    s = Settings(database_url=pg_url, data_dir=tmp_path / "data", max_body_bytes=20_000)
    with TestClient(create_app(s)) as c:
        exp_id = _submit(c).json()["id"]
        fake_results(c.app.state.store, exp_id, steps=5)
        urls = ["/api/v1/experiments/a%00b", f"/api/v1/experiments/{exp_id}/trials?variant=a%00",
                f"/api/v1/experiments/{exp_id}/trials?variant=" + "x" * 300, "/api/v1/compare?experiments=a%00",
                "/api/v1/trials/99999999999999999999", "/api/v1/trials/9223372036854775807/trace", "/api/v1/trials/2147483648",
                f"/api/v1/experiments/{exp_id}/plots/grid.png?x=a%00", "/api/v1/experiments/" + "a" * 65,
                f"/api/v1/experiments/{exp_id}/plots/convergence.png?variants=%00"]
        for url in urls:
            r = c.get(url)
            assert 400 <= r.status_code < 500, (url, r.status_code, r.text)
        spec = json.loads(json.dumps(SPEC))
        spec["name"] = "nul\x00name"
        r = _submit(c, spec)
        assert r.status_code == 422 and ["body", "name"] in [e["loc"] for e in r.json()["detail"]]
        r = c.post("/api/v1/experiments/a%00/cancel")
        assert r.status_code == 422
