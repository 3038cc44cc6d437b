"""Local-file loaders: data no package ships, read from the files researchers already have.

Files are looked up in ``DIR`` and ``DIR/<dataset>`` where ``DIR`` is the ``data_dir`` option,
else ``$RNNHPO_DATA_DIR``, else ``~/.cache/rnnhpo/data``. Nothing here opens a network
connection: a missing file raises :class:`DatasetError` naming the file, the directory and
where the data is published. Parsing failures (truncated gzip, wrong columns, bad values) are
turned into one-line :class:`DatasetError` messages. Raw arrays are cached in-process, keyed by
the file's path, size and modification time.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from trainer.datasets.base import (
    DatasetError,
    DatasetSpec,
    Raw,
    cached_raw,
    encode_frame,
    encode_labels,
    file_signature,
    register_dataset,
    require_file,
    resolve_data_dir,
)


def _read(spec: DatasetSpec, path: Path, reader: Callable[[], Any]):
    """Run a pandas/numpy reader, turning any parse failure into a one-line DatasetError."""
    try:
        return reader()
    except DatasetError:
        raise
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{spec.name}: {path} is truncated or not valid gzip ({exc})") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - every parser failure becomes one clear message
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{spec.name}: cannot read {path}: {msg}") from None


def _check_columns(spec: DatasetSpec, path: Path, df, expected: list[str]) -> None:
    missing = [c for c in expected if c not in df.columns]
    if missing:
        raise DatasetError(
            f"{spec.name}: {path} lacks {len(missing)} expected column(s) ({_few(missing)}); "
            f"found {_few(list(map(str, df.columns)))}")


def _few(items: list[str], k: int = 4) -> str:
    return ", ".join(items[:k]) + (f", ... ({len(items)} in all)" if len(items) > k else "")


def _numeric(spec: DatasetSpec, path: Path, df, cols) -> None:
    import pandas as pd

    for c in cols:
        if not pd.api.types.is_numeric_dtype(df[c]):
            conv = pd.to_numeric(df[c], errors="coerce")
            bad = conv.isna() & df[c].notna()
            if bad.any():
                row = int(np.argmax(bad.to_numpy()))
                raise DatasetError(
                    f"{spec.name}: {path}: column {c!r} has a non-numeric value {df[c].iloc[row]!r} "
                    f"(data row {row + 1})")
            df[c] = conv


# ---------------------------------------------------------------------------- breast cancer (Ljubljana)
BC_COLUMNS = ["class", "age", "menopause", "tumor-size", "inv-nodes", "node-caps", "deg-malig",
              "breast", "breast-quad", "irradiat"]
BC_CLASSES = ("no-recurrence-events", "recurrence-events")


def _breast_cancer_raw(spec, *, data_dir=None, categorical: str = "codes", **_) -> Raw:
    path = require_file(spec, ["breast-cancer.data", "breast-cancer.csv"], data_dir)

    def make() -> Raw:
        import pandas as pd

        df = _read(spec, path, lambda: pd.read_csv(path, header=None, dtype=str, na_values=["?"],
                                                   keep_default_na=False, skipinitialspace=True))
        if df.shape[1] != 10:
            raise DatasetError(f"{spec.name}: {path} has {df.shape[1]} columns, expected 10 "
                               "(class first, then 9 attributes, no header)")
        df.columns = BC_COLUMNS
        df = df.dropna(how="all")
        labels = df["class"].str.strip()
        bad = sorted(set(labels.dropna()) - set(BC_CLASSES))
        if bad or labels.isna().any():
            raise DatasetError(f"{spec.name}: {path}: unexpected class value(s) {bad[:3]} "
                               f"(expected {', '.join(BC_CLASSES)} in the first column)")
        x, names = encode_frame(df[BC_COLUMNS[1:]], spec.name, categorical)
        y = np.array([BC_CLASSES.index(v) for v in labels], dtype=np.int64)
        return Raw(x, y, "classification", classes=BC_CLASSES, feature_names=tuple(names),
                   info={"missing_values": int(np.isnan(x).sum()), "categorical": categorical})

    return cached_raw(("breast_cancer", file_signature(path), categorical), make)


# ---------------------------------------------------------------------------- KDD Cup 99
KDD_FEATURES = [
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land",
    "wrong_fragment", "urgent", "hot", "num_failed_logins", "logged_in", "num_compromised",
    "root_shell", "su_attempted", "num_root", "num_file_creations", "num_shells",
    "num_access_files", "num_outbound_cmds", "is_host_login", "is_guest_login", "count",
    "srv_count", "serror_rate", "srv_serror_rate", "rerror_rate", "srv_rerror_rate",
    "same_srv_rate", "diff_srv_rate", "srv_diff_host_rate", "dst_host_count",
    "dst_host_srv_count", "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate",
]
KDD_CATEGORICAL = ["protocol_type", "service", "flag"]
# The 23 labels of the 10% file (sorted); class indices follow this order so they do not
# depend on which labels a particular file happens to contain.
KDD_LABELS = tuple(sorted([
    "back", "buffer_overflow", "ftp_write", "guess_passwd", "imap", "ipsweep", "land",
    "loadmodule", "multihop", "neptune", "nmap", "normal", "perl", "phf", "pod", "portsweep",
    "rootkit", "satan", "smurf", "spy", "teardrop", "warezclient", "warezmaster",
]))
KDD_FILES = ["kddcup.data_10_percent.gz", "kddcup.data_10_percent", "kddcup.data_10_percent.csv"]


def kdd_feature_columns(features: str) -> list[str]:
    """``all``: the 41 features; ``paper22``: the first 22 (basic + content features), our
    reading of the paper's "22 features" (the paper does not list them)."""
    if features == "all":
        return list(KDD_FEATURES)
    if features == "paper22":
        return list(KDD_FEATURES[:22])
    raise DatasetError(f"kddcup99: features must be 'all' or 'paper22', got {features!r}")


