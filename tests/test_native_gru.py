"""The fused CPU kernels of the GRU (trainer/csrc/pack_kernels.cpp through trainer/native_pack.py) and the
fast engine's ``native`` backend: the loss and penalty kernels, the eager engine (every regularizer,
optimizer, loss and reduction), solo runs, divergence (forward and gradient against autograd through
trainer/cells.py and gradcheck, for every family: tests/test_native_families.py). Skipped where no C++
compiler builds the kernels (the backend then is not chosen)."""

from __future__ import annotations

import pytest
import torch

from trainer import cells
from trainer.config import MemberConfig, PackConfig
from trainer.models import make_family
from trainer.native_build import load_library
from trainer.native_pack import NativePack
from trainer.step import resolve_backend, resolve_engine, train_pack_fast
from trainer.train import train_pack

from pack_compare import max_result_diff as _max_diff  # noqa: E402

_lib, _why = load_library()
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(_lib is None, reason=f"native kernels unavailable: {_why}")]

CPU = torch.device("cpu")


def _members():
    """Every regularizer, both scopes, distinct seeds and rates (as tests/test_trainer_step.py)."""
    return [MemberConfig(lr=0.03 + 0.01 * i, reg=reg, lam=2e-3, alpha=0.05, seed=10 + i,
                         scope="all" if i % 2 else "output") for i, reg in enumerate(("none", "l1", "l2", "sl1"))]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-14), (torch.float32, 1e-6)])
def test_cross_entropy_kernel_matches_autograd(reduction, dtype, tol):
    """Value and dE/d out of the fused softmax cross-entropy against autograd through
    torch.nn.functional.cross_entropy (and trainer.train.data_loss), per-member and shared labels."""
    from trainer.train import data_loss

    K, n, C = 4, 9, 3
    gen = torch.Generator().manual_seed(1)
    out = (5 * torch.randn(K, n, C, generator=gen, dtype=dtype))
    y = torch.randint(0, C, (K, n), generator=gen)
    net = NativePack(make_family("gru", 1, 4, C), K, n, 2, dtype, CPU)
    scale = 1.0 if reduction == "sum" else 1.0 / n
    value, dout = net.cross_entropy(out, y, scale)
    leaf = out.clone().requires_grad_(True)
    ref = torch.stack([torch.nn.functional.cross_entropy(leaf[k], y[k], reduction=reduction) for k in range(K)])
    (grad,) = torch.autograd.grad(ref.sum(), leaf)
    assert torch.max(torch.abs(value - ref.detach())) <= tol * 10
    assert torch.max(torch.abs(dout - grad)) <= tol
    ref_value, ref_dout = data_loss(out, y, "classification", reduction=reduction)
    assert torch.max(torch.abs(value - ref_value)) <= tol * 10 and torch.max(torch.abs(dout - ref_dout)) <= tol
    shared, _ = net.cross_entropy(out, y[0], scale)  # labels shared by every member (the evaluation)
    assert torch.max(torch.abs(shared - data_loss(out, y[0], "classification", need_dout=False,
                                                     reduction=reduction)[0])) <= tol * 10


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-15), (torch.float32, 1e-6)])
def test_penalty_kernel_matches_the_regularizers(dtype, tol):
    """The fused L1 / L2 / smoothing-L1 value and gradient (both scopes, weights on both sides of
    alpha and exactly 0) against trainer.regularizers.Penalty and against autograd of eq. 14."""
    from trainer.regularizers import Penalty, h_alpha

    fam = make_family("gru", 2, 5, 3)
    members = _members()
    K = len(members)
    flat = fam.init([m.seed for m in members], 0.5, dtype, "cpu")
    flat[:, -7:-4] = 0.0
    flat[:, -4] = 0.05  # |w| == alpha: the branch of |w| >= alpha
    pen = Penalty(fam, members, dtype, CPU)
    ref_value, parts = pen.value_and_grad(flat)
    ref_grad = torch.zeros_like(flat)
    for sl, part in parts:
        ref_grad[:, sl] += part
    grad = torch.zeros_like(flat)
    net = NativePack(fam, K, 4, 2, dtype, CPU)
    value = net.penalty(flat, grad, pen)
    assert torch.max(torch.abs(value - ref_value)) <= tol * 10
    assert torch.max(torch.abs(grad - ref_grad)) <= tol
    sl1 = 3  # the smoothing-L1 member: value and gradient of sum lam h_alpha(w) by autograd (scope "all")
    cols = pen.cols
    leaf = flat[sl1, cols].clone().requires_grad_(True)
    coef = pen.c_sl1[sl1]
    (auto,) = torch.autograd.grad((coef * h_alpha(leaf, 0.05)).sum(), leaf)
    assert torch.max(torch.abs(grad[sl1, cols] - auto)) <= tol


def test_pack_member_equals_solo_member_bitwise():
    """Each member's numbers depend on its own row only: the same bits alone or in a pack."""
    fam = make_family("gru", 1, 8, 3)
    flat = fam.init([1, 2, 3, 4], 0.5, torch.float32, "cpu")
    x = torch.randn(4, 6, 4, 1)
    dout = torch.randn(4, 6, 3)
    pack = NativePack(fam, 4, 6, 4, torch.float32, CPU)
    out, grad = pack.forward_train(flat, x), pack.backward(dout)
    solo = NativePack(fam, 1, 6, 4, torch.float32, CPU)
    for k in range(4):
        assert torch.equal(solo.forward_train(flat[k:k + 1].contiguous(), x[k:k + 1]), out[k:k + 1])
        assert torch.equal(solo.backward(dout[k:k + 1]), grad[k:k + 1])


