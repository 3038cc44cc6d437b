"""Pack resource requests the cluster can never satisfy: the one rule (search.resources), applied
at submit when the cluster is known (API 422, CLI exit 2, naming the field) and accepted when it
is not; ``gpus_per_pack: auto`` always fits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from search.resources import resource_problem
from service.api.app import create_app
from service.settings import Settings

SPEC = {"name": "fit", "dataset": {"name": "iris"}, "variants": [{"name": "GRU", "family": "gru"}],
        "training": {"epochs": 2}, "seeds": 1}
CPU_NODE = {"CPU": 2.0, "GPU": 0.0}
GPU_NODE = {"CPU": 16.0, "GPU": 2.0}


@pytest.mark.parametrize("nodes,cpus,gpus,expected", [
    ([CPU_NODE], 1, "auto", None),
    ([CPU_NODE], 2, 0, None),
    ([CPU_NODE], 64, "auto", ("execution.cpus_per_pack", "64 CPUs per pack, but the largest node has 2")),
    ([CPU_NODE], 1, 1, ("execution.gpus_per_pack", "1 GPU per pack, but no node has a GPU")),
    ([CPU_NODE], 1, 0.25, ("execution.gpus_per_pack", "0.25 GPUs per pack, but no node has a GPU")),
    ([GPU_NODE], 1, "auto", None),
    ([GPU_NODE], 1, 0.5, None),
    ([GPU_NODE], 1, 2, None),
    ([GPU_NODE], 1, 3, ("execution.gpus_per_pack", "3 GPUs per pack, but the largest node has 2")),
    # on a GPU cluster a pack's CPUs are capped at the cluster's CPUs per GPU share (search.packing)
    ([GPU_NODE], 64, "auto", None),
    ([CPU_NODE, GPU_NODE], 8, 0, None),
    ([{"CPU": 16.0, "GPU": 0.0}, {"CPU": 4.0, "GPU": 1.0}], 8, 1,
     ("execution.cpus_per_pack", "8 CPUs and 1 GPU per pack, but the nodes with 1 GPU have at most 4 CPUs")),
])
def test_the_feasibility_rule(nodes, cpus, gpus, expected):
    problem = resource_problem(nodes, cpus_per_pack=cpus, gpus_per_pack=gpus)
    assert (None if problem is None else (problem.field, problem.message)) == expected


def test_the_driver_applies_the_same_rule():
    from search.driver import check_resources
    from search.faults import ResourceUnsatisfiable
    from search.spec import ExperimentSpec

    check_resources(ExperimentSpec.model_validate(SPEC), [CPU_NODE])
    too_big = ExperimentSpec.model_validate({**SPEC, "execution": {"cpus_per_pack": 64}})
    with pytest.raises(ResourceUnsatisfiable, match=r"^execution\.cpus_per_pack: 64 CPUs per pack, but the "
                                                    r"largest node has 2$"):
        check_resources(too_big, [CPU_NODE])


@pytest.mark.parametrize("training,field,why", [
    ({"fast_backend": "triton"}, "training.fast_backend", "triton runs on CUDA"),
    ({"fast_backend": "cuda_graph"}, "training.fast_backend", "cuda_graph runs on CUDA"),
    ({"device": "cuda:1"}, "training.device", "cuda:1 is a CUDA device"),
])
def test_cuda_only_settings_need_packs_with_a_gpu(training, field, why):
    """A CUDA backend or device is refused where the packs get no GPU: by the spec itself when
    gpus_per_pack is 0, by the rule on a cluster without GPUs (at submit and in the driver), and
    accepted on a GPU cluster."""
    from pydantic import ValidationError

    from search.driver import check_resources
    from search.faults import ResourceUnsatisfiable
    from search.spec import ExperimentSpec

    spec = ExperimentSpec.model_validate({**SPEC, "training": {"epochs": 2, **training}})
    assert spec.training.cuda_only == (field, why)
    problem = resource_problem([CPU_NODE], cpus_per_pack=1, gpus_per_pack="auto", cuda_only=spec.training.cuda_only)
    assert (problem.field, problem.message) == (field, f"{why}, but packs get no GPU on this cluster (no node has "
                                                       f"one, or execution.gpus_per_pack is 0)")
    assert resource_problem([GPU_NODE], cpus_per_pack=1, gpus_per_pack="auto", cuda_only=spec.training.cuda_only) is None
    with pytest.raises(ResourceUnsatisfiable, match=f"^{field}: {why}"):
        check_resources(spec, [CPU_NODE])
    check_resources(spec, [GPU_NODE])
    with pytest.raises(ValidationError, match=f"{field}: {why}, but execution.gpus_per_pack is 0"):
        ExperimentSpec.model_validate({**SPEC, "training": {"epochs": 2, **training},
                                       "execution": {"gpus_per_pack": 0}})
    assert ExperimentSpec.model_validate(SPEC).training.cuda_only is None


def test_a_device_that_is_no_torch_device_is_refused():
    from pydantic import ValidationError

    from search.spec import ExperimentSpec

    with pytest.raises(ValidationError, match="must be auto, cpu, cuda or cuda:N, not 'gpu'"):
        ExperimentSpec.model_validate({**SPEC, "training": {"device": "gpu"}})


class FakeDashboard:
    """Ray's state API ``/api/v0/nodes`` as a Ray 2.x dashboard answers it, token required."""

    def __init__(self, nodes: list[dict], token: str):
        rows = [{"node_id": f"n{i}", "state": "ALIVE", "resources_total": n} for i, n in enumerate(nodes)]
        rows.append({"node_id": "dead", "state": "DEAD", "resources_total": {"CPU": 512.0, "GPU": 8.0}})
        body = json.dumps({"result": True, "msg": "", "data": {"result": {"total": len(rows), "result": rows}}})
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                outer.requests += 1
                ok = self.path.startswith("/api/v0/nodes") and self.headers.get("Authorization") == f"Bearer {token}"
                self.send_response(200 if ok else 401)
                self.end_headers()
                self.wfile.write(body.encode() if ok else b"unauthorized")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dashboard(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "s3cret")
    fake = FakeDashboard([CPU_NODE], "s3cret")
    yield fake
    fake.close()


