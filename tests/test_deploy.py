"""Static checks of the deployment files (no Docker engine on the test machines)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from cli.main import app
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILES = [ROOT / "docker-compose.yml", ROOT / "deploy" / "compose.cpu.yml"]


def load(path: Path):
    return yaml.safe_load(path.read_text())


def cli_commands() -> dict:
    return get_command(app).commands


def test_compose_topology_is_complete():
    compose = load(ROOT / "docker-compose.yml")
    services = compose["services"]
    assert {"postgres", "ray-head", "ray-gpu-worker", "runner", "api"} <= set(services)
    assert "8265:8265" in services["ray-head"]["ports"]
    assert "8000:8000" in services["api"]["ports"]
    built = {s["image"] for s in services.values() if "build" in s}
    for name, svc in services.items():
        if "build" in svc:
            assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file(), name
        elif svc["image"].startswith("rnnhpo:"):
            assert svc["image"] in built, f"{name} uses an image no service builds"
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
    gpu = services["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


def test_compose_environment_names_real_settings_and_reaches_the_services():
    compose = load(ROOT / "docker-compose.yml")
    fields = {f"RNNHPO_{name.upper()}" for name in Settings.model_fields}
    for name, svc in compose["services"].items():
        for key in (svc.get("environment") or {}):
            if key.startswith("RNNHPO_"):
                assert key in fields, f"{name}: {key} is not a Settings field"
    env = compose["services"]["api"]["environment"]
    db = env["RNNHPO_DATABASE_URL"]
    assert db.startswith("postgresql+psycopg://") and "@postgres:5432/" in db
    pg = compose["services"]["postgres"]["environment"]
    assert f"{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@" in db and db.endswith("/" + pg["POSTGRES_DB"])
    assert env["RNNHPO_RAY_ADDRESS"].split(":")[0] == "ray-head"
    assert "--port=6379" in compose["services"]["ray-head"]["command"]


@pytest.mark.parametrize("path", COMPOSE_FILES + [ROOT / "deploy" / "kuberay" / "raycluster.yaml"])
def test_rnnhpo_commands_in_deploy_files_exist(path):
    commands = cli_commands()
    docs = list(yaml.safe_load_all(path.read_text()))
    found = re.findall(r"\[\"rnnhpo\", \"(\w+)\"([^\]]*)\]", path.read_text())
    for doc in docs:
        assert isinstance(doc, dict)
    for command, rest in found:
        assert command in commands, f"{path.name}: rnnhpo {command} does not exist"
        params = {opt for p in commands[command].params for opt in p.opts}
        for option in re.findall(r"\"(--[\w-]+)\"", rest):
            assert option in params, f"{path.name}: rnnhpo {command} has no {option}"


def test_kuberay_manifest_kinds():
    kinds = [d["kind"] for d in yaml.safe_load_all((ROOT / "deploy" / "kuberay" / "raycluster.yaml").read_text())]
    assert kinds == ["RayCluster", "Deployment"]


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfiles_copy_existing_sources_and_pin_torch(name):
    text = (ROOT / "deploy" / name).read_text()
    for src in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"{name}: COPY {part} does not exist"
    assert '"torch==2.13.0"' in text
