"""The packed training loop: ``train_pack(task, config) -> PackResult``.

One code path for K = 1 and K > 1. Per step: gather each member's minibatch (its own data
order), forward + backward through time for the whole pack, add the per-member penalty
gradient, take the per-member optimizer step, mask members that diverged or were stopped,
record the trace row on the device. Per epoch: evaluate train/test metrics and the full
training-set E, copy the trace to the host, call ``on_epoch``.

Losses (``config.loss``, see :func:`data_loss`): classification softmax cross-entropy (default)
or the paper's squared error on a sigmoid output (eq. 11); regression 1/2 ||y_hat_n - t_n||^2
(linear output). ``config.reduction`` averages them over the batch (``mean``, default) or sums
them (``sum``, eq. 15, whose step is B times larger). E = E_data + penalty; the per-epoch E on
the whole training split uses the same reduction (a sum over all N samples under ``sum``).
The reported metric is accuracy, or MSE = mean over samples and outputs of (y_hat - t)^2 (eq. 43).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Callable, Iterable, Optional

import numpy as np
import torch

from trainer.assemble import assemble
from trainer.config import PackConfig
from trainer.data_order import DataOrder
from trainer.diagnostics import tail_start
from trainer.models import Family, make_family
from trainer.optimizers import Optimizer
from trainer.regularizers import TIKHONOV_DENOM_FLOOR, Penalty
from trainer.result import EPOCH_COLUMNS, SPARSITY_THRESHOLDS, PackResult
from trainer.tasks import Task
from trainer.trace import SPARSITY_EPS, TraceRecorder

Tensor = torch.Tensor
OnEpoch = Callable[[int, dict], Optional[Iterable[int]]]

#: Splits up to this many samples (train + test) are evaluated in one concatenated pass.
EVAL_CHUNK = 4096
#: (member x sample) rows per forward chunk when evaluating large splits (bounds memory).
EVAL_ROWS_LARGE = 16384
#: (member x sample) rows per forward chunk when evaluating small splits.
EVAL_ROWS = 2048


def _rownorm(a: Tensor) -> Tensor:
    """Euclidean norm of each member's row; mul + sum is several times faster than vector_norm here."""
    return (a * a).sum(1).sqrt()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _log_softmax_classes(out: Tensor) -> Tensor:
    """log_softmax over the class axis of ``out`` (K, B, C). On CPU it runs on a (K, C, B) copy: with
    few classes the last-axis kernel is 5-9x slower than the one along a middle axis (K = 64, B = 32
    and 150, C = 3)."""
    if out.device.type != "cpu":
        return torch.log_softmax(out, dim=-1)
    return torch.log_softmax(out.transpose(1, 2).contiguous(), dim=1).transpose(1, 2)


def data_loss(out: Tensor, y: Tensor, kind: str, need_dout: bool = True, *, loss: str = "auto",
              reduction: str = "mean"):
    """Per-member data loss (K,) of a batch and, optionally, dE_data/d out (K, B, C).

    ``loss``: ``cross_entropy`` (softmax, classification), ``squared_error`` (eq. 11: 1/2 sum over
    outputs of (sigmoid(o) - onehot)^2 for classes, (o - t)^2 with a linear output for regression)
    or ``auto`` (cross-entropy for classes, squared error for regression). ``reduction``: ``mean``
    over the batch (1/B sum_n) or ``sum`` over it (eq. 15: E = sum_n sigma_n).
    """
    K, B, _ = out.shape
    scale = 1.0 if reduction == "sum" else 1.0 / B
    if kind == "classification":
        if y.dim() == 1:
            y = y.expand(K, -1)
        if loss == "squared_error":
            target = torch.zeros_like(out).scatter_(-1, y.unsqueeze(-1), 1.0)
            s = torch.sigmoid(out)
            diff = s - target
            value = 0.5 * (diff * diff).sum((1, 2)) * scale
            return value, (diff * s * (1 - s) * scale if need_dout else None)
        logp = _log_softmax_classes(out)
        value = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).sum(1) * scale
        if not need_dout:
            return value, None
        dout = logp.exp()
        dout.scatter_add_(-1, y.unsqueeze(-1), torch.full((K, B, 1), -1.0, dtype=out.dtype, device=out.device))
        return value, dout * scale
    diff = out - y
    value = 0.5 * (diff * diff).sum((1, 2)) * scale
    return value, (diff * scale if need_dout else None)


