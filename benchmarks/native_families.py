"""The native backend against the eager engine for every family: a K = 64 pack on Iris.

64 SL1 members with different eta, lambda, alpha; hidden 32, batch 32, 30 epochs, one intra-op
thread; each run includes the per-step trace and the per-epoch train/test evaluation. Process CPU
time of ``train_pack`` (engine ``eager``) and ``train_pack_fast(..., backend="native")``, the
repetitions interleaved after a one-epoch warm-up of each; prints the min and max of each and the
ratio of the minima with the range of the per-repetition ratios.

    python benchmarks/native_families.py [--reps 5] [--families gru rnn lstm diag_rnn]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from trainer.config import MemberConfig, PackConfig
from trainer.step import train_pack_fast
from trainer.tasks import load_task
from trainer.train import train_pack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--families", nargs="+", default=["gru", "rnn", "lstm", "diag_rnn"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = load_task("iris", seed=0)
    rng = np.random.default_rng(0)
    members = [MemberConfig(lr=float(10 ** rng.uniform(-2.5, -0.5)), reg="sl1", lam=float(10 ** rng.uniform(-5, -2)),
                            alpha=float(10 ** rng.uniform(-3, -1)), seed=i) for i in range(64)]
    cfgs = {f: PackConfig(family=f, hidden=32, batch_size=32, epochs=30, device="cpu", members=members,
                          engine="eager") for f in args.families}
    runs = {"eager": lambda c: train_pack(task, c), "native": lambda c: train_pack_fast(task, c, backend="native")}
    for c in cfgs.values():
        for run in runs.values():
            run(c.model_copy(update={"epochs": 1}))
    times: dict[tuple[str, str], list[float]] = {(f, e): [] for f in cfgs for e in runs}
    for r in range(args.reps):
        for f, c in cfgs.items():
            for e, run in runs.items():
                t = time.process_time()
                run(c)
                times[f, e].append(time.process_time() - t)
        print(f"rep {r}: " + " | ".join(f"{f} {times[f, 'eager'][-1]:.3f}/{times[f, 'native'][-1]:.3f} s"
                                        for f in cfgs), flush=True)
    print("family    eager min (max) s    native min (max) s   eager/native: min/min (per-rep range)")
    for f in cfgs:
        e, n = np.array(times[f, "eager"]), np.array(times[f, "native"])
        ratio = e / n
        print(f"{f:9s} {e.min():6.3f} ({e.max():6.3f})     {n.min():6.3f} ({n.max():6.3f})      "
              f"{e.min() / n.min():4.1f}x ({ratio.min():.1f}-{ratio.max():.1f})")


if __name__ == "__main__":
    main()
