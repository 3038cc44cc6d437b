"""End to end over HTTP: a real ``rnnhpo serve`` (uvicorn + in-process runner + local Ray) in a
subprocess, against SQLite and the real PostgreSQL, for the whole life of tiny experiments:
submit -> running -> results -> compare -> plots; cancel; SIGKILL mid-experiment and restart."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from search.planning import is_test_number

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "e2e-token"

TINY = {
    "name": "iris-e2e",
    "dataset": {"name": "iris"},
    "variants": [{"name": "GRU", "family": "gru"}, {"name": "SL1-GRU", "family": "gru", "reg": "sl1"}],
    "training": {"epochs": 2, "batch_size": 16, "lr": 0.05},
    "search": {"algorithm": "grid", "space": {"lam": {"type": "grid", "values": [0.001, 0.01]}}},
    "seeds": 2,
    "execution": {"pack_size": 2},
}  # GRU: 2 seeds (nothing to select); SL1-GRU: 2 lam x 2 seeds on validation + the best lam x 2 seeds
#  on test -> 8 trials

#: More packs, so a kill lands mid-experiment: 8 trials, one per pack, each long enough (warm pack
#: workers start the next pack at once) that the poll sees the experiment part done.
KILLABLE = {**TINY, "name": "iris-kill", "training": {"epochs": 150, "batch_size": 16, "lr": 0.05},
            "seeds": [0, 1], "execution": {"pack_size": 1}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m cli.main serve`` on a free loopback port, in its own process group."""

    def __init__(self, db_url: str, workdir: Path, *, token: str | None = TOKEN, runner: bool = True):
        self.db_url, self.workdir, self.token, self.runner = db_url, workdir, token, runner
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = workdir / f"server-{self.port}.log"

    def env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "RNNHPO_DATABASE_URL": self.db_url,
            "RNNHPO_DATA_DIR": str(self.workdir / "data"),
            "RNNHPO_VAR_DIR": str(self.workdir / "var"),
            "RAY_TMPDIR": str(ray_tmp()),
            "RNNHPO_RUNNER_HEARTBEAT_S": "1",
            "RNNHPO_RUNNER_STALE_AFTER_S": "4",
            "RNNHPO_RUNNER_POLL_S": "0.5",
            "RNNHPO_CANCEL_POLL_S": "0.2",
            "RAY_DEDUP_LOGS": "0",
            "PYTHONUNBUFFERED": "1",
        })
        env.pop("RAY_ADDRESS", None)
        env.pop("RNNHPO_RAY_ADDRESS", None)
        if self.token:
            env["RNNHPO_API_TOKEN"] = self.token
        else:
            env.pop("RNNHPO_API_TOKEN", None)
        return env

    def start(self, timeout: float = 60) -> "Server":
        args = [sys.executable, "-m", "cli.main", "serve", "--port", str(self.port), "--log-level", "warning"]
        if not self.runner:
            args.append("--no-runner")
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=self.env(), stdout=self._logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not healthy after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the server process only (a crash), then reap what it started."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reap()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reap()

    def _reap(self) -> None:
        # Ray's processes stay in the server's process group (started with start_new_session)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._logf.close()

    def client(self, token: str | None = TOKEN):
        from service.client import Client

        return Client(self.url, token=token, timeout=60)


_RAY_TMP: list[Path] = []


def ray_tmp() -> Path:
    if not _RAY_TMP:
        p = Path(tempfile.gettempdir()) / f"rnnhpo-e2e-{uuid.uuid4().hex[:8]}"
        p.mkdir()
        _RAY_TMP.append(p)
    return _RAY_TMP[0]


@pytest.fixture(scope="module", autouse=True)
def _cleanup_ray_tmp():
    yield
    for p in _RAY_TMP:
        shutil.rmtree(p, ignore_errors=True)
    _RAY_TMP.clear()


def wait_for(client, exp_id: str, statuses: tuple[str, ...], timeout: float = 240, seen: set | None = None):
    deadline = time.monotonic() + timeout
    while True:
        exp = client.get(exp_id)
        if seen is not None:
            seen.add(exp.status)
        if exp.status in statuses:
            return exp
        if time.monotonic() > deadline:
            raise TimeoutError(f"{exp_id} still {exp.status} (wanted {statuses})")
        time.sleep(0.25)


