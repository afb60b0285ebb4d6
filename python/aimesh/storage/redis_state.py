"""Shared, multi-node state in Redis: token budgets and rate limiters.

Several gateways ("nodes") that serve the same agents must agree on how much
of a budget is left and how many requests a limiter has admitted. This module
keeps that state in one Redis server and makes every operation ONE Lua script
(EVALSHA), so a check and its update are atomic across all nodes: a budget of
N tokens never has more than N tokens reserved and used, whatever the
concurrency.

The budget methods have the same signatures and semantics as those of
:class:`~aimesh.storage.sqlite.SqliteStorage` (automatic resets included), so
the Mesh can use either. :meth:`RedisSharedState.recover` differs on purpose:
it releases only the reservations of *this* node, because the other nodes
are alive and their messages are still in flight.

Key layout (under ``prefix``, ``aimesh:`` by default)::

    budget:{agent}      hash  limit, used, reserved, reset_at, period_s, last_reset_ms
    budgets             set   agent ids that have a budget (list_budgets)
    resv:{id}           hash  agent, tokens, node of an open reservation
    node:{node}:resv    set   reservation ids a node holds (recover)
    rl:tb:{key}         hash  t (tokens), ts (last refill): a token bucket
    rl:sw:{key}         zset  admission times: an exact sliding window

Limiter keys carry a PEXPIRE, so idle ones vanish (an absent key is a full
bucket or an empty window: forgetting it changes no answer).

Time is the caller's clock (``clock()``, passed to the scripts), not Redis
``TIME``: tests inject a clock, and budgets reset at the same instants as
with SQLite. Nodes should therefore keep their clocks in sync (NTP).

Scripts derive some keys from stored values (a reservation names its
agent), so this needs a standalone (or Sentinel-managed) Redis, not Redis
Cluster.

Failures fail closed: when Redis cannot answer, every operation raises
``ServiceUnavailableError("shared_state_unavailable", retry_after=1)``;
nothing is ever admitted without the shared state's consent.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from aimesh.errors import (
    BudgetExceededError,
    NotFoundError,
    ServiceUnavailableError,
    ValidationError,
)
from aimesh.models import BudgetInfo
from aimesh.storage.base import Reservation, budget_info, month_start_after

#: Lua numbers are IEEE doubles: integers are exact up to 2^53, so token
#: counts (and ``reset_at``) beyond that are refused rather than rounded.
MAX_EXACT = 2**53

#: Connections per node; more concurrent operations wait for one.
MAX_CONNECTIONS = 64

#: Every failure of the Redis link: refused/closed connections, timeouts,
#: a server still loading its data, a read-only replica, out of memory...
#: ``RedisError`` covers all of redis-py's; the rest come from the socket.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisError,
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
)

# ---------------------------------------------------------------------------
# Lua. Values live in hashes as decimal strings; ``tonumber`` reads them
# and ``int`` (%.0f) writes integers back without exponent notation.
# ---------------------------------------------------------------------------

_LIB = r"""
local MAX_EXACT = 9007199254740992
local function int(x) return string.format('%.0f', x) end

-- Python's float floor division (CPython's float_floor_div), so that the
-- next reset is computed exactly like aimesh.storage.base.next_reset.
local function pyfloordiv(a, b)
  local mod = math.fmod(a, b)
  local div = (a - mod) / b
  if mod ~= 0 and ((b < 0) ~= (mod < 0)) then div = div - 1 end
  if div == 0 then return 0 end
  local fl = math.floor(div)
  if div - fl > 0.5 then fl = fl + 1 end
  return fl
end

local function load(key)
  local v = redis.call('HMGET', key, 'limit', 'used', 'reserved', 'reset_at',
                       'period_s', 'last_reset_ms')
  if not v[1] then return nil end
  return {limit = v[1], used = v[2] or '0', reserved = v[3] or '0',
          reset_at = v[4] or '', period_s = v[5] or '', last = v[6] or '0'}
end

local function save(key, b)
  redis.call('HSET', key, 'limit', b.limit, 'used', b.used, 'reserved', b.reserved,
             'reset_at', b.reset_at, 'period_s', b.period_s, 'last_reset_ms', b.last)
end

