"""Pack throughput: 64 SL1-GRU configurations as one pack vs one by one with torch.nn.GRU.

Iris-shaped problem (105 samples, T=4, D=1, 3 classes), batch 32, hidden 32, same epochs,
one intra-op thread, one process. The baseline is the straightforward code a user would write:
nn.GRU + nn.Linear + torch.optim.SGD + a manual smooth-L1 penalty on the readout. The pack also
records its full per-iteration trace and per-epoch train/test metrics; the baseline does not.

    python benchmarks/pack_throughput.py [--quick] [--epochs N] [--members K] [--dataloader] [--profile]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from trainer.config import MemberConfig, PackConfig
from trainer.tasks import Task
from trainer.train import train_pack


def iris_shaped(seed: int = 0) -> Task:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(150, 4, 1))
    y = (x[:, :, 0].sum(1) > 0).astype(np.int64) + (x[:, 0, 0] > 0.5)
    return Task("iris-shaped", "classification", x[:105], y[:105], x[105:], y[105:], 3)


def configs(K: int) -> list[MemberConfig]:
    rng = np.random.default_rng(1)
    return [MemberConfig(lr=float(10 ** rng.uniform(-3, -1)), reg="sl1", lam=float(10 ** rng.uniform(-5, -3)),
                         alpha=float(10 ** rng.uniform(-3, -1)), seed=i) for i in range(K)]


def baseline_one(task: Task, m: MemberConfig, epochs: int, batch: int, hidden: int,
                 loader: bool = False) -> float:
    torch.manual_seed(m.seed)
    gru = torch.nn.GRU(task.n_inputs, hidden, batch_first=True)
    head = torch.nn.Linear(hidden, task.n_outputs)
    for p in list(gru.parameters()) + list(head.parameters()):
        torch.nn.init.uniform_(p, -0.5, 0.5)
    opt = torch.optim.SGD(list(gru.parameters()) + list(head.parameters()), lr=m.lr)
    x = torch.as_tensor(task.x_train, dtype=torch.float32)
    y = torch.as_tensor(task.y_train)
    n = len(x)
    loss = torch.zeros(())
    if loader:  # the textbook input pipeline
        dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True)
    for _ in range(epochs):
        if loader:
            batches = iter(dl)
        else:
            perm = torch.randperm(n)
            batches = ((x[perm[a:a + batch]], y[perm[a:a + batch]]) for a in range(0, n, batch))
        for xb, yb in batches:
            _, h = gru(xb)
            out = head(h[-1])
            w = head.weight.abs()
            pen = torch.where(w >= m.alpha, w, w * w / (2 * m.alpha) + m.alpha / 2).sum()
            loss = torch.nn.functional.cross_entropy(out, yb) + m.lam * pen
            opt.zero_grad()
            loss.backward()
            opt.step()
    return float(loss.detach())


class Clock:
    """Wall and process-CPU seconds of a block (on a shared machine CPU time is the steadier figure)."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def run_baseline(task, members, epochs, batch, hidden, loader=False) -> tuple[float, float]:
    """(wall, cpu) of training the members one after the other."""
    with Clock() as c:
        for m in members:
            baseline_one(task, m, epochs, batch, hidden, loader)
    return c.wall, c.cpu


def run_pack(task, members, epochs, batch, hidden) -> tuple[float, float]:
    cfg = PackConfig(family="gru", hidden=hidden, batch_size=batch, epochs=epochs, members=members, device="cpu")
    with Clock() as c:
        train_pack(task, cfg)
    return c.wall, c.cpu


def profile_pack(task, members, epochs, batch, hidden) -> None:
    """One pack run under torch.profiler (which inflates small ops: use it for counts and shapes)."""
    from torch.profiler import profile

    with profile(record_shapes=True) as prof:
        run_pack(task, members, epochs, batch, hidden)
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=30))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 members, 10 epochs")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--members", type=int, default=None)
    ap.add_argument("--dataloader", action="store_true",
                    help="also time the baseline fed by torch.utils.data.DataLoader")
    ap.add_argument("--profile", action="store_true",
                    help="only profile one pack run (torch.profiler, ops by self CPU time) and exit")
    args = ap.parse_args()
    torch.set_num_threads(1)
    K = args.members or (16 if args.quick else 64)
    epochs = args.epochs or (10 if args.quick else 30)
    batch, hidden = 32, 32
    task = iris_shaped()
    members = configs(K)
    run_pack(task, members[:2], 1, batch, hidden)  # warm-up
    run_baseline(task, members[:2], 1, batch, hidden)
    if args.profile:
        profile_pack(task, members, epochs, batch, hidden)
        return

    reps = 1 if args.quick else 3
    packs = [run_pack(task, members, epochs, batch, hidden) for _ in range(reps)]
    base = run_baseline(task, members, epochs, batch, hidden)
    pw, pc = min(p[0] for p in packs), min(p[1] for p in packs)
    print(f"K={K} SL1-GRU, {epochs} epochs, batch {batch}, hidden {hidden}, 1 thread "
          f"(pack: best of {reps}; trace + per-epoch train/test evaluation included)")
    print(f"  pack      : wall {pw:8.3f} s   cpu {pc:8.3f} s")
    print(f"  one by one: wall {base[0]:8.3f} s   cpu {base[1]:8.3f} s  (nn.GRU + optim.SGD)")
    print(f"  speed-up  : wall {base[0] / pw:8.1f}x   cpu {base[1] / pc:8.1f}x")
    if args.dataloader:
        dl = run_baseline(task, members, epochs, batch, hidden, loader=True)
        print(f"  one by one with a DataLoader(shuffle=True): wall {dl[0]:8.3f} s   cpu {dl[1]:8.3f} s"
              f"  -> speed-up wall {dl[0] / pw:.1f}x, cpu {dl[1] / pc:.1f}x")

    one = [run_pack(task, members[:1], epochs, batch, hidden) for _ in range(5)]
    ref = [run_baseline(task, members[:1], epochs, batch, hidden) for _ in range(5)]
    ow, oc = min(o[0] for o in one), min(o[1] for o in one)
    rw, rc = min(r[0] for r in ref), min(r[1] for r in ref)
    print(f"K=1: pack wall {ow:.3f} s cpu {oc:.3f} s; nn.GRU wall {rw:.3f} s cpu {rc:.3f} s; "
          f"nn.GRU / pack: wall {rw / ow:.2f}, cpu {rc / oc:.2f}")


if __name__ == "__main__":
    main()
