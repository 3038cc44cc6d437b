"""Dataset loading speed: ~500k rows in the real KDD Cup 99 format (gzip, as published).

Generates the file in a temporary directory (no download), then times
  * a cold load (parse + encode + split + scale + frame),
  * a warm load (raw arrays cached in-process: split + scale + frame only),
  * a warm k-fold load (what the search layer does per fold),
and prints rows/s. Usage: python benchmarks/dataset_load.py [N_ROWS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.datasets import clear_cache, fakes  # noqa: E402
from trainer.tasks import load_task  # noqa: E402


def main(n_rows: int = 494_021) -> None:
    with tempfile.TemporaryDirectory(prefix="rnnhpo-bench-") as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        path = fakes.write_kdd(d / "kddcup.data_10_percent.gz", n_rows=n_rows, seed=0)
        gen = time.perf_counter() - t0
        print(f"generated {n_rows} KDD rows ({path.stat().st_size / 1e6:.1f} MB gzip) in {gen:.1f} s")

        clear_cache()
        t0, c0 = time.perf_counter(), time.process_time()
        task = load_task("kddcup99", seed=0, data_dir=d)
        cold, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        load_task("kddcup99", seed=1, data_dir=d)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_task("kddcup99", seed=0, data_dir=d, fold=0, n_folds=5)
        fold = time.perf_counter() - t0
        print(f"train {task.x_train.shape}, test {task.x_test.shape}, {task.n_outputs} classes")
        print(f"cold load (parse gzip CSV + encode + split + scale + frame): {cold:.2f} s "
              f"= {n_rows / cold:,.0f} rows/s (CPU time {cold_cpu:.2f} s = {n_rows / cold_cpu:,.0f} rows/s "
              "per core; wall time suffers on a shared machine)")
        print(f"warm load (cached raw arrays; split + scale + frame):       {warm:.2f} s "
              f"= {n_rows / warm:,.0f} rows/s")
        print(f"warm 5-fold fold load:                                      {fold:.2f} s "
              f"= {n_rows / fold:,.0f} rows/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 494_021)
