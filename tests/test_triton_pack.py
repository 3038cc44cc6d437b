"""The Triton kernels of the four families (trainer/triton_*_kernels.py through trainer/triton_pack.py)
and the fast engine's ``triton`` backend. Without a GPU they run in Triton's interpreter (TRITON_INTERPRET=1, set
by tests/conftest.py before anything imports triton), which executes the
same kernel source with numpy: forward and gradient against autograd through trainer/cells.py,
finite differences, the eager engine, solo runs, divergence. On a machine with CUDA the same tests run the
compiled kernels and the captured step. Skipped where triton is not installed."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from trainer import cells
from trainer.config import MemberConfig, PackConfig
from trainer.models import make_family
from trainer.step import resolve_backend, train_pack_fast
from trainer.train import train_pack
from trainer.triton_pack import TritonPack, triton_unsupported

from pack_compare import max_result_diff as _max_diff  # noqa: E402

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")]


def _members():
    """Every regularizer, both scopes, distinct seeds and rates (as tests/test_native_gru.py)."""
    return [MemberConfig(lr=0.03 + 0.01 * i, reg=reg, lam=2e-3, alpha=0.05, seed=10 + i,
                         scope="all" if i % 2 else "output") for i, reg in enumerate(("none", "l1", "l2", "sl1"))]


FAMILIES = ["gru", "rnn", "lstm", "diag_rnn"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("D,H,B", [(1, 6, 7), (3, 32, 40)])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-13), (torch.float32, 2e-6)])
def test_kernels_match_autograd_through_cells(family, bias, D, H, B, dtype, tol):
    """Padded blocks (H = 6 in a 16-wide block, D = 1 and 3 in 16), several row blocks (B = 40 in
    blocks of 32, the last one ragged), buffers larger than the step's rows."""
    if family == "diag_rnn" and not bias:
        pytest.skip("diag_rnn has no biases: one case")
    fam = make_family(family, D, H, 3, bias and family != "diag_rnn")
    K, T = 3, 4
    flat = fam.init([4, 5, 6], 0.5, dtype, DEV)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(K, B, T, D, generator=gen, dtype=dtype).to(DEV)
    net = TritonPack(fam, K, B + 3, T, dtype, DEV)
    out = net.forward_train(flat, x)
    leaf = flat.clone().requires_grad_(True)
    ref = cells.forward(fam, fam.layout.views(leaf), x)
    dout = torch.randn(ref.shape, generator=gen, dtype=dtype).to(DEV)
    (grad,) = torch.autograd.grad((ref * dout).sum(), leaf)
    assert torch.max(torch.abs(out - ref)) <= tol
    assert torch.max(torch.abs(net.backward(dout) - grad)) <= 10 * tol
    shared = torch.randn(11, T, D, generator=gen, dtype=dtype).to(DEV)  # the evaluation: shared inputs
    assert torch.max(torch.abs(net.forward(flat, shared) - cells.forward(fam, fam.layout.views(flat), shared))) <= tol


@pytest.mark.parametrize("family", FAMILIES)
def test_kernels_match_finite_differences(family):
    """The backward kernel against central differences of the forward kernel (float64), every third
    parameter of both members; an error of 10 % in one gate's gradient fails it (checked by hand)."""
    fam = make_family(family, 2, 4, 3)
    K, B, T = 2, 5, 3
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(K, B, T, 2, generator=gen, dtype=torch.float64).to(DEV)
    dout = torch.randn(K, B, 3, generator=gen, dtype=torch.float64).to(DEV)
    net = TritonPack(fam, K, B, T, torch.float64, DEV)
    flat = fam.init([1, 2], 0.5, torch.float64, DEV)
    net.forward_train(flat, x)
    grad = net.backward(dout).clone()
    eps = 1e-6
    for i in range(0, flat.shape[1], 3):
        up, down = flat.clone(), flat.clone()
        up[:, i] += eps
        down[:, i] -= eps
        fd = ((net.forward_train(up, x) - net.forward_train(down, x)) * dout).sum((1, 2)) / (2 * eps)
        assert torch.max(torch.abs(fd - grad[:, i])) <= 1e-7, (i, fd, grad[:, i])