def read_kdd(spec: DatasetSpec, path: Path):
    """Parse a KDD Cup 99 file (optionally gzip) into a pandas frame with named columns."""
    import pandas as pd

    dtypes = {c: "float64" for c in KDD_FEATURES}
    dtypes.update({c: "category" for c in KDD_CATEGORICAL})
    dtypes["label"] = "category"

    def reader():
        with open(path, "rb") as fh:
            head = fh.read(2)
        compression = "gzip" if head == b"\x1f\x8b" else None
        probe = pd.read_csv(path, header=None, nrows=5, compression=compression)
        if probe.shape[1] != 42:
            raise DatasetError(f"{spec.name}: {path} has {probe.shape[1]} columns, expected 42 "
                               "(41 features + label, no header)")
        try:
            return pd.read_csv(path, header=None, names=KDD_FEATURES + ["label"], dtype=dtypes,
                               compression=compression, engine="c")
        except ValueError as exc:
            if "could not convert" in str(exc) or "Unable to parse" in str(exc) or "convert" in str(exc):
                raise DatasetError(f"{spec.name}: {path}: a numeric column holds text "
                                   f"({str(exc).splitlines()[0]})") from None
            raise

    df = _read(spec, path, reader)
    if df.shape[1] != 42 or df[KDD_FEATURES[-1]].isna().any():
        raise DatasetError(f"{spec.name}: {path}: some rows have fewer than 42 fields")
    return df


def _kdd_raw(spec, *, data_dir=None, features: str = "all", categorical: str = "codes", **_) -> Raw:
    cols = kdd_feature_columns(features)
    path = require_file(spec, KDD_FILES, data_dir)

    def make() -> Raw:
        df = read_kdd(spec, path)
        lab = df["label"].cat
        names_per_cat = np.array([str(c).strip().rstrip(".") for c in lab.categories])
        unknown = sorted(set(names_per_cat) - set(KDD_LABELS))
        classes = tuple(sorted(set(KDD_LABELS) | set(unknown)))
        y = np.searchsorted(np.array(classes), names_per_cat)[lab.codes.to_numpy()].astype(np.int64)
        x, names = encode_frame(df[cols], spec.name, categorical)
        return Raw(x, y, "classification", classes=classes, feature_names=tuple(names),
                   info={"features": features, "categorical": categorical,
                         "labels_outside_10pct": unknown})

    return cached_raw(("kddcup99", file_signature(path), features, categorical), make)