def _client(sqlite_url, tmp_path, jobs_address: str) -> TestClient:
    return TestClient(create_app(Settings(database_url=sqlite_url, data_dir=tmp_path / "data", api_token=None,
                                          ray_jobs_address=jobs_address)))


@pytest.mark.parametrize("execution,field,msg", [
    ({"cpus_per_pack": 64}, "cpus_per_pack", "64 CPUs per pack, but the largest node has 2"),
    ({"gpus_per_pack": 1}, "gpus_per_pack", "1 GPU per pack, but no node has a GPU"),
    ({"gpus_per_pack": 0.5}, "gpus_per_pack", "0.5 GPUs per pack, but no node has a GPU"),
    ({"training": {"fast_backend": "triton"}}, "training.fast_backend",
     "triton runs on CUDA, but packs get no GPU on this cluster (no node has one, or execution.gpus_per_pack is 0)"),
])
def test_api_refuses_an_unsatisfiable_request_on_a_known_cluster(execution, field, msg, dashboard, sqlite_url,
                                                                 tmp_path):
    body = {**SPEC, **execution} if "training" in execution else {**SPEC, "execution": execution}
    loc = ["body", *field.split(".")] if "." in field else ["body", "execution", field]
    with _client(sqlite_url, tmp_path, dashboard.url) as client:
        r = client.post("/api/v1/experiments", json=body)
        assert r.status_code == 422, r.text
        assert [(e["loc"], e["msg"]) for e in r.json()["detail"]] == [(loc, msg)]
        assert client.get("/api/v1/experiments").json()["total"] == 0, "nothing is stored"
        assert client.post("/api/v1/experiments", json=SPEC).status_code == 202, "auto fits"
        assert client.post("/api/v1/experiments", json={**SPEC, "execution": {"cpus_per_pack": 2}}).status_code == 202
    assert dashboard.requests == 1, "the cluster's answer is cached"


def test_a_ray_still_being_imported_by_another_thread_counts_as_unknown(monkeypatch):
    """The embedded runner imports Ray in its own thread while the API validates a submission: a
    half-imported module (no ``is_initialized`` yet) means "not joined", never a server error."""
    import types

    from search.cluster import joined_nodes
    from service.submission import known_nodes

    monkeypatch.setitem(sys.modules, "ray", types.ModuleType("ray"))
    assert joined_nodes() is None
    settings = Settings(ray_address=None, ray_jobs_address=None)
    spec = types.SimpleNamespace(execution=types.SimpleNamespace(ray_address=None))
    assert known_nodes(settings, spec, runs_here=True)[0]["CPU"] >= 1  # this machine, as for a local Ray


