"""Local-file loaders on small files generated in the real formats (gzip, IDX, xlsx, semicolon
CSV with quoted header, '?' missing values), including truncated and wrong-column files."""

from __future__ import annotations

import gzip
import time

import numpy as np
import pytest

from trainer.datasets import DatasetError, catalogue, clear_cache
from trainer.datasets import fakes
from trainer.tasks import load_task


pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture
def empty_dir(tmp_path, monkeypatch):
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("RNNHPO_DATA_DIR", str(d))
    return d


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return fakes.write_data_dir(tmp_path_factory.mktemp("rnnhpo-data"))


# ---------------------------------------------------------------- missing files
LOCAL = {
    "breast_cancer": "breast-cancer.data",
    "kddcup99": "kddcup.data_10_percent.gz",
    "mnist": "train-images-idx3-ubyte",
    "wine_quality": "winequality-red.csv",
    "energy_efficiency": "ENB2012_data.xlsx",
    "student_performance": "student-por.csv",
}


@pytest.mark.parametrize("name,filename", sorted(LOCAL.items()))
def test_missing_file_is_one_fast_clear_message(name, filename, empty_dir):
    start = time.perf_counter()
    with pytest.raises(DatasetError) as info:
        load_task(name, seed=0)
    assert time.perf_counter() - start < 1.0
    msg = str(info.value)
    assert "\n" not in msg
    assert filename in msg and str(empty_dir) in msg and "http" in msg
    entry = {e.name: e for e in catalogue()}[name]
    assert entry.availability.startswith("needs ") and str(empty_dir) in entry.availability


def test_data_dir_defaults(monkeypatch, tmp_path):
    from trainer.datasets import default_data_dir

    monkeypatch.setenv("RNNHPO_DATA_DIR", str(tmp_path / "x"))
    assert default_data_dir() == tmp_path / "x"
    monkeypatch.delenv("RNNHPO_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "rnnhpo" / "data"


def test_all_local_datasets_ready_with_fake_files(data_dir):
    entries = {e.name: e.availability for e in catalogue(data_dir)}
    for name in LOCAL:
        assert entries[name] == "ready", name


def test_files_in_a_per_dataset_subdirectory_are_found(tmp_path):
    (tmp_path / "breast_cancer").mkdir()
    fakes.write_breast_cancer(tmp_path / "breast_cancer" / "breast-cancer.data")
    assert len(load_task("breast_cancer", data_dir=tmp_path).y_test) == 86


# ---------------------------------------------------------------- breast cancer (Ljubljana)
def test_breast_cancer_paper_shape_and_missing_values(data_dir):
    t = load_task("breast_cancer", seed=0, data_dir=data_dir)
    assert t.x_train.shape == (200, 9, 1) and t.x_test.shape == (86, 9, 1)
    assert t.n_outputs == 2 and t.meta["classes"] == ["no-recurrence-events", "recurrence-events"]
    assert t.meta["missing_values"] == 9 and np.isfinite(t.x_train).all() and np.isfinite(t.x_test).all()
    assert t.meta["feature_names"][0] == "age"
    raw = load_task("breast_cancer", seed=0, data_dir=data_dir, scaling="none")
    ages = np.unique(raw.x_train[:, 0, 0])
    assert set(ages) <= {24.5, 34.5, 44.5, 54.5, 64.5, 74.5}  # "30-39" -> midpoint


def test_breast_cancer_wrong_columns(tmp_path):
    (tmp_path / "breast-cancer.data").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DatasetError, match="3 columns, expected 10"):
        load_task("breast_cancer", data_dir=tmp_path)
    bad = tmp_path / "b"
    bad.mkdir()
    (bad / "breast-cancer.data").write_text("maybe,30-39,premeno,30-34,0-2,no,3,left,left_low,no\n" * 20)
    with pytest.raises(DatasetError, match="unexpected class"):
        load_task("breast_cancer", data_dir=bad)


