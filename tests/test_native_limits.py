"""Rate limiters, priority queue, dedup hashing and histograms through
aimesh._native, with hypothesis properties."""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimesh import _native
from aimesh.errors import QueueFullError, ValidationError

# -- limiters -------------------------------------------------------------------

requests_st = st.lists(
    st.tuples(
        st.floats(0, 0.5, allow_nan=False), st.sampled_from(["a", "b", "c", "d"]), st.integers(1, 3)
    ),
    min_size=1,
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(requests_st, st.floats(0.5, 50), st.integers(3, 10), st.integers(1, 4))
def test_token_bucket_never_admits_more_than_rate_t_plus_burst(reqs, rate, burst, max_keys):
    tb = _native.TokenBucket(
        rate, burst, global_rate=rate * 2, global_burst=burst * 2, max_keys=max_keys
    )
    now = 0.0
    admitted: dict[str, float] = {}
    total = 0.0
    for dt, key, n in reqs:
        now += dt
        ok, retry = tb.try_acquire(key, n, now=now)
        if ok:
            admitted[key] = admitted.get(key, 0) + n
            total += n
            assert retry == 0.0
        else:
            assert retry > 0
        assert len(tb) <= max_keys
    for key, count in admitted.items():
        assert count <= rate * now + burst + 1e-6, key
    assert total <= 2 * rate * now + 2 * burst + 1e-6


@settings(max_examples=200, deadline=None)
@given(requests_st, st.integers(1, 10), st.floats(0.1, 2))
def test_sliding_window_never_exceeds_limit_in_any_window(reqs, limit, window):
    sw = _native.SlidingWindow(limit, window, max_keys=2)
    now = 0.0
    log: dict[str, list[tuple[float, int]]] = {}
    for dt, key, n in reqs:
        now += dt
        if n > limit:
            with pytest.raises(ValidationError):
                sw.try_acquire(key, n, now=now)
            continue
        ok, _ = sw.try_acquire(key, n, now=now)
        if ok:
            log.setdefault(key, []).append((now, n))
    for entries in log.values():
        for t0, _ in entries:
            in_window = sum(n for t, n in entries if t0 <= t < t0 + window)
            assert in_window <= limit


def test_retry_after_is_accurate():
    tb = _native.TokenBucket(10, 2)
    assert tb.try_acquire("k", now=0.0) == (True, 0.0)
    assert tb.try_acquire("k", now=0.0) == (True, 0.0)
    ok, retry = tb.try_acquire("k", now=0.0)
    assert not ok and retry == pytest.approx(0.1)
    assert tb.try_acquire("k", now=0.1)[0]
    sw = _native.SlidingWindow(2, 1.0)
    sw.try_acquire("k", now=0.0)
    sw.try_acquire("k", now=0.3)
    ok, retry = sw.try_acquire("k", now=0.5)
    assert not ok and retry == pytest.approx(0.5)
    with pytest.raises(ValidationError) as e:
        tb.try_acquire("k", 3)
    assert e.value.code == "invalid_request"
    for bad in ((0, 1), (1, -1), (math.nan, 1)):
        with pytest.raises(ValidationError):
            _native.TokenBucket(*bad)


def test_exact_under_threads():
    tb = _native.TokenBucket(0.001, 1000)
    admitted = []

    def worker() -> None:
        n = 0
        for _ in range(500):
            ok, _ = tb.try_acquire("shared", now=1.0)
            n += ok
        admitted.append(n)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 1000


# -- priority queue -------------------------------------------------------------

items_st = st.lists(st.tuples(st.integers(0, 100), st.none() | st.integers(0, 100)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(items_st, st.integers(0, 100))
def test_queue_pop_order_matches_reference(items, now):
    q = _native.PriorityQueue(1000)
    for i, (prio, deadline) in enumerate(items):
        q.push(i, prio, deadline)
    out, expired = [], []
    while True:
        item, exp = q.pop(now_ms=now)
        expired += exp
        if item is None:
            break
        out.append(item)
    live = [(i, p, d) for i, (p, d) in enumerate(items) if d is None or d > now]
    ref = sorted(live, key=lambda x: (-x[1], x[2] if x[2] is not None else math.inf, x[0]))
    assert out == [i for i, _, _ in ref]
    assert sorted(expired) == [i for i, (_, d) in enumerate(items) if d is not None and d <= now]
    assert len(q) == 0


def test_queue_bounds_remove_and_pop_many():
    q = _native.PriorityQueue(3)
    seqs = [q.push(f"m{i}", 50) for i in range(3)]
    with pytest.raises(QueueFullError) as e:
        q.push("overflow")
    assert e.value.code == "queue_full" and e.value.status == 503
    assert q.remove(seqs[1]) and not q.remove(seqs[1])
    assert len(q) == 2 and q.capacity == 3
    q.push("late", 90)
    items, expired = q.pop_many(10)
    assert items == ["late", "m0", "m2"] and expired == []
    with pytest.raises(ValidationError):
        q.push("x", 101)


# -- hashing and dedup ------------------------------------------------------------


def test_dedup_key_and_blake3():
    assert _native.blake3_hex(b"") == (
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    )
    k = _native.dedup_key("agent", b"payload", "ctx")
    assert len(k) == 32
    assert k == _native.dedup_key("agent", memoryview(b"payload"), "ctx")
    assert k != _native.dedup_key("agent", b"payload", "ctx2")
    assert k != _native.dedup_key("agen", b"tpayload", "ctx")
    assert k != _native.dedup_key("agent", b"payload", "ctx", namespace="tenant-b")


def test_dedup_table_ttl_bound_and_atomicity():
    t = _native.DedupTable(10.0, max_entries=3)
    assert t.insert_if_absent(b"k", "first", now=0.0) == (True, "first")
    assert t.insert_if_absent(b"k", "second", now=5.0) == (False, "first")
    assert t.get(b"k", now=10.0) is None
    assert t.insert_if_absent(b"k", "third", now=10.0) == (True, "third")
    for i in range(5):
        t.set(bytes([i]), i, now=11.0)
    assert t.get(b"k", now=11.0) is None  # oldest evicted
    assert t.get(b"\x04", now=11.0) == 4
    assert t.remove(b"\x04") and not t.remove(b"\x04")
    assert t.purge_expired(now=100.0) == 2
    results = []
    table = _native.DedupTable(60.0)

    def race(i: int) -> None:
        results.append(table.insert_if_absent(b"same", i)[0])

    threads = [threading.Thread(target=race, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results.count(True) == 1


# -- histograms -------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.01, 100_000, allow_nan=False), min_size=1, max_size=500))
def test_histogram_percentiles_within_relative_error(values):
    h = _native.LatencyHistogram()
    h.record_many(values)
    ordered = sorted(values)
    for q in (50, 90, 99, 99.9, 100):
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        want = ordered[rank - 1]
        got = h.percentile(q)
        assert abs(got - want) <= want * 1e-3 + 1e-3, (q, got, want)
    assert h.count == len(values)
    assert h.min == pytest.approx(min(values)) and h.max == pytest.approx(max(values))
    assert h.mean == pytest.approx(sum(values) / len(values))


def test_histogram_merge_reset_and_errors():
    a, b, both = (_native.LatencyHistogram() for _ in range(3))
    a.record_many([1, 2, 3])
    b.record(100, count=3)
    both.record_many([1, 2, 3, 100, 100, 100])
    a.merge(b)
    assert a.snapshot() == both.snapshot()
    assert set(a.snapshot()) == {"count", "min", "max", "mean", "p50", "p99", "p999"}
    with pytest.raises(ValidationError) as e:
        a.merge(_native.LatencyHistogram(significant_figures=2))
    assert e.value.code == "histogram_mismatch"
    with pytest.raises(ValidationError):
        a.record(math.nan)
    a.reset()
    assert a.count == 0 and a.p99 == 0.0
