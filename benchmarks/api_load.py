"""API load benchmark: concurrent submissions and trace-query latency, over real HTTP.

    python benchmarks/api_load.py                       # SQLite in a temp dir, submissions stored only
    python benchmarks/api_load.py --pg                  # a throwaway PostgreSQL database
    python benchmarks/api_load.py --full                # also run the submitted experiments (in-process runner)

It starts ``rnnhpo serve`` on a free loopback port, then

1. fires ``--n`` (200) submissions at once from as many threads and checks every one is stored
   (and, with ``--full``, that every one runs to ``succeeded``);
2. inserts a synthetic ``--points`` (100k)-point trace through ``Store.record_trial`` and times
   ``GET /trials/{id}/trace`` in full (JSON and CSV) and down-sampled (``max_points``, ``every``);
3. lets ``--readers`` (20) clients read that whole trace at once (half JSON, half CSV) and reports
   their latency (p50, p95) and the server's peak RSS above its RSS before them (sampled from
   /proc every 50 ms).
"""

from __future__ import annotations

import argparse
import os
import threading
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEC = {
    "name": "bench",
    "dataset": {"name": "iris"},
    "variants": [{"name": "GRU", "family": "gru"}],
    "training": {"epochs": 1, "batch_size": 32, "lr": 0.05},
    "seeds": 1,
    "execution": {"pack_size": 1},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: str, work: Path, runner: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, RNNHPO_DATABASE_URL=db, RNNHPO_DATA_DIR=str(work / "data"),
               RNNHPO_VAR_DIR=str(work / "var"), RNNHPO_RUNNER_POLL_S="0.2", PYTHONUNBUFFERED="1")
    env.pop("RNNHPO_API_TOKEN", None)
    args = [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--log-level", "warning"]
    if not runner:
        args.append("--no-runner")
    log = open(work / "server.log", "ab")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"server died: {(work / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not come up")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def bench_submissions(url: str, n: int, full: bool, timeout: float) -> None:
    def one(i: int):
        spec = {**SPEC, "name": f"bench-{i}", "seeds": [i % 5]}
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/api/v1/experiments", json=spec, timeout=120)
        return r.status_code, r.json().get("id"), time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    codes = [c for c, _, _ in results]
    ids = {i for c, i, _ in results if c == 202}
    lat = [dt for _, _, dt in results]
    listed = httpx.get(f"{url}/api/v1/experiments", params={"limit": 1000}, timeout=60).json()
    stored = {e["id"] for e in listed["items"]} & ids
    print(f"submissions: {n} concurrent in {wall:.2f} s ({n / wall:.1f}/s); "
          f"latency p50 {1000 * pct(lat, 50):.0f} ms, p95 {1000 * pct(lat, 95):.0f} ms, "
          f"max {1000 * max(lat):.0f} ms; 202: {codes.count(202)}/{n}; stored: {len(stored)}/{n}")
    assert len(stored) == n, "not every submission was stored"
    if not full:
        return
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while True:
        done = {s: httpx.get(f"{url}/api/v1/experiments", params={"status": s, "limit": 1}, timeout=60).json()["total"]
                for s in ("queued", "running", "succeeded", "failed", "cancelled")}
        if done["queued"] == 0 and done["running"] == 0:
            break
        if time.perf_counter() > deadline:
            print(f"  full run: timeout after {timeout:.0f} s: {done}")
            return
        time.sleep(2)
    print(f"  full run: all {n} ran in {time.perf_counter() - t0:.1f} s: {done}")