def test_threads_give_the_same_bits(iris):
    """Members split between OpenMP threads (torch.get_num_threads()) are computed as alone."""
    cfg = PackConfig(family="gru", hidden=6, batch_size=32, epochs=2, device="cpu", members=_members() * 2)
    one = train_pack_fast(iris, cfg, backend="native")
    torch.set_num_threads(2)
    try:
        two = train_pack_fast(iris, cfg, backend="native")
    finally:
        torch.set_num_threads(1)
    assert _max_diff(one, two) == 0.0


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "prox_sgd", "projected_gd"])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_native_equals_eager_engine(iris, optimizer, dtype, tol):
    """Every regularizer and both scopes in one pack; 105 samples at batch 32 (a ragged last batch,
    whose padding the native backend leaves out)."""
    cfg = PackConfig(family="gru", hidden=6, batch_size=32, epochs=2, dtype=dtype, device="cpu",
                     members=_members(), optimizer=optimizer, engine="eager")
    ref = train_pack(iris, cfg)
    fast = train_pack_fast(iris, cfg, backend="native")
    assert fast.engine == "fast/native"
    assert _max_diff(ref, fast) <= tol
    assert fast.members[-1].trace["penalty"].min() > 0


@pytest.mark.parametrize("loss,reduction", [("squared_error", "mean"), ("squared_error", "sum"),
                                            ("cross_entropy", "sum")])
def test_native_equals_eager_loss_and_reduction(iris, funcapprox, loss, reduction):
    cfg = PackConfig(family="gru", hidden=5, batch_size=32, epochs=2, dtype="float64", device="cpu",
                     members=_members()[:3], loss=loss, reduction=reduction, engine="eager")
    assert _max_diff(train_pack(iris, cfg), train_pack_fast(iris, cfg, backend="native")) <= 1e-10
    reg = cfg.model_copy(update={"loss": "auto", "batch_size": 16})  # regression: linear output
    assert _max_diff(train_pack(funcapprox, reg), train_pack_fast(funcapprox, reg, backend="native")) <= 1e-10


def test_native_full_batch_no_bias(iris):
    cfg = PackConfig(family="gru", hidden=5, batch_size=None, bias=False, epochs=3, dtype="float64",
                     device="cpu", members=_members()[:2], engine="eager")
    assert _max_diff(train_pack(iris, cfg), train_pack_fast(iris, cfg, backend="native")) <= 1e-10


def test_backend_comes_from_the_config(monkeypatch):
    """training.fast_backend picks the backend; the environment plays no part."""
    monkeypatch.setenv("RNNHPO_FAST_BACKEND", "eager")
    m = [MemberConfig(lr=0.1)]
    assert resolve_backend(PackConfig(members=m), CPU) == "native"
    assert resolve_backend(PackConfig(members=m, family="lstm"), CPU) == "native"
    assert resolve_backend(PackConfig(members=m, precision="bf16"), torch.device("cuda")) == "cuda_graph"
    assert resolve_backend(PackConfig(members=m, fast_backend="eager"), CPU) == "eager"
    assert resolve_engine(PackConfig(members=m), CPU) == "fast"  # auto: the native step on CPU
    assert resolve_engine(PackConfig(members=m, family="lstm"), CPU) == "fast"
    for family in ("rnn", "lstm", "diag_rnn"):  # the native kernels cover every family
        assert PackConfig(members=m, family=family, fast_backend="native").fast_backend == "native"
    with pytest.raises(ValueError, match="precision"):
        PackConfig(members=m, fast_backend="native", precision="bf16")


def test_shapes_are_checked_before_the_kernels_run():
    fam = make_family("gru", 1, 4, 3)
    flat = fam.init([1, 2], 0.5, torch.float32, "cpu")
    net = NativePack(fam, 2, 5, 4, torch.float32, CPU)
    with pytest.raises(ValueError, match="rows per member"):
        net.forward_train(flat, torch.zeros(2, 6, 4, 1))  # more rows than the buffers hold
    with pytest.raises(ValueError, match="x: expected"):
        net.forward_train(flat, torch.zeros(2, 5, 3, 1))  # wrong sequence length
    with pytest.raises(ValueError, match="flat"):
        net.forward(flat[:, ::2], torch.zeros(3, 4, 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nan_and_inf_as_in_the_reference(dtype):
    """The divergence check needs them: a NaN weight gives a NaN output (the exp neither clamps it
    away nor leaks it to other members); infinite input weights saturate the gates as in
    trainer/cells.py."""
    fam = make_family("gru", 1, 4, 3)
    flat = fam.init([1, 2, 3], 0.5, dtype, "cpu")
    flat[0, fam.layout.slice("Wh_zr")] = float("nan")
    flat[1, fam.layout.slice("Wx")] = float("inf")
    x = torch.randn(3, 5, 4, 1, dtype=dtype)
    net = NativePack(fam, 3, 5, 4, dtype, CPU)
    out = net.forward_train(flat, x)
    assert torch.isnan(out[0]).all() and torch.isfinite(out[1:]).all()
    torch.testing.assert_close(out, cells.forward(fam, fam.layout.views(flat), x), equal_nan=True)
    grad = net.backward(torch.ones_like(out))
    assert torch.isnan(grad[0]).any() and torch.isfinite(grad[2]).all()