# ---------------------------------------------------------------------------- MNIST
MNIST_IDX = {
    "x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte",
}


def _idx_candidates(base: str) -> list[str]:
    dotted = base.replace("-idx", ".idx")  # train-images.idx3-ubyte, as some mirrors name them
    return [base + ".gz", base, dotted + ".gz", dotted]


def read_idx(spec: DatasetSpec, path: Path) -> np.ndarray:
    """Read one IDX file (gzip or not) into a uint8 array, checking magic number and size."""

    def reader():
        with open(path, "rb") as fh:
            data = fh.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
            raise DatasetError(f"{spec.name}: {path} is not an unsigned-byte IDX file (bad magic number)")
        ndim = data[3]
        header = 4 + 4 * ndim
        if len(data) < header:
            raise DatasetError(f"{spec.name}: {path} is truncated (incomplete header)")
        dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
        size = int(np.prod(dims)) if dims else 0
        if len(data) - header < size:
            raise DatasetError(f"{spec.name}: {path} is truncated: {len(data) - header} of {size} bytes")
        return np.frombuffer(data, dtype=np.uint8, count=size, offset=header).reshape(dims)

    return _read(spec, path, reader)


def _mnist_raw(spec, *, data_dir=None, **_) -> Raw:
    from trainer.datasets.base import find_first

    npz = find_first(spec.name, ["mnist.npz"], data_dir)
    idx_paths = {k: find_first(spec.name, _idx_candidates(v), data_dir) for k, v in MNIST_IDX.items()}
    if not all(idx_paths.values()) and npz is None:
        missing = [MNIST_IDX[k] + "[.gz]" for k, p in idx_paths.items() if p is None]
        root = resolve_data_dir(data_dir)
        raise DatasetError(f"{spec.name}: needs {', '.join(missing)} (or mnist.npz) in {root} "
                           f"(or {root / spec.name}); download from {spec.url}")
    use_idx = all(idx_paths.values())
    key = (("idx",) + tuple(file_signature(p) for p in idx_paths.values()) if use_idx
           else ("npz", file_signature(npz)))

    def make() -> Raw:
        if use_idx:
            arrs = {k: read_idx(spec, p) for k, p in idx_paths.items()}
        else:
            def reader():
                with np.load(npz, allow_pickle=False) as z:
                    missing = [k for k in MNIST_IDX if k not in z.files]
                    if missing:
                        raise DatasetError(f"{spec.name}: {npz} lacks array(s) {', '.join(missing)}")
                    return {k: np.asarray(z[k]) for k in MNIST_IDX}
            arrs = _read(spec, npz, reader)
        xtr, ytr, xte, yte = arrs["x_train"], arrs["y_train"], arrs["x_test"], arrs["y_test"]
        if xtr.ndim != 3 or xte.ndim != 3 or xtr.shape[1:] != xte.shape[1:]:
            raise DatasetError(f"{spec.name}: images must be (N, H, W), got {xtr.shape} and {xte.shape}")
        if len(xtr) != len(ytr) or len(xte) != len(yte):
            raise DatasetError(f"{spec.name}: image and label counts differ "
                               f"({len(xtr)}/{len(ytr)}, {len(xte)}/{len(yte)})")
        x = np.concatenate([xtr, xte]).astype(np.uint8, copy=False)
        y = np.concatenate([ytr, yte]).astype(np.int64)
        n_tr = len(xtr)
        split = (np.arange(n_tr), np.arange(n_tr, len(x)))
        return Raw(x, y, "classification", classes=tuple(str(i) for i in range(10)),
                   predefined_split=split, pixel_max=255.0,
                   info={"files": "idx" if use_idx else "npz"})

    return cached_raw(("mnist",) + key, make)


