"""Host cost of large packs: what one pack spends outside its training loop (setting up K members,
assembling K member results), against the loop itself, in the same process.

On a GPU a K = 16,384 Iris-shaped pack trains in well under a second per epoch, so the per-member
Python on the host decides the whole call's rate. One epoch (4 steps) of training keeps the CPU run
short; on a GPU give more epochs.

    python benchmarks/pack_host_cost.py [--ks 1024 4096 16384] [--epochs 1] [--device cpu|cuda]
        [--engine auto|fast|eager] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trainer.assemble  # noqa: E402
import trainer.train  # noqa: E402
from pack_throughput import configs, iris_shaped, pack_config  # noqa: E402


def timed_assembly():
    """Wrap the assembly (both engines reach it) to time it; returns the list the seconds go to."""
    seconds: list[float] = []
    inner = trainer.assemble.assemble

    def assemble(*args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - t)

    trainer.assemble.assemble = trainer.train.assemble = assemble
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--engine", choices=["auto", "fast", "eager"], default="auto",
                    help="auto: the native kernels on CPU, the eager loop on CUDA; fast on CUDA: Triton")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = iris_shaped()
    assembly = timed_assembly()
    trainer.train.train_pack(task, pack_config(configs(64), 1, 32, 32, args.engine, args.device))  # warm-up
    print(f"Iris-shaped GRU pack (hidden 32, batch 32), {args.epochs} epoch(s), device {args.device}, "
          f"{args.threads} thread(s); wall seconds of one call")
    for K in args.ks:
        cfg = pack_config(configs(K), args.epochs, 32, 32, args.engine, args.device)
        t = time.perf_counter()
        res = trainer.train.train_pack(task, cfg)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
        asm = assembly[-1]
        setup = wall - res.wall_time - asm
        print(f"  K={K:6d}: call {wall:7.2f} s = setup {setup:5.2f} + training {res.wall_time:6.2f} + assembly "
              f"{asm:5.2f}; host {1e6 * (setup + asm) / K:5.0f} us per member, "
              f"{(setup + asm) / wall:5.1%} of the call ({res.engine})")


if __name__ == "__main__":
    main()