@pytest.mark.parametrize("family", FAMILIES)
def test_pack_member_equals_solo_member(family):
    """Each member's numbers depend on its own row only."""
    fam = make_family(family, 1, 8, 3)
    flat = fam.init([1, 2, 3, 4], 0.5, torch.float32, DEV)
    x = torch.randn(4, 6, 4, 1, device=DEV)
    dout = torch.randn(4, 6, 3, device=DEV)
    pack = TritonPack(fam, 4, 6, 4, torch.float32, DEV)
    out, grad = pack.forward_train(flat, x), pack.backward(dout).clone()
    solo = TritonPack(fam, 1, 6, 4, torch.float32, DEV)
    for k in range(4):
        assert torch.equal(solo.forward_train(flat[k:k + 1].contiguous(), x[k:k + 1]), out[k:k + 1])
        assert torch.equal(solo.backward(dout[k:k + 1]), grad[k:k + 1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_sgd_matches_the_native_kernel(dtype):
    """The Triton SGD + trace-row kernel against the native C++ one (an independent implementation of
    the same contract): an inactive member, one whose gradient overflows, one whose loss is NaN,
    weights exactly 0 and at the sparsity threshold."""
    from trainer.native_build import load_library
    from trainer.native_pack import NativePack

    if load_library()[0] is None:
        pytest.skip(f"native kernels unavailable: {load_library()[1]}")
    fam = make_family("gru", 1, 6, 3)
    K, P = 5, fam.layout.P
    gen = torch.Generator().manual_seed(7)
    flat = torch.randn(K, P, generator=gen, dtype=dtype)
    flat[:, :5] = 0.0
    flat[:, 5] = 1e-5
    grad = torch.randn(K, P, generator=gen, dtype=dtype)
    grad[2, 3] = float("inf")
    loss = torch.rand(K, generator=gen, dtype=dtype)
    loss[3] = float("nan")
    terms = (loss, loss * 0.5, loss * 0.25)
    lr = torch.linspace(0.01, 0.05, K, dtype=dtype)
    share = torch.rand(P, generator=gen, dtype=dtype)
    out_cols = slice(P - 21, P - 3)
    results = []
    for kern in (TritonPack(fam, K, 4, 2, dtype, DEV), NativePack(fam, K, 4, 2, dtype, torch.device("cpu"))):
        dev = DEV if isinstance(kern, TritonPack) else torch.device("cpu")
        state = (torch.tensor([True, False, True, True, True], device=dev),
                 torch.zeros(K, dtype=torch.bool, device=dev), torch.full((K,), -1, dtype=torch.int64, device=dev),
                 torch.tensor(6, device=dev))
        w = flat.clone().to(dev)
        row = kern.sgd_step(w, grad.to(dev), tuple(t.to(dev) for t in terms), lr.to(dev), state, out_cols,
                            share.to(dev), 1e-5)
        results.append((row.cpu(), w.cpu(), *(t.cpu() for t in state)))
    (row_t, w_t, *state_t), (row_n, w_n, *state_n) = results
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(row_t, row_n, rtol=tol, atol=tol, equal_nan=True)
    assert torch.allclose(w_t, w_n, rtol=tol, atol=tol)
    assert all(torch.equal(a, b) for a, b in zip(state_t, state_n))
    assert state_t[1].tolist() == [False, False, True, True, False] and state_t[2].tolist() == [-1, -1, 6, 6, -1]
    assert int(state_t[3]) == 7 and torch.equal(w_t[1], flat[1]) and torch.equal(w_t[2], flat[2])


def test_tf32_is_asked_for_only_by_the_tf32_precision():
    fam = make_family("gru", 1, 4, 2)
    assert TritonPack(fam, 1, 4, 2, torch.float32, DEV).prec == "ieee"
    assert TritonPack(fam, 1, 4, 2, torch.float32, DEV, precision="tf32").prec == "tf32"


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_triton_equals_eager_engine(iris, optimizer, dtype, tol):
    """Every regularizer and both scopes in one pack; 105 samples at batch 32 (a ragged last batch,
    padded to the static shape with loss weight 0)."""
    cfg = PackConfig(family="gru", hidden=6, batch_size=32, epochs=2, dtype=dtype, device=DEV.type,
                     members=_members(), optimizer=optimizer, engine="eager")
    ref = train_pack(iris, cfg)
    fast = train_pack_fast(iris, cfg, backend="triton")
    assert fast.engine == "fast/triton"
    assert _max_diff(ref, fast) <= tol
    assert fast.members[-1].trace["penalty"].min() > 0


@pytest.mark.parametrize("loss,reduction", [("squared_error", "sum"), ("cross_entropy", "sum")])
def test_triton_equals_eager_loss_and_reduction(iris, funcapprox, loss, reduction):
    cfg = PackConfig(family="gru", hidden=5, batch_size=32, epochs=2, dtype="float64", device=DEV.type,
                     members=_members()[:3], loss=loss, reduction=reduction, engine="eager")
    assert _max_diff(train_pack(iris, cfg), train_pack_fast(iris, cfg, backend="triton")) <= 1e-10
    reg = cfg.model_copy(update={"loss": "auto", "batch_size": 16})  # regression: linear output
    assert _max_diff(train_pack(funcapprox, reg), train_pack_fast(funcapprox, reg, backend="triton")) <= 1e-10


def test_triton_divergence_pruning_and_full_batch(funcapprox):
    """A member that diverges stops at the eager loop's step, a pruned one keeps its results, full
    batch without biases."""
    members = [MemberConfig(lr=0.01, reg="sl1", lam=1e-3, seed=1), MemberConfig(lr=1e200, seed=2),
               MemberConfig(lr=0.02, seed=3)]
    cfg = PackConfig(family="gru", hidden=4, batch_size=None, bias=False, epochs=3, dtype="float64",
                     device=DEV.type, members=members, engine="eager")

    def prune_last(epoch, metrics):
        return [2] if epoch == 0 else None

    ref = train_pack(funcapprox, cfg, on_epoch=prune_last)
    fast = train_pack_fast(funcapprox, cfg, on_epoch=prune_last, backend="triton")
    assert fast.members[1].diverged and fast.members[2].diagnostics["pruned"]
    assert _max_diff(ref, fast) <= 1e-10


@pytest.mark.parametrize("family,members", [
    ("rnn", _members()),
    ("lstm", [MemberConfig(lr=0.05, reg="tikhonov", lam=1e-3, seed=1),
              MemberConfig(lr=0.04, reg="tikhonov", lam=1e-3, tikhonov_beta="bound", seed=2),
              MemberConfig(lr=0.03, reg="sl1", lam=2e-3, alpha=0.05, scope="all", seed=3)]),
    ("diag_rnn", _members()[:2]),
])
def test_other_families_equal_eager_engine(iris, family, members):
    """The Elman RNN, the LSTM with the Tikhonov regularizer (both beta choices: its gradient is added
    by the step's tail to the kernels' gradient), the diagonal RNN with and without a trained readout."""
    cfg = PackConfig(family=family, hidden=6, batch_size=32, epochs=2, dtype="float64", device=DEV.type,
                     members=members, engine="eager", init_scale=0.1 if family == "lstm" else 0.5)
    configs = [cfg]  # the LSTM inside Tikhonov's feasible region (rho_h < 1): no member diverges
    if family == "diag_rnn":
        configs.append(cfg.model_copy(update={"train_readout": True}))
    for c in configs:
        fast = train_pack_fast(iris, c, backend="triton")
        assert fast.engine == "fast/triton" and not any(m.diverged for m in fast.members)
        assert _max_diff(train_pack(iris, c), fast) <= 1e-10
    if family == "lstm":
        assert fast.members[0].trace["penalty"].min() > 0


def test_triton_pack_equals_solo_runs(iris):
    cfg = PackConfig(family="gru", hidden=6, batch_size=32, epochs=2, device=DEV.type, members=_members())
    pack = train_pack_fast(iris, cfg, backend="triton")
    for k, m in enumerate(cfg.members):
        solo = train_pack_fast(iris, cfg.model_copy(update={"members": [m]}), backend="triton")
        for key in ("loss", "grad_norm", "weight_norm"):
            assert abs(pack.members[k].trace[key] - solo.members[0].trace[key]).max() <= 1e-5


def test_backend_choice_and_validation(monkeypatch, iris):
    """auto picks triton on CUDA (cuda_graph for bf16); the config refuses what the kernels do not do,
    naming the field; without CUDA and without the interpreter the backend says why."""
    m = [MemberConfig(lr=0.1)]
    cuda = torch.device("cuda")
    assert resolve_backend(PackConfig(members=m), cuda) == "triton"
    assert resolve_backend(PackConfig(members=m, precision="tf32"), cuda) == "triton"
    assert resolve_backend(PackConfig(members=m, precision="bf16"), cuda) == "cuda_graph"
    assert resolve_backend(PackConfig(members=m, family="lstm"), cuda) == "triton"
    with pytest.raises(ValueError, match="fast_backend: triton .* bf16"):
        PackConfig(members=m, fast_backend="triton", precision="bf16")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    cfg = PackConfig(members=m, device="cpu", epochs=1, fast_backend="triton", engine="fast")
    assert "CUDA" in triton_unsupported(make_family("gru", 1, 4, 2), torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match="backend triton: the Triton kernels run on CUDA"):
        train_pack_fast(iris, cfg, backend="triton")
