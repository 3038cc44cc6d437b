"""The machinery every dataset shares: raw arrays -> split -> impute/scale -> framing -> Task.

A dataset is described by a :class:`DatasetSpec` (catalogue entry + a raw loader). The raw
loader returns *unscaled* arrays (:class:`Raw`) and is cached in-process; everything fitted
(imputation, feature scaling, target scaling) is fitted on the training part of the split
actually returned, so ``load_task(name, seed=s, fold=i, n_folds=k)`` refits on the fold's
training part. Framing is the last step.

Order of operations in :func:`build_task`:

1. raw arrays (cached): ``x`` ``(N, F)`` float with NaN for missing, or ``(N, H, W)`` images;
2. train/test split: the dataset's predefined split (MNIST) or a seeded split with the
   paper's sizes (``round(test_fraction * N)`` test rows), stratified for classification;
   or, with ``split_fold``/``n_split_folds``, fold ``split_fold`` of a seeded (stratified)
   k-fold of the whole dataset as the test part (outer k-fold replicates);
3. with ``fold``/``n_folds``: a seeded (stratified) k-fold of the training split; the fold's
   held-out part becomes the returned test part; with ``val_fraction``: a seeded (stratified)
   validation part of that size carved from the training split becomes the returned test part
   (model selection: the real test rows are never returned);
4. missing values imputed with the training part's column median;
5. features scaled (``standard`` | ``minmax`` | ``none``), fitted on the training part;
6. regression targets standardised on the training part when ``scale_target``;
7. framing to ``(N, T, D)`` float32.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from trainer.tasks import Task, register_task

ENV_DATA_DIR = "RNNHPO_DATA_DIR"
FRAMINGS = ("features_as_steps", "single_step", "rows", "window:k")
SCALINGS = ("standard", "minmax", "none")


class DatasetError(ValueError):
    """A dataset cannot be loaded: missing or corrupt file, bad option. One-line message."""


# ---------------------------------------------------------------------------- data directory
def default_data_dir() -> Path:
    """``$RNNHPO_DATA_DIR``, else ``$XDG_CACHE_HOME/rnnhpo/data``, else ``~/.cache/rnnhpo/data``."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "rnnhpo" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def search_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """Where a dataset's files are looked for: ``DIR`` and ``DIR/<name>``."""
    root = resolve_data_dir(data_dir)
    return [root, root / name]


def find_first(name: str, candidates: Sequence[str], data_dir) -> Path | None:
    for d in search_dirs(name, data_dir):
        for c in candidates:
            p = d / c
            if p.is_file():
                return p
    return None


def require_file(spec: "DatasetSpec", candidates: Sequence[str], data_dir) -> Path:
    """The first existing candidate file, or a :class:`DatasetError` naming file, dir and source."""
    found = find_first(spec.name, candidates, data_dir)
    if found is not None:
        return found
    root = resolve_data_dir(data_dir)
    alts = " or ".join(candidates)
    raise DatasetError(
        f"{spec.name}: needs {alts} in {root} (or {root / spec.name}); "
        f"download it from {spec.url} (set {ENV_DATA_DIR} or pass data_dir to use another directory)"
    )


def file_signature(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


# ---------------------------------------------------------------------------- raw data + cache
@dataclass(frozen=True)
class Raw:
    """Unscaled arrays of one dataset, as the raw loader returns them (cached: read-only)."""

    x: np.ndarray  # (N, F) float64 with NaN = missing, or (N, H, W) images (any numeric dtype)
    y: np.ndarray  # (N,) int64 class indices or (N, n_out) float64
    kind: str
    classes: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] = ()
    target_names: tuple[str, ...] = ()
    predefined_split: tuple[np.ndarray, np.ndarray] | None = None
    pixel_max: float | None = None  # images: divide by this (no fitted scaling needed)
    info: dict[str, Any] = field(default_factory=dict)
    #: (x (P, F), noiseless target (P, n_out)): inputs on which every trained model's output is
    #: recorded (a generated function's dense grid, for plotting the fitted curve)
    probe: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def is_image(self) -> bool:
        return self.x.ndim == 3


_CACHE: "OrderedDict[tuple, Raw]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 32


