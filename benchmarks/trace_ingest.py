"""Trace ingest throughput of ``Store.record_trial`` on SQLite and PostgreSQL.

    python benchmarks/trace_ingest.py [--rows 10000] [--trials 64] [--naive-rows 20000]
                                      [--backends sqlite,postgres]

Writes ``--trials`` trials x ``--rows`` trace points through ``record_trial`` into a temporary
SQLite file and into a throwaway PostgreSQL database (created and dropped here; admin URL
``postgresql://postgres@127.0.0.1:5432/postgres`` or ``$RNNHPO_TEST_PG_ADMIN``), then measures a
naive baseline -- one ORM object per trace row, ``session.add`` + commit per trial -- on a
smaller sample in the same run, and prints rows/s, rows/min and the speed-up. Goal: >= 1M
rows/min on both backends.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search.sink import TrialPlan, TrialRecord  # noqa: E402
from service.db.engine import dispose_engines  # noqa: E402
from service.db.models import TracePoint  # noqa: E402
from service.store import Store  # noqa: E402
from trainer.result import TRACE_COLUMNS  # noqa: E402

PG_ADMIN = os.environ.get("RNNHPO_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
GOAL_PER_MIN = 1_000_000


def make_record(n: int, seed: int) -> TrialRecord:
    rng = np.random.default_rng(seed)
    trace = {c: rng.random(n) for c in TRACE_COLUMNS}
    trace["step"] = np.arange(n)
    trace["epoch"] = np.arange(n) // 100
    return TrialRecord(status="completed", final={"loss": float(trace["loss"][-1]), "steps": n},
                       diagnostics={"monotonicity_violations": 0, "grad_norm_ratio": 0.1,
                                    "diverged": False},
                       trace=trace, epochs={"epoch": np.arange(n // 100 + 1)},
                       wall_time=1.0, device="cpu", pack_id="bench", pack_size=8)


def bench_store(url: str, n_trials: int, n_rows: int) -> float:
    store = Store(url)
    exp = store.create_experiment("bench", {})
    ids = store.register_trials(exp, [TrialPlan(i, "v", {}, i, None, {}) for i in range(n_trials)])
    records = [make_record(n_rows, i) for i in range(n_trials)]  # built before timing
    t0 = time.perf_counter()
    for i, tid in ids.items():
        store.record_trial(tid, records[i])
    dt = time.perf_counter() - t0
    total = n_trials * n_rows
    assert store.trace_row_count(exp_id=exp) == total, "row count mismatch"
    return total / dt


def bench_naive(url: str, n_trials: int, n_rows: int) -> float:
    """One ORM object per row, session.add + commit per trial (what the Store avoids)."""
    from sqlalchemy.orm import Session

    store = Store(url)
    exp = store.create_experiment("naive", {})
    ids = store.register_trials(exp, [TrialPlan(i, "v", {}, i, None, {}) for i in range(n_trials)])
    records = [make_record(n_rows, 1000 + i) for i in range(n_trials)]
    t0 = time.perf_counter()
    for i, tid in ids.items():
        tr = records[i].trace
        cols = {c: tr[c].tolist() for c in TRACE_COLUMNS}
        with Session(store.engine) as s:
            for j in range(n_rows):
                s.add(TracePoint(trial_id=tid, **{c: cols[c][j] for c in TRACE_COLUMNS}))
            s.commit()
    dt = time.perf_counter() - t0
    assert store.trace_row_count(exp_id=exp) == n_trials * n_rows
    return n_trials * n_rows / dt


def report(name: str, rate: float, naive: float | None) -> None:
    per_min = rate * 60
    line = f"{name:<10} {rate:>12,.0f} rows/s {per_min:>14,.0f} rows/min"
    if naive:
        line += f"   naive ORM {naive:>9,.0f} rows/s   speed-up x{rate / naive:.1f}"
    line += "   goal " + ("met" if per_min >= GOAL_PER_MIN else "MISSED")
    print(line, flush=True)


def run_pg(args) -> None:
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except Exception as exc:  # noqa: BLE001
        print(f"postgres   skipped: {PG_ADMIN} not reachable ({exc})")
        return
    name = f"rnnhpo_bench_{uuid.uuid4().hex[:10]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    try:
        rate = bench_store(url, args.trials, args.rows)
        naive = bench_naive(url, max(1, args.naive_rows // 2000), 2000) if args.naive_rows else None
        report("postgres", rate, naive)
    finally:
        dispose_engines()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_sqlite(args) -> None:
    with tempfile.TemporaryDirectory(prefix="rnnhpo_bench_") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        rate = bench_store(url, args.trials, args.rows)
        naive = bench_naive(url, max(1, args.naive_rows // 2000), 2000) if args.naive_rows else None
        report("sqlite", rate, naive)
        dispose_engines()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000, help="trace points per trial")
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--naive-rows", type=int, default=20_000,
                   help="rows for the per-row ORM baseline (0: skip it)")
    p.add_argument("--backends", default="sqlite,postgres")
    args = p.parse_args()
    print(f"{args.trials} trials x {args.rows:,} points = {args.trials * args.rows:,} rows "
          f"({len(TRACE_COLUMNS)} trace columns)")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "sqlite" in backends:
        run_sqlite(args)
    if "postgres" in backends:
        run_pg(args)


if __name__ == "__main__":
    main()
