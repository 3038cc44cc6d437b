"""Search throughput: a 64-configuration Wine grid through rnnhpo's packed path vs plain
Ray Tune + OptunaSearch with one trial per configuration, with default settings and with what an
expert sets (actor reuse, one CPU per trial); same machine, same process, same Ray instance. Also prints trace-ingest rows/s (SQLite, PostgreSQL),
the share of rnnhpo's wall time during which no pack trains (fixed costs: planning, starting,
storing) and the share of its CPU slots' time not training (also counting a slot left idle
while the other trains the last pack or the one test trial).

    python benchmarks/search_throughput.py [--epochs 100] [--no-postgres]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LRS = [0.0005, 0.001, 0.005, 0.01]
LAMS = [1e-5, 5e-5, 1e-4, 5e-4]
ALPHAS = [0.001, 0.01, 0.05, 0.1]


def grid_spec(epochs: int):
    from search.spec import ExperimentSpec

    return ExperimentSpec.model_validate({
        "name": "bench-wine-grid",
        "dataset": {"name": "wine"},
        "variants": [{"name": "SL1-GRU", "family": "gru", "reg": "sl1"}],
        "training": {"epochs": epochs, "hidden": 32, "batch_size": 32},
        "search": {"algorithm": "grid", "space": {
            "lr": {"type": "grid", "values": LRS}, "lam": {"type": "grid", "values": LAMS},
            "alpha": {"type": "grid", "values": ALPHAS}}},
        "seeds": 1,
        "execution": {"pack_size": 64, "cpus_per_pack": 1},
    })


@dataclass
class RnnhpoRun:
    wall: float        # seconds, run_experiment call
    pack_time: float   # summed training seconds of the packs
    busy: float        # seconds of the wall during which at least one pack trained
    rows: int          # trace rows stored


def run_rnnhpo(epochs: int, url: str) -> RnnhpoRun:
    from search.driver import run_experiment
    from service.sink import SqlResultSink
    from service.store import Store

    spec = grid_spec(epochs)
    store = Store(url)
    exp_id = store.create_experiment(spec.name, spec.model_dump(mode="json"), n_trials_total=64)
    t0 = time.perf_counter()
    # as the long-lived runner does (Settings.pack_worker_keep_s): workers stay for the next run
    summary = run_experiment(spec, SqlResultSink(url, exp_id), keep_workers_s=60)
    wall = time.perf_counter() - t0
    # 64 selection trials, then the selected configuration's test run
    assert summary.trials_done == spec.count_trials() and summary.n_failed == 0, summary
    trials, _ = store.list_trials(exp_id, limit=1000)
    packs: dict[str, tuple[float, float]] = {}
    for t in trials:  # a pack: from its members' start (pack_started) for its training seconds
        start = t.started_at.timestamp()
        packs[t.pack_id] = (min(start, packs.get(t.pack_id, (start, 0.0))[0]), t.wall_time)
    return RnnhpoRun(wall, sum(w for _, w in packs.values()),
                     union_length([(a, a + w) for a, w in packs.values()]),
                     store.trace_row_count(exp_id=exp_id))


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def baseline_trainable(config):
    """What a user writes: nn.GRU + Linear + SGD, smooth-L1 on the output weights, one config."""
    import torch
    from ray import tune

    from trainer.tasks import load_task

    torch.set_num_threads(1)
    task = load_task("wine", seed=0)
    torch.manual_seed(0)
    xtr = torch.tensor(task.x_train, dtype=torch.float32)
    ytr = torch.tensor(task.y_train)
    xte = torch.tensor(task.x_test, dtype=torch.float32)
    yte = torch.tensor(task.y_test)
    gru = torch.nn.GRU(task.n_inputs, 32, batch_first=True)
    head = torch.nn.Linear(32, task.n_outputs)
    params = list(gru.parameters()) + list(head.parameters())
    for p in params:
        torch.nn.init.uniform_(p, -0.5, 0.5)
    opt = torch.optim.SGD(params, lr=config["lr"])
    lam, alpha = config["lam"], config["alpha"]
    gen = torch.Generator().manual_seed(0)
    for _ in range(config["epochs"]):
        perm = torch.randperm(len(xtr), generator=gen)
        for start in range(0, len(xtr), 32):
            idx = perm[start:start + 32]
            out = head(gru(xtr[idx])[0][:, -1])
            w = head.weight.abs()
            penalty = torch.where(w >= alpha, w, w * w / (2 * alpha) + alpha / 2).sum()
            loss = torch.nn.functional.cross_entropy(out, ytr[idx]) + lam * penalty
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (head(gru(xte)[0][:, -1]).argmax(1) == yte).float().mean().item()
    tune.report({"test_accuracy": acc})


def run_baseline(epochs: int, reuse_actors: bool = False) -> float:
    """The 64 configurations as 64 Ray Tune trials suggested by OptunaSearch. Default settings, or
    what an expert sets: ``reuse_actors=True`` (one worker process runs trial after trial) and
    one CPU per trial."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from search.ray_runtime import tune_storage_dir

    points = [{"lr": a, "lam": b, "alpha": c} for a, b, c in itertools.product(LRS, LAMS, ALPHAS)]
    searcher = OptunaSearch(metric="test_accuracy", mode="max", points_to_evaluate=points)
    t0 = time.perf_counter()
    trainable = tune.with_resources(baseline_trainable, {"cpu": 1}) if reuse_actors else baseline_trainable
    tuner = tune.Tuner(
        trainable,
        param_space={"lr": tune.choice(LRS), "lam": tune.choice(LAMS), "alpha": tune.choice(ALPHAS),
                     "epochs": epochs},
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=len(points), reuse_actors=reuse_actors),
        run_config=tune.RunConfig(name=f"baseline-{uuid.uuid4().hex[:6]}", storage_path=str(tune_storage_dir()),
                                  verbose=0),
    )
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    assert len(grid) == 64 and not grid.errors, grid.errors
    return wall