def bench_trace(url: str, db: str, points: int, repeats: int) -> int:
    from search.sink import TrialPlan, TrialRecord
    from service.store import Store
    from trainer.result import EPOCH_COLUMNS, TRACE_COLUMNS

    store = Store(db, migrate=False)
    exp_id = store.create_experiment("bench-trace", SPEC, n_trials_total=1)
    tid = store.register_trials(exp_id, [TrialPlan(0, "GRU", {}, 0, None, {})])[0]
    # not work for a runner (with --full, one would otherwise run it and replace the trace)
    store.finish_experiment(exp_id, "succeeded")
    rng = np.random.default_rng(0)
    trace = {c: rng.random(points) for c in TRACE_COLUMNS}
    trace["step"] = np.arange(points)
    trace["epoch"] = np.arange(points) // 1000
    epochs = {c: np.zeros(1) for c in EPOCH_COLUMNS}
    t0 = time.perf_counter()
    store.record_trial(tid, TrialRecord(status="completed", final={"test_metric": 0.9}, diagnostics={},
                                        trace=trace, epochs=epochs, wall_time=1.0, device="cpu",
                                        pack_id="bench", pack_size=1))
    print(f"trace: inserted {points} points x {len(TRACE_COLUMNS)} columns through Store.record_trial "
          f"in {time.perf_counter() - t0:.2f} s")
    cases = [
        ("full, json, all columns", {}),
        ("full, csv, all columns", {"format": "csv"}),
        ("full, json, loss only", {"metrics": "loss"}),
        ("every=100, json", {"every": 100}),
        ("max_points=1000, json", {"max_points": 1000}),
        ("max_points=1000, loss only", {"max_points": 1000, "metrics": "loss"}),
    ]
    with httpx.Client(timeout=300) as http:
        for label, params in cases:
            times, size = [], 0
            for _ in range(repeats):
                t0 = time.perf_counter()
                r = http.get(f"{url}/api/v1/trials/{tid}/trace", params=params)
                r.raise_for_status()
                times.append(time.perf_counter() - t0)
                size = len(r.content)
            print(f"  {label:<30} median {1000 * statistics.median(times):8.1f} ms  "
                  f"(min {1000 * min(times):.1f})  {size / 1e6:7.2f} MB")
    return tid


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_readers(url: str, tid: int, pid: int, readers: int) -> None:
    """``readers`` clients stream the whole trace at once; latency and the server's RSS growth."""
    def read(i: int) -> tuple[float, int]:
        t0, n = time.perf_counter(), 0
        with httpx.stream("GET", f"{url}/api/v1/trials/{tid}/trace", params={"format": "csv" if i % 2 else "json"},
                          timeout=600) as r:
            r.raise_for_status()
            for chunk in r.iter_bytes():
                n += len(chunk)
        return time.perf_counter() - t0, n

    read(0), read(1)  # warm-up: the server's first read of each format
    base = rss_mb(pid)
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=readers) as pool:
        results = list(pool.map(read, range(readers)))
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    lat = [dt for dt, _ in results]
    print(f"readers: {readers} concurrent full-trace reads in {wall:.1f} s; latency p50 {pct(lat, 50):.2f} s, "
          f"p95 {pct(lat, 95):.2f} s; {sum(n for _, n in results) / 1e6:.0f} MB sent; server RSS "
          f"{base:.0f} MB before, peak +{peak[0] - base:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file in a temp dir)")
    ap.add_argument("--pg", action="store_true",
                    help="use a throwaway database on the PostgreSQL at $RNNHPO_TEST_PG_ADMIN "
                         "(default postgresql://postgres@127.0.0.1:5432/postgres), dropped afterwards")
    ap.add_argument("--n", type=int, default=200, help="concurrent submissions")
    ap.add_argument("--readers", type=int, default=20, help="concurrent full-trace readers")
    ap.add_argument("--points", type=int, default=100_000, help="synthetic trace length")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full", action="store_true", help="also run every submitted experiment")
    ap.add_argument("--timeout", type=float, default=1800, help="--full: seconds to wait")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rnnhpo-bench-api-"))
    db = args.db or f"sqlite:///{work / 'bench.db'}"
    pg_name = None
    admin = os.environ.get("RNNHPO_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
    if args.pg:
        import uuid

        import psycopg

        pg_name = f"rnnhpo_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        db = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{pg_name}"
    from service.store import Store

    Store(db)  # migrate before the server and the benchmark touch it
    proc, url = start_server(db, work, runner=args.full)
    try:
        print(f"server {url}  database {db.split('@')[-1]}")
        bench_submissions(url, args.n, args.full, args.timeout)
        tid = bench_trace(url, db, args.points, args.repeats)
        bench_readers(url, tid, proc.pid, args.readers)
    finally:
        stop_server(proc)
        if pg_name:
            from service.db import dispose_engines

            dispose_engines()
            import psycopg

            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