def cached_raw(key: tuple, make: Callable[[], Raw]) -> Raw:
    """In-process LRU cache of raw arrays (arrays are made read-only so no caller mutates them)."""
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    raw = make()
    for arr in (raw.x, raw.y):
        arr.flags.writeable = False
    with _CACHE_LOCK:
        _CACHE[key] = raw
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return raw


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


# ---------------------------------------------------------------------------- specs + catalogue
@dataclass(frozen=True)
class DatasetSpec:
    """One catalogue entry plus how to load it."""

    name: str
    kind: str  # classification | regression
    shape: str  # human-readable, e.g. "150x4"
    n_classes: int | None
    source: str
    licence: str
    sequences: str  # how rows become sequences by default
    default_framing: str
    raw_loader: Callable[..., Raw]  # raw_loader(spec, data_dir=, seed=, test_fraction=, **dataset_options)
    test_fraction: float = 0.3
    paper_split: tuple[int, int] | None = None
    files: tuple[tuple[str, ...], ...] = ()  # alternatives; each alternative: all files needed
    url: str = ""
    default_scaling: str = "standard"
    default_scale_target: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # dataset-specific options + defaults
    user_file: bool = False  # the `csv` loader: the user names the file
    split_text: str | None = None  # catalogue text when the split differs from paper_split

    def availability(self, data_dir=None) -> str:
        if self.user_file:
            return "ready (pass path=FILE target=COLUMN)"
        if not self.files:
            return "ready"
        for alternative in self.files:
            if all(find_first(self.name, _variants(f), data_dir) for f in alternative):
                return "ready"
        root = resolve_data_dir(data_dir)
        return f"needs {' + '.join(self.files[0])} in {root}"


def _variants(filename: str) -> list[str]:
    """IDX/KDD files are accepted gzip-compressed or not."""
    if filename.endswith(".gz"):
        return [filename, filename[:-3]]
    return [filename]


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    kind: str
    shape: str
    n_classes: int | None
    split: str
    source: str
    licence: str
    default_framing: str
    sequences: str
    files: str
    availability: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


SPECS: dict[str, DatasetSpec] = {}

COMMON_OPTIONS = {
    "framing", "scaling", "scale_target", "test_fraction", "fold", "n_folds", "fold_seed",
    "data_dir", "split_fold", "n_split_folds", "val_fraction",
}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    SPECS[spec.name] = spec

    def loader(seed: int = 0, **options: Any) -> Task:
        return build_task(spec, seed=seed, **options)

    loader.__name__ = f"load_{spec.name}"
    loader.__doc__ = f"{spec.name}: {spec.source}. Default framing {spec.default_framing}."
    register_task(spec.name)(loader)
    return spec


def catalogue(data_dir=None) -> list[CatalogueEntry]:
    """One entry per dataset, with availability for ``data_dir`` (default: see :func:`default_data_dir`)."""
    out = []
    for spec in SPECS.values():
        head = spec.shape.split("x")[0]
        if spec.split_text:
            split = spec.split_text
        elif spec.paper_split:
            split = f"{spec.paper_split[0]}/{spec.paper_split[1]}"
        elif head.isdigit():
            n_test = int(round(spec.test_fraction * int(head)))
            split = f"{int(head) - n_test}/{n_test}"
        elif spec.user_file:
            split = f"{1 - spec.test_fraction:.0%}/{spec.test_fraction:.0%}"
        else:
            split = f"test {spec.test_fraction:.0%}"
        files = " | ".join(" + ".join(alt) for alt in spec.files)
        out.append(CatalogueEntry(
            spec.name, spec.kind, spec.shape, spec.n_classes, split, spec.source, spec.licence,
            spec.default_framing, spec.sequences, files, spec.availability(data_dir)))
    return out


