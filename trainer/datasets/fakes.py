"""Small synthetic files in the *real* formats of the local-file datasets.

For tests and benchmarks (here and in other parts of the project) that must not depend on
downloaded data: each writer produces a file the corresponding loader reads exactly as it
reads the published one. The values are random; only the formats are faithful.

>>> from trainer.datasets.fakes import write_data_dir
>>> write_data_dir(tmp_path)            # every local-file dataset, small
>>> load_task("kddcup99", data_dir=tmp_path)
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from trainer.datasets.local import (
    BC_CLASSES,
    ENERGY_X,
    KDD_FEATURES,
    KDD_LABELS,
    MNIST_IDX,
    STUDENT_ATTRS,
    WINE_COLUMNS,
)

_KDD_INT = {"duration", "src_bytes", "dst_bytes", "land", "wrong_fragment", "urgent", "hot",
            "num_failed_logins", "logged_in", "num_compromised", "root_shell", "su_attempted",
            "num_root", "num_file_creations", "num_shells", "num_access_files",
            "num_outbound_cmds", "is_host_login", "is_guest_login", "count", "srv_count",
            "dst_host_count", "dst_host_srv_count"}


_POOL = 5000


def kdd_lines(n_rows: int, seed: int = 0) -> bytes:
    """``n_rows`` lines in the KDD Cup 99 format (41 fields + label with a trailing dot).

    Every one of the 23 labels occurs at least ``min(5, n_rows // 23)`` times. Past 5000 rows
    the extra rows are drawn from the first 5000 (the real file is ~75% duplicates too), which
    keeps generating half a million rows fast.
    """
    if n_rows > _POOL:
        pool = np.array(_kdd_unique_lines(_POOL, seed).splitlines())
        rng = np.random.default_rng(seed + 1)
        idx = np.concatenate([np.arange(_POOL), rng.integers(0, _POOL, n_rows - _POOL)])
        return b"\n".join(pool[idx].tolist()) + b"\n"
    return _kdd_unique_lines(n_rows, seed)


def _kdd_unique_lines(n_rows: int, seed: int) -> bytes:
    import pandas as pd

    rng = np.random.default_rng(seed)
    cols = {}
    for name in KDD_FEATURES:
        if name == "protocol_type":
            cols[name] = rng.choice(["tcp", "udp", "icmp"], n_rows)
        elif name == "service":
            cols[name] = rng.choice(["http", "smtp", "ftp_data", "ecr_i", "private", "domain_u"], n_rows)
        elif name == "flag":
            cols[name] = rng.choice(["SF", "S0", "REJ", "RSTR"], n_rows)
        elif name in _KDD_INT:
            hi = 60000 if "bytes" in name else (512 if "count" in name else 2)
            cols[name] = rng.integers(0, hi, n_rows)
        else:
            cols[name] = rng.integers(0, 101, n_rows) / 100.0
    labels = np.array(KDD_LABELS)
    p = np.full(len(labels), 0.002)
    p[list(labels).index("smurf")], p[list(labels).index("neptune")] = 0.55, 0.2
    p[list(labels).index("normal")] = 0.0
    p[list(labels).index("normal")] = 1.0 - p.sum()
    y = rng.choice(labels, n_rows, p=p)
    k = min(5, n_rows // len(labels))
    if k:
        y[: k * len(labels)] = np.tile(labels, k)
    df = pd.DataFrame(cols)
    df["label"] = np.char.add(y.astype(str), ".")
    return df.to_csv(header=False, index=False, float_format="%.2f").encode()


def write_kdd(path: Path, n_rows: int = 500, seed: int = 0, compress: bool | None = None) -> Path:
    """Write a KDD-format file; gzip when ``compress`` or when the name ends in ``.gz``."""
    path = Path(path)
    data = kdd_lines(n_rows, seed)
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data, compresslevel=1)
    path.write_bytes(data)
    return path


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def write_mnist_idx(directory: Path, n_train: int = 60, n_test: int = 20, seed: int = 0,
                    compress: bool = True, side: int = 28) -> dict[str, Path]:
    """The four IDX files (``train-images-idx3-ubyte[.gz]`` ...), ``side``x``side`` images."""
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, side, side)),
        "y_train": np.arange(n_train) % 10,
        "x_test": rng.integers(0, 256, (n_test, side, side)),
        "y_test": np.arange(n_test) % 10,
    }
    out = {}
    for key, base in MNIST_IDX.items():
        data = idx_bytes(arrays[key])
        path = Path(directory) / (base + (".gz" if compress else ""))
        path.write_bytes(gzip.compress(data, compresslevel=1) if compress else data)
        out[key] = path
    return out


def write_mnist_npz(path: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
             y_train=(np.arange(n_train) % 10).astype(np.uint8),
             x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
             y_test=(np.arange(n_test) % 10).astype(np.uint8))
    return Path(path)


def write_breast_cancer(path: Path, n_rows: int = 286, seed: int = 0, n_missing: int = 9) -> Path:
    """``breast-cancer.data``: no header, class first, categorical attributes, ``?`` missing."""
    rng = np.random.default_rng(seed)
    values = [
        ["20-29", "30-39", "40-49", "50-59", "60-69", "70-79"],
        ["lt40", "ge40", "premeno"],
        ["0-4", "5-9", "10-14", "15-19", "20-24", "25-29", "30-34", "35-39", "40-44", "45-49", "50-54"],
        ["0-2", "3-5", "6-8", "9-11", "12-14", "15-17", "24-26"],
        ["yes", "no"], ["1", "2", "3"], ["left", "right"],
        ["left_up", "left_low", "right_up", "right_low", "central"], ["yes", "no"],
    ]
    rows = []
    for i in range(n_rows):
        cls = BC_CLASSES[1] if i % 10 < 3 else BC_CLASSES[0]
        attrs = [str(rng.choice(v)) for v in values]
        if i < n_missing:
            attrs[4 if i % 2 == 0 else 7] = "?"
        rows.append(",".join([cls] + attrs))
    Path(path).write_text("\n".join(rows) + "\n")
    return Path(path)


def write_wine_quality(directory: Path, n_red: int = 40, n_white: int = 60, seed: int = 0) -> list[Path]:
    """``winequality-red.csv`` / ``-white.csv``: semicolon-separated, quoted header."""
    rng = np.random.default_rng(seed)
    out = []
    for colour, n in (("red", n_red), ("white", n_white)):
        lines = [";".join(f'"{c}"' for c in WINE_COLUMNS + ["quality"])]
        for _ in range(n):
            vals = [f"{v:.3g}" for v in rng.uniform(0.1, 20, len(WINE_COLUMNS))]
            lines.append(";".join(vals + [str(int(rng.integers(3, 10)))]))
        path = Path(directory) / f"winequality-{colour}.csv"
        path.write_text("\n".join(lines) + "\n")
        out.append(path)
    return out


def energy_frame(n_rows: int = 768, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.uniform(0, 1, (n_rows, 8)).round(3), columns=ENERGY_X)
    df["Y1"] = (10 + 30 * rng.uniform(0, 1, n_rows)).round(2)
    df["Y2"] = (12 + 30 * rng.uniform(0, 1, n_rows)).round(2)
    return df


def write_energy(path: Path, n_rows: int = 768, seed: int = 0) -> Path:
    """``ENB2012_data.xlsx`` (X1..X8, Y1, Y2, plus trailing empty rows as in the UCI file) or
    its CSV export when ``path`` ends in ``.csv``."""
    import pandas as pd

    df = energy_frame(n_rows, seed)
    path = Path(path)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        empty = pd.DataFrame([[None] * df.shape[1]] * 2, columns=df.columns)
        pd.concat([df, empty], ignore_index=True).to_excel(path, index=False, engine="openpyxl")
    return path


def write_student_por(path: Path, n_rows: int = 649, seed: int = 0) -> Path:
    """``student-por.csv``: semicolon-separated, quoted text values (and quoted G1/G2) as UCI ships it."""
    rng = np.random.default_rng(seed)
    text = {
        "school": ["GP", "MS"], "sex": ["F", "M"], "address": ["U", "R"], "famsize": ["GT3", "LE3"],
        "Pstatus": ["A", "T"], "Mjob": ["at_home", "health", "other", "services", "teacher"],
        "Fjob": ["at_home", "health", "other", "services", "teacher"],
        "reason": ["course", "home", "other", "reputation"], "guardian": ["mother", "father", "other"],
    }
    yes_no = {"schoolsup", "famsup", "paid", "activities", "nursery", "higher", "internet", "romantic"}
    lines = [";".join(STUDENT_ATTRS + ["G1", "G2", "G3"])]
    for _ in range(n_rows):
        vals = []
        for a in STUDENT_ATTRS:
            if a in text:
                vals.append(f'"{rng.choice(text[a])}"')
            elif a in yes_no:
                vals.append(f'"{rng.choice(["yes", "no"])}"')
            elif a == "age":
                vals.append(str(int(rng.integers(15, 23))))
            elif a == "absences":
                vals.append(str(int(rng.integers(0, 33))))
            else:
                vals.append(str(int(rng.integers(0, 5))))
        g = rng.integers(0, 21, 3)
        vals += [f'"{g[0]}"', f'"{g[1]}"', str(g[2])]
        lines.append(";".join(vals))
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def write_data_dir(directory: Path, *, kdd_rows: int = 300, seed: int = 0) -> Path:
    """A data directory holding a small file set for every local-file dataset."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    write_breast_cancer(d / "breast-cancer.data", seed=seed)
    write_kdd(d / "kddcup.data_10_percent.gz", n_rows=kdd_rows, seed=seed)
    write_mnist_idx(d, seed=seed)
    write_wine_quality(d, seed=seed)
    write_energy(d / "ENB2012_data.xlsx", seed=seed)
    write_student_por(d / "student-por.csv", seed=seed)
    return d