-- SqliteStorage._roll: once reset_at has passed, usage starts over and the
-- next reset is a period later (MONTHLY: the month start computed by the
-- caller, passed as month_next; no period: a one-off reset).
local function roll(b, now, now_ms, month_next)
  if b.reset_at == '' then return false end
  local ra = tonumber(b.reset_at)
  if now < ra then return false end
  local p = tonumber(b.period_s)
  if p == -1 then
    b.reset_at = month_next
  elseif p ~= nil and p ~= 0 then
    b.reset_at = int(ra + (pyfloordiv(now - ra, p) + 1) * p)
  else
    b.reset_at = ''
  end
  b.used = '0'
  b.last = now_ms
  return true
end

local function state(b)
  return {b.limit, b.used, b.reserved, b.reset_at, b.last}
end
"""

# KEYS: budget, budgets-set
# ARGV: agent, tokens, reset_at, period_s, now, now_ms, month_next
_SET_BUDGET = r"""
local old = load(KEYS[1])
-- A fresh budget, but reservations of in-flight messages are kept: they
-- still settle against it.
local b = {limit = ARGV[2], used = '0', reserved = old and old.reserved or '0',
           reset_at = ARGV[3], period_s = ARGV[4], last = ARGV[6]}
roll(b, tonumber(ARGV[5]), ARGV[6], ARGV[7])
save(KEYS[1], b)
redis.call('SADD', KEYS[2], ARGV[1])
return state(b)
"""

# KEYS: budget; ARGV: now, now_ms, month_next
_GET_BUDGET = r"""
local b = load(KEYS[1])
if not b then return {} end
if roll(b, tonumber(ARGV[1]), ARGV[2], ARGV[3]) then save(KEYS[1], b) end
return state(b)
"""

# KEYS: budgets-set; ARGV: prefix, now, now_ms, month_next
_LIST_BUDGETS = r"""
local out = {}
for _, agent in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. 'budget:' .. agent
  local b = load(key)
  if b then
    if roll(b, tonumber(ARGV[2]), ARGV[3], ARGV[4]) then save(key, b) end
    table.insert(out, agent)
    for _, v in ipairs(state(b)) do table.insert(out, v) end
  end
end
return out
"""

# KEYS: budget; ARGV: now, now_ms, month_next
_RESET_BUDGET = r"""
local b = load(KEYS[1])
if not b then return {} end
b.used = '0'
b.last = ARGV[2]
roll(b, tonumber(ARGV[1]), ARGV[2], ARGV[3])
save(KEYS[1], b)
return state(b)
"""

# KEYS: budget; ARGV: tokens, now, now_ms, month_next
_UPDATE_LIMIT = r"""
local b = load(KEYS[1])
if not b then return {} end
b.limit = ARGV[1]
roll(b, tonumber(ARGV[2]), ARGV[3], ARGV[4])
save(KEYS[1], b)
return state(b)
"""

# KEYS: resv, budget, node-set
# ARGV: agent, reservation_id, tokens, node, now, now_ms, month_next
_RESERVE = r"""
local r = redis.call('HMGET', KEYS[1], 'agent', 'tokens')
if r[1] then return {'dup', r[1], r[2]} end
local b = load(KEYS[2])
if not b then return {'uncapped'} end
roll(b, tonumber(ARGV[5]), ARGV[6], ARGV[7])
local tokens = tonumber(ARGV[3])
if tonumber(b.limit) - tonumber(b.used) - tonumber(b.reserved) < tokens then
  -- Like SQLite's rolled-back savepoint, a refusal writes nothing.
  return {'exceeded', unpack(state(b))}
