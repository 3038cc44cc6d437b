"""The README's examples, executed (doctest-style), so they cannot rot.

Convention in README.md: an HTML comment on the line right before a fenced code block marks the
block for this test (it does not show on the rendered page); blocks without one are not run.

    <!-- readme-test: python -->
        A Python script, run from the repository root against a real ``rnnhpo serve`` that this
        test starts (free port, temporary SQLite database, temporary RNNHPO_HOME, local Ray):
        ``http://127.0.0.1:8000`` in the block is replaced by that server's address. The comment
        lines that end the block (``# ...`` after the last statement) are its expected output,
        each without its ``# ``.

    <!-- readme-test: shell [vary=KEY,KEY...] [exit=N] -->
        Lines starting with ``$ `` are commands, each an ``rnnhpo ...`` command (run with this
        environment's ``rnnhpo``, same temporary settings); the lines after a command, up to the
        next ``$ ``, are its expected output: its stdout, or with ``exit=N`` (a command that must
        fail with status N) its stderr.

How output is matched:
- line by line, trailing spaces ignored; a line ``...`` matches any number of lines (also none);
  ``...`` inside a line matches any text;
- a number shown with d decimals matches any number within half a unit of its last decimal
  (|actual − shown| ≤ ½·10^−d), so the README may round as it says it does;
- expected output that is JSON (starts with ``{`` or ``[``) is compared as data: the same keys,
  equal strings and booleans, numbers as above; ``vary=`` names keys whose values change from
  run to run (wall times) and are not compared.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_URL = "http://127.0.0.1:8000"
MARKER = re.compile(r"^<!--\s*readme-test:\s*(?P<kind>python|shell)(?P<opts>[^>]*?)\s*-->\s*$")
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
ANY = object()  # a wildcard in expected JSON data


@dataclass
class Block:
    kind: str
    line: int  # 1-based line of the opening fence in README.md
    text: str
    options: dict[str, list[str]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.kind}@README.md:{self.line}"


def readme_blocks(text: str) -> list[Block]:
    """The marked fenced blocks of a markdown text, in order."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines[:-1]):
        m = MARKER.match(line.strip())
        if not m or not lines[i + 1].lstrip().startswith("```"):
            continue
        fence = lines[i + 1].strip()[:3]
        end = next(j for j in range(i + 2, len(lines)) if lines[j].strip().startswith(fence))
        options = {}
        for opt in m["opts"].split():
            key, _, value = opt.partition("=")
            options[key] = [v for v in value.split(",") if v]
        blocks.append(Block(m["kind"], i + 2, "\n".join(lines[i + 2:end]), options))
    return blocks


# -- matching ---------------------------------------------------------------------------------
def number_matches(actual: float, shown: str) -> bool:
    """``actual`` rounds to ``shown`` at the decimals ``shown`` has (5e-4: to 1e-4)."""
    d = Decimal(shown)
    half_unit = Decimal(5) * Decimal(10) ** (d.as_tuple().exponent - 1)
    return abs(Decimal(repr(float(actual))) - d) <= half_unit


def line_matches(expected: str, actual: str) -> bool:
    pattern, shown = [], []
    for part in re.split(r"(\.\.\.)", expected):
        if part == "...":
            pattern.append(".*?")
            continue
        pos = 0
        for m in NUMBER.finditer(part):
            pattern.append(re.escape(part[pos:m.start()]) + f"({NUMBER.pattern})")
            shown.append(m.group())
            pos = m.end()
        pattern.append(re.escape(part[pos:]))
    m = re.fullmatch("".join(pattern), actual)
    return m is not None and all(number_matches(float(a), s) for a, s in zip(m.groups(), shown))


def lines_match(expected: list[str], actual: list[str]) -> bool:
    @lru_cache(maxsize=None)
    def match(i: int, j: int) -> bool:
        if i == len(expected):
            return j == len(actual)
        if expected[i].strip() == "...":
            return any(match(i + 1, k) for k in range(j, len(actual) + 1))
        return j < len(actual) and line_matches(expected[i], actual[j]) and match(i + 1, j + 1)

    return match(0, 0)


