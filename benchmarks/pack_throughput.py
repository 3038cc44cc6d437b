"""Pack throughput: 64 SL1-GRU configurations as one pack vs two baselines, same process.

Iris-shaped problem (105 samples, T=4, D=1, 3 classes), batch 32, hidden 32, same epochs, one
intra-op thread. Baselines, written as a user would:

* 64 x ``nn.GRU`` + ``nn.Linear`` + ``optim.SGD`` + a manual smooth-L1 penalty, one after another;
* the ``torch.func`` recipe: a hand-written functional paper-form GRU cell, parameters stacked on a
  member axis, ``vmap(grad(loss))``, each member's lr applied to the stacked gradients.

The pack always records its per-step trace and a per-epoch train/test evaluation; each baseline
is timed bare (training only) and with that same work ("same work"). Ratios are of process-CPU
time within one process, over interleaved repetitions (the spread is printed).

    python benchmarks/pack_throughput.py [--quick] [--reps N] [--engine eager|fast|auto] [--profile]
    python benchmarks/pack_throughput.py --device cuda --engine fast [--fast-backend triton|cuda_graph]
        [--ks 1 64 1024 4096 16384] [--precision tf32]
    python benchmarks/pack_throughput.py --compare-precision [--device cuda]
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
                 loader: bool = False, same_work: bool = False) -> float:
    """One configuration with nn.GRU + nn.Linear + optim.SGD. ``same_work`` adds what the pack does
    beyond training: a per-step trace row (E, data loss, penalty, gradient/weight/update norms,
    sparsity of W_out and of all weights) kept on the device, and a per-epoch evaluation of the
    loss and accuracy on the training and the test split."""
    torch.manual_seed(m.seed)
    gru = torch.nn.GRU(task.n_inputs, hidden, batch_first=True)
    head = torch.nn.Linear(hidden, task.n_outputs)
    params = list(gru.parameters()) + list(head.parameters())
    weights = [gru.weight_ih_l0, gru.weight_hh_l0, head.weight]
    for p in params:
        torch.nn.init.uniform_(p, -0.5, 0.5)
    opt = torch.optim.SGD(params, lr=m.lr)
    x = torch.as_tensor(task.x_train, dtype=torch.float32)
    y = torch.as_tensor(task.y_train)
    xte = torch.as_tensor(task.x_test, dtype=torch.float32)
    yte = torch.as_tensor(task.y_test)
    n = len(x)
    loss = torch.zeros(())
    rows, evals = [], []
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
            pen = m.lam * torch.where(w >= m.alpha, w, w * w / (2 * m.alpha) + m.alpha / 2).sum()
            data = torch.nn.functional.cross_entropy(out, yb)
            loss = data + pen
            opt.zero_grad()
            loss.backward()
            if same_work:
                with torch.no_grad():
                    gn = torch.stack([(p.grad * p.grad).sum() for p in params]).sum().sqrt()
                    wn = torch.stack([(p * p).sum() for p in params]).sum().sqrt()
                    small = torch.cat([(q.abs() < 1e-5).reshape(-1) for q in weights]).float()
                    rows.append(torch.stack((loss, data, pen, gn, head.weight.grad.norm(), wn, m.lr * gn,
                                             (head.weight.abs() < 1e-5).float().mean(), small.mean())))
            opt.step()
        if same_work:
            with torch.no_grad():
                for xs, ys in ((x, y), (xte, yte)):
                    o = head(gru(xs)[1][-1])
                    evals.append(torch.stack((torch.nn.functional.cross_entropy(o, ys),
                                              (o.argmax(1) == ys).float().mean())))
            torch.stack(rows[-((n + batch - 1) // batch):]).tolist()  # the epoch's trace to the host
    return float(loss.detach())


def gru_cell(p: dict, h: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """The paper's GRU step (eq. 2-5): candidate tanh(W_h x + W_h~ (r * h) + b_h), one member."""
    zr = torch.sigmoid(xt @ p["Wx_zr"] + h @ p["Wh_zr"] + p["b_zr"])
    z, r = zr.chunk(2, dim=-1)
    c = torch.tanh(xt @ p["Wx_h"] + (r * h) @ p["Wh_h"] + p["b_h"])
    return (1 - z) * h + z * c


