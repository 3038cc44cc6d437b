"""The fast engine (trainer/step.py, trainer/cells.py): exactness against autograd, the hand-written
backward, the eager engine and solo runs, for every family, regularizer and optimizer.

These run the step function as it is (backend ``eager``, no compiler): compilation and CUDA-graph
capture run the same function; ``test_compiled_backend_matches`` checks the compiled one when
RNNHPO_TEST_COMPILE=1 (it costs minutes of compilation on a 2-core machine).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from trainer import cells
from trainer.config import MemberConfig, PackConfig
from trainer.models import make_family
from trainer.step import EpochBatches, fast_unsupported, resolve_engine, train_pack_fast
from trainer.native_build import load_library
from trainer.train import train_pack

from pack_compare import max_result_diff as _max_diff  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = ("gru", "lstm", "rnn", "diag_rnn")


def _regs(family):
    return ["none", "l1", "l2", "sl1"] + (["tikhonov"] if family == "lstm" else [])


def _members(family, n_seeds=1):
    """Every regularizer of the family, both scopes, distinct seeds and rates."""
    out = []
    for i, reg in enumerate(_regs(family) * n_seeds):
        out.append(MemberConfig(lr=0.03 + 0.01 * i, reg=reg, lam=2e-3, alpha=0.05, seed=10 + i,
                                scope="all" if i % 2 else "output"))
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_fast_equals_eager_engine(iris, family, dtype, tol):
    """Every regularizer and both scopes in one pack; 105 samples at batch 32 (a ragged last batch)."""
    cfg = PackConfig(family=family, hidden=6, batch_size=32, epochs=2, dtype=dtype, device="cpu",
                     members=_members(family), engine="eager")
    ref = train_pack(iris, cfg)
    fast = train_pack_fast(iris, cfg, backend="eager")
    assert fast.engine == "fast/eager" and ref.engine == "eager"
    assert _max_diff(ref, fast) <= tol
    # not vacuous: the members differ, and the penalties are on
    losses = [m.trace["loss"] for m in fast.members]
    assert not np.allclose(losses[0], losses[-1])
    assert fast.members[-1].trace["penalty"].min() > 0


@pytest.mark.parametrize("optimizer", ["adam", "projected_gd"])
@pytest.mark.parametrize("family", ["gru", "diag_rnn"])
def test_fast_equals_eager_optimizers(funcapprox, family, optimizer):
    members = [MemberConfig(lr=0.02, reg="sl1", lam=1e-3, seed=s, rho=0.3, rho_u=0.3) for s in (1, 2)]
    cfg = PackConfig(family=family, hidden=6, batch_size=16, epochs=3, dtype="float64", device="cpu",
                     optimizer=optimizer, members=members, engine="eager")
    assert _max_diff(train_pack(funcapprox, cfg), train_pack_fast(funcapprox, cfg, backend="eager")) <= 1e-10


@pytest.mark.parametrize("loss,reduction", [("squared_error", "mean"), ("squared_error", "sum"),
                                            ("cross_entropy", "sum")])
@pytest.mark.parametrize("family", ["gru", "lstm"])
def test_fast_equals_eager_loss_and_reduction(iris, family, loss, reduction):
    """training.loss / training.reduction (eq. 11 / eq. 15) through the fast engine, ragged last batch."""
    cfg = PackConfig(family=family, hidden=5, batch_size=32, epochs=2, dtype="float64", device="cpu",
                     members=_members(family)[:3], loss=loss, reduction=reduction, engine="eager")
    assert resolve_engine(cfg.model_copy(update={"engine": "fast"}), torch.device("cpu")) == "fast"
    ref = train_pack(iris, cfg)
    assert _max_diff(ref, train_pack_fast(iris, cfg, backend="eager")) <= 1e-10


def test_fast_equals_eager_regression_sum_and_prox(funcapprox):
    members = [MemberConfig(lr=0.002, reg=r, lam=1e-2, alpha=0.05, seed=s) for s, r in enumerate(("l1", "sl1", "l2"))]
    for optimizer in ("sgd", "prox_sgd"):
        cfg = PackConfig(family="gru", hidden=5, batch_size=16, epochs=2, dtype="float64", device="cpu",
                         members=members, reduction="sum", optimizer=optimizer, engine="eager")
        assert _max_diff(train_pack(funcapprox, cfg), train_pack_fast(funcapprox, cfg, backend="eager")) <= 1e-10


def test_fast_engine_covers_every_setting():
    """Which settings fall back to the eager engine: none today (fast_unsupported is the one place
    that would say so), across every family, loss, reduction, optimizer and regularizer."""
    import itertools

    for family, loss, reduction, optimizer in itertools.product(
            FAMILIES, ("auto", "cross_entropy", "squared_error"), ("mean", "sum"),
            ("sgd", "projected_gd", "adam", "prox_sgd")):
        regs = [r for r in _regs(family) if not (r == "tikhonov" and optimizer == "prox_sgd")]
        cfg = PackConfig(family=family, loss=loss, reduction=reduction, optimizer=optimizer, engine="fast",
                         members=[MemberConfig(lr=0.1, reg=r) for r in regs])
        assert fast_unsupported(cfg) is None
        assert resolve_engine(cfg, torch.device("cpu")) == "fast"


def test_fallback_to_eager_warns(iris, monkeypatch):
    import trainer.step as step_module

    monkeypatch.setattr(step_module, "fast_unsupported", lambda config: "not covered (test)")
    cfg = PackConfig(family="rnn", hidden=4, batch_size=32, epochs=1, device="cpu", engine="fast",
                     members=[MemberConfig(lr=0.1)])
    with pytest.warns(UserWarning, match="not covered"):
        assert train_pack(iris, cfg).engine == "eager"


@pytest.mark.parametrize("family,backend", [(f, "eager") for f in FAMILIES] + [("gru", "native")])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_fast_pack_equals_solo_runs(iris, family, backend, dtype, tol):
    if backend == "native" and load_library()[0] is None:
        pytest.skip(f"native kernels unavailable: {load_library()[1]}")
    members = _members(family)
    cfg = PackConfig(family=family, hidden=6, batch_size=32, epochs=2, dtype=dtype, device="cpu", members=members)
    pack = train_pack_fast(iris, cfg, backend=backend)
    for k in (0, len(members) - 1):
        solo = train_pack_fast(iris, cfg.model_copy(update={"members": [members[k]]}), backend=backend)
        for col in ("loss", "penalty", "grad_norm", "update_norm"):
            assert np.max(np.abs(pack.members[k].trace[col] - solo.members[0].trace[col])) <= tol, col
        for name, w in solo.members[0].weights.items():
            assert np.max(np.abs(pack.members[k].weights[name] - w)) <= tol, name


def _pack_params(family, K=3, seed=0, D=2, H=4, C=3, dtype=torch.float64):
    fam = make_family(family, D, H, C)
    flat = fam.init(list(range(seed, seed + K)), 0.5, dtype, "cpu")
    return fam, flat


@pytest.mark.parametrize("family", FAMILIES)
def test_cells_gradcheck(family):
    fam, flat = _pack_params(family)
    x = torch.randn(3, 5, 3, 2, dtype=torch.float64)  # per-member inputs (K, B, T, D)

    def f(flat_):
        return cells.forward(fam, fam.layout.views(flat_), x)

    assert torch.autograd.gradcheck(f, (flat.clone().requires_grad_(True),))


@pytest.mark.parametrize("family", FAMILIES)
def test_cells_forward_matches_eager_family(family):
    fam, flat = _pack_params(family)
    x = torch.randn(7, 4, 2, dtype=torch.float64)
    p = fam.layout.views(flat)
    ref, _ = fam.forward(p, x)
    assert torch.max(torch.abs(cells.forward(fam, p, x) - ref)) <= 1e-13


@pytest.mark.parametrize("family", ["gru", "rnn", "diag_rnn"])
def test_cells_autograd_matches_hand_written_backward(family):
    """Autograd through the functional cells = the eager families' hand-written BPTT."""
    fam, flat = _pack_params(family)
    x = torch.randn(6, 4, 2, dtype=torch.float64)
    dout = torch.randn(3, 6, 3, dtype=torch.float64)
    p = fam.layout.views(flat)
    _, cache = fam.forward(p, x, keep=True)
    manual = fam.layout.flatten(fam.backward(p, x, cache, dout))
    (auto,) = torch.autograd.grad((cells.forward(fam, fam.layout.views(flat.requires_grad_(True)), x) * dout).sum(),
                                  flat)
    assert torch.max(torch.abs(auto - manual)) <= 1e-12


