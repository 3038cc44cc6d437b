"""Fault injection: nothing lost, nothing stuck.

Signals (SIGTERM/SIGINT) to ``rnnhpo serve``, ``rnnhpo runner`` and ``rnnhpo run``; a busy port;
a worker killed repeatedly; deterministic errors; failed trials -> ``partial`` -> resume; an
unsatisfiable resource request; a database outage through a TCP proxy the test controls; a full
disk (a small tmpfs mounted for the test); a ``../`` experiment name; server memory while 20
clients read a 100k-row trace.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

#: One trial per pack, many epochs: a signal always lands mid-run.
LONG = {
    "name": "faults-long",
    "dataset": {"name": "iris"},
    "variants": [{"name": "GRU", "family": "gru"}],
    "training": {"epochs": 2000, "batch_size": 16, "lr": 0.05},
    "seeds": 2,
    "execution": {"pack_size": 1},
}
#: Small and quick: 4 trials in 4 packs.
QUICK = {
    "name": "faults-quick",
    "dataset": {"name": "iris"},
    "variants": [{"name": "GRU", "family": "gru"}],
    "training": {"epochs": 2, "batch_size": 16, "lr": 0.05},
    "seeds": 4,
    "execution": {"pack_size": 1},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_tmp() -> str:
    p = Path(tempfile.gettempdir()) / f"rnnhpo-f-{uuid.uuid4().hex[:6]}"
    p.mkdir()
    return str(p)


def _env(db_url: str, workdir: Path, **extra) -> dict:
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "RNNHPO_RAY_ADDRESS", "RNNHPO_API_TOKEN", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    env.update({
        "RNNHPO_DATABASE_URL": db_url, "RNNHPO_DATA_DIR": str(workdir / "data"),
        "RNNHPO_VAR_DIR": str(workdir / "var"), "RAY_TMPDIR": _ray_tmp(),
        "RNNHPO_RUNNER_HEARTBEAT_S": "1", "RNNHPO_RUNNER_STALE_AFTER_S": "4", "RNNHPO_RUNNER_POLL_S": "0.3",
        "RNNHPO_CANCEL_POLL_S": "0.2", "RNNHPO_RETRY_BACKOFF_S": "0.3", "RNNHPO_RETRY_MAX_DELAY_S": "2",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


class Proc:
    """A ``python -m cli.main ...`` subprocess in its own process group, logging to a file."""

    def __init__(self, args: list[str], env: dict, workdir: Path):
        self.log = workdir / f"{args[0]}-{uuid.uuid4().hex[:6]}.log"
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env,
                                     stdout=self._logf, stderr=subprocess.STDOUT, start_new_session=True)

    def signal_and_time_exit(self, sig: int, limit: float = 30) -> float:
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(limit)
        except subprocess.TimeoutExpired:
            pass
        return time.monotonic() - t0

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        try:  # Ray's processes stay in the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._logf.close()


def serve(db_url: str, workdir: Path, *extra_args, env_extra: dict | None = None) -> tuple[Proc, str]:
    port = _free_port()
    p = Proc(["serve", "--port", str(port), "--log-level", "warning", *extra_args],
             _env(db_url, workdir, **(env_extra or {})), workdir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"serve exited {p.proc.returncode}:\n{p.output()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return p, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    p.close()
    raise RuntimeError(f"serve not up:\n{p.output()}")


def wait_until(fn, timeout: float, what: str, every: float = 0.2, proc: Proc | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what + (f":\n{proc.output()}" if proc is not None else ""))
        time.sleep(every)


def packs_running(store, exp_id: str) -> bool:
    v = store.get_experiment(exp_id)
    return v.status == "running" and store.list_trials(exp_id, status="running")[1] > 0


# ------------------------------------------------------------------ signals

@pytest.mark.parametrize("command,sig", [("serve", signal.SIGTERM), ("serve", signal.SIGINT),
                                         ("runner", signal.SIGTERM), ("runner", signal.SIGINT)])
def test_signal_requeues_and_exits(command, sig, sqlite_url, tmp_path):
    """SIGTERM/SIGINT mid-experiment: the process exits (serve within 5 s, runner within 10 s) and
    the experiment is back in the queue, unclaimed, its running trials pending again."""
    from service.store import Store

    store = Store(sqlite_url)
    exp_id = store.create_experiment("long", LONG, n_trials_total=2)
    if command == "serve":
        proc, _ = serve(sqlite_url, tmp_path)
    else:
        proc = Proc(["runner", "--log-level", "warning"], _env(sqlite_url, tmp_path), tmp_path)
    try:
        wait_until(lambda: packs_running(store, exp_id), 180, "packs never ran", proc=proc)
        took = proc.signal_and_time_exit(sig)
        assert proc.proc.returncode is not None, f"{command} still alive after {took:.1f} s"
        assert took <= (5.0 if command == "serve" else 10.0), f"{command} took {took:.1f} s to exit"
        view = store.get_experiment(exp_id)
        assert view.status == "queued" and view.runner_id is None, (view.status, proc.output())
        assert store.list_trials(exp_id, status="running")[1] == 0
    finally:
        proc.close()


def test_run_interrupted_is_cancelled_and_resumes(sqlite_url, tmp_path):
    """Ctrl-C in ``rnnhpo run``: cancelled (not failed, not running), the hint names
    ``rnnhpo run --resume ID``; the resume needs no spec and finishes every trial once."""
    from service.store import Store

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**LONG, "training": {**LONG["training"], "epochs": 300}}))
    env = _env(sqlite_url, tmp_path)
    proc = Proc(["run", str(spec), "--no-plots"], env, tmp_path)
    store = Store(sqlite_url)
    try:
        exp_id = wait_until(lambda: next(iter(v.id for v in store.list_experiments()[0]), None), 60,
                            "no experiment created")
        wait_until(lambda: packs_running(store, exp_id), 180, "packs never ran", proc=proc)
        took = proc.signal_and_time_exit(signal.SIGINT)
        assert took <= 10.0 and proc.proc.returncode == 130, (took, proc.proc.returncode, proc.output())
        assert f"rnnhpo run --resume {exp_id}" in proc.output()
    finally:
        proc.close()
    view = store.get_experiment(exp_id)
    assert view.status == "cancelled" and "resume" in (view.error or "")
    r = subprocess.run([sys.executable, "-m", "cli.main", "run", "--resume", exp_id, "--no-plots", "--json"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    view = store.get_experiment(exp_id)
    assert view.status == "succeeded" and view.attempts == 2
    trials, total = store.list_trials(exp_id)
    assert total == 2 and len({t.number for t in trials}) == 2  # each trial once
    assert {t.status for t in trials} == {"completed"} and all(t.steps for t in trials)


def test_second_serve_on_a_busy_port_claims_nothing(sqlite_url, tmp_path):
    from service.store import Store

    store = Store(sqlite_url)
    exp_id = store.create_experiment("waiting", QUICK, n_trials_total=4)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--port", str(port)], cwd=ROOT,
                           env=_env(sqlite_url, tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "nothing was claimed" in " ".join(r.stderr.split()), r.stderr
    assert time.monotonic() - t0 < 30
    view = store.get_experiment(exp_id)
    assert view.status == "queued" and view.attempts == 0


# ------------------------------------------------------------------ retries, partial, resume (in-process Ray)

def _runner(url: str, **kw):
    from service.runner import Runner
    from service.settings import Settings
    from service.store import Store

    settings = Settings(database_url=url, runner_poll_s=0.1, runner_heartbeat_s=1.0, runner_stale_after_s=60,
                        cancel_poll_s=0.2, retry_backoff_s=0.2, retry_max_delay_s=1.0, **kw)
    return Runner(settings, store=Store(url))


@pytest.fixture
def var_dir(tmp_path, monkeypatch, ray_local):
    var = tmp_path / "var"
    monkeypatch.setenv("RNNHPO_VAR_DIR", str(var))
    return var


def test_worker_killed_repeatedly_within_the_budget_completes(sqlite_url, var_dir):
    """The first pack's worker process dies three times (os._exit, as if OOM-killed): each time
    the pack runs again after a backoff, and every trial completes."""
    from service.store import Store

    store = Store(sqlite_url)
    spec = {**QUICK, "execution": {"pack_size": 1, "max_failures": 0,
                                   "inject_failure": {"pack": 0, "times": 3, "exit": 1}}}
    exp_id = store.create_experiment(spec["name"], spec, n_trials_total=4)
    assert _runner(sqlite_url).run_once()
    view = store.get_experiment(exp_id)
    assert view.status == "succeeded", view.error
    trials, total = store.list_trials(exp_id)
    assert total == 4 and {t.status for t in trials} == {"completed"}
    assert max(t.attempt for t in trials) == 3  # the killed pack's fourth attempt stored it


def test_deterministic_error_is_not_retried_and_reads_well(sqlite_url, var_dir, tmp_path):
    """A dataset that cannot load fails its trials at once (one attempt), with ``Type: message``
    as the reason -- no path to Ray's error.txt, no traceback."""
    from service.store import Store

    store = Store(sqlite_url)
    missing = tmp_path / "data" / "missing.csv"
    spec = {**QUICK, "seeds": 1, "dataset": {"name": "csv", "options": {"path": str(missing), "target": "y"}}}
    exp_id = store.create_experiment(spec["name"], spec, n_trials_total=1)
    t0 = time.monotonic()
    assert _runner(sqlite_url).run_once()
    view = store.get_experiment(exp_id)
    assert view.status == "failed" and view.attempts == 1, view.error
    assert time.monotonic() - t0 < 60
    assert view.error.startswith("DatasetError: csv: no file")
    assert "error.txt" not in view.error and "Traceback" not in view.error and "\n" not in view.error
    trials, _ = store.list_trials(exp_id)
    assert all(t.status == "failed" and t.attempt == 0 for t in trials)