end
b.reserved = int(tonumber(b.reserved) + tokens)
save(KEYS[2], b)
redis.call('HSET', KEYS[1], 'agent', ARGV[1], 'tokens', ARGV[3], 'node', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[2])
return {'ok'}
"""

# KEYS: resv; ARGV: reservation_id, actual_tokens, prefix, now, now_ms, month_next
_SETTLE = r"""
local r = redis.call('HMGET', KEYS[1], 'agent', 'tokens', 'node')
if not r[1] then return {} end
redis.call('DEL', KEYS[1])
if r[3] then redis.call('SREM', ARGV[3] .. 'node:' .. r[3] .. ':resv', ARGV[1]) end
local key = ARGV[3] .. 'budget:' .. r[1]
local b = load(key)
if not b then return {} end
local reserved = tonumber(b.reserved) - tonumber(r[2])
if reserved < 0 then reserved = 0 end
-- An overshoot counts; past 2^53 the budget is exhausted anyway, and the
-- clamp keeps every stored integer exact.
local used = tonumber(b.used) + math.max(0, tonumber(ARGV[2]))
if used > MAX_EXACT then used = MAX_EXACT end
b.reserved = int(reserved)
b.used = int(used)
roll(b, tonumber(ARGV[4]), ARGV[5], ARGV[6])
save(key, b)
local out = state(b)
table.insert(out, 1, r[1])
return out
"""

# KEYS: node-set; ARGV: prefix, node
_RECOVER = r"""
local n = 0
for _, rid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local rkey = ARGV[1] .. 'resv:' .. rid
  local r = redis.call('HMGET', rkey, 'agent', 'tokens', 'node')
  if r[1] and r[3] == ARGV[2] then
    local key = ARGV[1] .. 'budget:' .. r[1]
    local reserved = redis.call('HGET', key, 'reserved')
    if reserved then
      local left = tonumber(reserved) - tonumber(r[2])
      if left < 0 then left = 0 end
      redis.call('HSET', key, 'reserved', int(left))
    end
    redis.call('DEL', rkey)
    n = n + 1
  end
