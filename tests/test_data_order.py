"""The data order every engine shares (trainer/data_order.py): member k's e-th epoch is the e-th
``default_rng([seed_k, 1]).permutation(N)``, whatever the chunking, the drawing ahead and the
padding width."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.data_order import DataOrder


@pytest.mark.parametrize("chunk", [1, 3, 32])
@pytest.mark.parametrize("options", [{}, {"width": 16}, {"ahead": True}, {"ahead": True, "width": 13}])
def test_each_epoch_is_the_next_permutation_of_each_members_generator(chunk, options):
    seeds, N = [5, 9, 13, 2, 7], 11
    order = DataOrder(seeds, N, **options)
    order.chunk = chunk
    reference = [np.random.default_rng([s, 1]) for s in seeds]
    try:
        for _ in range(10):
            got = order.next_epoch()
            assert got.shape == (len(seeds), options.get("width", N)) and got.dtype == np.int64
            assert np.array_equal(got[:, :N], np.stack([r.permutation(N) for r in reference]))
            assert not got[:, N:].any(), "the padding columns index row 0"
    finally:
        order.close()


def test_a_member_gets_the_same_order_alone_or_in_a_pack():
    pack = DataOrder([1, 2, 3], 20, ahead=True)
    alone = DataOrder([2], 20)
    try:
        for _ in range(4):
            assert np.array_equal(pack.next_epoch()[1], alone.next_epoch()[0])
    finally:
        pack.close()


def test_chunks_stay_within_their_memory_budget():
    from trainer.data_order import CHUNK_ELEMENTS

    big = DataOrder(list(range(16384)), 105, width=128)
    assert big.chunk * 16384 * 128 <= CHUNK_ELEMENTS and big.chunk >= 1
    assert DataOrder([0], 105).chunk == 32