def data_matches(expected, actual, vary: frozenset[str] = frozenset(), path: str = "") -> list[str]:
    """Differences between expected JSON data (numbers as Decimal text) and actual data."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path or '.'}: expected an object, got {actual!r}"]
        out = [f"{path}.{k}: missing" for k in expected if k not in actual]
        out += [f"{path}.{k}: not shown in the README" for k in actual if k not in expected]
        for k in expected:
            if k in actual and k not in vary:
                out += data_matches(expected[k], actual[k], vary, f"{path}.{k}")
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: expected {len(expected)} items, got {actual!r}"]
        return [d for n, (e, a) in enumerate(zip(expected, actual)) for d in data_matches(e, a, vary, f"{path}[{n}]")]
    if isinstance(expected, Decimal):
        ok = isinstance(actual, (int, float)) and not isinstance(actual, bool) and number_matches(actual, str(expected))
    else:
        ok = expected == actual and type(expected) is type(actual)
    return [] if ok else [f"{path}: README shows {expected}, got {actual!r}"]


def check_output(expected: str, actual: str, vary: list[str] | None = None) -> None:
    exp, act = expected.strip("\n"), actual.strip("\n")
    if exp.lstrip().startswith(("{", "[")):
        shown = json.loads(exp, parse_float=Decimal, parse_int=Decimal)
        diffs = data_matches(shown, json.loads(act), frozenset(vary or ()))
        assert not diffs, "output differs from the README:\n" + "\n".join(diffs) + f"\n--- got:\n{act}"
        return
    exp_lines = [ln.rstrip() for ln in exp.splitlines()]
    act_lines = [ln.rstrip() for ln in act.splitlines()]
    assert lines_match(exp_lines, act_lines), f"output differs from the README:\n--- README:\n{exp}\n--- got:\n{act}"


def test_matching_rules():
    assert line_matches("GRU 6 0.837", "GRU 6 0.8372")
    assert not line_matches("GRU 6 0.837", "GRU 6 0.8376")
    assert not line_matches("GRU 6 0.837", "GRU 7 0.837")
    assert line_matches("experiment ... database ...", "experiment 9f3a database sqlite:///x.db")
    assert line_matches("lam 5e-4", "lam 0.00046")
    assert lines_match(["a", "...", "z"], ["a", "b", "c", "z"]) and lines_match(["a", "...", "z"], ["a", "z"])
    assert not lines_match(["a", "z"], ["a", "b", "z"])
    shown = json.loads('{"x": 0.6349, "n": 400, "ok": false, "t": 0.36}', parse_float=Decimal, parse_int=Decimal)
    assert data_matches(shown, {"x": 0.63487, "n": 400, "ok": False, "t": 9.9}, frozenset({"t"})) == []
    assert data_matches(shown, {"x": 0.63487, "n": 401, "ok": False, "t": 0.36}) == [".n: README shows 400, got 401"]
    assert data_matches(shown, {"x": 0.6349, "n": 400, "ok": 0, "t": 0.36}) == [".ok: README shows False, got 0"]


def test_readme_marks_examples():
    kinds = [b.kind for b in readme_blocks(README.read_text())]
    assert "python" in kinds and "shell" in kinds, kinds


# -- running the blocks -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rnnhpo() -> str:
    exe = Path(sys.executable).with_name("rnnhpo")
    return str(exe) if exe.exists() else shutil.which("rnnhpo") or pytest.fail("no rnnhpo executable")


@pytest.fixture(scope="module")
def sandbox():
    """Temporary RNNHPO_HOME, database and data dir; Ray's temp dir short (socket path limit)."""
    tmp = Path(tempfile.mkdtemp(prefix="rnnhpo-readme-"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RNNHPO_") and k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    env.update({"RNNHPO_HOME": str(tmp / "home"), "RNNHPO_DATABASE_URL": f"sqlite:///{tmp / 'readme.db'}",
                "RNNHPO_DATA_DIR": str(tmp / "data"), "RNNHPO_VAR_DIR": str(tmp / "var"),
                "RAY_TMPDIR": str(tmp / "ray"), "RAY_DEDUP_LOGS": "0", "PYTHONUNBUFFERED": "1",
                "COLUMNS": "100", "NO_COLOR": "1"})
    (tmp / "ray").mkdir()
    yield tmp, env
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def readme_server(sandbox):
    """``rnnhpo serve`` (API + in-process runner + local Ray) on a free loopback port."""
    tmp, env = sandbox
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp / "serve.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([_rnnhpo(), "serve", "--port", str(port), "--log-level", "warning"], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rnnhpo serve did not come up:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:  # Ray's processes stay in the server's own process group
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(10)
        log.close()


def _blocks(kind: str) -> list:
    marks = {"python": [pytest.mark.slow]}  # needs a server with a local Ray
    return [pytest.param(b, id=b.id, marks=marks.get(kind, []))
            for b in readme_blocks(README.read_text()) if b.kind == kind]


def split_python(text: str) -> tuple[str, str]:
    """(code, expected output): the comment lines ending the block are the output."""
    lines = text.rstrip().splitlines()
    n = len(lines)
    while n > 0 and lines[n - 1].lstrip().startswith("#"):
        n -= 1
    expected = [re.sub(r"^\s*# ?", "", ln) for ln in lines[n:]]
    return "\n".join(lines) + "\n", "\n".join(expected)


def split_shell(text: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs; a command may continue over lines ending in ``\\``."""
    out: list[tuple[str, list[str]]] = []
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("$ "):
            cmd = line[2:]
            while cmd.endswith("\\"):
                cmd = cmd[:-1] + next(lines)
            out.append((cmd, []))
        elif out:
            out[-1][1].append(line)
    return [(cmd, "\n".join(exp)) for cmd, exp in out]


@pytest.mark.parametrize("block", _blocks("python"))
def test_readme_python_block(block, sandbox, readme_server, tmp_path):
    _, env = sandbox
    code, expected = split_python(block.text)
    script = tmp_path / "readme_block.py"
    script.write_text(code.replace(README_URL, readme_server))
    run = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, f"{block.id} failed:\n{run.stdout}\n{run.stderr[-4000:]}"
    check_output(expected, run.stdout)


@pytest.mark.parametrize("block", _blocks("shell"))
def test_readme_shell_block(block, sandbox, request):
    _, env = sandbox
    commands = split_shell(block.text)
    assert commands, f"{block.id}: no `$ ` command"
    for cmd, expected in commands:
        argv = shlex.split(cmd)
        assert argv[0] == "rnnhpo", f"{block.id}: only rnnhpo commands run here, not {argv[0]!r}"
        if README_URL in cmd:
            argv = [a.replace(README_URL, request.getfixturevalue("readme_server")) for a in argv]
        run = subprocess.run([_rnnhpo(), *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
        code = int(block.options.get("exit", ["0"])[0])
        assert run.returncode == code, f"{block.id}: `{cmd}` exited {run.returncode}:\n{run.stdout}\n{run.stderr[-4000:]}"
        check_output(expected, run.stdout if code == 0 else run.stderr, block.options.get("vary"))