def _png_shape(data: bytes):
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(data), format="png").shape


def _counts(store_url: str, exp_id: str) -> tuple[int, int, list[int]]:
    from service.store import Store

    store = Store(store_url, migrate=False)
    trials, total = store.list_trials(exp_id, limit=10_000)
    return total, store.trace_row_count(exp_id=exp_id), sorted(t.number for t in trials)


def lifecycle(server: Server) -> None:
    c = server.client()
    # auth over HTTP: every mutating route
    anon = server.client(token=None)
    from service.client import ApiError

    for call in (lambda: anon.submit(TINY), lambda: anon.cancel("x"), lambda: anon.delete("x")):
        with pytest.raises(ApiError) as exc:
            call()
        assert exc.value.status == 401
    # malformed spec over HTTP: 422 naming the field
    with pytest.raises(ApiError) as exc:
        c.submit({**TINY, "training": {"epochs": "many"}})
    assert exc.value.status == 422 and ["body", "training", "epochs"] in [e["loc"] for e in exc.value.detail]

    sub = c.submit(yaml.safe_dump(TINY), fmt="yaml")
    assert sub.trials_planned == 8
    seen: set[str] = set()
    exp = wait_for(c, sub.id, ("succeeded", "failed", "cancelled"), seen=seen)
    assert exp.status == "succeeded", exp.error
    assert "running" in seen
    assert exp.progress.trials_done == exp.progress.trials_total == 8
    assert exp.progress.best is not None and exp.progress.best["metric"] == "val_metric"
    assert exp.finished_at is not None and exp.attempts == 1

    trials = c.all_trials(sub.id)
    assert len(trials) == 8 and {t["status"] for t in trials} == {"completed"}
    assert sorted(t["number"] for t in trials if not is_test_number(t["number"])) == list(range(4))
    t0 = next(t for t in trials if is_test_number(t["number"]))
    assert t0["steps"] and t0["test_metric"] is not None
    tr = c.trace(t0["id"], metrics=["loss", "grad_norm", "weight_norm"])
    assert len(tr["step"]) == t0["steps"] and set(tr) == {"step", "loss", "grad_norm", "weight_norm"}
    ds = c.trace(t0["id"], metrics=["loss"], max_points=3)
    assert 1 <= len(ds["step"]) <= 3
    csv_text = c.trace_csv(t0["id"], metrics=["loss"])
    assert csv_text.splitlines()[0] == "step,loss" and len(csv_text.splitlines()) == t0["steps"] + 1
    page = c.trials_page(sub.id, variant="SL1-GRU", sort="test_metric", descending=True)
    assert page.total == 6  # 4 selection + 2 test trials

    rows = c.compare(sub.id)
    assert [r["variant"] for r in rows] == ["GRU", "SL1-GRU"]
    assert rows[1]["n_completed"] == 2 and rows[1]["test_metric_std"] is not None  # test trials only
    assert "±" in c.compare_table(sub.id, fmt="markdown")

    for kind, params, shape in [("convergence", {"width": 900, "height": 300}, (300, 900)),
                                ("sparsity", {}, (500, 800)),
                                ("grid", {"variant": "SL1-GRU", "x": "lam", "y": "variant"}, (600, 800)),
                                ("pareto", {"width": 640, "height": 480}, (480, 640))]:
        assert _png_shape(c.plot(sub.id, kind, **params))[:2] == shape, kind

    # cancel a running experiment: its packs stop, it ends cancelled, it can then be deleted
    # long enough that the cancel lands mid-run: the workers are warm from the experiment before
    long = c.submit({**KILLABLE, "name": "iris-cancel", "training": {"epochs": 3000, "batch_size": 16, "lr": 0.05}})
    wait_for(c, long.id, ("running",), timeout=120)
    with pytest.raises(ApiError) as exc:
        c.delete(long.id)
    assert exc.value.status == 409
    assert c.cancel(long.id).cancel_requested
    t_cancel = time.monotonic()
    done = wait_for(c, long.id, ("succeeded", "failed", "cancelled"), timeout=120)
    assert done.status == "cancelled"
    assert time.monotonic() - t_cancel < 60
    c.delete(long.id)
    with pytest.raises(ApiError) as exc:
        c.get(long.id)
    assert exc.value.status == 404

    r = httpx.get(f"{server.url}/readyz", timeout=10).json()
    assert r["checks"]["database"]["ok"] and r["checks"]["ray"]["ok"]
    m = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'rnnhpo_experiments{status="succeeded"}' in m and "rnnhpo_runner_experiments" in m


