#!/usr/bin/env bash
# The fast engine's GPU checks in one go, for a session lent a GPU (the device tool):
#   here, once:   make gpu-wheels      (the wheels the GPU machine's image lacks, into .whl/, git-ignored)
#   device run:   bash benchmarks/gpu_session.sh      carry [".whl"], timeout_s 560
# Writes to $OUT (./gpu-logs without it): the device and versions, the exactness tests on CUDA (the
# compiled Triton kernels of every family and the captured step), then benchmarks/pack_throughput.py
# --device cuda for the triton backend (exact float32, then tf32), the eager loop (the first version's
# figures) and the compiled step (cuda_graph), and the host's side of big packs. Each part has its own
# time limit; one failing does not stop the others. docs/trainer.md says what each figure is compared with.
set -uo pipefail
OUT=${OUT:-gpu-logs}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
bench=(python3 benchmarks/pack_throughput.py --device cuda)
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } 2>&1 | tee "$OUT/device.txt"
timeout 180 python3 -m pytest -q -x -p no:cacheprovider tests/test_triton_pack.py 2>&1 | tee "$OUT/tests.log"
timeout 120 "${bench[@]}" --engine fast --fast-backend triton 2>&1 | tee "$OUT/triton.log"
timeout 50 "${bench[@]}" --engine fast --fast-backend triton --precision tf32 --ks 4096 16384 2>&1 | tee "$OUT/tf32.log"
timeout 50 "${bench[@]}" --engine eager --ks 1 4096 2>&1 | tee "$OUT/eager.log"
timeout 100 "${bench[@]}" --engine fast --fast-backend cuda_graph --ks 1 4096 2>&1 | tee "$OUT/cuda_graph.log"
# the host's side of a big pack: drawing K = 16,384 Iris-sized data orders, per epoch (trainer/data_order.py)
timeout 40 python3 - <<'PY' 2>&1 | tee "$OUT/data_order.log"
import time
from trainer.data_order import DataOrder
order = DataOrder(list(range(16384)), 105, width=128)
order.next_epoch()
t = time.perf_counter()
for _ in range(40):
    order.next_epoch()
print(f"data order, K = 16384: {1e3 * (time.perf_counter() - t) / 40:.1f} ms per epoch (one thread)")
PY
# setup and result assembly against the training loop of big packs (benchmarks/pack_host_cost.py)
timeout 60 python3 benchmarks/pack_host_cost.py --device cuda --engine fast --ks 4096 16384 --epochs 5 2>&1 \
  | tee "$OUT/host_cost.log"