def test_failed_trials_make_partial_and_resume_reruns_exactly_them(sqlite_url, var_dir, tmp_path):
    """Pack 0 fails more often than max_failures allows: the experiment ends ``partial`` saying how
    many failed and why; resume re-runs that trial only. The ``../`` name writes nothing outside
    the var directory."""
    from service.store import Store

    store = Store(sqlite_url)
    before = set(os.listdir(tmp_path))
    # pack 0 (2 members) raises after storing its first member, more often than max_failures allows
    spec = {**QUICK, "name": "../escape", "execution": {"pack_size": 2, "max_failures": 1,
                                                       "inject_failure": {"pack": 0, "times": 5}}}
    exp_id = store.create_experiment(spec["name"], spec, n_trials_total=4)
    assert _runner(sqlite_url).run_once()
    view = store.get_experiment(exp_id)
    assert view.status == "partial", view.error
    assert view.error.startswith("1 of 4 trials failed: RuntimeError: injected failure"), view.error
    trials = {t.number: t for t in store.list_trials(exp_id)[0]}
    failed = [n for n, t in trials.items() if t.status == "failed"]
    assert len(failed) == 1
    done_before = {n: (t.finished_at, t.steps) for n, t in trials.items() if t.status == "completed"}
    assert len(done_before) == 3

    # resume without the injected fault (the stored spec is what a resume runs)
    import sqlalchemy as sa

    from service.db.models import Experiment
    clean = {**spec, "execution": {"pack_size": 2}}
    with store._write() as conn:
        conn.execute(sa.update(Experiment.__table__).where(Experiment.__table__.c.id == exp_id)
                     .values(spec=clean))
    assert store.resume_experiment(exp_id).status == "queued"
    assert _runner(sqlite_url).run_once()
    view = store.get_experiment(exp_id)
    assert view.status == "succeeded", view.error
    after = {t.number: t for t in store.list_trials(exp_id)[0]}
    assert sorted(after) == sorted(trials) and {t.status for t in after.values()} == {"completed"}
    for n, (finished, steps) in done_before.items():  # untouched
        assert (after[n].finished_at, after[n].steps) == (finished, steps)
    # names are labels: nothing new beside var/, and no per-run directories (packs are tasks on workers)
    assert set(os.listdir(tmp_path)) - before <= {"var"}
    assert not (tmp_path / "escape").exists() and not (var_dir.parent / "escape").exists()
    assert not (var_dir / "ray_results").exists()


