"""Each member's order of the training samples, epoch after epoch: the data order every engine shares.

Member k's order in epoch e is the e-th ``numpy.random.default_rng([seed_k, 1]).permutation(N)``, so
a member gets the same order alone or in a pack, on any engine. :class:`DataOrder` draws it in
chunks of epochs (``Generator.permuted`` along the epoch rows of a tiled ``arange``: the same
numbers as successive ``permutation`` calls, tested), and on a GPU one chunk ahead, by a thread
that draws while the GPU trains (numpy releases the GIL while it shuffles, and the main thread
mostly waits on the GPU). Drawn one member and one epoch at a time, K = 16,384 Iris-sized orders
took ~110 ms of one core per epoch, more than the GPU's work for that epoch; in chunks ~30 ms.
Worker threads splitting the members measured no better on 2 cores (0.5-2x, by chunk size).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional

import numpy as np

#: elements (members x epochs x columns) of one chunk of orders (64 MiB of int64)
CHUNK_ELEMENTS = 1 << 23
#: epochs per chunk at most
MAX_CHUNK_EPOCHS = 32


class DataOrder:
    """``next_epoch()`` -> the next epoch's orders, an int64 array (K, width): member k's permutation
    of range(N) in columns [0, N), zeros (a valid row index, for padding) in [N, width)."""

    def __init__(self, seeds: list[int], N: int, *, width: Optional[int] = None, ahead: bool = False):
        self.rngs = [np.random.default_rng([s, 1]) for s in seeds]
        self.K, self.N = len(seeds), N
        self.width = N if width is None else width
        self.chunk = max(1, min(MAX_CHUNK_EPOCHS, CHUNK_ELEMENTS // max(1, self.K * self.width)))
        self._ahead = ThreadPoolExecutor(1, thread_name_prefix="data-order") if ahead else None
        self._buf: Optional[np.ndarray] = None
        self._used = 0
        self._next: Optional[Future] = None

    def _draw(self) -> np.ndarray:
        """The next ``chunk`` epochs, (chunk, K, width) (one draw at a time: the generators' order)."""
        out = np.empty((self.chunk, self.K, self.width), dtype=np.int64)
        out[:, :, self.N:] = 0
        base = np.tile(np.arange(self.N), (self.chunk, 1))
        for k, rng in enumerate(self.rngs):
            rng.permuted(base, axis=1, out=out[:, k, :self.N])
        return out

    def next_epoch(self) -> np.ndarray:
        if self._buf is None or self._used == len(self._buf):
            self._buf = self._next.result() if self._next is not None else self._draw()
            self._used = 0
            if self._ahead is not None:
                self._next = self._ahead.submit(self._draw)
        order = self._buf[self._used]
        self._used += 1
        return order

    def close(self) -> None:
        """End the drawing thread (a chunk being drawn ahead is left to finish)."""
        if self._ahead is not None:
            self._ahead.shutdown(wait=False, cancel_futures=True)
