"""The Redis shared state against a REAL redis-server process (started per
test by tests/redis_server.py): budgets with SqliteStorage's semantics,
exactness across two nodes, limiters, and failing closed."""

from __future__ import annotations

import asyncio
import calendar
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from aimesh.errors import (
    AiMeshError,
    BudgetExceededError,
    NotFoundError,
    ServiceUnavailableError,
    ValidationError,
)
from aimesh.storage import SqliteStorage
from aimesh.storage.base import MONTHLY, month_start_after
from aimesh.storage.redis_state import MAX_EXACT, RedisSharedState
from tests.redis_server import RedisServer, free_port


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


Factory = Callable[..., Awaitable[RedisSharedState]]


@pytest.fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[Factory]:
    """``await nodes("a", clock=...)``: an opened RedisSharedState (a node)
    on the test's server; all closed afterwards."""
    opened: list[RedisSharedState] = []

    async def factory(node_id: str = "a", **kw: Any) -> RedisSharedState:
        s = RedisSharedState(redis_server.url, node_id=node_id, **kw)
        await s.open()
        opened.append(s)
        return s

    yield factory
    for s in opened:
        await s.close()


def utc(*fields: int) -> float:
    return float(calendar.timegm((*fields,)))


# -- budgets: the contract -------------------------------------------------------


async def test_set_get_list_reset(nodes: Factory) -> None:
    clock = Clock()
    s = await nodes(clock=clock)
    assert await s.get_budget("nobody") is None
    assert await s.list_budgets() == []
    tenant_agent = "acme/team@bot:1"  # tenant-scoped ids hold / @ :
    info = await s.set_budget(tenant_agent, 1000, None)
    assert (info.agent_id, info.initial_tokens, info.remaining_tokens) == (tenant_agent, 1000, 1000)
    assert (info.reserved_tokens, info.reset_at, info.consumption_rate) == (0, None, 0.0)
    await s.set_budget("b", 50, int(clock.t) + 3600, 3600)
    await s.reserve(tenant_agent, "r1", 100)
    assert await s.settle("r1", 40) is not None
    clock.t += 10
    got = await s.get_budget(tenant_agent)
    assert got is not None
    assert (got.remaining_tokens, got.consumption_rate) == (960, 4.0)
    listed = await s.list_budgets()
    assert [b.agent_id for b in listed] == sorted(["b", tenant_agent])
    assert listed[1].agent_id == "b" and listed[1].reset_at == int(clock.t) - 10 + 3600
    await s.reserve(tenant_agent, "r2", 10)
    info = await s.reset_budget(tenant_agent)
    assert (info.remaining_tokens, info.reserved_tokens) == (990, 10)
    # set_budget starts usage over but keeps in-flight reservations
    await s.settle("r2", 5)
    await s.reserve(tenant_agent, "r3", 7)
    info = await s.set_budget(tenant_agent, 20, None)
    assert (info.initial_tokens, info.remaining_tokens, info.reserved_tokens) == (20, 13, 7)
    with pytest.raises(NotFoundError) as e:
        await s.reset_budget("nobody")
    assert e.value.code == "budget_not_found"


async def test_reserve_settle_release_idempotent(nodes: Factory) -> None:
    s = await nodes()
    uncapped = await s.reserve("nobody", "u", 10**9)
    assert (uncapped.capped, uncapped.agent_id, uncapped.tokens) == (False, "nobody", 10**9)
    assert await s.settle("u", 5) is None
    await s.set_budget("a", 100, None)
    r = await s.reserve("a", "r1", 80)
    assert r.capped and await s.reserve("a", "r1", 80) == r
    assert await s.reserve("a", "r1", 5) == r  # the id decides, not the amount
    with pytest.raises(BudgetExceededError) as e:
        await s.reserve("a", "r2", 30)
    assert e.value.code == "budget_exceeded"
    assert e.value.details == {"remaining": 20, "requested": 30}
    info = await s.settle("r1", 30)
    assert info is not None and (info.remaining_tokens, info.reserved_tokens) == (70, 0)
    assert await s.settle("r1", 30) is None  # idempotent
    assert await s.release("r1") is None
    await s.reserve("a", "r3", 50)
    info = await s.release("r3")
    assert info is not None and (info.remaining_tokens, info.reserved_tokens) == (70, 0)
    info = await s.settle((await s.reserve("a", "r4", 10)).reservation_id, 500)  # overshoot
    assert info is not None and info.remaining_tokens == 0
    with pytest.raises(BudgetExceededError):
        await s.reserve("a", "r5", 1)
    with pytest.raises(BudgetExceededError):  # overdrawn: not even 0 fits (as SQLite)
        await s.reserve("a", "r6", 0)