# ---------------------------------------------------------------------------- splitting
def split_indices(y: np.ndarray, kind: str, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Seeded train/test indices with ``round(test_fraction * N)`` test rows; stratified when it can be.

    The same indices as ``sklearn.model_selection.train_test_split(arange(N), test_size=n_test,
    stratify=y, random_state=seed)`` (tested against it), in numpy: importing scikit-learn would
    cost more than a small training run."""
    n = len(y)
    n_test = int(round(test_fraction * n))
    if not 0 < n_test < n:
        raise DatasetError(f"test_fraction {test_fraction} leaves no train or test rows out of {n}")
    if kind == "classification":
        classes, y_idx, counts = np.unique(np.asarray(y), return_inverse=True, return_counts=True)
        if counts.min() >= 2 and min(n - n_test, n_test) >= len(classes):
            tr, te = _stratified_shuffle_split(y_idx.reshape(-1), counts, n - n_test, n_test, seed)
            return tr, te, True
    perm = np.random.RandomState(seed).permutation(n)
    return perm[n_test:], perm[:n_test], False


def _approximate_mode(counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Per-class draws closest to proportional, ties broken at random (sklearn.utils.extmath)."""
    continuous = counts / counts.sum() * n_draws
    floored = np.floor(continuous)
    need = int(n_draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add = min(len(inds), need)
            floored[rng.choice(inds, size=add, replace=False)] += 1
            need -= add
            if need == 0:
                break
    return floored.astype(int)


def _stratified_shuffle_split(y_idx, counts, n_train, n_test, seed):
    """One split of sklearn's StratifiedShuffleSplit, same random stream."""
    class_indices = np.split(np.argsort(y_idx, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(counts)):
        perm = class_indices[i].take(rng.permutation(counts[i]), mode="clip")
        train.extend(perm[:n_i[i]])
        test.extend(perm[n_i[i]:n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def kfold_indices(y: np.ndarray, kind: str, n_folds: int, seed: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], bool]:
    """Seeded k-fold (stratified for classification where every class has >= k members)."""
    import warnings

    from sklearn.model_selection import KFold, StratifiedKFold

    if n_folds < 2 or n_folds > len(y):
        raise DatasetError(f"n_folds must be in [2, {len(y)}], got {n_folds}")
    z = np.zeros(len(y))
    if kind == "classification":
        counts = np.bincount(np.asarray(y, dtype=np.int64))
        if counts[counts > 0].min() >= n_folds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
                return list(skf.split(z, y)), True
    kf = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(kf.split(z)), False


# ---------------------------------------------------------------------------- framing
def parse_framing(framing: str) -> tuple[str, int | None]:
    if framing in ("features_as_steps", "single_step", "rows"):
        return framing, None
    m = re.fullmatch(r"window:(\d+)", str(framing))
    if m and int(m.group(1)) >= 1:
        return "window", int(m.group(1))
    raise DatasetError(f"unknown framing {framing!r}; use one of {', '.join(FRAMINGS)} (k a positive integer)")


def frame(x: np.ndarray, framing: str, name: str) -> np.ndarray:
    """(N, F) or (N, H, W) -> (N, T, D) for the non-window framings."""
    kind, _ = parse_framing(framing)
    n = len(x)
    if kind == "rows":
        if x.ndim != 3:
            raise DatasetError(f"{name}: framing 'rows' needs images; use features_as_steps or single_step")
        return x
    flat = x.reshape(n, -1)
    if kind == "features_as_steps":
        return flat[:, :, None]
    if kind == "single_step":
        return flat[:, None, :]
    raise DatasetError(f"{name}: framing {framing!r} is handled elsewhere")  # pragma: no cover


def windows(x: np.ndarray, y: np.ndarray, k: int, segments: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows of ``k`` consecutive rows inside each contiguous segment of row indices.

    Window ending at row ``i`` has inputs rows ``i-k+1 .. i`` (T=k, D=F) and target ``y[i]``.
    """
    xs, ys = [], []
    for seg in segments:
        seg = np.asarray(seg)
        if len(seg) < k:
            continue
        xseg, yseg = x[seg], y[seg]
        view = np.lib.stride_tricks.sliding_window_view(xseg, k, axis=0)  # (n-k+1, F, k)
        xs.append(np.ascontiguousarray(np.moveaxis(view, -1, 1)))
        ys.append(yseg[k - 1:])
    if not xs:
        return np.zeros((0, k, x.shape[1]), x.dtype), y[:0]
    return np.concatenate(xs), np.concatenate(ys)


def _contiguous(idx: np.ndarray) -> list[np.ndarray]:
    idx = np.sort(idx)
    if len(idx) == 0:
        return []
    breaks = np.nonzero(np.diff(idx) != 1)[0] + 1
    return np.split(idx, breaks)


# ---------------------------------------------------------------------------- scaling
def _impute_fit(x: np.ndarray) -> np.ndarray | None:
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating) or not np.isnan(x).any():
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column -> 0
        med = np.nanmedian(x, axis=0)
    return np.nan_to_num(med, nan=0.0)


def _impute_apply(x: np.ndarray, med: np.ndarray | None) -> np.ndarray:
    if med is None or not np.isnan(x).any():
        return x
    return np.where(np.isnan(x), med[None, :], x)


def _scale_fit(x: np.ndarray, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    if scaling == "standard":
        loc, scale = x.mean(axis=0), x.std(axis=0)
    elif scaling == "minmax":
        loc = x.min(axis=0)
        scale = x.max(axis=0) - loc
    else:
        return np.zeros(x.shape[1:]), np.ones(x.shape[1:])
    scale = np.where(scale > 0, scale, 1.0)
    return loc, scale


# ---------------------------------------------------------------------------- build
def build_task(spec: DatasetSpec, seed: int = 0, **options: Any) -> Task:
    """Load ``spec`` as a :class:`Task`; see the module docstring for the order of operations."""
    # None means "the dataset's default" for the common options (callers pass framing=None etc.)
    options = {k: v for k, v in options.items() if not (v is None and k in COMMON_OPTIONS)}
    unknown = set(options) - COMMON_OPTIONS - set(spec.options)
    if unknown:
        raise DatasetError(
            f"{spec.name}: unknown option(s) {', '.join(sorted(unknown))}; accepted: "
            f"{', '.join(sorted(COMMON_OPTIONS | set(spec.options)))}")
    framing = options.get("framing") or spec.default_framing
    fkind, k = parse_framing(framing)
    scaling = options.get("scaling") or spec.default_scaling
    if scaling not in SCALINGS:
        raise DatasetError(f"{spec.name}: unknown scaling {scaling!r}; use one of {', '.join(SCALINGS)}")
    scale_target = bool(options.get("scale_target", spec.default_scale_target))
    test_fraction = float(options.get("test_fraction", spec.test_fraction))
    fold, n_folds = options.get("fold"), options.get("n_folds")
    if (fold is None) != (n_folds is None):
        raise DatasetError(f"{spec.name}: fold and n_folds go together")
    if fold is not None:
        fold, n_folds = int(fold), int(n_folds)
        if not 0 <= fold < n_folds:
            raise DatasetError(f"{spec.name}: fold must be in [0, {n_folds}), got {fold}")
    fold_seed = int(options.get("fold_seed", seed))
    split_fold, n_split_folds = options.get("split_fold"), options.get("n_split_folds")
    if (split_fold is None) != (n_split_folds is None):
        raise DatasetError(f"{spec.name}: split_fold and n_split_folds go together")
    val_fraction = options.get("val_fraction")
    if val_fraction is not None and fold is not None:
        raise DatasetError(f"{spec.name}: val_fraction and fold are two ways to carve validation; give one")
    ds_opts = {key: options.get(key, default) for key, default in spec.options.items()}
    raw = spec.raw_loader(spec, data_dir=options.get("data_dir"), seed=seed,
                         test_fraction=test_fraction, **ds_opts)

    kind = raw.kind
    n = len(raw.y)
    meta: dict[str, Any] = {
        "dataset": spec.name, "seed": seed, "framing": framing, "scaling": scaling,
        "source": spec.source, "feature_names": list(raw.feature_names), **raw.info,
        "options": {key: (str(v) if isinstance(v, os.PathLike) else v) for key, v in options.items()
                    if key not in ("fold", "n_folds", "fold_seed", "val_fraction")},
    }
    if raw.classes is not None:
        meta["classes"] = list(raw.classes)

    # 2 + 3: indices
    if fkind == "window":
        if raw.is_image:
            raise DatasetError(f"{spec.name}: framing {framing!r} needs a tabular time series")
        n_test = int(round(test_fraction * n))
        if not 0 < n_test < n:
            raise DatasetError(f"{spec.name}: test_fraction {test_fraction} leaves no rows")
        tr, te = np.arange(n - n_test), np.arange(n - n_test, n)
        meta["split"] = "chronological"
        if split_fold is not None:
            raise DatasetError(f"{spec.name}: a chronological ({framing}) split has no outer k-fold")
        if fold is not None:
            blocks = np.array_split(tr, n_folds)  # contiguous blocks, no shuffling for series
            te = blocks[fold]
            tr = np.concatenate([b for i, b in enumerate(blocks) if i != fold])
        elif val_fraction is not None:  # the last rows of the training part, chronologically
            n_val = int(round(float(val_fraction) * len(tr)))
            if not 0 < n_val < len(tr):
                raise DatasetError(f"{spec.name}: val_fraction {val_fraction} leaves no rows")
            tr, te = tr[:-n_val], tr[-n_val:]
            meta.update(validation=True, val_fraction=float(val_fraction))
    else:
        if split_fold is not None:
            if raw.predefined_split is not None:
                raise DatasetError(f"{spec.name}: has a predefined train/test split; no outer k-fold")
            folds, strat = kfold_indices(raw.y, kind, int(n_split_folds), seed)
            tr, te = folds[int(split_fold)]
            meta.update(split="kfold", split_fold=int(split_fold), n_split_folds=int(n_split_folds),
                        split_stratified=strat)
        elif raw.predefined_split is not None:
            tr, te = raw.predefined_split
            meta["split"] = "predefined"
        else:
            tr, te, strat = split_indices(raw.y, kind, test_fraction, seed)
            meta["split"] = "stratified" if strat else "random"
        if fold is not None:
            folds, strat = kfold_indices(raw.y[tr], kind, n_folds, fold_seed)
            f_tr, f_te = folds[fold]
            tr, te = tr[f_tr], tr[f_te]
            meta["fold_stratified"] = strat
        elif val_fraction is not None:
            v_tr, v_te, strat = split_indices(raw.y[tr], kind, float(val_fraction), fold_seed)
            tr, te = tr[v_tr], tr[v_te]
            meta.update(validation=True, val_fraction=float(val_fraction), fold_seed=fold_seed,
                        val_stratified=strat)
    if fold is not None:
        meta.update(fold=fold, n_folds=n_folds, fold_seed=fold_seed, split="cv", validation=True)

    # 4 + 5: features
    x = raw.x
    if raw.is_image:
        xtr = x[tr].astype(np.float32) / np.float32(raw.pixel_max or 1.0)
        xte = x[te].astype(np.float32) / np.float32(raw.pixel_max or 1.0)
        if scaling != "none":
            loc, sc = _scale_fit(xtr, scaling)
            xtr, xte = (xtr - loc) / sc, (xte - loc) / sc
    else:
        xf = x.astype(np.float64, copy=False)
        xtr_raw = xf[tr] if fkind != "window" else xf[np.sort(tr)]
        med = _impute_fit(xtr_raw)
        if med is not None:
            meta["imputed"] = "training-part column median"
        xtr_raw = _impute_apply(xtr_raw, med)
        loc, sc = _scale_fit(xtr_raw, scaling)
        xall = None
        if fkind == "window":
            xall = (_impute_apply(xf, med) - loc) / sc
        else:
            xtr = (xtr_raw - loc) / sc
            xte = (_impute_apply(xf[te], med) - loc) / sc

    # 6: targets
    y = raw.y
    if kind == "regression":
        y = y.astype(np.float64).reshape(n, -1)
        ytr_fit = y[tr]
        if scale_target:
            tmean, tstd = ytr_fit.mean(axis=0), ytr_fit.std(axis=0)
            tstd = np.where(tstd > 0, tstd, 1.0)
            y = (y - tmean) / tstd
            meta.update(target_scaled=True, target_mean=tmean.tolist(), target_std=tstd.tolist())
        else:
            meta["target_scaled"] = False
        y = y.astype(np.float32)
        n_outputs = y.shape[1]
        meta["target_names"] = list(raw.target_names)
    else:
        y = y.astype(np.int64)
        n_outputs = len(raw.classes) if raw.classes is not None else int(y.max()) + 1

    # 7: framing
    if fkind == "window":
        xtr, ytr = windows(xall, y, k, _contiguous(tr))
        xte, yte = windows(xall, y, k, _contiguous(te))
        if len(xtr) == 0 or len(xte) == 0:
            raise DatasetError(f"{spec.name}: window length {k} is longer than a split part")
    else:
        ytr, yte = y[tr], y[te]
        xtr, xte = frame(xtr, framing, spec.name), frame(xte, framing, spec.name)
    meta.update(n_train=len(ytr), n_test=len(yte))
    x_probe = None
    if raw.probe is not None and fkind != "window" and not raw.is_image:
        px, py = raw.probe
        x_probe = np.ascontiguousarray(frame((_impute_apply(px.astype(np.float64), med) - loc) / sc, framing,
                                             spec.name), dtype=np.float32)
        meta["probe"] = {"x": px[:, 0].tolist(), "y_true": np.asarray(py, dtype=np.float64)[:, 0].tolist()}
    return Task(spec.name, kind, np.ascontiguousarray(xtr, dtype=np.float32), np.ascontiguousarray(ytr),
                np.ascontiguousarray(xte, dtype=np.float32), np.ascontiguousarray(yte), int(n_outputs),
                meta=meta, x_probe=x_probe)


# ---------------------------------------------------------------------------- helpers for loaders
def encode_frame(df, name: str, categorical: str = "codes") -> tuple[np.ndarray, list[str]]:
    """A pandas frame of attributes -> float matrix (NaN = missing) and feature names.

    Numeric columns stay numeric; ``a-b`` interval columns (e.g. ``30-39``) become the interval
    midpoint; other text columns become sorted category codes (``codes``) or one-hot columns
    (``onehot``).
    """
    import pandas as pd

    if categorical not in ("codes", "onehot"):
        raise DatasetError(f"{name}: categorical must be 'codes' or 'onehot', got {categorical!r}")
    cols, names = [], []
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_bool_dtype(s):
            s = s.astype(np.float64)
        if isinstance(s.dtype, pd.CategoricalDtype) and categorical == "codes":
            cats = np.array([str(c).strip() for c in s.cat.categories])
            if len(set(cats)) == len(cats):  # fast path (large files read as category)
                rank = np.empty(len(cats), dtype=np.float64)
                rank[np.argsort(cats, kind="stable")] = np.arange(len(cats))
                codes = s.cat.codes.to_numpy()
                cols.append(np.where(codes >= 0, rank[np.maximum(codes, 0)], np.nan))
                names.append(str(col))
                continue
        if pd.api.types.is_numeric_dtype(s):
            cols.append(s.to_numpy(dtype=np.float64, na_value=np.nan))
            names.append(str(col))
            continue
        txt = s.astype("string").str.strip()
        num = pd.to_numeric(txt, errors="coerce")
        if num.notna().sum() == txt.notna().sum():
            cols.append(num.to_numpy(dtype=np.float64, na_value=np.nan))
            names.append(str(col))
            continue
        parts = txt.str.extract(r"^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$")
        if parts[0].notna().sum() == txt.notna().sum():
            mid = (parts[0].astype(float) + parts[1].astype(float)) / 2.0
            cols.append(mid.to_numpy(dtype=np.float64, na_value=np.nan))
            names.append(str(col))
            continue
        cats = sorted(txt.dropna().unique())
        if categorical == "codes" or len(cats) <= 2:
            codes = pd.Categorical(txt, categories=cats).codes.astype(np.float64)
            codes[codes < 0] = np.nan
            cols.append(codes)
            names.append(str(col))
        else:
            isna = txt.isna().to_numpy()
            for c in cats:
                v = (txt == c).fillna(False).to_numpy(dtype=np.float64)
                v[isna] = np.nan
                cols.append(v)
                names.append(f"{col}={c}")
    if not cols:
        raise DatasetError(f"{name}: no feature columns")
    return np.column_stack(cols), names


def encode_labels(values, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    import pandas as pd

    s = pd.Series(values)
    if s.isna().any():
        raise DatasetError(f"{name}: {int(s.isna().sum())} missing class labels")
    txt = s.astype(str).str.strip()
    cats = sorted(txt.unique(), key=_natural_key)
    codes = pd.Categorical(txt, categories=cats).codes.astype(np.int64)
    return codes, tuple(cats)


def _natural_key(v: str):
    try:
        return (0, float(v), "")
    except ValueError:
        return (1, 0.0, v)