@pytest.mark.parametrize("execution", [{"cpus_per_pack": 64}, {"gpus_per_pack": 1}])
def test_unsatisfiable_resources_fail_fast_and_the_queue_moves(execution, sqlite_url, var_dir):
    from service.store import Store

    store = Store(sqlite_url)
    bad = store.create_experiment("too-big", {**QUICK, "execution": {**QUICK["execution"], **execution}},
                                  n_trials_total=4)
    good = store.create_experiment("fine", {**QUICK, "seeds": 1}, n_trials_total=1)
    runner = _runner(sqlite_url)
    t0 = time.monotonic()
    assert runner.run_once()
    assert time.monotonic() - t0 < 10
    view = store.get_experiment(bad)
    field = next(iter(execution))
    assert view.status == "failed" and f"execution.{field}" in view.error, view.error
    assert view.error.startswith("ResourceUnsatisfiable: ")
    assert runner.run_once()
    assert store.get_experiment(good).status == "succeeded"


def test_busy_resources_show_waiting_then_running(sqlite_url, var_dir):
    """Feasible but busy: an actor holds both CPUs of the session's Ray, so the experiment's pack
    waits; its progress says ``waiting for resources`` (the API's view), and once the CPUs are
    free the pack runs (``running 1 pack``) and the experiment succeeds."""
    import ray

    from service.api.schemas import experiment_out
    from service.store import Store

    @ray.remote(num_cpus=2)
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.remote()
    ray.get(holder.ready.remote(), timeout=60)
    store = Store(sqlite_url)
    spec = {**QUICK, "name": "waits", "seeds": 1, "training": {**QUICK["training"], "epochs": 300}}
    exp_id = store.create_experiment(spec["name"], spec, n_trials_total=1)
    runner = _runner(sqlite_url)
    thread = threading.Thread(target=runner.run_once, daemon=True)
    seen: list[tuple[str | None, int | None]] = []

    def watch() -> str:
        out = experiment_out(store.get_experiment(exp_id))
        now = (out.progress.phase, out.progress.packs_running)
        if out.status == "running" and (not seen or seen[-1] != now):
            seen.append(now)
        return out.status

    thread.start()
    try:
        wait_until(lambda: watch() and seen and seen[-1][0] == "waiting for resources", 40,
                   f"waiting for resources (seen {seen})", every=0.1)
        time.sleep(2)
        watch()
        assert seen[-1] == ("waiting for resources", 0), seen
    finally:
        ray.kill(holder)
    wait_until(lambda: watch() not in ("queued", "running"), 60, f"the experiment ends (seen {seen})", every=0.1)
    thread.join(10)
    assert store.get_experiment(exp_id).status == "succeeded", store.get_experiment(exp_id).error
    phases = [phase for phase, _ in seen]
    assert ("running", 1) in seen and phases.index("waiting for resources") < phases.index("running"), seen
    assert experiment_out(store.get_experiment(exp_id)).progress.phase is None, "only running experiments"