async def test_tokens_beyond_2_53_are_refused(nodes: Factory) -> None:
    s = await nodes()
    with pytest.raises(ValidationError) as e:
        await s.set_budget("a", MAX_EXACT + 1, None)
    assert e.value.code == "invalid_tokens"
    info = await s.set_budget("a", MAX_EXACT, None)
    assert info.remaining_tokens == MAX_EXACT  # exact at the bound
    await s.reserve("a", "r", MAX_EXACT - 1)
    assert (await s.get_budget("a")).remaining_tokens == 1  # type: ignore[union-attr]
    with pytest.raises(ValidationError):
        await s.reserve("a", "r2", MAX_EXACT + 1)
    with pytest.raises(ValidationError):
        await s.reserve("a", "r3", -1)


# -- the same scenarios against SqliteStorage ----------------------------------------


Step = Callable[[Any, Clock], Awaitable[Any]]


async def _record(s: Any, clock: Clock, steps: list[Step]) -> list[Any]:
    """Run the steps; each answer (or error's code/details) is recorded."""
    out: list[Any] = []
    for step in steps:
        try:
            out.append(await step(s, clock))
        except AiMeshError as e:
            out.append((type(e).__name__, e.code, e.details))
    return out


def _advance(dt: float) -> Step:
    async def step(s: Any, clock: Clock) -> None:
        clock.t += dt

    return step


def _call(name: str, *args: Any) -> Step:
    async def step(s: Any, clock: Clock) -> Any:
        result = await getattr(s, name)(*args)
        if name == "list_budgets":
            return sorted(result, key=lambda b: b.agent_id)
        return result

    return step


T0 = 1_800_000_000.0
NEW_YEAR = calendar.timegm((2027, 1, 1, 0, 0, 0))

