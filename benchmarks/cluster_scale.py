"""Cluster scaling: the same packable grid on one Ray node vs two (each ``--num-cpus=1``).

Both clusters are local processes in a loopback-only network namespace (Ray 2.60 maps 127.0.0.1
to the host's address outside one); the search runs as a driver inside the namespace against a
SQLite file, exactly as the job driver would. Prints each wall time and the ratio (goal >= 1.8).
The ratio can only show what the machine has: two free cores for two one-CPU nodes. Needs root
and ``ip`` (skips, exit 0, otherwise).

    python benchmarks/cluster_scale.py [--epochs 150] [--packs 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def grid(epochs: int, packs: int) -> dict:
    """``packs`` packs of 4 Wine trials (one fixed configuration, 4 seeds per pack): identical work
    per pack, all in one round. A searched space would add a selection round and then one test pack
    that no second node can share, capping the ratio at (N + 1) / (N / 2 + 1) for N packs."""
    return {"name": "bench-cluster-scale", "dataset": {"name": "wine"},
            "variants": [{"name": "SL1-GRU", "family": "gru", "reg": "sl1"}],
            "training": {"epochs": epochs, "hidden": 32, "batch_size": 32, "lr": 0.01},
            "search": {"algorithm": "grid"},
            "seeds": 4 * packs, "execution": {"pack_size": 4, "cpus_per_pack": 1, "gpus_per_pack": 0}}


def child(address: str, spec_json: str, db: str) -> None:
    """Inside the namespace: run the search against the cluster, print wall time and placement."""
    import ray

    from search.driver import run_experiment
    from search.spec import ExperimentSpec
    from service.sink import SqlResultSink
    from service.store import Store

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    spec = ExperimentSpec.model_validate(json.loads(spec_json))
    store = Store(db)
    exp_id = store.create_experiment(spec.name, spec.model_dump(mode="json"))
    t0 = time.perf_counter()
    summary = run_experiment(spec, SqlResultSink(db, exp_id), run_id=exp_id)
    wall = time.perf_counter() - t0
    trials, _ = store.list_trials(exp_id, limit=1000)
    assert summary.n_failed == 0 and summary.trials_done == len(trials), summary
    print(json.dumps({"wall": wall, "nodes": len({t.node_id for t in trials}),
                      "packs": len({t.pack_id for t in trials}), "trials": len(trials)}))


def measure(netns: str, nodes: int, spec: dict, workdir: Path) -> dict:
    from search.local_cluster import LocalCluster

    cluster = LocalCluster.create(netns=netns, env={"RNNHPO_HOME": str(workdir)})
    try:
        cluster.start_head(num_cpus=1)
        for _ in range(nodes - 1):
            cluster.add_worker(num_cpus=1)
        db = f"sqlite:///{workdir / f'bench-{nodes}.db'}"
        out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, __file__, "--child", cluster.address,
                              json.dumps(spec), db], env=cluster.env, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        cluster.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--packs", type=int, default=8)
    parser.add_argument("--child", nargs=3, metavar=("ADDRESS", "SPEC", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("cluster_scale: skipped (needs root and `ip` for a loopback-only network namespace)")
        return 0
    spec = grid(args.epochs, args.packs)
    netns = f"rnnhpo-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"], check=True)
        with tempfile.TemporaryDirectory(prefix="rnnhpo-bench-") as tmp:
            one = measure(netns, 1, spec, Path(tmp))
            two = measure(netns, 2, spec, Path(tmp))
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)
    print(f"{one['trials']} trials in {one['packs']} packs, {args.epochs} epochs (Wine, hidden 32)")
    print(f"one node  (1 CPU):        {one['wall']:8.1f} s  (packs ran on {one['nodes']} node)")
    print(f"two nodes (1 CPU each):   {two['wall']:8.1f} s  (packs ran on {two['nodes']} nodes)")
    print(f"speed-up two nodes / one: {one['wall'] / two['wall']:.2f}x  (goal >= 1.8)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
