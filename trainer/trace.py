"""Per-iteration trace of a pack, kept on the device and moved to the CPU once per epoch.

Every step appends one ``(len(STEP_STATS), K)`` tensor (no host sync); :meth:`flush` stacks
the epoch's rows and copies them to numpy in one transfer. ``step``, ``epoch`` and ``lr`` are
known on the host and filled in when the per-member trace is assembled.
"""

from __future__ import annotations

import numpy as np
import torch

#: Columns computed on the device each step, in this order.
STEP_STATS: tuple[str, ...] = ("loss", "data_loss", "penalty", "grad_norm", "grad_norm_out",
                               "weight_norm", "update_norm", "sparsity_out", "sparsity_all")

#: |w| below this counts as zero (eq. 42).
SPARSITY_EPS = 1e-5


class TraceRecorder:
    def __init__(self, K: int):
        self.K = K
        self._pending: list[torch.Tensor] = []
        self._pending_steps: list[tuple[int, int]] = []
        self._chunks: list[np.ndarray] = []
        self._steps: list[tuple[int, int]] = []

    def record(self, step: int, epoch: int, row: torch.Tensor) -> None:
        self._pending.append(row)
        self._pending_steps.append((step, epoch))

    def flush(self) -> None:
        if not self._pending:
            return
        self._chunks.append(torch.stack(self._pending).detach().to("cpu", torch.float64).numpy())
        self._steps.extend(self._pending_steps)
        self._pending, self._pending_steps = [], []

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(stats (n_steps, n_stats, K), step/epoch (n_steps, 2))."""
        self.flush()
        if not self._chunks:
            return np.zeros((0, len(STEP_STATS), self.K)), np.zeros((0, 2), dtype=np.int64)
        return np.concatenate(self._chunks), np.asarray(self._steps, dtype=np.int64).reshape(-1, 2)
