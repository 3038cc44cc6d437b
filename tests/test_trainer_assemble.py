"""Assembling a pack's result: per-member arrays are independent blocks, scalars are Python
numbers, weights are exported on demand from the member's own row, and the vectorised summaries
equal a member-by-member computation."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import torch

from trainer.assemble import _row_norms, _weight_summaries
from trainer.config import MemberConfig, PackConfig
from trainer.models import make_family
from trainer.result import SPARSITY_THRESHOLDS
from trainer.train import train_pack
from trainer.weights import ExportedWeights, export_weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=[3, 5])
def mixed_pack(request):
    """A diverging member (1), a pruned one (2) and two that train to the end, traced every 3rd or
    5th step (5 steps per epoch: the pruned member's last row is then on the grid)."""
    from trainer.tasks import load_task

    task = load_task("funcapprox", seed=0)
    good = MemberConfig(lr=0.01, reg="sl1", lam=1e-3, seed=1)
    members = [good, MemberConfig(lr=1e200, seed=2), good.model_copy(update={"seed": 3}),
               good.model_copy(update={"seed": 4})]
    cfg = PackConfig(family="gru", hidden=6, batch_size=16, epochs=4, dtype="float64", members=members,
                     trace_every=request.param)
    return train_pack(task, cfg, on_epoch=lambda epoch, _: [2] if epoch == 1 else None), cfg


def _arrays(member):
    for part in (member.trace, member.epochs, member.weight_path):
        yield from part.values()


def test_members_share_no_memory(mixed_pack):
    res, _ = mixed_pack
    for a, b in itertools.combinations(res.members, 2):
        for x, y in itertools.product(_arrays(a), _arrays(b)):
            assert not np.shares_memory(x, y)


def test_extent_of_each_member(mixed_pack):
    res, cfg = mixed_pack
    full, diverged, pruned = res.members[0], res.members[1], res.members[2]
    total = full.final["steps"]
    every = cfg.trace_every
    assert list(full.trace["step"]) == list(range(0, total, every)) and full.final["epochs"] == 4
    d = diverged.diagnostics["diverged_at_step"]
    assert diverged.diverged and list(diverged.trace["step"]) == list(range(0, d + 1, every))
    assert diverged.final["steps"] == d and len(diverged.weight_path["step"]) == diverged.final["epochs"] + 1
    assert pruned.diagnostics["pruned"] and pruned.final["epochs"] == 2
    assert list(pruned.epochs["epoch"]) == [0, 1] and pruned.final["steps"] == total // 2
    assert list(pruned.trace["step"]) == list(range(0, total // 2, every))
    assert pruned.diagnostics["weight_tail_distance"] is None and full.diagnostics["weight_tail_distance"] > 0
    for m in res.members:
        assert np.all(m.trace["lr"] == cfg.members[m.index].lr)
        assert all(type(v) in (float, int) for v in m.final.values())


def test_exported_weights_on_demand(mixed_pack):
    res, cfg = mixed_pack
    fam = make_family("gru", 1, 6, 1, True)
    w = res.members[3].weights
    assert isinstance(w, ExportedWeights)
    row = np.asarray(w._row)
    expected = export_weights(fam, row)
    assert list(w) == list(expected) and len(w) == len(expected)
    for name, value in expected.items():
        assert value.dtype == np.float64 and np.array_equal(w[name], value)
    copy = pickle.loads(pickle.dumps(w))
    assert all(np.array_equal(copy[n], expected[n]) for n in expected)
    # the pickle carries the member's row, not the pack's buffer behind its view
    assert len(pickle.dumps(w)) < 2 * row.nbytes + 2048


def test_float32_row_exported_as_float64():
    fam = make_family("lstm", 2, 3, 2, True)
    row = np.random.default_rng(0).normal(size=fam.layout.P).astype(np.float32)
    w = ExportedWeights(fam, row)
    for name, value in export_weights(fam, row.astype(np.float64)).items():
        assert w[name].dtype == np.float64 and np.array_equal(w[name], value)


def test_weight_summaries_equal_member_by_member():
    fam = make_family("gru", 1, 4, 3, True)
    lay = fam.layout
    rng = np.random.default_rng(1)
    flat = rng.normal(scale=0.01, size=(5, lay.P))
    flat[flat.__abs__() < 5e-3] = 0.0
    flat[3, 7] = 1e200  # the overflow guard: a finite norm for a row with huge entries
    flat[4, :] = 1e-4
    tail = flat + rng.normal(scale=1e-3, size=flat.shape)
    w_idx = np.flatnonzero(lay.mask(("in", "rec", "out")))
    out_sl = lay.slice("W_out")
    norms, out_share, all_share, dist = _weight_summaries(torch.as_tensor(flat), torch.as_tensor(tail), out_sl, w_idx,
                                                          rows=2)
    for k in range(5):
        row = flat[k]
        peak = np.abs(row).max()
        assert norms[k] == pytest.approx(peak * np.sqrt(np.sum((row / peak) ** 2)), rel=1e-14)
        assert dist[k] == pytest.approx(np.linalg.norm(row - tail[k]), rel=1e-12)
        for eps in SPARSITY_THRESHOLDS:
            assert out_share[eps][k] == np.mean(np.abs(row[out_sl]) < eps)
            assert all_share[eps][k] == np.mean(np.abs(row[w_idx]) < eps)
    assert np.isfinite(norms[3]) and norms[3] >= 1e200
    assert _row_norms(np.array([[np.nan, 1.0]]))[0] != _row_norms(np.array([[np.nan, 1.0]]))[0]  # NaN stays NaN
