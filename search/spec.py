"""The experiment spec: one pydantic model, validated once at the edge (CLI or REST).

An experiment trains every *variant* (a model family plus regularizer, e.g. SL1-GRU) on one
dataset, over the configurations a *search* proposes, each configuration repeated over
``seeds`` (and CV folds). Every (variant, configuration, seed, fold) is one trial.
"""

from __future__ import annotations

import json
import math
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictInt, ValidationInfo,
                      field_validator, model_validator)
from pydantic.json_schema import SkipJsonSchema

from trainer.config import (CUDA_BACKENDS, Device, Family, LossKind, MemberConfig, OptimizerKind, PackConfig,
                            Reduction, RegKind, RegScope)

#: Hyperparameters of one member (one trial) inside a pack.
MEMBER_PARAMS = ("lr", "lam", "alpha", "rho", "rho_u", "tikhonov_beta",
                 "tikhonov_lambda1", "tikhonov_lambda2")
#: Hyperparameters shared by a pack: configurations differing in these train in different packs.
PACK_PARAMS = ("hidden", "batch_size", "init_scale", "optimizer", "epochs", "bias", "loss", "reduction",
               "train_readout")
SEARCHABLE = MEMBER_PARAMS + PACK_PARAMS
#: Final metrics an objective may name (see trainer.result.FINAL_KEYS).
OBJECTIVE_METRICS = ("val_metric", "train_metric", "sparsity_out", "sparsity_all", "loss",
                     "data_loss", "wall_time")

Scalar = Union[bool, int, float, str]
#: Largest seed (numpy and torch accept 32-bit seeds).
MAX_SEED = 2**31 - 1


def _accepted(annotation: Any) -> tuple[set, set, tuple[set, set]]:
    """The plain types and literal values an annotation accepts (through Union, Optional,
    Annotated and Literal), and the same for the items of a list it accepts."""
    origin = get_origin(annotation)
    if origin is Literal:
        return set(), set(get_args(annotation)), (set(), set())
    if origin is Annotated:
        return _accepted(get_args(annotation)[0])
    if origin is list:
        return {list}, set(), _accepted(get_args(annotation)[0])[:2] if get_args(annotation) else (set(), set())
    if origin in (Union, UnionType):
        kinds, literals, item_kinds, item_literals = set(), set(), set(), set()
        for arg in get_args(annotation):
            k, lit, (ik, il) = _accepted(arg)
            kinds, literals, item_kinds, item_literals = kinds | k, literals | lit, item_kinds | ik, item_literals | il
        return kinds, literals, (item_kinds, item_literals)
    plain = origin or annotation
    return ({plain} if isinstance(plain, type) else set()), set(), (set(), set())


_SCALARS = {bool, int, float, str}


def _scalar_fits(value: Any, kinds: set, literals: set) -> bool:
    """Whether a scalar ``value`` is of a type the field declares (int counts as float)."""
    if type(value) not in _SCALARS or not kinds & _SCALARS:
        return True
    if any(value == lit and type(value) is type(lit) for lit in literals):
        return True
    return type(value) in kinds or (type(value) is int and float in kinds)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)




def _check_scalars(cls, value: Any, info: ValidationInfo) -> Any:
    """pydantic's lax mode reads ``true`` as 1, ``"0.5"`` as 0.5 and ``1`` as true; a spec says
    what it means, so a scalar of the wrong JSON type is refused (an integer is a number)."""
    kinds, literals, items = _accepted(cls.model_fields[info.field_name].annotation)
    allowed = items if isinstance(value, list) else (kinds, literals)
    for v in value if isinstance(value, list) else [value]:
        if not _scalar_fits(v, *allowed):
            want = " or ".join(sorted(t.__name__ for t in allowed[0] & _SCALARS))
            raise ValueError(f"expected {want}, got {json.dumps(v)}")
    return value


class _Typed(_Strict):
    """A spec model whose scalars must have their declared JSON type (see :func:`_check_scalars`)."""

    _scalars = field_validator("*", mode="before")(classmethod(_check_scalars))


class _Range(_Strict):
    """A [low, high] range; subclasses fix the type of the bounds."""

    _scalars = field_validator("low", "high", mode="before", check_fields=False)(classmethod(_check_scalars))

    @model_validator(mode="after")
    def _order(self):
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self


class LogUniform(_Range):
    type: Literal["log"]
    low: float = Field(gt=0)
    high: float = Field(gt=0)


class Uniform(_Range):
    type: Literal["uniform"]
    low: float
    high: float