def test_ragged_batch_padding_weights():
    eb = EpochBatches(N=10, B=4, K=2, seeds=[1, 2], dtype=torch.float64, device="cpu")
    assert eb.S == 3
    order = eb.next_epoch()
    assert order.shape == (2, 12)
    for k in range(2):  # every sample once per epoch, then padding
        assert sorted(order[k, :10].tolist()) == list(range(10))
    w = eb.weights
    assert torch.allclose(w.sum(1), torch.ones(3, dtype=torch.float64))
    assert (w[2, 2:] == 0).all() and (w[2, :2] == 0.5).all()
    # the same data order as the eager loop
    rng = np.random.default_rng([1, 1])
    assert order[0, :10].tolist() == rng.permutation(10).tolist()


@pytest.mark.parametrize("backend", ["eager", "native"])
def test_fast_divergence_and_pruning(funcapprox, backend):
    """A member whose weights overflow is marked diverged at the same step as in the eager loop
    (on the native kernels too: NaN and inf pass through them), and pruning stops the same member."""
    if backend == "native" and load_library()[0] is None:
        pytest.skip(f"native kernels unavailable: {load_library()[1]}")
    good = MemberConfig(lr=0.01, reg="sl1", lam=1e-3, seed=1)
    bad = MemberConfig(lr=1e200, seed=2)
    cfg = PackConfig(family="gru", hidden=6, batch_size=16, epochs=3, dtype="float64", device="cpu",
                     members=[good, bad, good.model_copy(update={"seed": 3})], engine="eager")

    def prune_last(epoch, metrics):
        return [2] if epoch == 0 else None

    ref = train_pack(funcapprox, cfg, on_epoch=prune_last)
    fast = train_pack_fast(funcapprox, cfg, on_epoch=prune_last, backend=backend)
    assert fast.members[1].diverged and fast.members[2].diagnostics["pruned"]
    assert _max_diff(ref, fast) <= 1e-10