def test_cancel_while_connecting_to_ray(sqlite_url, tmp_path):
    """A Ray address that accepts TCP connections and never answers keeps the runner connecting:
    the progress says so, a cancel ends the experiment within 10 s, and the runner takes the next."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    env = {"RNNHPO_RAY_ADDRESS": f"127.0.0.1:{hole.getsockname()[1]}", "RNNHPO_RAY_CONNECT_TIMEOUT_S": "300"}
    proc, url = serve(sqlite_url, tmp_path, env_extra=env)
    api = f"{url}/api/v1/experiments"
    try:
        def phase(exp_id: str) -> str | None:
            return httpx.get(f"{api}/{exp_id}", timeout=5).json()["progress"]["phase"]

        first = httpx.post(api, json=QUICK, timeout=10).json()["id"]
        wait_until(lambda: phase(first) == "connecting", 30, "connecting", proc=proc)
        t0 = time.monotonic()
        assert httpx.post(f"{api}/{first}/cancel", timeout=5).status_code in (200, 202)
        wait_until(lambda: httpx.get(f"{api}/{first}", timeout=5).json()["status"] == "cancelled", 10,
                   "cancelled within 10 s", proc=proc)
        assert time.monotonic() - t0 < 10
        assert httpx.get(f"{api}/{first}", timeout=5).json()["error"] is None, "cancelled by its runner, at once"
        second = httpx.post(api, json={**QUICK, "name": "next"}, timeout=10).json()["id"]
        wait_until(lambda: phase(second) == "connecting", 30, "the runner takes the next experiment", proc=proc)
    finally:
        proc.close()
        hole.close()


# ------------------------------------------------------------------ database outage (PostgreSQL)

class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; :meth:`cut` drops every connection and refuses new
    ones until :meth:`restore`."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = _free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if listener is not self._listener:  # accepted as the cut happened: it must not survive it
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            try:  # wakes the accepting thread: a closed fd alone can leave accept() blocked and accepting
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.cut()


@pytest.mark.postgres
def test_database_outage_503_then_nothing_lost(pg_url, tmp_path):
    """PostgreSQL behind a proxy: cut for 8 s mid-experiment. Meanwhile the API answers 503 with
    Retry-After (``/healthz`` 200, ``/readyz`` 503); afterwards the experiment completes with every
    trial and no duplicate trace rows."""
    import psycopg

    from service.store import Store

    admin = pg_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"rnnhpo_f_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    direct = pg_url.rsplit("/", 1)[0] + f"/{name}"
    proxy = TcpProxy(("127.0.0.1", 5432))
    via_proxy = direct.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    store = Store(direct)
    spec = {**QUICK, "training": {**QUICK["training"], "epochs": 150}}
    exp_id = store.create_experiment(spec["name"], spec, n_trials_total=4)
    proc, url = serve(via_proxy, tmp_path)
    try:
        wait_until(lambda: packs_running(store, exp_id), 180, "packs never ran", proc=proc)
        proxy.cut()
        t_cut = time.monotonic()
        seen = []
        while time.monotonic() - t_cut < 8:
            r = httpx.get(f"{url}/api/v1/experiments/{exp_id}", timeout=15)
            seen.append(r.status_code)
            if r.status_code == 503:
                assert r.headers.get("retry-after")
            time.sleep(0.3)
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        assert httpx.get(f"{url}/readyz", timeout=15).status_code == 503
        assert 503 in seen and not {s for s in seen if s >= 500} - {503}, seen
        proxy.restore()
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=15).status_code == 200, 30, "not ready again")
        view = wait_until(lambda: (v := store.get_experiment(exp_id)).status not in ("queued", "running") and v,
                          300, "never finished", every=1, proc=proc)
        assert view.status == "succeeded", view.error
        trials, total = store.list_trials(exp_id)
        assert total == 4 and {t.status for t in trials} == {"completed"}
        assert store.trace_row_count(exp_id=exp_id) == sum(t.steps for t in trials)
    finally:
        proc.close()
        proxy.close()
        from service.db.engine import dispose_engines

        dispose_engines()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_database_recreated_empty_is_migrated_on_reconnect(tmp_path):
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import Settings

    db = tmp_path / "db" / "rnnhpo.db"
    settings = Settings(database_url=f"sqlite:///{db}", data_dir=tmp_path / "data")
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/v1/experiments").status_code == 200
        from service.db.engine import dispose_engines

        dispose_engines()
        for f in db.parent.iterdir():
            f.unlink()
        r = client.get("/api/v1/experiments")
        assert r.status_code in (200, 503)
        wait_until(lambda: client.get("/api/v1/experiments").status_code == 200, 20, "never migrated")


def test_server_starts_with_the_database_down(tmp_path):
    """No PostgreSQL at the URL: the server still starts; /healthz 200, /readyz and the routes 503."""
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/nothing"
    proc, base = serve(url, tmp_path, "--no-runner")
    try:
        assert httpx.get(f"{base}/readyz", timeout=30).status_code == 503
        r = httpx.get(f"{base}/api/v1/experiments", timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"]
    finally:
        proc.close()


# ------------------------------------------------------------------ disk full

@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode()[:200]}")
    try:
        yield mnt
    finally:
        from service.db.engine import dispose_engines

        dispose_engines()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_not_ready_and_recovers(small_tmpfs, tmp_path):
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import Settings

    settings = Settings(database_url=f"sqlite:///{small_tmpfs / 'rnnhpo.db'}", data_dir=tmp_path / "data",
                        min_free_disk_mb=1)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        filler = small_tmpfs / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        r = client.get("/readyz")
        assert r.status_code == 503 and not r.json()["checks"]["database"]["ok"], r.json()
        r = client.post("/api/v1/experiments", json=QUICK)
        assert r.status_code in (202, 503), r.text
        filler.unlink()
        assert client.get("/readyz").status_code == 200


# ------------------------------------------------------------------ bounded memory

def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _big_trial(url: str, rows: int) -> int:
    from search.sink import TrialPlan, TrialRecord
    from service.store import Store
    from trainer.result import EPOCH_COLUMNS, TRACE_COLUMNS

    store = Store(url)
    exp_id = store.create_experiment("big", QUICK)
    ids = store.register_trials(exp_id, [TrialPlan(0, "GRU", {}, 0, None, {})])
    rng = np.random.default_rng(0)
    trace = {c: rng.random(rows) for c in TRACE_COLUMNS}
    trace["step"] = np.arange(rows)
    trace["epoch"] = np.arange(rows) // 100
    epochs = {c: np.zeros(1) for c in EPOCH_COLUMNS}
    epochs["epoch"] = np.zeros(1)
    store.record_trial(ids[0], TrialRecord("completed", {"steps": rows}, {}, trace, epochs, 1.0, "cpu", "p", 1))
    return ids[0]


def test_server_memory_flat_while_20_clients_read_a_100k_trace(sqlite_url, tmp_path):
    trial_id = _big_trial(sqlite_url, 100_000)
    proc, url = serve(sqlite_url, tmp_path, "--no-runner")
    try:
        def read(fmt: str) -> int:
            n = 0
            with httpx.stream("GET", f"{url}/api/v1/trials/{trial_id}/trace", params={"format": fmt},
                              timeout=120) as r:
                assert r.status_code == 200
                for chunk in r.iter_bytes():
                    n += len(chunk)
            return n

        assert read("json") > 1_000_000 and read("csv") > 1_000_000  # warm-up
        base = _rss_mb(proc.proc.pid)
        peak = [base]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], _rss_mb(proc.proc.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=read, args=("json" if i % 2 else "csv",)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        done.set()
        sampler.join()
        assert peak[0] - base <= 50, f"server RSS grew {peak[0] - base:.0f} MB (base {base:.0f} MB)"
    finally:
        proc.close()


def test_cleanup_ray_tmp_dirs():
    for p in Path(tempfile.gettempdir()).glob("rnnhpo-f-*"):
        shutil.rmtree(p, ignore_errors=True)