class IntRange(_Range):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False


class Choice(_Strict):
    type: Literal["choice", "grid"]
    values: list[Scalar] = Field(min_length=1, max_length=1000)


ParamSpace = Annotated[Union[LogUniform, Uniform, IntRange, Choice], Field(discriminator="type")]


def _known_hyperparameters(value: dict) -> dict:
    unknown = sorted(set(value) - set(SEARCHABLE))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown}; allowed: {list(SEARCHABLE)}")
    return value


#: A search space: hyperparameter name (one of SEARCHABLE) -> its distribution.
SearchSpace = Annotated[dict[str, ParamSpace], AfterValidator(_known_hyperparameters)]


class SplitsSpec(_Typed):
    """The train/test splits every configuration is replicated over (crossed with the seeds).

    ``holdout``: one seeded split (seed ``seed``); ``random``: ``n`` repeated (stratified for
    classification) random splits, split i seeded by ``seed + i``; ``kfold``: the ``n`` test folds
    of one seeded (stratified) k-fold of the whole dataset. Test rows of a split never reach
    model selection (see :class:`ValidationSpec`).
    """

    kind: Literal["holdout", "random", "kfold"] = "holdout"
    n: int = Field(1, ge=1, le=100, description="random: number of splits; kfold: k (>= 2)")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="seeds the splits (default: dataset.split_seed)")
    test_fraction: float | None = Field(None, gt=0, lt=1, description="holdout/random: test share "
                                                                      "(default: the dataset's)")

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "holdout" and self.n != 1:
            raise ValueError("splits.n: a holdout is one split; use kind random or kfold for more")
        if self.kind == "kfold" and self.n < 2:
            raise ValueError("splits.n: kfold needs n >= 2")
        if self.kind == "kfold" and self.test_fraction is not None:
            raise ValueError("splits.test_fraction: a k-fold's test share is 1/n")
        return self


class DatasetSpec(_Typed):
    name: str = Field(min_length=1, max_length=64, examples=["iris"])
    framing: str | None = Field(None, description="features_as_steps | single_step | rows | window:k")
    options: dict[str, Scalar] = Field(default_factory=dict, description="passed to the loader")
    cv_folds: int | None = Field(None, ge=2, le=20, description="shorthand for search.validation "
                                                                "{kind: cv, folds: k} (selection only)")
    split_seed: int = Field(0, ge=0, le=MAX_SEED, description="seeds the train/test split (default of splits.seed)")
    splits: SplitsSpec = Field(default_factory=SplitsSpec)

    @property
    def splits_seed(self) -> int:
        return self.split_seed if self.splits.seed is None else self.splits.seed

    def split_options(self, split: int) -> tuple[int, dict[str, Any]]:
        """``(seed, options)`` for ``load_task`` giving split ``split`` (train part + test part)."""
        options = dict(self.options)
        if self.framing:
            options["framing"] = self.framing
        sp = self.splits
        if sp.test_fraction is not None:
            options["test_fraction"] = sp.test_fraction
        if sp.kind == "kfold":
            options.update(split_fold=split, n_split_folds=sp.n)
            return self.splits_seed, options
        return self.splits_seed + split, options


class VariantSpec(_Typed):
    """One model of the comparison, e.g. ``{name: SL1-GRU, family: gru, reg: sl1}``."""

    name: str = Field(min_length=1, max_length=64)
    family: Family
    reg: RegKind = "none"
    params: Annotated[dict[str, Scalar], AfterValidator(_known_hyperparameters)] = Field(
        default_factory=dict, description="fixed hyperparameters")
    space: SearchSpace = Field(default_factory=dict, description="overrides search.space")