def kill_and_resume(server: Server) -> None:
    c = server.client()
    sub = c.submit(KILLABLE)
    total = sub.trials_planned
    assert total == 8
    deadline = time.monotonic() + 180
    while True:  # wait until part of it is done
        exp = c.get(sub.id)
        if exp.status == "running" and 1 <= exp.progress.trials_done < total:
            break
        assert exp.status in ("queued", "running"), exp
        assert time.monotonic() < deadline, "experiment never got going"
        time.sleep(0.1)
    server.kill()
    from service.store import Store

    view = Store(server.db_url, migrate=False).get_experiment(sub.id)
    assert view.status == "running" and view.n_trials_done < total  # the crash left it running

    server.start()
    c = server.client()
    exp = wait_for(c, sub.id, ("succeeded", "failed", "cancelled"))
    assert exp.status == "succeeded", exp.error
    assert exp.attempts >= 2  # reclaimed after the stale heartbeat
    n_trials, n_rows, numbers = _counts(server.db_url, sub.id)

    # the same spec, uninterrupted
    ref = c.submit(KILLABLE)
    assert wait_for(c, ref.id, ("succeeded", "failed", "cancelled")).status == "succeeded"
    ref_trials, ref_rows, ref_numbers = _counts(server.db_url, ref.id)
    assert (n_trials, n_rows, numbers) == (ref_trials, ref_rows, ref_numbers)
    assert n_trials == total and [n for n in numbers if not is_test_number(n)] == list(range(4))
    statuses = {t["status"] for t in c.all_trials(sub.id)}
    assert statuses == {"completed"}


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


def test_lifecycle_sqlite(sqlite_url, workdir):
    server = Server(sqlite_url, workdir).start()
    try:
        lifecycle(server)
    finally:
        server.stop()


def test_kill_and_resume_sqlite(sqlite_url, workdir):
    server = Server(sqlite_url, workdir).start()
    try:
        kill_and_resume(server)
    finally:
        server.stop()


@pytest.mark.postgres
def test_lifecycle_and_kill_postgres(pg_url, workdir):
    from service.store import Store

    Store(pg_url)  # a fresh schema
    server = Server(pg_url, workdir).start()
    try:
        lifecycle(server)
        kill_and_resume(server)
    finally:
        server.stop()


def test_cli_submit_status_cancel(sqlite_url, workdir):
    """The CLI verbs against a server without a runner (nothing trains)."""
    server = Server(sqlite_url, workdir, runner=False).start()
    spec = workdir / "spec.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    env = server.env()
    try:
        def cli(*args):
            return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=120)

        r = cli("submit", str(spec), "--server", server.url)
        assert r.returncode == 0, r.stderr
        exp_id = r.stdout.strip().splitlines()[-1]
        r = cli("status", exp_id, "--server", server.url, "--json")
        assert r.returncode == 0 and '"status": "queued"' in r.stdout
        r = cli("cancel", exp_id, "--server", server.url)
        assert r.returncode == 0 and "cancelled" in r.stderr
        bad = workdir / "bad.yaml"
        bad.write_text(yaml.safe_dump({**TINY, "seeds": -3}))
        r = cli("submit", str(bad), "--server", server.url)
        assert r.returncode == 2 and "seeds" in r.stderr
        env_no_token = {k: v for k, v in env.items() if k != "RNNHPO_API_TOKEN"}
        r = subprocess.run([sys.executable, "-m", "cli.main", "cancel", exp_id, "--server", server.url],
                           cwd=ROOT, env=env_no_token, capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and "token" in r.stderr
    finally:
        server.stop()