def test_an_unknown_or_unreachable_cluster_accepts_the_request(sqlite_url, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    too_big = {**SPEC, "execution": {"cpus_per_pack": 64, "gpus_per_pack": 1}}
    with _client(sqlite_url, tmp_path, closed) as client:  # unreachable dashboard
        assert client.post("/api/v1/experiments", json=too_big).status_code == 202
    settings = Settings(database_url=sqlite_url, data_dir=tmp_path / "data", api_token=None)
    with TestClient(create_app(settings)) as client:  # no runner here, no cluster configured
        assert client.post("/api/v1/experiments", json=too_big).status_code == 202


RNNHPO = str(Path(sys.executable).with_name("rnnhpo"))


@pytest.mark.parametrize("command", ["run", "submit"])
def test_cli_exits_2_naming_the_field(command, tmp_path):
    """``rnnhpo run`` runs on this machine (no GPU visible: CUDA_VISIBLE_DEVICES is empty);
    ``rnnhpo submit --db`` is asked of a cluster whose dashboard is configured."""
    spec = tmp_path / "gpu.json"
    spec.write_text(json.dumps({**SPEC, "execution": {"gpus_per_pack": 1}}))
    home = tmp_path / "home"
    env = {**os.environ, "RNNHPO_HOME": str(home), "CUDA_VISIBLE_DEVICES": "", "RAY_AUTH_TOKEN": "s3cret"}
    for key in ("RNNHPO_DATABASE_URL", "RAY_ADDRESS", "RNNHPO_RAY_ADDRESS", "RNNHPO_RAY_JOBS_ADDRESS"):
        env.pop(key, None)
    fake = FakeDashboard([CPU_NODE], "s3cret")
    if command == "submit":
        env["RNNHPO_RAY_JOBS_ADDRESS"] = fake.url
    try:
        proc = subprocess.run([RNNHPO, command, str(spec)], capture_output=True, text=True, env=env, timeout=120)
    finally:
        fake.close()
    assert proc.returncode == 2, proc.stderr
    assert "execution.gpus_per_pack: 1 GPU per pack, but no node has a GPU" in proc.stderr
    if command == "run":
        assert not home.exists(), "nothing is created (no database, no Ray)"
    else:
        assert fake.requests == 1


@pytest.mark.slow
def test_a_real_dashboard_reports_the_local_ray(ray_local):
    """Ray's own state API, as the submit-time check reads it (the session's Ray has 2 CPUs)."""
    from search.cluster import dashboard_nodes

    if not ray_local:
        pytest.skip("Ray runs headless here (no dashboard)")
    assert dashboard_nodes(ray_local) == [{"CPU": 2.0, "GPU": 0.0}]


def test_the_phase_is_shown_by_the_api_the_cli_and_the_ui(sqlite_url, tmp_path):
    """A running experiment's phase, as the runner records it, in every view (a finished one has none)."""
    import io

    from rich.console import Console

    from service.client import render_experiment
    from service.store import Store

    store = Store(sqlite_url)
    exp_id = store.create_experiment("fit", SPEC, n_trials_total=1)
    assert store.claim_experiment("r1").id == exp_id
    store.set_progress(exp_id, total=1, done=0, phase="waiting for resources", packs_running=0)
    settings = Settings(database_url=sqlite_url, data_dir=tmp_path / "data", api_token=None)
    with TestClient(create_app(settings)) as client:
        out = client.get(f"/api/v1/experiments/{exp_id}").json()
        assert (out["progress"]["phase"], out["progress"]["packs_running"]) == ("waiting for resources", 0)
        assert "waiting for resources" in client.get(f"/ui/partials/experiments/{exp_id}/summary").text
        store.set_progress(exp_id, total=1, done=0, phase="running", packs_running=2)
        from service.api.schemas import ExperimentOut

        text = io.StringIO()
        render_experiment(ExperimentOut.model_validate(client.get(f"/api/v1/experiments/{exp_id}").json()),
                          Console(file=text, width=120))
        assert any(line.split() == ["phase", "running", "2", "packs"] for line in text.getvalue().splitlines())
        assert "running 2 packs" in client.get(f"/ui/partials/experiments/{exp_id}/summary").text
        store.finish_experiment(exp_id, "succeeded")
        assert client.get(f"/api/v1/experiments/{exp_id}").json()["progress"]["phase"] is None
