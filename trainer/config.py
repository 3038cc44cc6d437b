"""Typed configuration of a training pack: K members of one architecture trained at once.

Every member has its own seed (initialisation and data order), learning rate, regularizer
kind and coefficients. Validation happens here, once; the training code trusts it.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

Family = Literal["rnn", "lstm", "gru", "diag_rnn"]
RegKind = Literal["none", "l1", "l2", "sl1", "tikhonov"]
RegScope = Literal["output", "all"]
OptimizerKind = Literal["sgd", "projected_gd", "adam", "prox_sgd"]
DType = Literal["float32", "float64"]
LossKind = Literal["auto", "cross_entropy", "squared_error"]
Reduction = Literal["mean", "sum"]
Engine = Literal["eager", "fast", "auto"]
FastBackend = Literal["auto", "eager", "compile", "cuda_graph", "native", "triton"]
#: the fast engine's backends that run on CUDA only
CUDA_BACKENDS = ("cuda_graph", "triton")
#: a torch device this project trains on: auto (CUDA when present), cpu, cuda, cuda:N
DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"


def _check_device(value: str) -> str:
    if not re.fullmatch(DEVICE_PATTERN, value):
        raise ValueError(f"must be auto, cpu, cuda or cuda:N, not {value!r}")
    return value


Device = Annotated[str, AfterValidator(_check_device), Field(json_schema_extra={"pattern": DEVICE_PATTERN})]
Precision = Literal["float32", "tf32", "bf16"]


class MemberConfig(BaseModel):
    """One trial inside a pack."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    lr: float = Field(gt=0, description="learning rate eta (eq. 17)")
    reg: RegKind = "none"
    lam: float = Field(0.0, ge=0, description="regularization coefficient lambda (eq. 15)")
    alpha: float = Field(0.01, gt=0, description="smoothing width alpha of h_alpha (eq. 14)")
    scope: RegScope = Field("output", description="penalize W_out only (paper) or all weights")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seeds the initialisation and the data order")
    tikhonov_beta: Union[Literal["paper", "bound"], float] = Field(
        "paper", description="beta of the Tikhonov regularizer: 17/161 (paper), 1 (bound) or a number")
    tikhonov_norm: Literal["spectral", "frobenius"] = "spectral"
    tikhonov_lambda1: float = Field(1.0, ge=0, description="weight of (rho_h^2 - 1)_+ (eq. 57)")
    tikhonov_lambda2: float = Field(1.0, ge=0, description="weight of (beta ||W_oh|| - 1)_+ (eq. 57)")
    rho: float = Field(1.0, gt=0, description="projected GD radius for the recurrent weights (rho/sqrt(m))")
    rho_u: float = Field(1.0, gt=0, description="projected GD radius for the input weights (rho_u/sqrt(m))")

    @model_validator(mode="after")
    def _check_beta(self) -> "MemberConfig":
        if isinstance(self.tikhonov_beta, float) and self.tikhonov_beta <= 0:
            raise ValueError("tikhonov_beta must be 'paper', 'bound' or a positive number")
        return self


class PackConfig(BaseModel):
    """Architecture and training settings shared by every member of a pack."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    family: Family = "gru"
    hidden: int = Field(32, ge=1, le=1024)
    bias: bool = Field(True, description="gate biases (Algorithm 1); False gives eq. 7-10")
    init_scale: float = Field(0.5, gt=0, description="weights start U[-a, a] (paper: a = 0.5)")
    optimizer: OptimizerKind = "sgd"
    adam_betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int | None = Field(32, ge=1, le=1_000_000,
                                   description="None trains full batch; 1 is Algorithm 1's per-sample SGD")
    loss: LossKind = Field("auto", description="cross_entropy (softmax) | squared_error (eq. 11: sigmoid "
                                               "output for classes, linear for regression) | auto")
    reduction: Reduction = Field("mean", description="mean over the batch, or sum over it as eq. 15")
    epochs: int | None = Field(100, ge=1, le=100_000)
    max_steps: int | None = Field(None, ge=1, le=100_000_000, description="stop after this many updates")
    dtype: DType = "float32"
    device: Device = Field("auto", description="'auto' picks CUDA when present, else CPU; cpu, cuda or cuda:N")
    trace_every: int = Field(1, ge=1, description="record every n-th iteration")
    train_readout: bool = Field(False, description="diag_rnn only: train the 1/sqrt(m) readout too "
                                                   "(the rnn-gd-convergence paper keeps it fixed)")
    engine: Engine = Field("auto", description="eager: the reference loop; fast: one compiled step "
                           "(trainer.step); auto: fast where the native CPU kernels run (every family), else "
                           "eager (on CUDA too, until the captured step has been measured on a GPU)")
    fast_backend: FastBackend = Field("auto", description="how the fast engine runs its step: eager (the function "
                                      "as it is), compile (torch.compile), cuda_graph (compiled and captured, CUDA), "
                                      "native (fused C++ kernels, CPU, every family), triton (fused Triton kernels, "
                                      "CUDA, every family, the step captured); auto: triton on CUDA where it "
                                      "applies, else cuda_graph; native on CPU where it applies, else compile")
    precision: Precision = Field("float32", description="float32 (exact, default); tf32 matmuls or bf16 "
                                 "autocast of the forward/backward, opt-in, fast engine only")
    members: list[MemberConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "PackConfig":
        if self.epochs is None and self.max_steps is None:
            raise ValueError("give epochs or max_steps")
        for i, m in enumerate(self.members):
            if m.reg == "tikhonov" and self.optimizer == "prox_sgd":
                raise ValueError(f"members[{i}].reg: prox_sgd has no proximal map for tikhonov")
            if m.reg == "tikhonov" and self.family != "lstm":
                raise ValueError(f"members[{i}].reg: tikhonov is defined for the lstm family only, not {self.family}")
        if self.precision != "float32" and self.dtype != "float32":
            raise ValueError(f"precision: {self.precision} applies to float32 training only")
        if self.precision != "float32" and self.engine == "eager":
            raise ValueError(f"precision: {self.precision} needs engine 'fast' or 'auto'")
        if self.fast_backend == "triton" and self.precision == "bf16":
            raise ValueError("fast_backend: triton multiplies in float32 (exact) or tf32; precision bf16 needs "
                             "another backend")
        if self.fast_backend == "native" and self.precision != "float32":
            raise ValueError(f"fast_backend: native trains in exact {self.dtype}; precision {self.precision} needs "
                             "another backend")
        if self.family == "diag_rnn" and self.hidden % 2:
            raise ValueError("hidden: diag_rnn needs an even width for the symmetric initialisation")
        return self

    @property
    def size(self) -> int:
        return len(self.members)