class TrainingSpec(_Typed):
    """Defaults for every variant (the paper's Table 2 settings go here)."""

    hidden: int = Field(32, ge=1, le=1024)
    bias: bool = True
    init_scale: float = Field(0.5, gt=0)
    optimizer: OptimizerKind = "sgd"
    batch_size: int | None = Field(32, ge=1, description="null trains full batch; 1 is Algorithm 1 (per sample)")
    loss: LossKind = Field("auto", description="cross_entropy | squared_error (eq. 11) | auto")
    reduction: Reduction = Field("mean", description="mean over the batch, or sum as eq. 15")
    train_readout: bool = Field(False, description="diag_rnn: train the 1/sqrt(m) readout (the paper fixes it)")
    epochs: int = Field(100, ge=1, le=100_000)
    max_steps: int | None = Field(None, ge=1)
    dtype: Literal["float32", "float64"] = "float32"
    device: Device = Field("auto", description="auto (CUDA when the worker has it) | cpu | cuda | cuda:N")
    trace_every: int = Field(1, ge=1)
    engine: Literal["eager", "fast", "auto"] = Field("auto", description="trainer loop: eager (reference), fast "
                                                     "(one compiled/captured step), auto (fast on CPU where the native "
                                                     "kernels run; eager on CUDA until the captured step has "
                                                     "been measured on a GPU)")
    fast_backend: Literal["auto", "eager", "compile", "cuda_graph", "native", "triton"] = Field(
        "auto", description="how the fast engine runs its step: eager | compile (torch.compile) | cuda_graph | "
                            "native (fused C++ kernels, CPU, every family) | triton (fused Triton kernels, CUDA) | "
                            "auto (triton on CUDA where it applies, else cuda_graph; native on CPU where it "
                            "applies, else compile)")
    precision: Literal["float32", "tf32", "bf16"] = Field("float32", description="float32 exact; tf32/bf16 opt-in")
    lr: float = Field(1e-3, gt=0)
    lam: float = Field(0.0, ge=0)
    alpha: float = Field(0.01, gt=0)
    scope: RegScope = "output"
    rho: float = Field(1.0, gt=0)
    rho_u: float = Field(1.0, gt=0)
    tikhonov_beta: Union[Literal["paper", "bound"], float] = "paper"
    tikhonov_lambda1: float = Field(1.0, ge=0)
    tikhonov_lambda2: float = Field(1.0, ge=0)

    @property
    def cuda_only(self) -> tuple[str, str] | None:
        """(field, why) when these settings train on CUDA only (a CUDA device or backend), else None."""
        if self.fast_backend in CUDA_BACKENDS:
            return "training.fast_backend", f"{self.fast_backend} runs on CUDA"
        if self.device.startswith("cuda"):
            return "training.device", f"{self.device} is a CUDA device"
        return None


class ValidationSpec(_Typed):
    """Where a search scores configurations: data carved from each split's *training* part.

    ``holdout``: a seeded (stratified) ``fraction`` of it; ``cv``: ``folds``-fold CV of it. The
    selected configuration(s) are then trained on the whole training part and evaluated once on
    the held-out test part, reported separately (``role: test``).
    """

    kind: Literal["holdout", "cv"] = "holdout"
    fraction: float = Field(0.2, gt=0, lt=1)
    folds: int = Field(5, ge=2, le=20)
    seed: int = Field(0, ge=0, description="seeds the validation carve / the folds")


class Objective(_Typed):
    """What a search optimises. ``val_metric`` is measured on validation data carved from the
    training part; the test split is never an objective (``test_metric`` is read as ``val_metric``)."""

    metric: Literal[OBJECTIVE_METRICS] = "val_metric"  # type: ignore[valid-type]
    direction: Literal["maximize", "minimize", "auto"] = Field(
        "auto", description="auto: maximize accuracy, minimize MSE/loss/time, maximize sparsity")

    @field_validator("metric", mode="before")
    @classmethod
    def _no_test_selection(cls, value: Any) -> Any:
        return "val_metric" if value == "test_metric" else value


class SearchSpec(_Typed):
    algorithm: Literal["grid", "random", "tpe", "cmaes", "nsga2"] = "grid"
    space: SearchSpace = Field(default_factory=dict)
    n_trials: int | None = Field(None, ge=1, le=100_000,
                                 description="configurations per variant (not for grid)")
    objectives: list[Objective] = Field(default_factory=lambda: [Objective()], min_length=1, max_length=4)
    sampler_seed: int = Field(0, ge=0)
    round_size: int | None = Field(None, ge=1, description="configurations asked per round (adaptive samplers)")
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    select: int = Field(1, ge=1, le=100, description="configurations per variant evaluated on the test "
                                                       "split (multi-objective: up to this many of the "
                                                       "validation Pareto set)")


class AshaSpec(_Typed):
    grace_epochs: int = Field(5, ge=1)
    reduction_factor: int = Field(3, ge=2)


