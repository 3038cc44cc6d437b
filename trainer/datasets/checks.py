"""Checking a dataset request without loading it: name, options, files, and the task kind.

Used at the edge (before anything runs) so that an unknown dataset, a missing local file or a bad
option is refused with a message naming the option, instead of failing inside a worker later.
Only the csv loader reads anything: the target column, to infer the kind when it is not given.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.datasets.base import COMMON_OPTIONS, SPECS, DatasetError, parse_framing
from trainer.tasks import task_names


@dataclass
class DatasetCheck:
    """What :func:`check_dataset` found: problems as ``(option or None, message)``, and the kind."""

    kind: str | None = None
    kind_inferred: bool = False
    problems: list[tuple[str | None, str]] = field(default_factory=list)


def _inside(root: Path, target: Path) -> bool:
    return target == root or root in target.parents


def _csv_kind(path: Path, target: str, sep: str | None) -> str:
    """classification when the target column is text or has at most 20 distinct integer values."""
    import pandas as pd

    from trainer.datasets.local import _sniff_sep

    if path.suffix.lower() in (".parquet", ".pq"):
        col = pd.read_parquet(path, columns=[target])[target]
    else:
        col = pd.read_csv(path, sep=sep or _sniff_sep(path), usecols=[target])[target]
    values = col.dropna()
    if values.dtype.kind in "OSUb":
        return "classification"
    if values.dtype.kind in "iu" or (values.dtype.kind == "f" and (values == values.round()).all()):
        return "classification" if values.nunique() <= 20 else "regression"
    return "regression"


def check_dataset(name: str, options: dict[str, Any], data_dir: str | os.PathLike,
                  framing: str | None = None) -> DatasetCheck:
    """Everything that can be known about loading ``name`` with ``options`` from ``data_dir``
    without loading it. Never raises for bad input: problems are returned."""
    out = DatasetCheck()
    if name not in SPECS:
        known = task_names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        out.problems.append((None, f"unknown dataset {name!r}{hint} Known: {', '.join(known)}"))
        return out
    spec = SPECS[name]
    out.kind = spec.kind
    unknown = sorted(set(options) - COMMON_OPTIONS - set(spec.options))
    for key in unknown:
        accepted = sorted((COMMON_OPTIONS - {"data_dir", "fold", "n_folds"}) | set(spec.options))
        out.problems.append((key, f"unknown option for {name}; accepted: {', '.join(accepted)}"))
    for key, label in ((framing, "framing"), (options.get("framing"), "framing")):
        if key:
            try:
                parse_framing(str(key))
            except DatasetError as exc:
                out.problems.append((label, str(exc)))
    root = Path(data_dir).expanduser().resolve()
    if not spec.user_file:
        status = spec.availability(root)
        if status != "ready":
            out.problems.append((None, f"{name}: {status} (see docs/datasets.md for the source: "
                                       f"{spec.url or spec.source})"))
        return out
    path, target = options.get("path"), options.get("target")
    if not path:
        out.problems.append(("path", "csv needs path=FILE, relative to the data directory "
                                     f"{root}"))
    if not target:
        out.problems.append(("target", "csv needs target=COLUMN"))
    if not path or not target:
        return out
    file = (root / str(path)).resolve()
    if not _inside(root, file):
        out.problems.append(("path", "path escapes the data directory"))
        return out
    if not file.is_file():
        out.problems.append(("path", f"no file {path} in the data directory {root}"))
        return out
    kind = options.get("kind", "auto")
    if kind not in ("auto", "classification", "regression"):
        out.problems.append(("kind", "kind must be auto, classification or regression"))
        return out
    if kind != "auto":
        out.kind = kind
        return out
    try:
        out.kind, out.kind_inferred = _csv_kind(file, str(target), options.get("sep")), True
    except Exception as exc:  # noqa: BLE001 - any reader failure is a problem with the file
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        out.problems.append(("target", f"cannot read column {target!r} of {path}: {msg}"))
    return out