def test_engine_selection():
    m = [MemberConfig(lr=0.1)]
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    native = load_library()[0] is not None  # auto on CPU: the native kernels (every family) where they build
    assert resolve_engine(PackConfig(members=m, family="rnn"), cpu) == ("fast" if native else "eager")
    assert resolve_engine(PackConfig(members=m, fast_backend="compile"), cpu) == "eager"
    assert resolve_engine(PackConfig(members=m), cuda) == "eager"  # cuda_graph is opt-in until measured on a GPU
    assert resolve_engine(PackConfig(members=m, engine="fast"), cuda) == "fast"
    assert resolve_engine(PackConfig(members=m, engine="fast"), cpu) == "fast"
    assert resolve_engine(PackConfig(members=m, engine="eager"), cuda) == "eager"
    assert resolve_engine(PackConfig(members=m, precision="bf16"), cpu) == "fast"
    with pytest.raises(ValueError, match="precision"):
        PackConfig(members=m, precision="tf32", engine="eager")
    with pytest.raises(ValueError, match="precision"):
        PackConfig(members=m, precision="bf16", dtype="float64")


def test_train_pack_dispatches_to_fast(iris):
    cfg = PackConfig(family="rnn", hidden=4, batch_size=32, epochs=1, device="cpu", engine="fast",
                     fast_backend="eager", members=[MemberConfig(lr=0.1)])
    assert train_pack(iris, cfg).engine == "fast/eager"


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_reduced_precision_is_close(iris, precision):
    cfg = PackConfig(family="gru", hidden=8, batch_size=32, epochs=2, device="cpu",
                     members=[MemberConfig(lr=0.05, reg="sl1", lam=1e-3, seed=s) for s in (1, 2)])
    exact = train_pack_fast(iris, cfg, backend="eager")
    low = train_pack_fast(iris, cfg.model_copy(update={"precision": precision}), backend="eager")
    for a, b in zip(exact.members, low.members):
        assert np.max(np.abs(a.trace["loss"] - b.trace["loss"])) <= 0.05
        assert np.all(np.isfinite(b.trace["loss"]))


@pytest.mark.skipif(os.environ.get("RNNHPO_TEST_COMPILE") != "1",
                    reason="torch.compile takes minutes here; set RNNHPO_TEST_COMPILE=1")
@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_backend_matches(iris, family):
    cfg = PackConfig(family=family, hidden=4, batch_size=32, epochs=1, dtype="float64", device="cpu",
                     members=_members(family)[:3], engine="eager")
    assert _max_diff(train_pack(iris, cfg), train_pack_fast(iris, cfg, backend="compile")) <= 1e-10