class ExecutionSpec(_Typed):
    pack_size: int = Field(64, ge=1, le=4096, description=(
        "members trained together in one pack, one task on a pack worker (on GPUs, when set: the "
        "largest pack; unset, packs are as large as a GPU's memory allows)"))
    timing: Literal["packed", "solo"] = Field(
        "packed", description="packed: members share a pack (its wall time is recorded, shared); solo: every "
                              "trial trains alone (pack size 1) so its wall time is its own")
    cpus_per_pack: float = Field(1.0, gt=0)
    gpus_per_pack: Union[Literal["auto"], Annotated[float, Field(ge=0)]] = Field(
        "auto", description="GPUs per pack (fractions allowed); auto: one pack per GPU on a "
                            "cluster with GPUs, CPU packs otherwise")
    max_failures: int = Field(2, ge=0, le=10, description=(
        "retries of a pack that failed with an unknown error (infrastructure faults retry within the "
        "runner's time budget)"))
    scheduler: Literal["none", "asha"] = "none"
    asha: AshaSpec = Field(default_factory=AshaSpec)
    ray_address: str | None = Field(None, description="join this Ray cluster (else RAY_ADDRESS or local)")
    time_budget_s: float | None = Field(None, gt=0)
    inject_failure: SkipJsonSchema[dict[str, StrictInt] | None] = Field(
        None, description="test hook, not part of the public spec (refused at the edge unless the "
                          "server allows test hooks): {'pack': i, 'times': n} makes pack i fail n "
                          "times after storing its first member ('exit': 1 kills the worker instead)")