# ---------------------------------------------------------------------------- wine quality
WINE_COLUMNS = ["fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
                "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol"]


def _wine_quality_raw(spec, *, data_dir=None, colours: str = "both", include_colour: bool = False,
                      **_) -> Raw:
    import pandas as pd

    wanted = {"both": ["red", "white"], "red": ["red"], "white": ["white"]}.get(colours)
    if wanted is None:
        raise DatasetError(f"{spec.name}: colours must be both, red or white, got {colours!r}")
    paths = {c: require_file(spec, [f"winequality-{c}.csv"], data_dir) for c in wanted}

    def make() -> Raw:
        frames = []
        for colour, path in paths.items():
            df = _read(spec, path, lambda: pd.read_csv(path, sep=";"))
            df.columns = [str(c).strip().strip('"') for c in df.columns]
            _check_columns(spec, path, df, WINE_COLUMNS + ["quality"])
            _numeric(spec, path, df, WINE_COLUMNS + ["quality"])
            df["is_red"] = 1.0 if colour == "red" else 0.0
            frames.append(df)
        df = pd.concat(frames, ignore_index=True)
        feats = WINE_COLUMNS + (["is_red"] if include_colour else [])
        if df["quality"].isna().any():
            raise DatasetError(f"{spec.name}: missing quality values")
        return Raw(df[feats].to_numpy(np.float64), df["quality"].to_numpy(np.float64).reshape(-1, 1),
                   "regression", feature_names=tuple(feats), target_names=("quality",),
                   info={"colours": colours})

    return cached_raw(("wine_quality", tuple(file_signature(p) for p in paths.values()), include_colour),
                      make)


# ---------------------------------------------------------------------------- energy efficiency
ENERGY_X = [f"X{i}" for i in range(1, 9)]


def _sniff_sep(path: Path) -> str:
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        line = fh.readline()
    if "\t" in line:
        return "\t"
    return ";" if line.count(";") > line.count(",") else ","


def _energy_raw(spec, *, data_dir=None, target: str = "Y1", **_) -> Raw:
    import pandas as pd

    targets = {"Y1": ["Y1"], "Y2": ["Y2"], "both": ["Y1", "Y2"]}.get(target)
    if targets is None:
        raise DatasetError(f"{spec.name}: target must be Y1 (heating), Y2 (cooling) or both, got {target!r}")
    path = require_file(spec, ["ENB2012_data.xlsx", "ENB2012_data.csv"], data_dir)

    def make() -> Raw:
        if path.suffix == ".xlsx":
            df = _read(spec, path, lambda: pd.read_excel(path, engine="openpyxl"))
        else:
            df = _read(spec, path, lambda: pd.read_csv(path, sep=_sniff_sep(path)))
        df = df.dropna(how="all").dropna(axis=1, how="all")
        df.columns = [str(c).strip() for c in df.columns]
        _check_columns(spec, path, df, ENERGY_X + ["Y1", "Y2"])
        _numeric(spec, path, df, ENERGY_X + ["Y1", "Y2"])
        if df[ENERGY_X + targets].isna().any().any():
            raise DatasetError(f"{spec.name}: {path} has empty cells in X1..X8/{'/'.join(targets)}")
        return Raw(df[ENERGY_X].to_numpy(np.float64), df[targets].to_numpy(np.float64),
                   "regression", feature_names=tuple(ENERGY_X), target_names=tuple(targets))

    return cached_raw(("energy", file_signature(path), target), make)


# ---------------------------------------------------------------------------- student performance
STUDENT_ATTRS = [
    "school", "sex", "age", "address", "famsize", "Pstatus", "Medu", "Fedu", "Mjob", "Fjob",
    "reason", "guardian", "traveltime", "studytime", "failures", "schoolsup", "famsup", "paid",
    "activities", "nursery", "higher", "internet", "romantic", "famrel", "freetime", "goout",
    "Dalc", "Walc", "health", "absences",
]


