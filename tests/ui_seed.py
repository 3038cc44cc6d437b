"""Deterministic experiments written through the Store for the /ui tests (no Ray, no training):
a grid search over (lr, lam, alpha) for two variants and two seeds, with traces, per-epoch
records and diagnostics whose values depend on the parameters, so every chart has structure."""

from __future__ import annotations

import itertools

import numpy as np

from search.sink import TrialPlan, TrialRecord
from search.spec import ExperimentSpec

GRID_SPEC = {
    "name": "wine-grid-ui",
    "dataset": {"name": "iris"},
    "variants": [{"name": "GRU", "family": "gru"}, {"name": "SL1-GRU", "family": "gru", "reg": "sl1"}],
    "training": {"epochs": 6, "batch_size": 16},
    "search": {"algorithm": "grid",
               "space": {"lr": {"type": "grid", "values": [0.001, 0.01]},
                         "lam": {"type": "grid", "values": [0.0001, 0.001]},
                         "alpha": {"type": "grid", "values": [0.01, 0.1]}},
               "objectives": [{"metric": "test_metric", "direction": "maximize"},
                              {"metric": "sparsity_out", "direction": "maximize"}]},
    "seeds": 2,
}


LONG_SPEC = {
    "name": "long-trace-ui",
    "dataset": {"name": "iris"},
    "variants": [{"name": "SL1-GRU", "family": "gru", "reg": "sl1"}],
    "training": {"epochs": 6, "batch_size": 16},
    "search": {"algorithm": "grid"},
    "seeds": 1,
}


def spec_dict(spec: dict = GRID_SPEC) -> dict:
    return ExperimentSpec.model_validate(spec).model_dump(mode="json")


def plans(spec: dict = GRID_SPEC) -> list[TrialPlan]:
    """Every (variant, grid point, seed) in a stable order, numbered from 0."""
    space = spec["search"].get("space") or {}
    names = list(space)
    out = []
    for variant in spec["variants"]:
        for values in itertools.product(*(space[k]["values"] for k in names)):
            for seed in range(spec["seeds"]):
                out.append(TrialPlan(len(out), variant["name"], dict(zip(names, values)), seed, None,
                                     {"variant": variant["name"]}))
    return out


def record(plan: TrialPlan, steps: int = 400, epochs: int = 6) -> TrialRecord:
    """A trial's result: E decays at a rate set by lr, sparsity grows with lam (SL1 only)."""
    rng = np.random.default_rng(1000 + plan.number)
    lr, lam, alpha = (plan.params.get(k, d) for k, d in (("lr", 0.01), ("lam", 0.001), ("alpha", 0.01)))
    sl1 = plan.variant == "SL1-GRU"
    k = np.arange(steps)
    loss = 1.2 * np.exp(-k * lr * 0.5) + 0.05 + 0.01 * rng.random(steps)
    sparsity = (np.clip(k / steps * lam * 400, 0, 0.8) if sl1 else np.zeros(steps))
    trace = {
        "step": k, "epoch": k * epochs // steps, "loss": loss, "data_loss": loss * 0.9, "penalty": loss * 0.1,
        "grad_norm": 2.0 * np.exp(-k * lr * 0.3) + 0.02 * rng.random(steps),
        "grad_norm_out": np.exp(-k * lr * 0.3), "weight_norm": 10 + np.log1p(k) * (0.5 - alpha),
        "update_norm": lr * np.exp(-k * lr * 0.3), "sparsity_out": sparsity, "sparsity_all": sparsity / 4,
        "lr": np.full(steps, lr),
    }
    ep = np.arange(epochs)
    test = (0.6 + 0.3 * (1 - np.exp(-(ep + 1) * lr * 40)) - 0.02 * plan.seed + (0.02 if sl1 else 0.0)
            + 0.01 * (alpha > 0.05) - 0.004 * (lam > 0.0005))  # one best configuration per variant
    epoch_rec = {"epoch": ep, "train_metric": np.minimum(test + 0.03, 1.0), "test_metric": test,
                 "train_loss": loss[:: max(1, steps // epochs)][:epochs], "wall_time": (ep + 1) * 0.1}
    final = {"train_metric": float(epoch_rec["train_metric"][-1]), "test_metric": float(test[-1]),
             "val_metric": float(test[-1] - 0.01),  # what selection sees, where the search layer has it
             "loss": float(loss[-1]), "data_loss": float(loss[-1] * 0.9), "penalty": float(loss[-1] * 0.1),
             "sparsity_out": float(sparsity[-1]), "sparsity_all": float(sparsity[-1] / 4),
             "weight_norm": float(trace["weight_norm"][-1]), "steps": steps, "wall_time": 0.6}
    diag = {"monotonicity_violations": int(rng.integers(0, 20)), "grad_norm_ratio": float(trace["grad_norm"][-1] / 2),
            "diverged": False}
    return TrialRecord("completed", final, diag, trace, epoch_rec, 0.6, "cpu", f"pack-{plan.number // 8}", 8)


def seed_experiment(store, *, spec: dict = GRID_SPEC, n_done: int | None = None, steps: int = 400,
                    status: str = "succeeded") -> tuple[str, dict[int, int]]:
    """Create the experiment, register every trial and record the first ``n_done`` (all by
    default); the experiment ends ``status`` (``running``: claimed and left running)."""
    d = spec_dict(spec)
    ps = plans(spec)
    exp_id = store.create_experiment(d["name"], d, n_trials_total=len(ps))
    ids = store.register_trials(exp_id, ps)
    n_done = len(ps) if n_done is None else n_done
    for p in ps[:n_done]:
        store.record_trial(ids[p.number], record(p, steps=steps))
    if status != "queued":
        claimed = store.claim_experiment("ui-test-runner", exp_id=exp_id)
        assert claimed is not None and claimed.id == exp_id
        store.set_progress(exp_id, total=len(ps), done=n_done, packs_total=len(ps) // 8,
                           packs_done=n_done // 8, eta_s=30.0 if status == "running" else None,
                           dashboard_url="http://127.0.0.1:8265",
                           best={"number": 0, "value": 0.9, "params": ps[0].params, "variant": ps[0].variant,
                                 "metric": "test_metric"})
        if status != "running":
            store.finish_experiment(exp_id, status)
    return exp_id, ids
