"""The front door as a user meets it: the real `rnnhpo` executable, its errors and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

RNNHPO = str(Path(sys.executable).with_name("rnnhpo"))


def rnnhpo(*args: str, home: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "RNNHPO_HOME": str(home), **(env or {})}
    full_env.pop("RNNHPO_DATABASE_URL", None)
    return subprocess.run([RNNHPO, *args], capture_output=True, text=True, env=full_env, timeout=120)


def error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def test_version(tmp_path):
    from importlib.metadata import version

    proc = rnnhpo("--version", home=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"rnnhpo {version('rnnhpo')}"


def test_every_option_has_help_text(tmp_path):
    from typer.main import get_command

    from cli.main import app

    group = get_command(app)
    missing = []
    for name, cmd in group.commands.items():
        assert cmd.help, f"`rnnhpo {name}` has no help"
        for p in cmd.params:
            if getattr(p, "param_type_name", "") == "option" and not p.help:
                missing.append(f"{name} {p.opts[0]}")
            if getattr(p, "param_type_name", "") == "argument" and not getattr(p, "help", None):
                missing.append(f"{name} {p.name}")
    assert missing == []


def test_a_bad_spec_is_refused_before_anything_starts(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\ndataset: {name: irs}\nvariants: [{name: G, family: gru}]\n"
                    "search: {algorithm: grid, space: {lr: {type: grid, values: [-1]}}}\n")
    home = tmp_path / "home"
    proc = rnnhpo("run", str(spec), home=home)
    assert proc.returncode == 2
    lines = error_lines(proc)
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith(f"error: {spec}: dataset.name: unknown dataset 'irs'")
    assert lines[1] == f"error: {spec}: search.space.lr: value -1: Input should be greater than 0 (variant G)"
    assert not home.exists(), "nothing is created (no database, no Ray) for a refused spec"


def test_a_missing_local_dataset_file_is_refused_naming_the_data_directory(tmp_path):
    spec = tmp_path / "mnist.yaml"
    spec.write_text("name: m\ndataset: {name: mnist}\nvariants: [{name: G, family: gru}]\n")
    proc = rnnhpo("submit", str(spec), home=tmp_path / "home")
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert line.startswith("error: dataset.name: mnist: needs ") and str(tmp_path / "home" / "data") in line


@pytest.mark.parametrize("args, code, needle", [
    (["status", "nope"], 1, "error: no experiment nope in database sqlite:///"),
    (["trials", "nope"], 1, "error: no experiment nope in database sqlite:///"),
    (["trace", "12345"], 1, "error: no trial 12345 in database sqlite:///"),
    (["compare", "nope"], 1, "error: experiment(s) not found: nope in database"),
    (["status", "nope", "--server", "http://127.0.0.1:9"], 1, "error: cannot reach server http://127.0.0.1:9"),
    (["experiments", "--db", "postgresql://nobody@127.0.0.1:9/x"], 1, "error: cannot open database postgresql://"),
    (["experiments", "--status", "exploded"], 2, "error: --status: unknown experiment status 'exploded'"),
])
def test_one_error_style_for_every_verb(tmp_path, args, code, needle):
    proc = rnnhpo(*args, home=tmp_path)
    assert proc.returncode == code, proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith(needle), proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_default_database_is_per_user_and_named(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([RNNHPO, "experiments"], capture_output=True, text=True, cwd=elsewhere,
                          env={**os.environ, "RNNHPO_HOME": str(tmp_path / "home")}, timeout=60)
    assert proc.returncode == 0
    assert f"in database sqlite:///{tmp_path / 'home' / 'rnnhpo.db'}" in proc.stderr
    assert not any(elsewhere.iterdir())


def test_train_reads_a_csv_from_the_data_directory_with_options(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "d.csv").write_text("a,b,y\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(60)))
    proc = rnnhpo("train", "--task", "csv", "-o", "path=d.csv", "-o", "target=y", "--epochs", "2",
                  "--hidden", "4", "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '"metric": "accuracy"' in proc.stdout
    proc = rnnhpo("train", "--task", "csv", "-o", "path", "--epochs", "2", home=tmp_path)
    assert proc.returncode == 2 and "--data-option: expected KEY=VALUE" in proc.stderr


def test_every_setting_is_documented():
    from service.settings import Settings

    doc = (Path(__file__).parents[1] / "docs" / "service.md").read_text()
    missing = [name for name in Settings.model_fields if f"RNNHPO_{name.upper()}" not in doc]
    assert missing == []