def _student_raw(spec, *, data_dir=None, include_grades: bool = False, categorical: str = "codes",
                 **_) -> Raw:
    import pandas as pd

    path = require_file(spec, ["student-por.csv"], data_dir)

    def make() -> Raw:
        df = _read(spec, path, lambda: pd.read_csv(path, sep=";"))
        df.columns = [str(c).strip().strip('"') for c in df.columns]
        _check_columns(spec, path, df, STUDENT_ATTRS + ["G1", "G2", "G3"])
        _numeric(spec, path, df, ["G1", "G2", "G3"])
        if df["G3"].isna().any():
            raise DatasetError(f"{spec.name}: {path} has missing G3 values")
        feats = STUDENT_ATTRS + (["G1", "G2"] if include_grades else [])
        x, names = encode_frame(df[feats], spec.name, categorical)
        return Raw(x, df["G3"].to_numpy(np.float64).reshape(-1, 1), "regression",
                   feature_names=tuple(names), target_names=("G3",),
                   info={"categorical": categorical, "include_grades": include_grades})

    return cached_raw(("student", file_signature(path), include_grades, categorical), make)


# ---------------------------------------------------------------------------- user CSV / Parquet
def _csv_raw(spec, *, data_dir=None, path: str | None = None, target: str | None = None,
             kind: str = "auto", features=None, sep: str | None = None,
             categorical: str = "codes", **_) -> Raw:
    import pandas as pd

    if not path or not target:
        raise DatasetError("csv: needs options path=FILE (CSV or Parquet) and target=COLUMN")
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.is_file():
        p = resolve_data_dir(data_dir) / p
    if not p.is_file():
        raise DatasetError(f"csv: no file {path} (looked in the working directory and "
                           f"{resolve_data_dir(data_dir)})")
    if kind not in ("auto", "classification", "regression"):
        raise DatasetError(f"csv: kind must be auto, classification or regression, got {kind!r}")
    if isinstance(features, str):
        features = [f.strip() for f in features.split(",") if f.strip()]
    feat_key = tuple(features) if features else None

    def make() -> Raw:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = _read(spec, p, lambda: pd.read_parquet(p))
        else:
            s = sep or _sniff_sep(p)
            df = _read(spec, p, lambda: pd.read_csv(p, sep=s))
        df.columns = [str(c).strip() for c in df.columns]
        if target not in df.columns:
            raise DatasetError(f"csv: {p} has no target column {target!r}; columns: {', '.join(df.columns)}")
        feats = list(feat_key) if feat_key else [c for c in df.columns if c != target]
        _check_columns(spec, p, df, feats)
        if df[target].isna().any():
            raise DatasetError(f"csv: {p}: target column {target!r} has {int(df[target].isna().sum())} empty cells")
        k = kind
        if k == "auto":
            k = "regression" if pd.api.types.is_float_dtype(df[target]) or (
                pd.api.types.is_integer_dtype(df[target]) and df[target].nunique() > 20) else "classification"
        x, names = encode_frame(df[feats], "csv", categorical)
        if k == "classification":
            y, classes = encode_labels(df[target], "csv")
            return Raw(x, y, k, classes=classes, feature_names=tuple(names),
                       info={"path": str(p), "target": target})
        _numeric(spec, p, df, [target])
        return Raw(x, df[target].to_numpy(np.float64).reshape(-1, 1), k, feature_names=tuple(names),
                   target_names=(target,), info={"path": str(p), "target": target})

    return cached_raw(("csv", file_signature(p), target, kind, feat_key, sep, categorical), make)


# ---------------------------------------------------------------------------- catalogue
UCI = "CC BY 4.0 (UCI Machine Learning Repository)"
register_dataset(DatasetSpec(
    name="breast_cancer", kind="classification", shape="286x9", n_classes=2,
    source="UCI Breast Cancer (Ljubljana), the paper's set; local file", licence=UCI,
    sequences="each attribute one step of width 1 (T=9, D=1); intervals -> midpoints, other "
              "categories -> codes; '?' imputed with the training-part median",
    default_framing="features_as_steps", raw_loader=_breast_cancer_raw, test_fraction=0.3,
    paper_split=(200, 86), files=(("breast-cancer.data",),), options={"categorical": "codes"},
    url="https://archive.ics.uci.edu/dataset/14/breast+cancer"))