# ---------------------------------------------------------------- KDD Cup 99
@pytest.mark.parametrize("compress", [True, False])
def test_kdd_gzip_and_plain(tmp_path, compress):
    name = "kddcup.data_10_percent" + (".gz" if compress else "")
    fakes.write_kdd(tmp_path / name, n_rows=1000, seed=1)
    t = load_task("kddcup99", seed=0, data_dir=tmp_path)
    assert t.x_train.shape == (900, 1, 41) and t.x_test.shape == (100, 1, 41)
    assert t.n_outputs == 23 and len(t.meta["classes"]) == 23
    assert "normal" in t.meta["classes"] and not any(c.endswith(".") for c in t.meta["classes"])
    assert set(np.unique(t.y_train)) == set(range(23))  # every label seen (stratified)
    assert t.meta["feature_names"][1] == "protocol_type"
    t22 = load_task("kddcup99", seed=0, data_dir=tmp_path, features="paper22")
    assert t22.x_train.shape == (900, 1, 22)
    oh = load_task("kddcup99", seed=0, data_dir=tmp_path, categorical="onehot")
    assert oh.x_train.shape[2] == 41 - 3 + 3 + 6 + 4  # fake file: 3 protocols, 6 services, 4 flags
    fs = load_task("kddcup99", seed=0, data_dir=tmp_path, framing="features_as_steps")
    assert fs.x_train.shape == (900, 41, 1)


def test_kdd_labels_map_to_fixed_indices(tmp_path):
    fakes.write_kdd(tmp_path / "kddcup.data_10_percent.gz", n_rows=400, seed=2)
    t = load_task("kddcup99", data_dir=tmp_path)
    lines = gzip.decompress((tmp_path / "kddcup.data_10_percent.gz").read_bytes()).decode().splitlines()
    labels = sorted({line.rsplit(",", 1)[1].rstrip(".") for line in lines})
    assert t.meta["classes"] == labels


def test_kdd_truncated_gzip(tmp_path):
    data = gzip.compress(fakes.kdd_lines(500))
    (tmp_path / "kddcup.data_10_percent.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated or not valid gzip"):
        load_task("kddcup99", data_dir=tmp_path)


def test_kdd_wrong_columns_and_bad_values(tmp_path):
    lines = fakes.kdd_lines(60).decode().splitlines()
    (tmp_path / "kddcup.data_10_percent").write_text("\n".join(",".join(x.split(",")[:30]) for x in lines))
    with pytest.raises(DatasetError, match="30 columns, expected 42"):
        load_task("kddcup99", data_dir=tmp_path)
    short = tmp_path / "short"
    short.mkdir()
    lines[40] = ",".join(lines[40].split(",")[:20])
    (short / "kddcup.data_10_percent").write_text("\n".join(lines))
    with pytest.raises(DatasetError, match="kddcup99"):
        load_task("kddcup99", data_dir=short)
    text = tmp_path / "text"
    text.mkdir()
    (text / "kddcup.data_10_percent").write_text(fakes.kdd_lines(60).decode().replace(",0.00,", ",abc,", 1))
    with pytest.raises(DatasetError, match="numeric column holds text"):
        load_task("kddcup99", data_dir=text)


# ---------------------------------------------------------------- MNIST
@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx(tmp_path, compress):
    fakes.write_mnist_idx(tmp_path, n_train=50, n_test=20, compress=compress)
    t = load_task("mnist", seed=5, data_dir=tmp_path)
    assert t.x_train.shape == (50, 28, 28) and t.x_test.shape == (20, 28, 28)  # official split kept
    assert t.meta["split"] == "predefined" and t.n_outputs == 10
    assert 0.0 <= t.x_train.min() and t.x_train.max() <= 1.0
    # the first training image survives the round trip
    img = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes()) if compress else \
        (tmp_path / "train-images-idx3-ubyte").read_bytes()
    first = np.frombuffer(img, np.uint8, 28 * 28, 16).reshape(28, 28) / 255.0
    assert np.allclose(t.x_train[0], first, atol=1e-6)
    assert load_task("mnist", data_dir=tmp_path, framing="features_as_steps").x_train.shape == (50, 784, 1)
    assert load_task("mnist", data_dir=tmp_path, framing="single_step").x_train.shape == (50, 1, 784)


def test_mnist_npz_and_folds(tmp_path):
    fakes.write_mnist_npz(tmp_path / "mnist.npz", n_train=60, n_test=20)
    t = load_task("mnist", data_dir=tmp_path)
    assert t.x_train.shape == (60, 28, 28) and t.meta["files"] == "npz"
    folds = [load_task("mnist", data_dir=tmp_path, fold=i, n_folds=3) for i in range(3)]
    assert [len(f.y_test) for f in folds] == [20, 20, 20]