SCENARIOS: dict[str, tuple[float, list[Step]]] = {
    "rules": (
        T0,
        [
            _call("reserve", "nobody", "r0", 10**9),
            _call("settle", "r0", 5),
            _call("set_budget", "a", 100, int(T0) + 60, 60),
            _call("reserve", "a", "r1", 80),
            _call("reserve", "a", "r1", 80),
            _call("reserve", "a", "r2", 30),
            _advance(5),
            _call("settle", "r1", 120),
            _call("reserve", "a", "r3", 1),
            _advance(56),
            _call("get_budget", "a"),
            _call("reserve", "a", "r4", 50),
            _advance(3),
            _call("reset_budget", "a"),
            _call("recover"),
            _call("get_budget", "a"),
            _call("reset_budget", "nobody"),
            _call("list_budgets"),
        ],
    ),
    "missed_periods_and_settle_across_reset": (
        T0 + 0.25,
        [
            _call("set_budget", "a", 1000, int(T0) + 10, 7),
            _call("reserve", "a", "r1", 400),
            _call("settle", "r1", 300),
            _call("reserve", "a", "r2", 600),
            _advance(100.5),  # many periods missed: next reset skips them
            _call("reserve", "a", "r3", 500),  # r2 still reserved: refused
            # The refusal wrote nothing (SQLite rolls its savepoint back), so
            # the reset happens now, after r2's usage is counted: used == 0.
            _advance(0.1),
            _call("settle", "r2", 10),
            _call("get_budget", "a"),
            _advance(3),
            _call("reserve", "a", "r4", 990),
            _advance(4),
            _call("settle", "r4", 990),  # settled after the reset: counted anew
            _call("get_budget", "a"),
            _call("release", "r4"),
        ],
    ),
    "one_off_reset_and_past_reset_at": (
        T0,
        [
            _call("set_budget", "a", 10, int(T0) + 30),
            _call("reserve", "a", "r1", 10),
            _call("settle", "r1", 10),
            _call("reserve", "a", "r2", 1),
            _advance(30),  # exactly reset_at: due
            _call("get_budget", "a"),
            _advance(1000),
            _call("get_budget", "a"),  # no period: never again
            _call("set_budget", "b", 5, int(T0) - 100, 60),  # already due when set
            _call("set_budget", "c", 5, int(T0) - 100, 0),
            _call("list_budgets"),
        ],
    ),
    "monthly_new_year": (
        utc(2026, 12, 31, 23, 59, 59),
        [
            _call("set_budget", "t@acme", 100, NEW_YEAR, MONTHLY),
            _call("reserve", "t@acme", "r1", 70),
            _call("settle", "r1", 70),
            _call("reserve", "t@acme", "r2", 40),
            _advance(2),  # 2027-01-01T00:00:01Z
            _call("get_budget", "t@acme"),
            _call("reserve", "t@acme", "r3", 100),
            _advance(31 * 86400),  # 2027-02-01T00:00:01Z
            _call("settle", "r3", 1),
            _call("list_budgets"),
        ],
    ),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_same_answers_as_sqlite(scenario: str, nodes: Factory, tmp_path: Path) -> None:
    t0, steps = SCENARIOS[scenario]
    sqlite_clock, redis_clock = Clock(t0), Clock(t0)
    sqlite = SqliteStorage(tmp_path, clock=sqlite_clock)
    await sqlite.open()
    try:
        expected = await _record(sqlite, sqlite_clock, steps)
    finally:
        await sqlite.close()
    got = await _record(await nodes(clock=redis_clock), redis_clock, steps)
    assert got == expected
    # the scenario really exercised refusals and resets
    assert any(isinstance(x, tuple) and x[1] == "budget_exceeded" for x in expected) or (
        scenario == "one_off_reset_and_past_reset_at"
    )


async def test_automatic_reset_fixed_period(nodes: Factory) -> None:
    clock = Clock(T0)
    s = await nodes(clock=clock)
    await s.set_budget("a", 10, int(T0) + 60, 60)
    await s.settle((await s.reserve("a", "r", 10)).reservation_id, 10)
    clock.t = T0 + 59.999
    assert (await s.get_budget("a")).remaining_tokens == 0  # type: ignore[union-attr]
    clock.t = T0 + 60 + 60 * 5 + 1  # five more periods missed
    info = await s.get_budget("a")
    assert info is not None and info.remaining_tokens == 10
    assert info.reset_at == int(T0) + 60 * 7


async def test_automatic_reset_monthly(nodes: Factory) -> None:
    clock = Clock(utc(2026, 12, 31, 23, 59, 59))
    s = await nodes(clock=clock)
    await s.set_budget("t", 100, month_start_after(clock.t), MONTHLY)
    await s.settle((await s.reserve("t", "r", 100)).reservation_id, 100)
    assert (await s.get_budget("t")).remaining_tokens == 0  # type: ignore[union-attr]
    clock.t = utc(2027, 1, 1, 0, 0, 1)
    info = await s.get_budget("t")
    assert info is not None and info.remaining_tokens == 100
    assert info.reset_at == calendar.timegm((2027, 2, 1, 0, 0, 0))


# -- two nodes ----------------------------------------------------------------------


async def test_exact_under_1000_concurrent_reserves_on_two_nodes(nodes: Factory) -> None:
    a, b = await nodes("a"), await nodes("b")
    await a.set_budget("agent", 100, None)
    results = await asyncio.gather(
        *((a if i % 2 else b).reserve("agent", f"r{i}", 1) for i in range(1000)),
        return_exceptions=True,
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert (len(admitted), len(refused)) == (100, 900)
    info = await b.get_budget("agent")
    assert info is not None and (info.reserved_tokens, info.remaining_tokens) == (100, 0)
    await asyncio.gather(
        *((a, b)[i % 2].settle(r.reservation_id, 1) for i, r in enumerate(admitted))
    )
    await asyncio.gather(*(b.settle(r.reservation_id, 50) for r in admitted))  # idempotent
    info = await a.get_budget("agent")
    assert info is not None
    assert (info.initial_tokens - info.remaining_tokens, info.reserved_tokens) == (100, 0)


async def test_recover_releases_only_this_nodes_reservations(
    nodes: Factory, redis_server: RedisServer
) -> None:
    a, b = await nodes("a"), await nodes("b")
    await a.set_budget("x", 100, None)
    await a.set_budget("y", 100, None)
    await a.reserve("x", "a1", 10)
    await a.reserve("y", "a2", 20)
    await a.reserve("y", "a3", 5)
    await a.settle("a3", 5)  # settled: nothing left to release
    await b.reserve("x", "b1", 30)
    await b.reserve("x", "a1", 99)  # a1 is a's: idempotent, stays a's
    await a.recover()
    x, y = await b.get_budget("x"), await b.get_budget("y")
    assert x is not None and y is not None
    assert (x.reserved_tokens, y.reserved_tokens, y.remaining_tokens) == (30, 0, 95)
    assert await a.settle("a1", 10) is None  # released: gone
    assert (await a.settle("b1", 30)) is not None  # any node may settle b's
    await a.recover()  # nothing left: a no-op
    raw = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert sorted(await raw.keys("aimesh:resv:*")) == []
        assert await raw.exists("aimesh:node:a:resv", "aimesh:node:b:resv") == 0
    finally:
        await raw.aclose()


# -- rate limits --------------------------------------------------------------------


async def test_token_bucket_burst_and_refill(nodes: Factory, redis_server: RedisServer) -> None:
    clock = Clock()
    a, b = await nodes("a", clock=clock), await nodes("b", clock=clock)
    bucket = [("agent/x", 2.0, 5.0)]
    answers = await asyncio.gather(*((a, b)[i % 2].acquire(bucket) for i in range(40)))
    assert sum(ok for ok, _ in answers) == 5
    refused = [wait for ok, wait in answers if not ok]
    assert all(w == pytest.approx(0.5) for w in refused)  # one token at 2/s
    clock.t += 0.5
    assert await a.acquire(bucket) == (True, 0.0)
    assert (await b.acquire(bucket))[0] is False
    ok, wait = await a.acquire(bucket, n=3)
    assert not ok and wait == pytest.approx(1.5)
    clock.t += 100  # refills to the burst, not beyond
    assert [(await a.acquire(bucket))[0] for _ in range(6)] == [True] * 5 + [False]
    raw = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        ttl = await raw.pttl("aimesh:rl:tb:agent/x")
        assert 0 < ttl <= 4000  # idle keys vanish (5 tokens at 2/s + margin)
    finally:
        await raw.aclose()


async def test_sliding_window_exact(nodes: Factory, redis_server: RedisServer) -> None:
    clock = Clock()
    a, b = await nodes("a", clock=clock), await nodes("b", clock=clock)
    win = [("k", 3, 10.0)]
    answers = await asyncio.gather(*((a, b)[i % 2].acquire((), win) for i in range(20)))
    assert sum(ok for ok, _ in answers) == 3
    assert {w for ok, w in answers if not ok} == {10.0}
    clock.t += 4
    assert await a.acquire((), win) == (False, 6.0)  # the oldest leaves at t0 + 10
    clock.t += 6  # t0 + 10: exactly when the first three leave
    assert await b.acquire((), win) == (True, 0.0)
    clock.t += 1
    assert (await a.acquire((), win, n=2)) == (True, 0.0)
    ok, wait = await a.acquire((), win)
    assert not ok and wait == pytest.approx(9.0)  # t0+10's entry leaves at t0+20
    ok, wait = await a.acquire((), win, n=3)
    assert not ok and wait == pytest.approx(10.0)  # all three must leave
    raw = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert await raw.zcard("aimesh:rl:sw:k") == 3
        assert 0 < await raw.pttl("aimesh:rl:sw:k") <= 11000
    finally:
        await raw.aclose()


async def test_acquire_is_all_or_nothing(nodes: Factory) -> None:
    clock = Clock()
    s = await nodes(clock=clock)
    roomy = ("roomy", 1.0, 10.0)
    tight = ("tight", 1.0, 2.0)
    window = ("w", 2, 60.0)
    assert await s.acquire([roomy, tight], [window]) == (True, 0.0)
    assert await s.acquire([roomy, tight], [window]) == (True, 0.0)
    # tight and the window are exhausted; the answer is the longest wait
    ok, wait = await s.acquire([roomy, tight], [window])
    assert not ok and wait == pytest.approx(60.0)
    # The detail names the first limiter that refused.
    assert (await s.acquire_detail([roomy, tight], [window]))[2] == "tight"
    assert (await s.acquire_detail([roomy], [window]))[2] == "w"
    for _ in range(5):
        assert (await s.acquire([roomy, tight]))[0] is False
    # nothing of the refused calls was taken from roomy: 8 tokens are left
    assert [(await s.acquire([roomy]))[0] for _ in range(9)] == [True] * 8 + [False]
    # a refused window-only call took nothing either
    clock.t += 60
    assert await s.acquire((), [window], n=2) == (True, 0.0)


async def test_acquire_validation(nodes: Factory) -> None:
    s = await nodes()
    with pytest.raises(ValidationError) as e:
        await s.acquire([("k", 1.0, 3.0)], n=4)
    assert e.value.code == "invalid_request"
    with pytest.raises(ValidationError):
        await s.acquire((), [("k", 2, 1.0)], n=3)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValidationError):
            await s.acquire([("k", bad, 3.0)])
    with pytest.raises(ValidationError):
        await s.acquire([("k", 1.0, 3.0)], n=0)
    with pytest.raises(ValidationError):
        await s.acquire([("k", 1.0, 3.0), ("k", 2.0, 3.0)])
    assert await s.acquire(()) == (True, 0.0)


# -- failing closed -------------------------------------------------------------------


async def _raises_unavailable(call: Awaitable[Any]) -> None:
    t0 = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as e:
        await call
    assert time.monotonic() - t0 < 2.0
    assert e.value.code == "shared_state_unavailable"
    assert e.value.retry_after == 1


async def test_fails_closed_when_redis_dies_and_recovers_after_restart(
    nodes: Factory, redis_server: RedisServer
) -> None:
    s = await nodes()
    await s.set_budget("a", 10, None)
    assert await s.healthy()
    redis_server.kill()
    await _raises_unavailable(s.reserve("a", "r1", 1))
    await _raises_unavailable(s.acquire([("k", 1.0, 1.0)]))
    await _raises_unavailable(s.set_budget("a", 10, None))
    await _raises_unavailable(s.settle("r1", 1))
    await _raises_unavailable(s.get_budget("a"))
    await _raises_unavailable(s.list_budgets())
    await _raises_unavailable(s.recover())
    t0 = time.monotonic()
    assert await s.healthy() is False
    assert time.monotonic() - t0 < 2.0
    redis_server.restart()  # same port, empty: the client reconnects
    assert await s.healthy()
    assert await s.get_budget("a") is None  # the data went with the process
    info = await s.set_budget("a", 10, None)
    assert info.remaining_tokens == 10
    assert (await s.reserve("a", "r1", 4)).capped
    assert await s.acquire([("k", 1.0, 1.0)]) == (True, 0.0)


async def test_hung_redis_times_out_instead_of_hanging(
    nodes: Factory, redis_server: RedisServer
) -> None:
    s = await nodes()
    await s.set_budget("a", 10, None)
    redis_server.freeze()
    try:
        await _raises_unavailable(s.reserve("a", "r1", 1))
        await _raises_unavailable(s.acquire([("k", 1.0, 1.0)]))
        t0 = time.monotonic()
        assert await s.healthy() is False
        assert time.monotonic() - t0 < 2.0
    finally:
        redis_server.thaw()
    assert await s.healthy()
    # Whether or not the timed-out script ran once the server woke, a retry
    # with the same reservation id leaves exactly one reservation.
    assert (await s.reserve("a", "r1", 1)).capped
    info = await s.get_budget("a")
    assert info is not None and info.reserved_tokens == 1


async def test_unreachable_redis_and_no_password_in_messages() -> None:
    port = free_port()  # nothing listens there
    url = f"redis://:s3cr%40t-pw@127.0.0.1:{port}/0"
    s = RedisSharedState(url, node_id="a")
    t0 = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as e:
        await s.open()
    assert time.monotonic() - t0 < 2.0
    assert e.value.code == "shared_state_unavailable" and e.value.retry_after == 1
    for text in (str(e.value), e.value.message, repr(e.value.to_dict())):
        assert "s3cr" not in text and url not in text
    assert e.value.__cause__ is None and e.value.__suppress_context__
    assert await s.healthy() is False
    await _raises_unavailable(s.reserve("a", "r", 1))  # never opened: closed
    await s.close()


async def test_password_url_and_wrong_password() -> None:
    with RedisServer(extra_args=("--requirepass", "right-pw")) as server:
        good = RedisSharedState(f"redis://:right-pw@127.0.0.1:{server.port}/0", node_id="a")
        await good.open()
        assert (await good.set_budget("a", 1, None)).remaining_tokens == 1
        await good.close()
        bad_url = f"redis://:wrong-pw@127.0.0.1:{server.port}/0"
        bad = RedisSharedState(bad_url, node_id="a")
        with pytest.raises(ServiceUnavailableError) as e:
            await bad.open()
        assert e.value.code == "shared_state_unavailable"
        assert "wrong-pw" not in str(e.value)


async def test_prefixes_isolate_deployments(nodes: Factory) -> None:
    one, two = await nodes("a", prefix="one:"), await nodes("a", prefix="two:")
    await one.set_budget("a", 5, None)
    assert await two.get_budget("a") is None
    assert (await two.reserve("a", "r", 100)).capped is False
    assert [b.agent_id for b in await one.list_budgets()] == ["a"]
