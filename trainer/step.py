"""The fast engine: a whole training step as one function, built for compilation and capture.

``train_pack_fast(task, config)`` gives the results of :func:`trainer.train.train_pack` (the eager
reference; same trace, epochs, diagnostics, weights) with a different inner loop. One step —
gather of each member's minibatch, forward, backward (autograd through the functional cells of
:mod:`trainer.cells`), penalty, optimizer, divergence masking, trace row — is ONE function
(:meth:`FastStep.step`) with

* static shapes: every step sees a ``(K, B)`` index tensor; the short last minibatch of an epoch
  is padded and its padding gets loss weight 0 (the others 1/n), not a second shape;
* no host synchronisation and no Python branch on data: divergence, stopping and the trace are
  tensor operations on state tensors updated in place;

so it can be run as it is (backend ``eager``), compiled whole (``compile``: ``torch.compile``,
``fullgraph=True``, the gate math and its backward fused; a persistent on-disk cache makes later
processes load it), or, on CUDA, compiled and captured once as a CUDA graph that is replayed every
step (``cuda_graph``: one launch per step, what makes K = 1 fast).

Precision (``config.precision``): ``float32`` exact (default), ``tf32`` (float32 matmuls on
TF32 tensor cores / reduced-precision CPU matmuls), ``bf16`` (autocast of the forward and
backward to bfloat16; weights, penalty, optimizer and trace stay float32).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from typing import Optional

import numpy as np
import torch

from trainer.cells import forward as cell_forward
from trainer.config import PackConfig
from trainer.data_order import DataOrder
from trainer.native_pack import NativePack, native_unsupported
from trainer.triton_pack import TritonPack, triton_unsupported
from trainer.result import PackResult
from trainer.tasks import Task
from trainer.trace import SPARSITY_EPS, TraceRecorder

Tensor = torch.Tensor

#: Splits up to this many (member x sample) rows are evaluated in one fused pass.
EVAL_ROWS_FUSED = 1 << 22


def fast_unsupported(config: PackConfig) -> Optional[str]:
    """Why the fast engine does not cover ``config`` (None when it does)."""
    return None


def resolve_engine(config: PackConfig, device: torch.device) -> str:
    """``eager`` or ``fast`` for ``config`` on ``device``. auto: fast with a non-default precision,
    or where its step runs on the native CPU kernels (every family, a C++ compiler at hand);
    otherwise eager: on CPU the compiled step costs minutes of compilation per pack shape, and on
    CUDA the fast engine (triton, cuda_graph) has not yet run on a GPU, so it stays opt-in
    (``engine: fast``) until it has been measured there. A combination the fast engine does not
    cover goes to eager."""
    if config.engine == "eager":
        return "eager"
    if fast_unsupported(config) is not None:
        return "eager"
    if config.engine == "fast" or config.precision != "float32":
        return "fast"
    if device.type == "cuda":
        return "eager"
    return "fast" if resolve_backend(config, device) == "native" else "eager"


def resolve_backend(config: PackConfig, device: torch.device) -> str:
    """The backend of ``config.fast_backend`` on ``device``; auto: on CUDA triton where its kernels
    apply (float32 or tf32, triton installed), else cuda_graph; on CPU native where its kernels
    apply (exact precision, a C++ compiler), else compile."""
    if config.fast_backend != "auto":
        return config.fast_backend
    if device.type == "cuda":
        return "triton" if config.precision != "bf16" and triton_reason(config, device) is None else "cuda_graph"
    if config.precision == "float32" and native_reason(config, device) is None:
        return "native"
    return "compile"


def unavailable(config: PackConfig) -> Optional[tuple[str, str]]:
    """(field, why) when ``config`` cannot train on this machine (a CUDA device that is not here, a
    backend whose kernels cannot run), else None: for the edges to refuse before anything starts."""
    from trainer.train import resolve_device

    if config.device.startswith("cuda") and not torch.cuda.is_available():
        return "device", f"{config.device}, but this machine has no CUDA device"
    device = resolve_device(config.device)
    if resolve_engine(config, device) != "fast":
        return None
    why = backend_reason(resolve_backend(config, device), config, device)
    return None if why is None else ("fast_backend", why)


def backend_reason(backend: str, config: PackConfig, device: torch.device) -> Optional[str]:
    """Why ``backend`` cannot run ``config`` on ``device`` (None when it can)."""
    if backend == "cuda_graph" and device.type != "cuda":
        return "cuda_graph needs a CUDA device"
    check = {"native": native_reason, "triton": triton_reason}.get(backend)
    why = None if check is None else check(config, device)
    return None if why is None else f"{backend}: {why}"


def native_reason(config: PackConfig, device: torch.device) -> Optional[str]:
    """Why the native kernels do not run ``config`` on ``device`` (None when they do)."""
    from trainer.models import make_family

    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    return native_unsupported(make_family(config.family, 1, 1, 1), dtype, device)


def triton_reason(config: PackConfig, device: torch.device) -> Optional[str]:
    """Why the Triton kernels do not run ``config`` on ``device`` (None when they do)."""
    from trainer.models import make_family

    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    return triton_unsupported(make_family(config.family, 1, 1, 1), dtype, device)


def _rownorm(a: Tensor) -> Tensor:
    return (a * a).sum(1).sqrt()


@contextlib.contextmanager
def matmul_precision(precision: str):
    """TF32 matmuls for the duration of a run (restored after); a no-op for float32 and bf16."""
    if precision != "tf32":
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


class FastStep:
    """The step and the per-epoch evaluation of one pack as pure tensor functions.

    State (all on the device, updated in place): ``flat`` (K, P), ``active``/``diverged`` (K,)
    bool, ``div_step`` (K,) int64, ``step_no`` () int64, Adam moments ``m``/``v``.
    """

    def __init__(self, st, B: int, kernels: "NativePack | TritonPack | None" = None):
        from trainer.train import data_loss  # the reference loss of the eager loop

        self.st, self.B, self.kernels = st, B, kernels
        self.family, self.kind = st.family, st.task.kind
        self.data_loss = data_loss
        cfg = st.config
        self.optimizer = cfg.optimizer
        self.loss, self.reduction = cfg.loss, cfg.reduction
        self.proximal = cfg.optimizer == "prox_sgd"
        self.bf16 = cfg.precision == "bf16"
        dt, dev = st.dtype, st.device
        self.lr = st.opt.lr
        if self.optimizer == "adam":
            self.b1, self.b2 = cfg.adam_betas
            self.m = torch.zeros_like(st.flat)
            self.v = torch.zeros_like(st.flat)
        else:
            self.m = self.v = torch.zeros((), dtype=dt, device=dev)
        self.zero = torch.zeros((), dtype=dt, device=dev)
        classes = self.kind == "classification" and self.loss in ("auto", "cross_entropy")
        #: the native CPU kernels compute the cross-entropy and the closed-form penalties too; both
        #: kernel backends fuse plain SGD with its trace row
        self.native_ce = kernels is not None and kernels.fuses_loss and classes
        self.native_penalty = (kernels is not None and kernels.fuses_loss and not st.penalty.has_tik
                               and not self.proximal)
        self.fused_sgd = kernels is not None and kernels.fuses_sgd and self.optimizer == "sgd"

    # -- the step -----------------------------------------------------------------------------
    def _objective(self, flat: Tensor, xb: Tensor, yb: Tensor, wts: Tensor):
        """Sum over members of (weighted data loss + Tikhonov term); aux: both per member."""
        st = self.st
        ctx = torch.autocast(st.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            out = cell_forward(self.family, self.family.layout.views(flat), xb)
        dloss = self._data_loss(out.to(flat.dtype), yb, wts)
        total = dloss
        tik = torch.zeros_like(dloss)
        if st.penalty.has_tik:
            tik = st.penalty.tikhonov(flat)
            total = total + tik
        return total.sum(), (dloss.detach(), tik.detach())

    def _data_loss(self, out: Tensor, yb: Tensor, wts: Tensor) -> Tensor:
        """The data loss (K,) of the step's rows, each row weighted by ``wts`` (1/n or 1 for the real
        samples, 0 for the padding)."""
        if self.kind == "classification" and self.loss == "squared_error":  # eq. 11 on a sigmoid output
            target = torch.zeros_like(out).scatter(-1, yb.unsqueeze(-1), 1.0)
            diff = torch.sigmoid(out) - target
            per = 0.5 * (diff * diff).sum(-1)
        elif self.kind == "classification":
            logp = torch.log_softmax(out, dim=-1)
            per = -logp.gather(-1, yb.unsqueeze(-1)).squeeze(-1)
        else:
            diff = out - yb
            per = 0.5 * (diff * diff).sum(-1)
        return (per * wts).sum(1)

    def _data_loss_sum(self, out: Tensor, yb: Tensor, wts: Tensor):
        """(Sum over members, per member) of :meth:`_data_loss`: the function whose gradient is dE/d out."""
        dloss = self._data_loss(out, yb, wts)
        return dloss.sum(), dloss.detach()

    def _kernel_grad(self, flat: Tensor, xb: Tensor, yb: Tensor, wts: Tensor):
        """(gradient (K, P), data loss (K,), 0) through the fused kernels. The native CPU kernels get
        only the step's real samples (the padding of a short batch is not computed), whose loss
        weights are those of the eager loop's :func:`data_loss`; the Triton kernels keep the static
        padded shape (for the CUDA graph) and dE/d out comes from autograd of the weighted loss."""
        kern = self.kernels
        out = kern.forward_train(flat, xb)
        if self.native_ce:
            dloss, dout = kern.cross_entropy(out, yb, 1.0 if self.reduction == "sum" else 1.0 / out.shape[1])
        elif kern.static_shape:
            dout, dloss = torch.func.grad(self._data_loss_sum, has_aux=True)(out, yb, wts)
        else:
            dloss, dout = self.data_loss(out, yb, self.kind, loss=self.loss, reduction=self.reduction)
        return kern.backward(dout), (dloss, self.zero)

    def step(self, flat, active, diverged, div_step, step_no, m, v, xb, yb, wts):
        """One update of every member on its minibatch ``xb`` (K, B, T, D), ``yb``; returns the trace
        row (len(STEP_STATS), K)."""
        st = self.st
        if self.kernels is not None:
            g, (dloss, tik) = self._kernel_grad(flat, xb, yb, wts)
        else:
            g, (dloss, tik) = torch.func.grad(self._objective, has_aux=True)(flat, xb, yb, wts)
        if self.native_penalty:
            pen = self.kernels.penalty(flat, g, st.penalty)
        else:
            # the Tikhonov term: differentiated with the data loss, unless the gradient came from kernels
            pen, parts = st.penalty.value_and_grad(flat, need_grad=not self.proximal,
                                                   include_tikhonov=self.kernels is not None)
            pen = pen + tik
            for sl, part in parts:
                g[:, sl] += part
        if st.grad_mask is not None:
            g = g * st.grad_mask
        loss = dloss + pen
        if self.fused_sgd:
            return self.kernels.sgd_step(flat, g, (loss, dloss, pen), self.lr, (active, diverged, div_step, step_no),
                                         st.out_sl, st.weight_share, SPARSITY_EPS)
        gnorm = _rownorm(g)
        gout = _rownorm(g[:, st.out_sl])
        wnorm = _rownorm(flat)
        sp_out, sp_all = st.sparsity(flat)
        if self.optimizer == "adam":
            t = (step_no + 1).to(flat.dtype)
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            mh = m / (1 - self.b1 ** t)
            vh = v / (1 - self.b2 ** t)
            delta = -self.lr * mh / (vh.sqrt() + 1e-8)
        else:
            delta = -self.lr * g
            if self.proximal:  # W^{k+1} = prox_{eta lambda R}(W^k - eta grad E_data)
                delta = st.penalty.prox(flat + delta, self.lr) - flat
            if self.optimizer == "projected_gd":
                new = flat + delta
                st.opt.project(new)
                delta = new - flat
        dnorm = _rownorm(delta)
        finite = torch.isfinite(loss) & torch.isfinite(gnorm) & torch.isfinite(dnorm)
        newly = active & ~finite
        diverged.logical_or_(newly)
        div_step.copy_(torch.where(newly, step_no, div_step))
        active.logical_and_(finite)
        delta = torch.where(active.unsqueeze(1), delta, self.zero)
        if self.optimizer == "projected_gd":
            new = flat + delta
            st.opt.project(new)
            unorm = _rownorm(new - flat)
            flat.copy_(new)
        else:
            flat.add_(delta)
            unorm = torch.where(active, dnorm, self.zero)
        step_no.add_(1)
        return torch.stack((loss, dloss, pen, gnorm, gout, wnorm, unorm, sp_out, sp_all))

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, flat: Tensor, x_all: Tensor, n_tr: int):
        """(train data loss, train metric, test metric, penalty), each (K,), in one pass over both
        splits (the fused counterpart of ``_Pack.evaluate_splits``)."""
        st = self.st
        with torch.no_grad():
            if self.kernels is not None:
                out = self.kernels.forward(flat, x_all)
            else:
                out = cell_forward(self.family, self.family.layout.views(flat), x_all)
            res = []
            for o, y in ((out[:, :n_tr], st.y_train), (out[:, n_tr:], st.y_test)):
                if self.native_ce:
                    loss, _ = self.kernels.cross_entropy(o, y, 1.0 / o.shape[1])
                else:
                    loss, _ = self.data_loss(o, y, self.kind, need_dout=False, loss=self.loss)
                loss = loss * st.split_scale(y.shape[0])
                if self.kind == "classification":
                    metric = (o.argmax(-1) == y).to(flat.dtype).mean(1)
                else:
                    metric = ((o - y) ** 2).mean((1, 2))
                res.append((loss, metric))
            pen, _ = st.penalty.value_and_grad(flat, need_grad=False)
        return res[0][0], res[0][1], res[1][1], pen


class StepRunner:
    """Runs :class:`FastStep` with one backend: ``eager``, ``compile``, ``cuda_graph``, ``native``
    (the function as it is, its gradient from the fused kernels of :mod:`trainer.native_pack`) or
    ``triton`` (its gradient from the kernels of :mod:`trainer.triton_pack`; on CUDA the whole step,
    kernels and PyTorch tail, captured as one CUDA graph without compiling)."""

    def __init__(self, fs: FastStep, state: dict[str, Tensor], backend: str):
        self.fs, self.state, self.backend = fs, state, backend
        self._step = fs.step
        self._eval = fs.evaluate
        self.graph = None
        #: one step replayed from a CUDA graph (its trace row is a static buffer: copy it out)
        self.captured = backend == "cuda_graph" or (backend == "triton" and fs.st.device.type == "cuda")
        if backend in ("compile", "cuda_graph"):
            _configure_compiler()
            self._step = torch.compile(fs.step, fullgraph=True, dynamic=False)
            self._eval = torch.compile(fs.evaluate, fullgraph=True, dynamic=False)
        if self.captured:
            K, B = fs.st.K, fs.B
            self.idx_buf = torch.zeros((K, B), dtype=torch.int64, device=fs.st.device)
            self.w_buf = torch.zeros((B,), dtype=fs.st.dtype, device=fs.st.device)

    def _args(self, idx, wts):
        """The step's arguments; the minibatch gather stays outside the compiled function (inlined
        into the backward's reductions, its indirect loads kept the CPU kernels from vectorising)."""
        s, st = self.state, self.fs.st
        return (s["flat"], s["active"], s["diverged"], s["div_step"], s["step_no"], s["m"], s["v"],
                st.x_train[idx], st.y_train[idx], wts)

    def step(self, idx: Tensor, wts: Tensor, rows: int) -> Tensor:
        """One step on the minibatch ``idx`` (K, B) whose first ``rows`` columns are real samples."""
        if self.backend == "native":  # no static shape needed: the padding is left out
            return self._step(*self._args(idx[:, :rows], wts[:rows]))
        if not self.captured:
            return self._step(*self._args(idx, wts))
        self.idx_buf.copy_(idx)
        self.w_buf.copy_(wts)
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.graph_row

    def _capture(self) -> None:
        """Compile (or JIT the Triton kernels) and warm up on a side stream on a copy of the state,
        then capture one step."""
        saved = {k: v.clone() for k, v in self.state.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step(*self._args(self.idx_buf, self.w_buf))
        torch.cuda.current_stream().wait_stream(side)
        for k, v in self.state.items():
            v.copy_(saved[k])
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.graph_row = self._step(*self._args(self.idx_buf, self.w_buf))

    def evaluate(self, x_all: Tensor, n_tr: int):
        return self._eval(self.state["flat"], x_all, n_tr)


def _configure_compiler() -> None:
    """Room for every pack shape a long-lived worker sees; compiled kernels cached on disk."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")


class EpochBatches:
    """Each member's data order for an epoch as a padded ``(K, S*B)`` index tensor plus per-step loss
    weights ``(S, B)``: 1/n (reduction ``mean``) or 1 (``sum``, eq. 15) for the n real samples of a
    step, 0 for the padding of a short last batch."""

    def __init__(self, N: int, B: int, K: int, seeds: list[int], dtype, device, reduction: str = "mean"):
        self.N, self.B, self.K, self.device = N, B, K, device
        self.full_batch = B >= N
        self.S = math.ceil(N / B)
        self.rows = [min(B, N - s * B) for s in range(self.S)]
        w = np.zeros((self.S, B))
        for s in range(self.S):
            n = min(B, N - s * B)
            w[s, :n] = 1.0 if reduction == "sum" else 1.0 / n
        self.weights = torch.as_tensor(w, dtype=dtype, device=device)
        self.order = None
        if self.full_batch:
            self.fixed = torch.arange(N, device=device).expand(K, N).contiguous()
        else:  # on a GPU the orders are drawn a chunk ahead while the GPU trains (trainer.data_order)
            self.order = DataOrder(seeds, N, width=self.S * B, ahead=torch.device(device).type == "cuda")

    def next_epoch(self) -> Tensor:
        if self.full_batch:
            return self.fixed
        return torch.as_tensor(self.order.next_epoch(), device=self.device)

    def close(self) -> None:
        if self.order is not None:
            self.order.close()


def train_pack_fast(task: Task, config: PackConfig, *, on_epoch=None, backend: str | None = None) -> PackResult:
    """:func:`trainer.train.train_pack` through the fast engine (see the module docstring)."""
    from trainer.diagnostics import tail_start
    from trainer.assemble import assemble
    from trainer.train import EVAL_CHUNK, _Pack, close_epoch

    st = _Pack(task, config)
    K, dev = st.K, st.device
    backend = backend or resolve_backend(config, dev)
    why = backend_reason(backend, config, dev)
    if why is not None:
        raise ValueError(f"backend {why}")
    N = st.x_train.shape[0]
    B = N if config.batch_size is None else min(config.batch_size, N)
    batches = EpochBatches(N, B, K, [m.seed for m in config.members], st.dtype, dev, config.reduction)
    T = st.x_train.shape[1]
    kernels = None
    if backend == "native":
        kernels = NativePack(st.family, K, B, T, st.dtype, dev)
    elif backend == "triton":
        kernels = TritonPack(st.family, K, B, T, st.dtype, dev, config.precision)
    fs = FastStep(st, B, kernels)
    state = {"flat": st.flat, "active": torch.ones(K, dtype=torch.bool, device=dev),
             "diverged": torch.zeros(K, dtype=torch.bool, device=dev),
             "div_step": torch.full((K,), -1, dtype=torch.int64, device=dev),
             "step_no": torch.zeros((), dtype=torch.int64, device=dev), "m": fs.m, "v": fs.v}
    runner = StepRunner(fs, state, backend)
    n_tr, n_te = N, st.x_test.shape[0]
    fused_eval = n_tr + n_te <= EVAL_CHUNK and n_te > 0 and K * (n_tr + n_te) <= EVAL_ROWS_FUSED
    x_all = torch.cat([st.x_train, st.x_test]) if fused_eval else None
    stopped_rows: list[int | None] = [None] * K
    stopped_epochs: list[int | None] = [None] * K
    recorder = TraceRecorder(K)
    epoch_rows: list[dict[str, np.ndarray]] = []
    step, epoch = 0, 0
    planned = int(min((config.epochs or math.inf) * batches.S, config.max_steps or math.inf))
    tail_step = tail_start(planned)  # W^s kept for Theorem 3's ||W^s - W^K|| (as the eager loop)
    st.w_tail = None
    st.full_batch = batches.full_batch
    t0 = time.perf_counter()
    with matmul_precision(config.precision), contextlib.closing(batches):
        while True:
            if config.epochs is not None and epoch >= config.epochs:
                break
            if config.max_steps is not None and step >= config.max_steps:
                break
            order = batches.next_epoch()
            for s in range(batches.S):
                if config.max_steps is not None and step >= config.max_steps:
                    break
                if step == tail_step:
                    st.w_tail = st.flat.clone()
                row = runner.step(order[:, s * B:(s + 1) * B], batches.weights[s], batches.rows[s])
                recorder.record(step, epoch, row.clone() if runner.captured else row)
                step += 1
            if fused_eval:
                tr_loss, tr_metric, te_metric, tr_pen = runner.evaluate(x_all, n_tr)
            else:
                (tr_loss, tr_metric), (_, te_metric) = st.evaluate_splits()
                tr_pen, _ = st.penalty.value_and_grad(st.flat, need_grad=False)
            recorder.flush()
            close_epoch(epoch_rows, (tr_metric, te_metric, tr_loss, tr_pen), K=K, epoch=epoch, step=step,
                        t0=t0, on_epoch=on_epoch, stopped=(stopped_rows, stopped_epochs),
                        active=state["active"], w_out=st.flat[:, st.out_sl])
            epoch += 1
            if not bool(state["active"].any()):
                break
    wall = time.perf_counter() - t0
    result = assemble(st, config, recorder, epoch_rows, state["diverged"].cpu().numpy(),
                      state["div_step"].cpu().numpy(), stopped_rows, stopped_epochs, step, wall)
    result.engine = f"fast/{backend}"
    return result


def warn_fallback(config: PackConfig) -> None:
    """Say so when ``engine: fast`` was asked for and the pack trains with the eager engine."""
    reason = fast_unsupported(config)
    if reason is not None and config.engine == "fast":
        warnings.warn(f"engine 'fast' does not cover this pack ({reason}); training with the eager engine",
                      stacklevel=3)