def ingest_rate(url: str, trials: int = 32, rows: int = 20_000) -> float:
    """Trace rows per second through Store.record_trial (bulk path)."""
    from search.sink import TrialPlan, TrialRecord
    from service.store import Store
    from trainer.result import EPOCH_COLUMNS, TRACE_COLUMNS

    store = Store(url)
    exp = store.create_experiment("ingest", {}, n_trials_total=trials)
    ids = store.register_trials(exp, [TrialPlan(i, "v", {}, 0, None, {}) for i in range(trials)])
    rng = np.random.default_rng(0)
    trace = {c: rng.random(rows) for c in TRACE_COLUMNS}
    trace["step"] = np.arange(rows)
    trace["epoch"] = np.arange(rows) // 100
    epochs = {c: rng.random(rows // 100) for c in EPOCH_COLUMNS}
    epochs["epoch"] = np.arange(rows // 100)
    t0 = time.perf_counter()
    for number, trial_id in ids.items():
        store.record_trial(trial_id, TrialRecord("completed", {}, {}, trace, epochs, 0.0, "cpu", "p", 1))
    return trials * rows / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-baseline", action="store_true", help="only the rnnhpo path (no ratio)")
    args = parser.parse_args()
    os.environ.setdefault("RNNHPO_VAR_DIR", tempfile.mkdtemp(prefix="rnnhpo-bench-"))
    from search.ray_runtime import ensure_ray

    ensure_ray()
    import ray

    slots = int(ray.available_resources().get("CPU", 1))
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        cold = run_rnnhpo(args.epochs, url)  # the first experiment of a process starts its workers
        run = run_rnnhpo(args.epochs, url)  # a long-lived runner's next experiment finds them warm
        from search import pack_pool

        pack_pool.release(0)  # the baselines get every CPU
        print(f"64-config Wine grid, SL1-GRU, {args.epochs} epochs, {slots} CPUs")
        print(f"  rnnhpo packed path : {run.wall:8.2f} s  ({run.rows} trace rows stored; workers warm)")
        print(f"  rnnhpo, first run   : {cold.wall:8.2f} s  (pack workers and result writer started by it; "
              f"{100 * max(1 - cold.busy / cold.wall, 0):.1f}% of it with no pack training)")
        if not args.no_baseline:
            base = run_baseline(args.epochs)
            print(f"  Ray Tune + Optuna  : {base:8.2f} s  (one trial per configuration, default settings)"
                  f"  -> rnnhpo {base / run.wall:.1f}x faster")
            expert = run_baseline(args.epochs, reuse_actors=True)
            print(f"  Ray Tune + Optuna, actor reuse, 1 CPU per trial: {expert:8.2f} s"
                  f"  -> rnnhpo {expert / run.wall:.1f}x faster")
        print(f"  share of rnnhpo wall time with no pack training: {100 * max(1 - run.busy / run.wall, 0):.1f}%")
        used = min(slots, 2)  # the selection round runs 2 packs; the test phase trains 1 trial on 1 slot
        print(f"  share of the {used} CPU slots' time not training: {100 * max(1 - run.pack_time / (run.wall * used), 0):.1f}%")
        sqlite_rate = ingest_rate(f"sqlite:///{tmp}/ingest.db")
        print(f"  trace ingest SQLite     : {sqlite_rate:12,.0f} rows/s = {60 * sqlite_rate / 1e6:6.1f} M rows/min")
    if not args.no_postgres:
        import psycopg

        admin = os.environ.get("RNNHPO_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
        name = f"rnnhpo_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            base_url = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
            pg_rate = ingest_rate(f"{base_url}/{name}")
            print(f"  trace ingest PostgreSQL : {pg_rate:12,.0f} rows/s = {60 * pg_rate / 1e6:6.1f} M rows/min")
        finally:
            from service.db.engine import dispose_engines

            dispose_engines()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
