"""The queue's confidence order: its sorted head and lazily sorted rest equal one stable sort."""

import numpy as np

from labelloop.web.queue import ConfidenceOrder


def _stable(ids, conf, pool):
    rows = np.flatnonzero(pool)
    return ids[rows[np.argsort(conf[rows], kind="stable")]]


def test_head_and_rest_equal_a_stable_sort_with_ties():
    rng = np.random.default_rng(0)
    n = 5000
    ids = np.arange(10, 10 + n, dtype=np.int64) * 3
    conf = rng.integers(0, 40, n).astype(np.float32) / 40   # many ties, also at the head's edge
    pool = rng.random(n) < 0.7
    want = _stable(ids, conf, pool)
    for head in (0, 1, 7, 100, int(pool.sum()), n + 5):
        order = ConfidenceOrder(ids, conf, pool, head=head)
        assert len(order) == pool.sum()
        assert np.array_equal(order.head, want[:min(head, len(want))])
        got = np.concatenate(list(order))
        assert np.array_equal(got, want)


def test_a_request_reading_the_head_does_not_sort_the_rest():
    rng = np.random.default_rng(1)
    conf = rng.random(20_000).astype(np.float32)
    order = ConfidenceOrder(np.arange(20_000), conf, np.ones(20_000, bool), head=64)
    first = next(iter(order))
    assert np.array_equal(first, np.argsort(conf, kind="stable")[:64])
    assert order._full is None   # only the head was sorted
    assert len(np.concatenate(list(order))) == 20_000 and order._full is not None


def test_empty_order():
    order = ConfidenceOrder.empty()
    assert len(order) == 0 and list(order) == []
    none_pooled = ConfidenceOrder(np.arange(5), np.ones(5, np.float32), np.zeros(5, bool))
    assert len(none_pooled) == 0 and list(none_pooled) == []