class _Pack:
    """The state of one training run (kept together so helpers stay small)."""

    def __init__(self, task: Task, config: PackConfig):
        self.task, self.config = task, config
        self.device = resolve_device(config.device)
        self.dtype = torch.float64 if config.dtype == "float64" else torch.float32
        self.K = config.size
        self.family: Family = make_family(config.family, task.n_inputs, config.hidden, task.n_outputs,
                                          config.bias)
        lay = self.family.layout
        self.flat = self.family.init([m.seed for m in config.members], config.init_scale, self.dtype,
                                     self.device)
        self.p = lay.views(self.flat)
        self.penalty = Penalty(self.family, config.members, self.dtype, self.device)
        self.opt = Optimizer(config, self.family, self.flat)
        self.proximal = config.optimizer == "prox_sgd"
        self.grad_mask = None
        if config.family == "diag_rnn" and not config.train_readout:
            self.grad_mask = torch.as_tensor(~lay.mask(("out",)), dtype=self.dtype, device=self.device)
        self.out_sl = lay.slice("W_out")
        self.median_out0 = self.flat[:, self.out_sl].abs().median(1).values.cpu().numpy()
        self.w_out_path0 = w_out_stats(self.flat[:, self.out_sl]).cpu().numpy()
        self.tikhonov_init = self._tikhonov_feasibility() if self.penalty.has_tik else None
        wm = lay.mask(("in", "rec", "out"))
        self.weight_idx = torch.as_tensor(np.flatnonzero(wm), device=self.device)
        self.weight_share = torch.as_tensor(wm / wm.sum(), dtype=self.dtype, device=self.device)
        self.cls = task.kind == "classification"
        if not self.cls and config.loss == "cross_entropy":
            raise ValueError(f"loss: cross_entropy needs a classification task; {task.name} is regression")
        ydt = torch.int64 if self.cls else self.dtype
        t = lambda a, dt: torch.as_tensor(np.asarray(a), dtype=dt, device=self.device)  # noqa: E731
        self.x_train, self.y_train = t(task.x_train, self.dtype), t(task.y_train, ydt)
        self.x_probe = None if task.x_probe is None else t(task.x_probe, self.dtype)
        self.max_input_norm = float(np.sqrt(np.square(np.asarray(task.x_train, dtype=np.float64)).sum(-1)).max()) \
            if len(task.x_train) else 0.0
        self.x_test, self.y_test = t(task.x_test, self.dtype), t(task.y_test, ydt)
        self._x_all = None
        self.loss_kw = {"loss": config.loss, "reduction": config.reduction}
        if not self.cls and self.y_train.dim() == 1:
            self.y_train, self.y_test = self.y_train[:, None], self.y_test[:, None]

    def _tikhonov_feasibility(self) -> dict[str, np.ndarray]:
        """rho_h at initialisation, and the init_scale that would start at rho_h = 0.9; warns when a
        Tikhonov member starts outside the paper's feasible region rho_h < 1 (where R is floored)."""
        rho = self.penalty.tikhonov_rho_h(self.flat).cpu().numpy()
        scale = (self.penalty.feasible_scale(self.flat) * self.config.init_scale).cpu().numpy()
        bad = [k for k, m in enumerate(self.config.members) if m.reg == "tikhonov" and rho[k] >= 1]
        if bad:
            k = bad[0]
            warnings.warn(
                f"{len(bad)} Tikhonov member(s) start outside the feasible region rho_h < 1 (member {k}: "
                f"rho_h = {rho[k]:.3g}): 1 - rho_h^2 is floored at {TIKHONOV_DENOM_FLOOR:g}, inflating R, and "
                f"lambda1 (rho_h^2 - 1)_+ dominates; init_scale <= {scale[k]:.3g} starts at rho_h = 0.9",
                stacklevel=3)
        return {"rho_h": rho, "feasible_init_scale": scale}

    # -- one gradient evaluation ------------------------------------------------------------
    def data_grad(self, xb: Tensor, yb: Tensor):
        fam, kind = self.family, self.task.kind
        if fam.manual:
            out, cache = fam.forward(self.p, xb, keep=True)
            loss, dout = data_loss(out, yb, kind, **self.loss_kw)
            return loss, fam.layout.flatten(fam.backward(self.p, xb, cache, dout))
        with torch.enable_grad():
            leaf = self.flat.detach().requires_grad_(True)
            out, _ = fam.forward(fam.layout.views(leaf), xb)
            loss, _ = data_loss(out, yb, kind, need_dout=False, **self.loss_kw)
            (g,) = torch.autograd.grad(loss.sum(), leaf)
        return loss.detach(), g

    # -- evaluation on a whole split ---------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(data loss (K,), metric (K,)) on a whole split, in chunks."""
        N = x.shape[0]
        loss_sum = torch.zeros(self.K, dtype=self.dtype, device=self.device)
        metric_sum = torch.zeros_like(loss_sum)
        chunk = max(16, EVAL_ROWS_LARGE // self.K)
        for a in range(0, N, chunk):
            xb, yb = x[a:a + chunk], y[a:a + chunk]
            out, _ = self.family.forward(self.p, xb)
            loss, _ = data_loss(out, yb, self.task.kind, need_dout=False, loss=self.config.loss)
            n = xb.shape[0]
            loss_sum += loss * n
            if self.cls:
                metric_sum += (out.argmax(-1) == yb).to(self.dtype).sum(1)
            else:
                metric_sum += ((out - yb) ** 2).mean(-1).sum(1)
        return loss_sum / N * self.split_scale(N), metric_sum / N

    @torch.no_grad()
    def evaluate_splits(self):
        """evaluate() on the training and the test split (one pass over both when they are small)."""
        n_tr, n_te = self.x_train.shape[0], self.x_test.shape[0]
        if n_tr + n_te > EVAL_CHUNK or n_te == 0:
            return self.evaluate(self.x_train, self.y_train), self.evaluate(self.x_test, self.y_test)
        if self._x_all is None:
            self._x_all = torch.cat([self.x_train, self.x_test])
        # chunks of about EVAL_ROWS (member, sample) rows keep the intermediates cache-resident
        step = max(16, EVAL_ROWS // self.K)
        out = torch.cat([self.family.forward(self.p, self._x_all[a:a + step])[0]
                         for a in range(0, n_tr + n_te, step)], dim=1)
        res = []
        for o, y in ((out[:, :n_tr], self.y_train), (out[:, n_tr:], self.y_test)):
            loss, _ = data_loss(o, y, self.task.kind, need_dout=False, loss=self.config.loss)
            loss = loss * self.split_scale(y.shape[0])
            if self.cls:
                metric = (o.argmax(-1) == y).to(self.dtype).mean(1)
            else:
                metric = ((o - y) ** 2).mean((1, 2))
            res.append((loss, metric))
        return res

    def split_scale(self, n: int) -> float:
        """Factor from the mean per-sample loss of a split of ``n`` samples to E_data under the reduction."""
        return float(n) if self.config.reduction == "sum" else 1.0

    def sparsity(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        # lt_ on the float |w| writes 1.0 / 0.0 in place: the same values as (|w| < eps).to(dtype),
        # ~15x faster here than a bool comparison followed by a dtype conversion
        small = flat.abs().lt_(SPARSITY_EPS)
        return small[:, self.out_sl].mean(1), small @ self.weight_share



def w_out_stats(w_out: Tensor) -> Tensor:
    """``(len(WEIGHT_PATH_STATS), K)``: ||W_out|| and the share of |W_out| below each threshold of
    ``SPARSITY_THRESHOLDS`` (eq. 42's 1e-5, then 1e-3 and 1e-2), per member."""
    a = w_out.abs()
    return torch.stack([_rownorm(w_out)] + [(a < eps).to(w_out.dtype).mean(1) for eps in SPARSITY_THRESHOLDS])


def close_epoch(epoch_rows: list, metrics, *, K: int, epoch: int, step: int, t0: float, on_epoch,
                stopped: tuple[list, list], active, w_out: Tensor) -> None:
    """End an epoch (both engines): append its row (train/test metric, loss, wall time, and the
    W_out statistics of :func:`w_out_stats`) and let ``on_epoch`` stop members, recording the
    step and epoch each one stopped at."""
    tr_metric, te_metric, tr_loss, tr_pen = metrics
    host = torch.cat((torch.stack((tr_metric, te_metric, tr_loss + tr_pen, tr_loss, tr_pen)),
                      w_out_stats(w_out))).cpu().numpy()
    row = {"epoch": np.full(K, epoch, dtype=np.int64), "train_metric": host[0], "test_metric": host[1],
           "train_loss": host[2], "wall_time": np.full(K, time.perf_counter() - t0),
           "_data_loss": host[3], "_penalty": host[4], "_steps": np.full(K, step), "_w_out": host[5:]}
    epoch_rows.append(row)
    if on_epoch is None:
        return
    stopped_rows, stopped_epochs = stopped
    for k in on_epoch(epoch, {c: row[c].copy() for c in EPOCH_COLUMNS}) or ():
        k = int(k)
        if stopped_rows[k] is None:
            stopped_rows[k], stopped_epochs[k] = step, epoch
            active[k] = False

def train_pack(task: Task, config: PackConfig, *, on_epoch: OnEpoch | None = None) -> PackResult:
    """Train the K members of ``config`` on ``task`` at once; see the module docstring.

    ``config.engine`` picks this loop (``eager``, the reference) or ``trainer.step`` (``fast``)."""
    if config.engine != "eager":
        from trainer.step import resolve_engine, train_pack_fast, warn_fallback

        if resolve_engine(config, resolve_device(config.device)) == "fast":
            return train_pack_fast(task, config, on_epoch=on_epoch)
        warn_fallback(config)
    st = _Pack(task, config)
    K, flat, dev = st.K, st.flat, st.device
    N = st.x_train.shape[0]
    B = N if config.batch_size is None else min(config.batch_size, N)
    full_batch = B >= N
    steps_per_epoch = math.ceil(N / B)
    order = DataOrder([m.seed for m in config.members], N)
    active = torch.ones(K, dtype=torch.bool, device=dev)
    diverged = torch.zeros(K, dtype=torch.bool, device=dev)
    div_step = torch.full((K,), -1, dtype=torch.int64, device=dev)
    stopped_rows: list[int | None] = [None] * K  # trace rows kept for members stopped by on_epoch
    stopped_epochs: list[int | None] = [None] * K
    recorder = TraceRecorder(K)
    epoch_rows: list[dict[str, np.ndarray]] = []
    projected = config.optimizer == "projected_gd"
    zero = torch.zeros((), dtype=st.dtype, device=dev)
    step, epoch = 0, 0
    planned = (config.epochs or math.inf) * steps_per_epoch
    planned = int(min(planned, config.max_steps or math.inf))
    tail_step = tail_start(planned)  # W^s kept for Theorem 3's ||W^s - W^K||
    st.w_tail = None
    t0 = time.perf_counter()

    while True:
        if config.epochs is not None and epoch >= config.epochs:
            break
        if config.max_steps is not None and step >= config.max_steps:
            break
        if not full_batch:
            perms = torch.as_tensor(order.next_epoch(), device=dev)
        for s in range(steps_per_epoch):
            if config.max_steps is not None and step >= config.max_steps:
                break
            if full_batch:
                xb, yb = st.x_train, st.y_train
            else:
                idx = perms[:, s * B:(s + 1) * B]
                xb, yb = st.x_train[idx], st.y_train[idx]
            if step == tail_step:
                st.w_tail = flat.clone()
            dloss, g = st.data_grad(xb, yb)
            pen, pg = st.penalty.value_and_grad(flat, need_grad=not st.proximal)
            for sl, part in pg:
                g[:, sl] += part
            if st.grad_mask is not None:
                g = g * st.grad_mask
            loss = dloss + pen
            gnorm = _rownorm(g)
            gout = _rownorm(g[:, st.out_sl])
            wnorm = _rownorm(flat)
            sp_out, sp_all = st.sparsity(flat)
            delta = st.opt.step(flat, g)
            if st.proximal:  # W^{k+1} = prox_{eta lambda R}(W^k - eta grad E_data)
                delta = st.penalty.prox(flat + delta, st.opt.lr) - flat
            # a member is finished when E, its gradient or its update stops being finite
            # (norms are computed as sqrt(sum w^2): an overflow there counts as divergence too)
            dnorm = _rownorm(delta)
            finite = torch.isfinite(loss) & torch.isfinite(gnorm) & torch.isfinite(dnorm)
            newly = active & ~finite
            diverged |= newly
            div_step = torch.where(newly, step, div_step)
            active = active & finite
            delta = torch.where(active.unsqueeze(1), delta, zero)
            if projected:
                old = flat.clone()
                flat.add_(delta)
                st.opt.project(flat)
                delta = flat - old
                unorm = _rownorm(delta)
            else:
                flat.add_(delta)
                # the norm of a masked (zero) row is 0, of any other row the dnorm computed above
                unorm = torch.where(active, dnorm, zero)
            recorder.record(step, epoch, torch.stack(
                (loss, dloss, pen, gnorm, gout, wnorm, unorm, sp_out, sp_all)))
            step += 1
        # -- end of epoch ----------------------------------------------------------------
        (tr_loss, tr_metric), (_, te_metric) = st.evaluate_splits()
        tr_pen, _ = st.penalty.value_and_grad(flat, need_grad=False)
        recorder.flush()
        close_epoch(epoch_rows, (tr_metric, te_metric, tr_loss, tr_pen), K=K, epoch=epoch, step=step,
                    t0=t0, on_epoch=on_epoch, stopped=(stopped_rows, stopped_epochs), active=active,
                    w_out=flat[:, st.out_sl])
        epoch += 1
        if not bool(active.any()):
            break
    wall = time.perf_counter() - t0
    st.full_batch = full_batch
    return assemble(st, config, recorder, epoch_rows, diverged.cpu().numpy(), div_step.cpu().numpy(),
                    stopped_rows, stopped_epochs, step, wall)