class ExperimentSpec(_Typed):
    name: str = Field(min_length=1, max_length=128, examples=["iris-table3"])
    description: str = Field("", max_length=4000)
    dataset: DatasetSpec
    variants: list[VariantSpec] = Field(min_length=1, max_length=32)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    seeds: Union[Annotated[int, Field(ge=1, le=1000)],
                 Annotated[list[Annotated[int, Field(ge=0, le=MAX_SEED)]],
                           Field(min_length=1, max_length=1000, json_schema_extra={"uniqueItems": True})]] = Field(
        1, description="a count (seeds 0..n-1) or explicit distinct seeds")
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: Union[int, list[int]]) -> Union[int, list[int]]:
        if isinstance(value, int):
            if not 1 <= value <= 1000:
                raise ValueError("seeds: a count between 1 and 1000")
        elif (not value or len(set(value)) != len(value) or min(value) < 0 or max(value) > MAX_SEED
              or len(value) > 1000):
            raise ValueError(f"seeds: 1 to 1000 distinct integers in [0, {MAX_SEED}]")
        return value

    @model_validator(mode="after")
    def _check(self) -> "ExperimentSpec":
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variants: names must be unique")
        algo = self.search.algorithm
        if algo == "grid":
            for i, v in enumerate(self.variants):
                for key, dist in self.space_for(v).items():
                    if not isinstance(dist, Choice):
                        raise ValueError(f"search.space.{key}: grid search needs 'grid' or 'choice' values "
                                         f"(variant {v.name!r} gets a {dist.type!r} range)")
        elif self.search.n_trials is None:
            raise ValueError(f"search.n_trials: required for algorithm {algo!r}")
        cuda = self.training.cuda_only
        if cuda is not None and self.execution.gpus_per_pack == 0:
            raise ValueError(f"{cuda[0]}: {cuda[1]}, but execution.gpus_per_pack is 0 (packs get no GPU)")
        if algo == "nsga2" and len(self.search.objectives) < 2:
            raise ValueError("search.objectives: nsga2 is multi-objective; give two or more")
        if algo in ("tpe", "cmaes") and len(self.search.objectives) > 1:
            raise ValueError(f"search.objectives: {algo} optimises one objective; use nsga2 for several")
        return self

    # -- derived views -------------------------------------------------------------------
    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    @property
    def split_list(self) -> list[int]:
        return list(range(self.dataset.splits.n))

    @property
    def validation(self) -> ValidationSpec:
        """The validation protocol of selection (``dataset.cv_folds`` is shorthand for inner CV)."""
        if self.dataset.cv_folds:
            return ValidationSpec(kind="cv", folds=self.dataset.cv_folds, seed=self.search.validation.seed)
        return self.search.validation

    @property
    def val_list(self) -> list[int | None]:
        """Validation folds of one split: the CV folds, or ``[None]`` for one holdout carve."""
        v = self.validation
        return list(range(v.folds)) if v.kind == "cv" else [None]

    def validation_options(self, split: int, val: int | None) -> tuple[int, dict[str, Any]]:
        """``(seed, options)`` for ``load_task``: the training part of ``split`` cut into a training
        and a validation part (returned as the task's "test" part); the test rows are not loaded."""
        seed, options = self.dataset.split_options(split)
        v = self.validation
        if v.kind == "cv":
            options.update(fold=int(val), n_folds=v.folds, fold_seed=v.seed)
        else:
            options.update(val_fraction=v.fraction, fold_seed=v.seed)
        return seed, options

    def needs_selection(self, variant: VariantSpec) -> bool:
        """Whether the variant has a choice to make: every sampler search, a grid of two or more points."""
        return self.search.algorithm != "grid" or self.configurations_per_variant(variant) > 1

    def selected_per_variant(self, variant: VariantSpec) -> int:
        return min(self.search.select, self.configurations_per_variant(variant))

    def space_for(self, variant: VariantSpec) -> dict[str, Any]:
        """The search space of one variant: global space plus its overrides, minus the
        hyperparameters the variant fixes or does not use (e.g. alpha for a plain GRU)."""
        merged = {**self.search.space, **variant.space}
        fixed = set(variant.params) - set(variant.space)
        optimizer = variant.params.get("optimizer", self.training.optimizer)
        return {k: d for k, d in merged.items()
                if k not in fixed and _relevant(k, variant.reg, str(optimizer))}

    def member_config_for(self, variant: VariantSpec, params: dict[str, Any], seed: int) -> MemberConfig:
        values = {k: getattr(self.training, k) for k in MEMBER_PARAMS}
        values.update({k: v for k, v in variant.params.items() if k in MEMBER_PARAMS})
        values.update({k: v for k, v in params.items() if k in MEMBER_PARAMS})
        if variant.reg == "none":
            values["lam"] = 0.0
        return MemberConfig(reg=variant.reg, scope=self.training.scope, seed=seed, **values)

    def pack_settings_for(self, variant: VariantSpec, params: dict[str, Any]) -> dict[str, Any]:
        """Pack-level settings of a configuration (the grouping key of packs)."""
        t = self.training
        values: dict[str, Any] = {
            "family": variant.family, "hidden": t.hidden, "bias": t.bias, "init_scale": t.init_scale,
            "optimizer": t.optimizer, "batch_size": t.batch_size, "epochs": t.epochs,
            "loss": t.loss, "reduction": t.reduction, "train_readout": t.train_readout,
            "max_steps": t.max_steps, "dtype": t.dtype, "device": t.device, "trace_every": t.trace_every,
            "engine": t.engine, "fast_backend": t.fast_backend, "precision": t.precision,
        }
        values.update({k: v for k, v in variant.params.items() if k in PACK_PARAMS})
        values.update({k: v for k, v in params.items() if k in PACK_PARAMS})
        return values

    def pack_config_for(self, variant: VariantSpec, params: dict[str, Any],
                        members: list[MemberConfig]) -> PackConfig:
        return PackConfig(members=members, **self.pack_settings_for(variant, params))

    def objective_directions(self, task_kind: str) -> list[str]:
        out = []
        for obj in self.search.objectives:
            if obj.direction != "auto":
                out.append(obj.direction)
            elif obj.metric in ("val_metric", "train_metric"):
                out.append("maximize" if task_kind == "classification" else "minimize")
            elif obj.metric.startswith("sparsity"):
                out.append("maximize")
            else:
                out.append("minimize")
        return out

    def configurations_per_variant(self, variant: VariantSpec) -> int:
        if self.search.algorithm == "grid":
            return math.prod(len(d.values) for d in self.space_for(variant).values())
        return int(self.search.n_trials or 1)

    def count_trials(self) -> int:
        """Planned trials: selection (configurations x seeds x splits x validation folds, for variants
        with a choice) plus test (selected configurations x seeds x splits), over variants."""
        reps = len(self.seed_list) * len(self.split_list)
        total = 0
        for v in self.variants:
            if self.needs_selection(v):
                total += self.configurations_per_variant(v) * reps * len(self.val_list)
            total += self.selected_per_variant(v) * reps
        return total


def _relevant(param: str, reg: str, optimizer: str) -> bool:
    if param == "lam":
        return reg != "none"
    if param == "alpha":
        return reg == "sl1"
    if param in ("rho", "rho_u"):
        return optimizer == "projected_gd"
    if param.startswith("tikhonov_"):
        return reg == "tikhonov"
    return True


def load_spec(text: str, fmt: Literal["yaml", "json"] = "yaml") -> ExperimentSpec:
    """Parse and validate a spec from YAML or JSON text (raises ValueError / ValidationError)."""
    try:
        data = yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ValueError(f"spec is not valid {fmt}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("spec must be a mapping at the top level")
    return ExperimentSpec.model_validate(data)