def test_mnist_truncated_and_bad_magic(tmp_path):
    paths = fakes.write_mnist_idx(tmp_path, compress=False)
    data = paths["x_train"].read_bytes()
    paths["x_train"].write_bytes(data[:1000])
    with pytest.raises(DatasetError, match="truncated"):
        load_task("mnist", data_dir=tmp_path)
    paths["x_train"].write_bytes(b"\x01\x02\x03\x04" + data[4:])
    with pytest.raises(DatasetError, match="magic"):
        load_task("mnist", data_dir=tmp_path)


# ---------------------------------------------------------------- wine quality
def test_wine_quality_paper_split_and_quoted_header(tmp_path):
    red, _ = fakes.write_wine_quality(tmp_path, n_red=1599, n_white=4898)
    assert red.read_text().startswith('"fixed acidity";"volatile acidity"')
    t = load_task("wine_quality", seed=0, data_dir=tmp_path)
    assert t.x_train.shape == (5198, 11, 1) and t.x_test.shape == (1299, 11, 1)
    assert t.kind == "regression" and t.y_train.shape == (5198, 1) and t.meta["target_scaled"]
    c = load_task("wine_quality", seed=0, data_dir=tmp_path, include_colour=True)
    assert c.x_train.shape[1] == 12
    r = load_task("wine_quality", seed=0, data_dir=tmp_path, colours="red")
    assert len(r.y_train) + len(r.y_test) == 1599


def test_wine_quality_needs_both_files_and_right_columns(tmp_path):
    fakes.write_wine_quality(tmp_path)
    (tmp_path / "winequality-white.csv").unlink()
    with pytest.raises(DatasetError, match="winequality-white.csv"):
        load_task("wine_quality", data_dir=tmp_path)
    (tmp_path / "winequality-white.csv").write_text('"a";"b"\n1;2\n')
    with pytest.raises(DatasetError, match="lacks 12 expected column"):
        load_task("wine_quality", data_dir=tmp_path)


# ---------------------------------------------------------------- energy efficiency
@pytest.mark.parametrize("filename", ["ENB2012_data.xlsx", "ENB2012_data.csv"])
def test_energy_xlsx_and_csv(tmp_path, filename):
    fakes.write_energy(tmp_path / filename)
    t = load_task("energy_efficiency", seed=0, data_dir=tmp_path)
    assert t.x_train.shape == (614, 8, 1) and t.x_test.shape == (154, 8, 1)
    assert t.meta["target_names"] == ["Y1"]
    df = fakes.energy_frame()
    raw = load_task("energy_efficiency", seed=0, data_dir=tmp_path, scale_target=False)
    assert np.isclose(np.sort(np.concatenate([raw.y_train, raw.y_test])[:, 0]), np.sort(df["Y1"].to_numpy()),
                      atol=1e-3).all()
    y2 = load_task("energy_efficiency", seed=0, data_dir=tmp_path, target="Y2", scale_target=False)
    assert np.isclose(np.sort(np.concatenate([y2.y_train, y2.y_test])[:, 0]), np.sort(df["Y2"].to_numpy()),
                      atol=1e-3).all()
    both = load_task("energy_efficiency", seed=0, data_dir=tmp_path, target="both")
    assert both.y_train.shape == (614, 2) and both.n_outputs == 2