register_dataset(DatasetSpec(
    name="kddcup99", kind="classification", shape="494021x41", n_classes=23,
    source="KDD Cup 1999, 10% training file; local file", licence=UCI,
    sequences="single step with all features (T=1, D=41; features='paper22' gives D=22); "
              "protocol_type/service/flag as sorted category codes",
    default_framing="single_step", raw_loader=_kdd_raw, test_fraction=0.1,
    paper_split=(444617, 49402), split_text="444619/49402 (paper: 444617/49402)",
    files=(("kddcup.data_10_percent.gz",),),
    options={"features": "all", "categorical": "codes"},
    url="https://kdd.ics.uci.edu/databases/kddcup99/kddcup99.html"))
register_dataset(DatasetSpec(
    name="mnist", kind="classification", shape="70000x28x28", n_classes=10,
    source="MNIST (LeCun, Cortes, Burges); local IDX files or mnist.npz",
    licence="CC BY-SA 3.0 (as distributed by LeCun et al.)",
    sequences="image rows are steps (T=28, D=28), pixels / 255; the official 60000/10000 split",
    default_framing="rows", raw_loader=_mnist_raw, paper_split=(60000, 10000),
    default_scaling="none",
    files=(tuple(v + ".gz" for v in MNIST_IDX.values()), ("mnist.npz",)),
    url="https://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)"))
register_dataset(DatasetSpec(
    name="wine_quality", kind="regression", shape="6497x11", n_classes=None,
    source="UCI Wine Quality (red + white); local files", licence=UCI,
    sequences="each feature one step of width 1 (T=11, D=1); include_colour=True adds is_red",
    default_framing="features_as_steps", raw_loader=_wine_quality_raw, test_fraction=0.2,
    paper_split=(5198, 1299), files=(("winequality-red.csv", "winequality-white.csv"),),
    options={"colours": "both", "include_colour": False},
    url="https://archive.ics.uci.edu/dataset/186/wine+quality"))
register_dataset(DatasetSpec(
    name="energy_efficiency", kind="regression", shape="768x8", n_classes=None,
    source="UCI Energy Efficiency (ENB2012); local file", licence=UCI,
    sequences="each feature one step of width 1 (T=8, D=1); target Y1 (heating), target=Y2|both",
    default_framing="features_as_steps", raw_loader=_energy_raw, test_fraction=0.2,
    paper_split=(614, 154), files=(("ENB2012_data.xlsx",), ("ENB2012_data.csv",)),
    options={"target": "Y1"},
    url="https://archive.ics.uci.edu/dataset/242/energy+efficiency"))
register_dataset(DatasetSpec(
    name="student_performance", kind="regression", shape="649x30", n_classes=None,
    source="UCI Student Performance (Portuguese course, student-por.csv); local file",
    licence=UCI,
    sequences="each attribute one step of width 1 (T=30, D=1), target G3; categorical attributes "
              "as sorted codes (categorical='onehot' expands them); G1/G2 excluded",
    default_framing="features_as_steps", raw_loader=_student_raw, test_fraction=0.2,
    paper_split=(519, 130), files=(("student-por.csv",),),
    options={"include_grades": False, "categorical": "codes"},
    url="https://archive.ics.uci.edu/dataset/320/student+performance"))
register_dataset(DatasetSpec(
    name="csv", kind="classification|regression", shape="any", n_classes=None,
    source="your own CSV or Parquet file (path=FILE target=COLUMN)", licence="yours",
    sequences="each feature one step of width 1; window:k for a time series (rows in time order)",
    default_framing="features_as_steps", raw_loader=_csv_raw, test_fraction=0.2, user_file=True,
    options={"path": None, "target": None, "kind": "auto", "features": None, "sep": None,
             "categorical": "codes"}))