end
redis.call('DEL', KEYS[1])
return n
"""

# KEYS: nb token-bucket keys, then the sliding-window keys
# ARGV: now, n, nonce, nb, (rate, burst) per bucket, (limit, window_s) per window
# Same rules as the native limiters (rust/src/limiter.rs): check every
# limiter first, consume from all of them only if all have room.
_ACQUIRE = r"""
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local nonce = ARGV[3]
local nb = tonumber(ARGV[4])
local refused = false
local first = 0  -- the first limiter (index into KEYS) that refused
local wait = 0
local buckets = {}
for i = 1, nb do
  local rate = tonumber(ARGV[3 + 2 * i])
  local burst = tonumber(ARGV[4 + 2 * i])
  local h = redis.call('HMGET', KEYS[i], 't', 'ts')
  local tokens, last = burst, now
  if h[1] then tokens = tonumber(h[1]); last = tonumber(h[2]) end
  -- A clock behind the stored one (another node's) refills nothing.
  if now > last then
    tokens = math.min(burst, tokens + (now - last) * rate)
    last = now
  end
  if tokens < n then
    refused = true
    if first == 0 then first = i end
    wait = math.max(wait, (n - tokens) / rate)
  end
  buckets[i] = {tokens, last, rate, burst}
end
local base = 4 + 2 * nb
local windows = {}
for j = 1, #KEYS - nb do
  local key = KEYS[nb + j]
  local limit = tonumber(ARGV[base + 2 * j - 1])
  local window = tonumber(ARGV[base + 2 * j])
  -- Drop what left the window (t + window <= now, the native rule).
  repeat
    local old = redis.call('ZRANGE', key, 0, 99, 'WITHSCORES')
    local gone = {}
    for k = 1, #old, 2 do
      if tonumber(old[k + 1]) + window <= now then
        table.insert(gone, old[k])
      else
        break
      end
    end
    if #gone > 0 then redis.call('ZREM', key, unpack(gone)) end
  until #gone < 100
  local count = redis.call('ZCARD', key)
  if count + n > limit then
    refused = true
    if first == 0 then first = nb + j end
    -- Room for n once the (count + n - limit) oldest entries have left.
    local e = redis.call('ZRANGE', key, count + n - limit - 1, count + n - limit - 1,
                         'WITHSCORES')
    local w = window
    if e[2] then w = math.max(0, tonumber(e[2]) + window - now) end
    wait = math.max(wait, w)
  end
  windows[j] = {key, window}
end
if refused then
  if wait <= 0 then wait = 0.001 end
  return {0, string.format('%.17g', wait), first}
end
for i = 1, nb do
  local s = buckets[i]
  local left = s[1] - n
  redis.call('HSET', KEYS[i], 't', string.format('%.17g', left),
             'ts', string.format('%.17g', s[2]))
  -- Idle (full again) after (burst - left) / rate; a later expiry is harmless.
  redis.call('PEXPIRE', KEYS[i], int(math.ceil((s[4] - left) / s[3] * 1000) + 1000))
end
for j = 1, #windows do
  local key, window = windows[j][1], windows[j][2]
  for k = 1, n do redis.call('ZADD', key, now, nonce .. ':' .. k) end
  redis.call('PEXPIRE', key, int(math.ceil(window * 1000) + 1000))
end
return {1, '0'}
"""

_SCRIPTS = {
    "set_budget": _SET_BUDGET,
    "get_budget": _GET_BUDGET,
    "list_budgets": _LIST_BUDGETS,
    "reset_budget": _RESET_BUDGET,
    "update_limit": _UPDATE_LIMIT,
    "reserve": _RESERVE,
    "settle": _SETTLE,
    "recover": _RECOVER,
    "acquire": _ACQUIRE,
}


def _num(x: float) -> str:
    """A float as Lua reads it back exactly (repr round-trips through strtod)."""
    return repr(float(x))


def _opt(x: int | None) -> str:
    return "" if x is None else str(int(x))


def _check_tokens(tokens: int) -> None:
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens <= MAX_EXACT:
        raise ValidationError(
            "invalid_tokens", "tokens must be an integer between 0 and 2^53 (shared state)"
        )


def _positive(name: str, v: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
        raise ValidationError("invalid_argument", f"{name} must be a finite number > 0")
    return float(v)


class RedisSharedState:
    """Token budgets and rate limiters shared by every node through one Redis.

    ``url`` is a ``redis://`` (or ``rediss://``) URL and may hold a password:
    it never appears in an error message or a log. ``node_id`` names this
    gateway; its reservations are the ones :meth:`recover` releases.
    ``timeout_s`` bounds connecting and every reply, so a dead Redis is
    reported (fail closed) instead of hanging the request.
    """

    def __init__(
        self,
        url: str,
        *,
        node_id: str,
        prefix: str = "aimesh:",
        clock: Callable[[], float] = time.time,
        timeout_s: float = 0.5,
    ) -> None:
        self._url = url
        self.node_id = node_id
        self.prefix = prefix
        self.clock = clock
        self.timeout_s = timeout_s
        # Strings scrubbed from any message built from a driver error.
        parts = urlsplit(url)
        self._secrets = [s for s in (url, parts.password, unquote(parts.password or "")) if s]
        self._client: Redis | None = None
        self._scripts: dict[str, Callable[..., Awaitable[Any]]] = {}

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        """Connect and PING; ``ServiceUnavailableError`` if Redis does not answer."""
        if self._client is not None:
            return
        # A blocking pool: a burst of concurrent operations queues for a
        # connection (each script is short) instead of failing with "too many
        # connections"; the wait is bounded, so a stuck Redis still fails
        # closed quickly.
        pool = BlockingConnectionPool.from_url(
            self._url,
            max_connections=MAX_CONNECTIONS,
            timeout=max(1.0, 4 * self.timeout_s),
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            # No retries: the caller fails closed at once and retries later
            # itself; a silent retry of a limiter script could also consume
            # twice when the first attempt ran but its reply was lost.
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        client = Redis(connection_pool=pool)
        try:
            await client.ping()
        except _UNAVAILABLE as e:
            await _quiet_close(client)
            raise self._unavailable(e) from None
        # register_script only hashes the source: EVALSHA, then SCRIPT LOAD
        # and EVALSHA again when the server does not know it (a restart).
        self._scripts = {name: client.register_script(_LIB + src) for name, src in _SCRIPTS.items()}
        self._client = client

    async def close(self) -> None:
        """Close the connections (the shared state stays in Redis)."""
        client, self._client = self._client, None
        self._scripts = {}
        if client is not None:
            await _quiet_close(client)

    async def healthy(self) -> bool:
        """True when Redis answers a PING now; never raises."""
        client = self._client
        if client is None:
            return False
        try:
            return bool(await client.ping())
        except Exception:
            return False

    async def recover(self) -> None:
        """Release the reservations THIS node left (after its crash): the
        other nodes' messages are still in flight, so theirs stay."""
        node_set = self._node_key(self.node_id)
        await self._run("recover", [node_set], [self.prefix, self.node_id])

    # -- plumbing -----------------------------------------------------------------

    def _unavailable(self, e: BaseException) -> ServiceUnavailableError:
        text = f"shared state (Redis) unavailable: {type(e).__name__}: {e}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return ServiceUnavailableError("shared_state_unavailable", text, retry_after=1)

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        script = self._scripts.get(name)
        if self._client is None or script is None:
            raise ServiceUnavailableError(
                "shared_state_unavailable", "shared state is not open", retry_after=1
            )
        try:
            return await script(keys=list(keys), args=list(args))
        except _UNAVAILABLE as e:
            # ``from None``: the driver's exception is not chained into logs.
            raise self._unavailable(e) from None

    def _budget_key(self, agent_id: str) -> str:
        return f"{self.prefix}budget:{agent_id}"

    def _resv_key(self, reservation_id: str) -> str:
        return f"{self.prefix}resv:{reservation_id}"

    def _node_key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}:resv"

    def _time_args(self) -> tuple[float, list[str]]:
        """``now`` and the script arguments ``now, now_ms, month_next``.
        ``month_next`` is only used by a MONTHLY budget whose reset is due;
        Lua has no calendar, so Python computes it."""
        now = self.clock()
        return now, [_num(now), str(int(now * 1000)), str(month_start_after(now))]

    @staticmethod
    def _info(agent_id: str, st: Sequence[Any], now: float) -> BudgetInfo:
        """SqliteStorage._info over the script's ``limit, used, reserved,
        reset_at, last_reset_ms``."""
        limit, used, reserved = int(st[0]), int(st[1]), int(st[2])
        reset_at = None if st[3] in ("", None) else int(st[3])
        return budget_info(agent_id, limit, used, reserved, reset_at, int(st[4]), now)

    # -- budgets ------------------------------------------------------------------

    async def set_budget(
        self, agent_id: str, tokens: int, reset_at: int | None, period_s: int | None = None
    ) -> BudgetInfo:
        """A fresh budget: the limit is ``tokens`` and nothing is used yet
        (reservations of in-flight messages are kept and still settle)."""
        _check_tokens(tokens)
        if reset_at is not None and not -MAX_EXACT <= reset_at <= MAX_EXACT:
            raise ValidationError("invalid_reset_at", "reset_at must be within +-2^53")
        now, targs = self._time_args()
        st = await self._run(
            "set_budget",
            [self._budget_key(agent_id), f"{self.prefix}budgets"],
            [agent_id, str(tokens), _opt(reset_at), _opt(period_s), *targs],
        )
        return self._info(agent_id, st, now)

    async def get_budget(self, agent_id: str) -> BudgetInfo | None:
        """The agent's budget (after an automatic reset if one is due), or None."""
        now, targs = self._time_args()
        st = await self._run("get_budget", [self._budget_key(agent_id)], targs)
        return self._info(agent_id, st, now) if st else None

    async def list_budgets(self) -> list[BudgetInfo]:
        """Every budget, by agent id."""
        now, targs = self._time_args()
        flat = await self._run("list_budgets", [f"{self.prefix}budgets"], [self.prefix, *targs])
        out = [self._info(flat[i], flat[i + 1 : i + 6], now) for i in range(0, len(flat), 6)]
        return sorted(out, key=lambda b: b.agent_id)

    async def update_budget_limit(self, agent_id: str, tokens: int) -> BudgetInfo | None:
        """A new limit; usage and reservations are kept (a tenant changing
        tier mid-month). None if the agent has no budget."""
        _check_tokens(tokens)
        now, targs = self._time_args()
        st = await self._run("update_limit", [self._budget_key(agent_id)], [str(tokens), *targs])
        return self._info(agent_id, st, now) if st else None

    async def reset_budget(self, agent_id: str) -> BudgetInfo:
        """Usage back to 0 now (reservations stay); ``NotFoundError`` if the
        agent has no budget."""
        now, targs = self._time_args()
        st = await self._run("reset_budget", [self._budget_key(agent_id)], targs)
        if not st:
            raise NotFoundError("budget_not_found", f"no budget for agent {agent_id!r}")
        return self._info(agent_id, st, now)

    async def reserve(self, agent_id: str, reservation_id: str, tokens: int) -> Reservation:
        """Atomic check-and-reserve across all nodes; ``BudgetExceededError``
        if it does not fit. An agent without a budget gets an uncapped
        reservation (nothing stored); the same ``reservation_id`` again
        answers the existing reservation (idempotent)."""
        _check_tokens(tokens)
        now, targs = self._time_args()
        res = await self._run(
            "reserve",
            [
                self._resv_key(reservation_id),
                self._budget_key(agent_id),
                self._node_key(self.node_id),
            ],
            [agent_id, reservation_id, str(tokens), self.node_id, *targs],
        )
        status = res[0]
        if status == "dup":
            return Reservation(reservation_id, res[1], int(res[2]), True)
        if status == "uncapped":
            return Reservation(reservation_id, agent_id, tokens, False)
        if status == "exceeded":
            info = self._info(agent_id, res[1:], now)
            raise BudgetExceededError(
                "budget_exceeded",
                f"agent {agent_id!r} has {info.remaining_tokens} tokens left, {tokens} requested",
                details={"remaining": info.remaining_tokens, "requested": tokens},
            )
        return Reservation(reservation_id, agent_id, tokens, True)

    async def settle(self, reservation_id: str, actual_tokens: int) -> BudgetInfo | None:
        """Release the reservation and count ``actual_tokens`` as used (an
        overshoot is counted too; later reservations then fail). Idempotent:
        an unknown or already settled reservation answers None."""
        # Clamped to the exact range; usage past 2^53 exhausts any budget.
        actual = min(max(0, int(actual_tokens)), MAX_EXACT)
        now, targs = self._time_args()
        res = await self._run(
            "settle",
            [self._resv_key(reservation_id)],
            [reservation_id, str(actual), self.prefix, *targs],
        )
        return self._info(res[0], res[1:], now) if res else None

    async def release(self, reservation_id: str) -> BudgetInfo | None:
        """Give the reservation back unused (``settle`` with 0 tokens)."""
        return await self.settle(reservation_id, 0)

    # -- rate limits ----------------------------------------------------------------

    async def acquire(
        self,
        buckets: Sequence[tuple[str, float, float]],
        windows: Sequence[tuple[str, int, float]] = (),
        n: int = 1,
    ) -> tuple[bool, float]:
        """:meth:`acquire_detail` without the name of the refusing limiter."""
        allowed, wait, _ = await self.acquire_detail(buckets, windows, n)
        return allowed, wait

    async def acquire_detail(
        self,
        buckets: Sequence[tuple[str, float, float]],
        windows: Sequence[tuple[str, int, float]] = (),
        n: int = 1,
    ) -> tuple[bool, float, str]:
        """Take ``n`` from several limiters at once, all or nothing.

        ``buckets`` are ``(key, rate_per_s, burst)`` token buckets and
        ``windows`` ``(key, limit, window_s)`` exact sliding windows. Answers
        ``(True, 0.0)`` when every limiter had room (all consumed), else
        ``(False, retry_after_s)`` with nothing consumed, the wait being the
        longest among the limiters that refused. The third value is the key
        of the first limiter that refused ("" when admitted). A request no
        limiter could ever admit (``n`` above a burst or a limit) is a
        ``ValidationError``, as with the native limiters.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValidationError("invalid_argument", "n must be an integer > 0")
        keys: list[str] = []
        args: list[str] = []
        cap = math.inf
        for key, rate, burst in buckets:
            b = _positive("burst", burst)
            keys.append(f"{self.prefix}rl:tb:{key}")
            args += [_num(_positive("rate", rate)), _num(b)]
            cap = min(cap, b)
        for key, limit, window_s in windows:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
                raise ValidationError("invalid_argument", "limit must be an integer > 0")
            keys.append(f"{self.prefix}rl:sw:{key}")
            args += [str(limit), _num(_positive("window_s", window_s))]
            cap = min(cap, limit)
        if len(set(keys)) != len(keys):
            # One script state per key: the same limiter twice would be
            # checked twice but consumed once.
            raise ValidationError("invalid_argument", "a limiter key appears twice")
        if n > cap:
            raise ValidationError(
                "invalid_request", f"a request of {n} can never be admitted (limit {cap:g})"
            )
        if not keys:
            return True, 0.0, ""
        # Unique sliding-window members: this call's nonce and an index.
        nonce = os.urandom(8).hex()
        res = await self._run(
            "acquire", keys, [_num(self.clock()), str(n), nonce, str(len(buckets)), *args]
        )
        if int(res[0]) == 1:
            return True, 0.0, ""
        names = [k for k, _, _ in buckets] + [k for k, _, _ in windows]
        return False, float(res[1]), names[int(res[2]) - 1]


async def _quiet_close(client: Redis) -> None:
    """Close a client and its pool; a dead server must not turn close()
    into an error."""
    with contextlib.suppress(*_UNAVAILABLE):
        await client.aclose()
    with contextlib.suppress(*_UNAVAILABLE):
        # A pool passed in is the caller's to close (redis-py does not).
        await client.connection_pool.disconnect()