def test_energy_corrupt_and_wrong_columns(tmp_path):
    (tmp_path / "ENB2012_data.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(DatasetError, match="cannot read"):
        load_task("energy_efficiency", data_dir=tmp_path)
    other = tmp_path / "o"
    other.mkdir()
    fakes.energy_frame(20).rename(columns={"Y1": "heating"}).to_excel(other / "ENB2012_data.xlsx", index=False)
    with pytest.raises(DatasetError, match="Y1"):
        load_task("energy_efficiency", data_dir=other)
    with pytest.raises(DatasetError, match="target must be"):
        load_task("energy_efficiency", data_dir=other, target="Y3")


# ---------------------------------------------------------------- student performance
def test_student_performance(tmp_path):
    fakes.write_student_por(tmp_path / "student-por.csv")
    t = load_task("student_performance", seed=0, data_dir=tmp_path)
    assert t.x_train.shape == (519, 30, 1) and t.x_test.shape == (130, 30, 1)
    assert np.isfinite(t.x_train).all()
    assert "G1" not in t.meta["feature_names"]
    g = load_task("student_performance", data_dir=tmp_path, include_grades=True)
    assert g.x_train.shape[1] == 32
    oh = load_task("student_performance", data_dir=tmp_path, categorical="onehot")
    assert oh.x_train.shape[1] == 30 - 4 + 5 + 5 + 4 + 3  # Mjob, Fjob, reason, guardian expanded


def test_student_wrong_columns_and_bad_grades(tmp_path):
    (tmp_path / "student-por.csv").write_text("school;sex\nGP;F\n")
    with pytest.raises(DatasetError, match="lacks"):
        load_task("student_performance", data_dir=tmp_path)
    bad = tmp_path / "b"
    bad.mkdir()
    fakes.write_student_por(bad / "student-por.csv", n_rows=30)
    text = (bad / "student-por.csv").read_text().splitlines()
    text[5] = text[5].rsplit(";", 1)[0] + ";eleven"
    (bad / "student-por.csv").write_text("\n".join(text))
    with pytest.raises(DatasetError, match="non-numeric value 'eleven'"):
        load_task("student_performance", data_dir=bad)


# ---------------------------------------------------------------- user CSV / Parquet
def test_csv_classification_and_regression(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=100), "b": rng.normal(size=100),
                       "colour": rng.choice(["red", "green", "blue"], 100),
                       "label": rng.choice(["yes", "no"], 100), "value": rng.normal(size=100)})
    df.to_csv(tmp_path / "mine.csv", index=False, sep=";")
    t = load_task("csv", path=str(tmp_path / "mine.csv"), target="label", features="a,b,colour")
    assert t.kind == "classification" and t.x_train.shape == (80, 3, 1) and t.meta["classes"] == ["no", "yes"]
    r = load_task("csv", path="mine.csv", data_dir=tmp_path, target="value")  # relative to data_dir
    assert r.kind == "regression" and r.x_train.shape == (80, 4, 1)
    df.to_parquet(tmp_path / "mine.parquet")
    p = load_task("csv", path=str(tmp_path / "mine.parquet"), target="label", framing="single_step")
    assert p.x_train.shape == (80, 1, 4)
    with pytest.raises(DatasetError, match="no target column 'nope'"):
        load_task("csv", path=str(tmp_path / "mine.csv"), target="nope")
    with pytest.raises(DatasetError, match="needs options path"):
        load_task("csv")
    with pytest.raises(DatasetError, match="no file"):
        load_task("csv", path=str(tmp_path / "absent.csv"), target="x")


def test_csv_time_series_windows(tmp_path):
    import pandas as pd

    t_axis = np.arange(200)
    pd.DataFrame({"t": t_axis, "s": np.sin(t_axis / 10), "y": np.sin((t_axis + 1) / 10)}).to_csv(
        tmp_path / "series.csv", index=False)
    t = load_task("csv", path=str(tmp_path / "series.csv"), target="y", framing="window:10",
                  scaling="none", scale_target=False)
    assert t.x_train.shape == (151, 10, 2) and t.x_test.shape == (31, 10, 2)
    assert t.meta["split"] == "chronological"
    assert np.allclose(t.x_train[0, :, 0], np.arange(10))  # consecutive rows in order
    assert t.x_test[:, 0, 0].min() >= 160  # test windows come after the training rows


def test_corrupt_gzip_csv_is_clear(tmp_path):
    (tmp_path / "x.csv").write_bytes(b"\x00\x01 not text \xff\xfe" * 10)
    with pytest.raises(DatasetError):
        load_task("csv", path=str(tmp_path / "x.csv"), target="y")


def test_local_cache_is_invalidated_when_the_file_changes(tmp_path):
    clear_cache()
    fakes.write_breast_cancer(tmp_path / "breast-cancer.data", n_rows=100)
    assert len(load_task("breast_cancer", data_dir=tmp_path).y_test) == 30
    time.sleep(0.01)
    fakes.write_breast_cancer(tmp_path / "breast-cancer.data", n_rows=200)
    assert len(load_task("breast_cancer", data_dir=tmp_path).y_test) == 60