def gru_logits(p: dict, x: torch.Tensor) -> torch.Tensor:
    h = x.new_zeros(x.shape[0], p["Wh_h"].shape[0])
    for t in range(x.shape[1]):
        h = gru_cell(p, h, x[:, t])
    return h @ p["W_out"] + p["b_out"]


def gru_loss(p: dict, x, y, lam, alpha):
    w = p["W_out"].abs()
    pen = lam * torch.where(w >= alpha, w, w * w / (2 * alpha) + alpha / 2).sum()
    return torch.nn.functional.cross_entropy(gru_logits(p, x), y) + pen


def run_vmap(task: Task, members: list[MemberConfig], epochs: int, batch: int, hidden: int,
             same_work: bool = False) -> None:
    """What a PyTorch user writes without this project: a hand-written functional GRU, parameters
    stacked on a member axis, ``vmap(grad(loss))`` over members, each member's lr applied to its
    stacked gradients. ``same_work`` adds the pack's per-step trace and per-epoch evaluation."""
    from torch.func import grad, vmap

    K, D, H, C = len(members), task.n_inputs, hidden, task.n_outputs
    shapes = {"Wx_zr": (D, 2 * H), "Wh_zr": (H, 2 * H), "b_zr": (2 * H,), "Wx_h": (D, H), "Wh_h": (H, H),
              "b_h": (H,), "W_out": (H, C), "b_out": (C,)}
    gen = torch.Generator().manual_seed(0)
    p = {k: (torch.rand((K, *s), generator=gen) - 0.5) for k, s in shapes.items()}
    lr = torch.tensor([m.lr for m in members])
    lam = torch.tensor([m.lam for m in members])
    alpha = torch.tensor([m.alpha for m in members])
    x = torch.as_tensor(task.x_train, dtype=torch.float32)
    y = torch.as_tensor(task.y_train)
    x_all = torch.as_tensor(np.concatenate([task.x_train, task.x_test]), dtype=torch.float32)
    y_all = torch.as_tensor(np.concatenate([task.y_train, task.y_test]))
    n = len(x)
    step = vmap(grad(gru_loss, has_aux=False), in_dims=(0, 0, 0, 0, 0))
    loss_fn = vmap(gru_loss, in_dims=(0, 0, 0, 0, 0))
    logits = vmap(gru_logits, in_dims=(0, None))
    rows, evals = [], []
    for _ in range(epochs):
        perms = torch.stack([torch.randperm(n) for _ in range(K)])
        for a in range(0, n, batch):
            idx = perms[:, a:a + batch]
            xb, yb = x[idx], y[idx]
            g = step(p, xb, yb, lam, alpha)
            if same_work:
                with torch.no_grad():
                    loss = loss_fn(p, xb, yb, lam, alpha)
                    gn = sum((v * v).flatten(1).sum(1) for v in g.values()).sqrt()
                    wn = sum((v * v).flatten(1).sum(1) for v in p.values()).sqrt()
                    wo = p["W_out"].flatten(1)
                    rows.append(torch.stack((loss, gn, g["W_out"].flatten(1).norm(dim=1), wn, lr * gn,
                                             (wo.abs() < 1e-5).float().mean(1))))
            for k, v in p.items():
                v.sub_(lr.view(-1, *([1] * (v.dim() - 1))) * g[k])
        if same_work:
            with torch.no_grad():
                o = logits(p, x_all)
                evals.append(torch.stack([(o.argmax(-1) == y_all).float().mean(1),
                                          torch.nn.functional.cross_entropy(o.transpose(1, 2), y_all.expand(K, -1),
                                                                            reduction="none").mean(1)]))
            torch.stack(rows[-((n + batch - 1) // batch):]).tolist()


class Clock:
    """Wall and process-CPU seconds of a block (on a shared machine CPU time is the steadier figure)."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def run_baseline(task, members, epochs, batch, hidden, loader=False, same_work=False) -> tuple[float, float]:
    """(wall, cpu) of training the members one after the other."""
    with Clock() as c:
        for m in members:
            baseline_one(task, m, epochs, batch, hidden, loader, same_work)
    return c.wall, c.cpu


def run_vmap_timed(task, members, epochs, batch, hidden, same_work=False) -> tuple[float, float]:
    with Clock() as c:
        run_vmap(task, members, epochs, batch, hidden, same_work)
    return c.wall, c.cpu


def pack_config(members, epochs, batch, hidden, engine="eager", device="cpu", precision="float32",
                family="gru", fast_backend="auto") -> PackConfig:
    return PackConfig(family=family, hidden=hidden, batch_size=batch, epochs=epochs, members=members,
                      device=device, engine=engine, precision=precision, fast_backend=fast_backend)


def run_pack(task, members, epochs, batch, hidden, engine="eager", device="cpu", precision="float32",
             fast_backend="auto"):
    """(wall, cpu, PackResult) of one pack run (its per-step trace and per-epoch evaluation included)."""
    cfg = pack_config(members, epochs, batch, hidden, engine, device, precision, fast_backend=fast_backend)
    with Clock() as c:
        res = train_pack(task, cfg)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return c.wall, c.cpu, res


def profile_pack(task, members, epochs, batch, hidden, engine="eager", fast_backend="auto") -> None:
    """One pack run under torch.profiler (which inflates small ops: use it for counts and shapes)."""
    from torch.profiler import profile

    with profile(record_shapes=True) as prof:
        run_pack(task, members, epochs, batch, hidden, engine, fast_backend=fast_backend)
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=30))


def spread(values: list[float]) -> str:
    v = sorted(values)
    return f"median {v[len(v) // 2]:6.1f}x  (min {v[0]:.1f}, max {v[-1]:.1f}, n={len(v)})"


def cpu_main(args, task, members, K, epochs, batch, hidden) -> None:
    with Clock() as warm:  # warm-up at the timed shapes (with --engine fast: compilation, cached on disk)
        run_pack(task, members, 1, batch, hidden, args.engine, fast_backend=args.fast_backend)
        run_pack(task, members[:1], 1, batch, hidden, args.engine, fast_backend=args.fast_backend)
    print(f"warm-up (1 epoch at K={K} and K=1, compilation included): wall {warm.wall:.1f} s")
    run_baseline(task, members[:2], 1, batch, hidden)
    run_vmap_timed(task, members[:2], 1, batch, hidden)
    if args.profile:
        profile_pack(task, members, epochs, batch, hidden, args.engine, fast_backend=args.fast_backend)
        return
    reps = 1 if args.quick else args.reps
    ratios: dict[str, list[float]] = {k: [] for k in ("gru_same", "gru_bare", "vmap_same", "vmap_bare")}
    print(f"K={K} SL1-GRU, {epochs} epochs, batch {batch}, hidden {hidden}, 1 thread, engine {args.engine}; "
          f"process-CPU seconds, {reps} interleaved repetitions in this process")
    print("  pack: per-step trace (9 statistics) + per-epoch loss/accuracy on train and test, always")
    print("  'same work': the baseline also keeps that trace and does that evaluation; 'bare': training only")
    for r in range(reps):
        pack = run_pack(task, members, epochs, batch, hidden, args.engine, fast_backend=args.fast_backend)
        same = run_baseline(task, members, epochs, batch, hidden, same_work=True)
        bare = run_baseline(task, members, epochs, batch, hidden)
        vsame = run_vmap_timed(task, members, epochs, batch, hidden, same_work=True)
        vbare = run_vmap_timed(task, members, epochs, batch, hidden)
        pc = pack[1]
        ratios["gru_same"].append(same[1] / pc)
        ratios["gru_bare"].append(bare[1] / pc)
        ratios["vmap_same"].append(vsame[1] / pc)
        ratios["vmap_bare"].append(vbare[1] / pc)
        print(f"  rep {r}: pack {pc:.3f} s | {K} x nn.GRU same work {same[1]:.3f} s, bare {bare[1]:.3f} s | "
              f"vmap(grad) same work {vsame[1]:.3f} s, bare {vbare[1]:.3f} s")
    print(f"  pack vs {K} x nn.GRU (same work): {spread(ratios['gru_same'])}")
    print(f"  pack vs {K} x nn.GRU (bare)     : {spread(ratios['gru_bare'])}")
    print(f"  pack vs vmap(grad)   (same work): {spread(ratios['vmap_same'])}")
    print(f"  pack vs vmap(grad)   (bare)     : {spread(ratios['vmap_bare'])}")
    if args.dataloader:
        dl = run_baseline(task, members, epochs, batch, hidden, loader=True)
        print(f"  one by one with a DataLoader(shuffle=True), bare: cpu {dl[1]:.3f} s")
    one = [run_pack(task, members[:1], epochs, batch, hidden, args.engine, fast_backend=args.fast_backend)
           for _ in range(3)]
    ref = [run_baseline(task, members[:1], epochs, batch, hidden, same_work=True) for _ in range(3)]
    oc, rc = min(o[1] for o in one), min(r[1] for r in ref)
    print(f"K=1: pack cpu {oc:.3f} s; nn.GRU (same work) cpu {rc:.3f} s; nn.GRU / pack: {rc / oc:.2f}")


#: FP32 (non-tensor-core) peak TFLOP/s by device name; --fp32-peak overrides.
FP32_PEAK_TFLOPS = {"H100 80GB HBM3": 66.9, "H100 SXM": 66.9, "H100 PCIe": 51.2, "H100 NVL": 60.0,
                    "H200": 66.9, "A100": 19.5, "L4": 30.3, "L40S": 91.6}


def member_step_flop(T: int, D: int, H: int, C: int, B: int) -> float:
    """Training FLOP of one GRU member-step (forward + backward, multiply-adds counted as 2):
    recurrent 18 H^2, input 18 D H, readout 6 H C per sample and time step (readout once)."""
    return B * (T * (18 * H * H + 18 * D * H) + 6 * H * C)


def cuda_main(args, batch, hidden) -> None:
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    peak = args.fp32_peak or next((v for k, v in FP32_PEAK_TFLOPS.items() if k in name), None)
    epochs = args.epochs or 20
    task = iris_shaped()
    steps_per_epoch = -(-len(task.x_train) // batch)
    flop = member_step_flop(task.seq_len, task.n_inputs, hidden, task.n_outputs, batch)
    print(f"device: {name}; Iris-shaped GRU (T={task.seq_len}, D={task.n_inputs}, batch {batch}, hidden {hidden}), "
          f"{epochs} epochs, engine {args.engine}, precision {args.precision}; per-step trace and per-epoch "
          f"evaluation included; {flop / 1e6:.2f} MFLOP per member-step; FP32 peak "
          f"{peak if peak else 'unknown (give --fp32-peak)'} TFLOP/s")
    for K in args.ks:
        members = configs(K)
        run_pack(task, members, 1, batch, hidden, args.engine, "cuda", args.precision,
                fast_backend=args.fast_backend)  # compile + capture
        torch.cuda.reset_peak_memory_stats()
        wall, _, res = run_pack(task, members, epochs, batch, hidden, args.engine, "cuda", args.precision,
                fast_backend=args.fast_backend)
        steps = epochs * steps_per_epoch
        rate = K * steps / res.wall_time  # the training loop: steps, per-step trace, per-epoch evaluation
        frac = f"{rate * flop / (peak * 1e12):6.1%}" if peak else "   n/a"
        print(f"  K={K:6d}: {rate / 1e6:8.3f} M member-steps/s  {1e3 * res.wall_time / steps:8.3f} ms/step  "
              f"peak {torch.cuda.max_memory_allocated() / 2**30:6.2f} GiB  FP32 fraction {frac}  "
              f"whole call {K * steps / wall / 1e6:7.3f} M/s (setup and result assembly {wall - res.wall_time:.2f} s)"
              f"  ({res.engine})")
    mnist_k1(args, batch, hidden)


def mnist_k1(args, batch, hidden) -> None:
    """MNIST-shaped (T=28, D=28, 10 classes) K=1: the pack's step vs nn.GRU (cuDNN) + SGD."""
    rng = np.random.default_rng(0)
    n = 32 * batch
    x = rng.normal(size=(n + 64, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=n + 64)
    task = Task("mnist-shaped", "classification", x[:n], y[:n], x[n:], y[n:], 10)
    epochs = 5
    m = configs(1)
    run_pack(task, m, 1, batch, hidden, args.engine, "cuda", args.precision,
                fast_backend=args.fast_backend)
    _, _, res = run_pack(task, m, epochs, batch, hidden, args.engine, "cuda", args.precision,
                         fast_backend=args.fast_backend)
    wall = res.wall_time  # the training loop (as for the pack sizes above)
    dev = torch.device("cuda")
    gru = torch.nn.GRU(28, hidden, batch_first=True).to(dev)
    head = torch.nn.Linear(hidden, 10).to(dev)
    opt = torch.optim.SGD(list(gru.parameters()) + list(head.parameters()), lr=m[0].lr)
    xt, yt = torch.as_tensor(x[:n], device=dev), torch.as_tensor(y[:n], device=dev)

    def one_epoch():
        perm = torch.randperm(n, device=dev)
        for a in range(0, n, batch):
            idx = perm[a:a + batch]
            loss = torch.nn.functional.cross_entropy(head(gru(xt[idx])[1][-1]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    one_epoch()
    torch.cuda.synchronize()
    with Clock() as c:
        for _ in range(epochs):
            one_epoch()
        torch.cuda.synchronize()
    steps = epochs * (n // batch)
    print(f"  MNIST-shaped K=1: pack {1e3 * wall / steps:.3f} ms/step (trace + evaluation included), "
          f"nn.GRU cuDNN {1e3 * c.wall / steps:.3f} ms/step (training only): nn.GRU / pack {c.wall / wall:.2f}")


def precision_main(args, task, members, epochs, batch, hidden, device) -> None:
    """The metric difference of the opt-in precisions against exact float32 (fast engine)."""
    for prec in ("float32", "tf32", "bf16"):  # warm-up (compilation) outside the timed runs
        run_pack(task, members, 1, batch, hidden, "fast", device, prec)
    ref = run_pack(task, members, epochs, batch, hidden, "fast", device, "float32")
    base = np.array([m.final["test_metric"] for m in ref[2].members])
    print(f"precision (fast engine, {device}, K={len(members)}, {epochs} epochs): float32 {ref[0]:.3f} s wall")
    for prec in ("tf32", "bf16"):
        w, _, res = run_pack(task, members, epochs, batch, hidden, "fast", device, prec)
        other = np.array([m.final["test_metric"] for m in res.members])
        print(f"  {prec}: wall {w:.3f} s ({ref[0] / w:.2f}x float32); test accuracy |diff| mean "
              f"{np.mean(np.abs(other - base)):.4f}, max {np.max(np.abs(other - base)):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 members, 10 epochs, one repetition")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--members", type=int, default=None)
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (CPU mode)")
    ap.add_argument("--engine", choices=["eager", "fast", "auto"], default="auto")
    ap.add_argument("--fast-backend", choices=["auto", "eager", "compile", "cuda_graph", "native", "triton"],
                    default="auto", help="the fast engine's backend (auto: triton on CUDA, native on CPU)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", choices=["float32", "tf32", "bf16"], default="float32")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 64, 1024, 4096, 16384], help="pack sizes (cuda mode)")
    ap.add_argument("--fp32-peak", type=float, default=None, help="device FP32 peak in TFLOP/s (cuda mode)")
    ap.add_argument("--compare-precision", action="store_true",
                    help="only report tf32/bf16 against float32 (time and test-accuracy difference)")
    ap.add_argument("--dataloader", action="store_true",
                    help="also time the baseline fed by torch.utils.data.DataLoader")
    ap.add_argument("--profile", action="store_true",
                    help="only profile one pack run (torch.profiler, ops by self CPU time) and exit")
    args = ap.parse_args()
    torch.set_num_threads(1)
    batch, hidden = 32, 32
    task = iris_shaped()
    if args.compare_precision:
        K = args.members or 64
        precision_main(args, task, configs(K), args.epochs or 30, batch, hidden, args.device)
        return
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device here")
        cuda_main(args, batch, hidden)
        return
    K = args.members or (16 if args.quick else 64)
    epochs = args.epochs or (10 if args.quick else 30)
    cpu_main(args, task, configs(K), K, epochs, batch, hidden)


if __name__ == "__main__":
    main()
