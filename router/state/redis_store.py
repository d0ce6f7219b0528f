"""Shared state in Redis: budgets, rate limits, model health and the response cache agree
across replicas because every read-modify-write is one Lua script (atomic on the server).

Key layout (Redis Cluster-safe: all keys one script touches share a ``{hash tag}``):

    <p>:{budget:<scope>:<window>}:spent     string  micro-dollars charged
    <p>:{budget:<scope>:<window>}:res       hash    reservation id -> micro-dollars held
    <p>:{budget:<scope>:<window>}:exp       zset    reservation id -> expiry (server unix s)
    <p>:{budget:<scope>:<window>}:settled   hash    reservation id -> micro-dollars (idempotence)
    <p>:{rl:<name>}:rpm / :tpm              string  GCRA theoretical arrival time (server unix s), PX
    <p>:{health}:model:<model>              hash    ModelHealth fields
    <p>:{health}:open                       zset    model -> open_until (for the max-ejected share)
    <p>:{health}:latency                    hash    model -> EWMA latency (s), weight 0.2
    <p>:cache:<key>                         string  cached response, EX ttl (single-key ops)
    <p>:resp:<response id>                  string  stored Responses API response, EX ttl

``<p>`` is ``prefix`` (default ``tr``). Budget keys expire ``scope.window_ttl_s`` after their
last write. Budget and rate-limit scripts read the clock with ``TIME`` so replicas with skewed
clocks agree; the health scripts use the ``now`` the caller passes (as the protocol says).

Connections: a bounded pool of ``max_connections``, opened once (all of them by ``self_test``
at start-up) and reused. A call first takes one of ``max_connections`` slots; when all are in
use it waits for one, up to ``pool_wait_s``: a burst queues for a connection instead of opening
a new one per call (each with its handshake), and waiting is not an outage. Past that wait a
call raises ``StateBusy`` (the request is refused; the store is not declared down).

Every call holding a slot is bounded: socket connect/read timeouts of ``timeout_s``, no client
retries, and a deadline of ``2 × timeout_s`` (a connect plus a command). An unreachable, hung,
loading, read-only or out-of-memory Redis raises ``StateUnavailable``; so does a call that was
still waiting for a slot when another call found Redis unreachable (an outage does not make a
queue of callers each wait out their own timeout). The pool reconnects by itself once Redis
answers again, and scripts lost by a restart are reloaded.
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    MasterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.circuit import CircuitSettings, ModelHealth
from router.state.base import BudgetScope, RateDecision, RateLimit, Reservation, StateBusy, StateUnavailable
from router.state.gcra import gcra

try:  # redis-py >= 7: "auto" maintenance notifications skip the pool's stale-connection check
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - older redis-py
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

T = TypeVar("T")

LATENCY_WEIGHT = 0.2  # weight of the newest observation (as in the memory store)
HEALTH_CHECK_INTERVAL_S = 30
POOL_SIZE = 16  # connections per process: Redis runs one command at a time; more only queue there
POOL_WAIT_S = 10.0  # longest wait for a free connection in a burst (not an outage; an outage ends it at once)
OPEN_PRUNE_S = 3600  # open-set entries that ended this long before `now` are dropped
HEALTH_FIELDS = ("consecutive_failures", "ejections", "open_until", "cooldown_until", "probe_until", "healthy_since")

_TRANSIENT_RESPONSES = (OutOfMemoryError, ReadOnlyError, TryAgainError, ClusterDownError, MasterDownError)
_REFUSED = (NoPermissionError, AuthenticationError, AuthorizationError)


class ScriptsRefused(StateUnavailable):
    """Redis answers but will not let this user run the router's scripts or commands."""


# --- Lua -----------------------------------------------------------------------------------
# Numbers go back to Python as strings formatted with %.17g (Lua's tostring keeps 14 digits,
# and a Lua number returned as a reply is truncated to an integer).

_COMMON = """
local function fmt(x) return string.format('%.17g', x) end
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

_BUDGET = (
    _COMMON
    + """
local function drop_expired(res, exp, now)
  local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', fmt(now))
  for _, id in ipairs(gone) do
    redis.call('HDEL', res, id)
    redis.call('ZREM', exp, id)
  end
end
local function held(res)
  local total = 0
  for _, v in ipairs(redis.call('HVALS', res)) do total = total + tonumber(v) end
  return total
end
local function keep(ttl, first, last)
  if tonumber(ttl) > 0 then
    for i = first, last do redis.call('EXPIRE', KEYS[i], ttl) end
  end
end
"""
)

# KEYS spent res exp settled | ARGV id amount limit ttl_s window_ttl_s -> {admitted, spent, reserved}
RESERVE = (
    _BUDGET
    + """
local now = server_now()
drop_expired(KEYS[2], KEYS[3], now)
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local reserved = held(KEYS[2])
local amount = tonumber(ARGV[2])
if spent + reserved + amount > tonumber(ARGV[3]) then return {0, spent, reserved} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], fmt(now + tonumber(ARGV[4])), ARGV[1])
keep(ARGV[5], 1, 4)
return {1, spent, reserved + amount}
"""
)

# KEYS spent res exp settled | ARGV id actual window_ttl_s -> 1 charged, 0 already settled
SETTLE = (
    _BUDGET
    + """
if redis.call('HSETNX', KEYS[4], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('INCRBY', KEYS[1], ARGV[2])
keep(ARGV[3], 1, 4)
return 1
"""
)

# KEYS spent res exp settled | ARGV id
RELEASE = """
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# KEYS spent res exp settled -> {spent, reserved}
USAGE = (
    _BUDGET
    + """
drop_expired(KEYS[2], KEYS[3], server_now())
return {tonumber(redis.call('GET', KEYS[1]) or '0'), held(KEYS[2])}
"""
)

# GCRA exactly as router/state/gcra.py, over requests (cost 1) and tokens together.
# KEYS rpm_tat tpm_tat | ARGV rpm tpm tokens
# -> {admitted, retry_after_s, remaining_requests, remaining_tokens, reset_requests_s, reset_tokens_s}
GCRA = (
    _COMMON
    + """
local WINDOW = 60.0
local now = server_now()
local function check(key, rate, cost)
  if rate == 0 then return nil end
  local interval = WINDOW / rate
  local start = now
  local tat = tonumber(redis.call('GET', key) or '')
  if tat ~= nil and tat > now then start = tat end
  local new_tat = start + cost * interval
  local ahead = new_tat - now
  if ahead > WINDOW then
    local current = start - now
    return {false, start, ahead - WINDOW, math.max(0, math.floor((WINDOW - current) / interval)), current}
  end
  return {true, new_tat, 0, math.max(0, math.floor((WINDOW - ahead) / interval)), ahead}
end
local r = check(KEYS[1], tonumber(ARGV[1]), 1)
local t = check(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]))
local admitted = (r == nil or r[1]) and (t == nil or t[1])
local retry = 0
for _, c in ipairs({r or false, t or false}) do
  if c and not c[1] and c[3] > retry then retry = c[3] end
end
if admitted then
  for i, c in ipairs({r or false, t or false}) do
    if c then redis.call('SET', KEYS[i], fmt(c[2]), 'PX', math.max(1, math.ceil((c[2] - now) * 1000)) + 1000) end
  end
end
return {admitted and '1' or '0', fmt(retry),
        r and fmt(r[4]) or '-1', t and fmt(t[4]) or '-1',
        r and fmt(r[5]) or '0', t and fmt(t[5]) or '0'}
"""
)

_HEALTH = (
    _COMMON
    + """
local function load(key)
  local v = redis.call('HMGET', key, 'consecutive_failures', 'ejections', 'open_until', 'cooldown_until',
                       'probe_until', 'healthy_since')
  return {tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0,
          tonumber(v[5]) or 0, tonumber(v[6]) or 0}
end
local function save(key, h)
  redis.call('HSET', key, 'consecutive_failures', fmt(h[1]), 'ejections', fmt(h[2]), 'open_until', fmt(h[3]),
             'cooldown_until', fmt(h[4]), 'probe_until', fmt(h[5]), 'healthy_since', fmt(h[6]))
  return {fmt(h[1]), fmt(h[2]), fmt(h[3]), fmt(h[4]), fmt(h[5]), fmt(h[6])}
end
-- as circuit.multiplier: ejections in a row, less one per decay_s healthy since healthy_since
local function multiplier(h, now, decay_s)
  if h[6] == 0 then return h[2] end
  return math.max(0, h[2] - math.floor(math.max(0, now - h[6]) / decay_s))
end
"""
)

# KEYS health latency open | ARGV model latency_s ('' if none) now decay_s -> health fields
SUCCESS = (
    _HEALTH
    + """
if ARGV[2] ~= '' then
  local value = tonumber(ARGV[2])
  local previous = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '')
  if previous ~= nil then value = previous + """
    + repr(LATENCY_WEIGHT)
    + """ * (value - previous) end
  redis.call('HSET', KEYS[2], ARGV[1], fmt(value))
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'0', '0', '0', '0', '0', '0'} end
local h = load(KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local now = tonumber(ARGV[3])
if h[6] == 0 then h[6] = now end
if multiplier(h, now, tonumber(ARGV[4])) == 0 then return save(KEYS[1], {0, 0, 0, h[4], 0, 0}) end
return save(KEYS[1], {0, h[2], 0, h[4], 0, h[6]})
"""
)

# KEYS health open | ARGV model now immediate threshold base_s max_s allowed_open decay_s -> health fields
FAILURE = (
    _HEALTH
    + """
local now = tonumber(ARGV[2])
local h = load(KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now - """
    + str(OPEN_PRUNE_S)
    + """))
local opened = redis.call('ZCOUNT', KEYS[2], '(' .. fmt(now), '+inf')
local may_eject = opened + 1 <= tonumber(ARGV[7])
local failures = h[1] + 1
local half_open = h[3] <= now and h[2] > 0 and h[6] == 0
if ARGV[3] == '1' or half_open or (failures >= tonumber(ARGV[4]) and may_eject) then
  local ejections = multiplier(h, now, tonumber(ARGV[8])) + 1
  local open_until = now + math.min(tonumber(ARGV[5]) * ejections, tonumber(ARGV[6]))
  redis.call('ZADD', KEYS[2], fmt(open_until), ARGV[1])
  return save(KEYS[1], {0, ejections, open_until, h[4], 0, 0})
end
h[1] = failures
return save(KEYS[1], h)
"""
)

# KEYS health | ARGV now wait_s -> health fields
RATE_LIMITED = (
    _HEALTH
    + """
local h = load(KEYS[1])
h[4] = math.max(h[4], tonumber(ARGV[1]) + tonumber(ARGV[2]))
return save(KEYS[1], h)
"""
)

# KEYS health | ARGV now probe_timeout_s -> 1 may call, 0 another caller holds the probe
PROBE = (
    _HEALTH
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
local now = tonumber(ARGV[1])
local h = load(KEYS[1])
if h[3] > now or h[2] == 0 or h[6] > 0 then return 1 end
if h[5] > now then return 0 end
h[5] = now + tonumber(ARGV[2])
save(KEYS[1], h)
return 1
"""
)

SCRIPTS: dict[str, str] = {
    "reserve": RESERVE,
    "settle": SETTLE,
    "release": RELEASE,
    "usage": USAGE,
    "gcra": GCRA,
    "success": SUCCESS,
    "failure": FAILURE,
    "rate_limited": RATE_LIMITED,
    "probe": PROBE,
}


class RedisStateStore:
    def __init__(
        self,
        url: str,
        *,
        circuit: CircuitSettings | None = None,
        timeout_s: float = 0.25,
        prefix: str = "tr",
        max_connections: int = POOL_SIZE,
        pool_wait_s: float = POOL_WAIT_S,
    ) -> None:
        self.settings = circuit or CircuitSettings()
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.deadline_s = 2 * timeout_s
        self.max_connections = max_connections
        self.pool_wait_s = pool_wait_s
        self._slots = asyncio.Semaphore(max_connections)
        self._unreachable_at = -float("inf")  # monotonic time a call last found Redis unreachable
        self._pool_open = False
        self._opening = asyncio.Lock()
        options: dict[str, Any] = {}
        if MaintNotificationsConfig is not None:
            options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
        self.client = aioredis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=HEALTH_CHECK_INTERVAL_S,
            retry=Retry(NoBackoff(), 0),
            max_connections=max_connections,
            **options,
        )
        self.scripts = {name: self.client.register_script(body) for name, body in SCRIPTS.items()}

    # plumbing -----------------------------------------------------------------------------
    def _where(self) -> str:
        kw = self.client.connection_pool.connection_kwargs
        return kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    async def _bounded(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis interaction on a pooled connection; see the module docstring."""
        if not self._pool_open:
            await self._open_pool_once()
        if self._slots.locked():
            await self._wait_for(self._slots)
        else:
            await self._slots.acquire()  # a free slot: returns without suspending
        try:
            return await self._deadline(call)
        finally:
            self._slots.release()

    async def _wait_for(self, gate: asyncio.Semaphore | asyncio.Lock) -> None:
        """Acquire ``gate``, waiting up to ``pool_wait_s``; fail at once if a call made
        meanwhile found Redis unreachable."""
        waiting_since = time.monotonic()
        try:
            async with asyncio.timeout(self.pool_wait_s):
                await gate.acquire()
        except TimeoutError:
            raise StateBusy(
                f"Redis at {self._where()}: all {self.max_connections} connections stayed busy for {self.pool_wait_s}s"
            ) from None
        if self._unreachable_at >= waiting_since:
            gate.release()
            raise StateUnavailable(f"Redis at {self._where()} unreachable: found down while this call waited")

    async def _open_pool_once(self) -> None:
        """Open every pooled connection, one after another, while the first callers wait (a
        burst of handshakes at once is what made a burst of requests look like an outage)."""
        await self._wait_for(self._opening)
        try:
            if self._pool_open:
                return
            pool = self.client.connection_pool
            opened: list[Any] = []
            try:
                for _ in range(self.max_connections):
                    opened.append(await self._deadline(pool.get_connection))
            finally:
                for connection in opened:
                    await pool.release(connection)
            self._pool_open = True
        finally:
            self._opening.release()

    async def _deadline(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` under the deadline; map outages to StateUnavailable."""
        try:
            async with asyncio.timeout(self.deadline_s):
                return await call()
        except _REFUSED as exc:  # AuthenticationError is also a ConnectionError: check first
            raise ScriptsRefused(f"Redis at {self._where()} refused: {type(exc).__name__}: {exc}") from exc
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:  # OSError covers TimeoutError
            self._unreachable_at = time.monotonic()
            raise StateUnavailable(
                f"Redis at {self._where()} unreachable: {type(exc).__name__}: {exc}".rstrip(": ")
            ) from exc
        except _TRANSIENT_RESPONSES as exc:
            raise StateUnavailable(f"Redis at {self._where()} cannot serve: {type(exc).__name__}: {exc}") from exc
        except ResponseError as exc:
            message = str(exc)
            if message.startswith("BUSY"):
                raise StateUnavailable(f"Redis at {self._where()} busy: {message}") from exc
            if "unknown command" in message.lower():
                raise ScriptsRefused(f"Redis at {self._where()} refused: {message}") from exc
            raise

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        script = self.scripts[name]
        return await self._bounded(lambda: script(keys=keys, args=args))

    # keys ---------------------------------------------------------------------------------
    def _budget_keys(self, scope: BudgetScope) -> list[str]:
        tag = f"{self.prefix}:{{budget:{scope.name}:{scope.window}}}"
        return [f"{tag}:spent", f"{tag}:res", f"{tag}:exp", f"{tag}:settled"]

    def _rate_keys(self, name: str) -> list[str]:
        tag = f"{self.prefix}:{{rl:{name}}}"
        return [f"{tag}:rpm", f"{tag}:tpm"]

    def _health_key(self, model: str) -> str:
        return f"{self.prefix}:{{health}}:model:{model}"

    @property
    def _open_key(self) -> str:
        return f"{self.prefix}:{{health}}:open"

    @property
    def _latency_key(self) -> str:
        return f"{self.prefix}:{{health}}:latency"

    def _cache_key(self, key: str) -> str:
        return f"{self.prefix}:cache:{key}"

    def _response_key(self, response_id: str) -> str:
        return f"{self.prefix}:resp:{response_id}"

    # start-up -----------------------------------------------------------------------------
    async def self_test(self) -> None:
        """Load every script, run each once on throw-away keys, then open the connection pool.

        Raises StateUnavailable if Redis cannot be reached, RuntimeError if it answers but
        will not run the scripts (ACL without +@scripting, EVALSHA renamed, wrong credentials,
        scripts giving wrong answers). Never falls back silently.
        """
        try:
            for name, script in self.scripts.items():
                sha = _text(await self._bounded(partial(self.client.script_load, script.script)))
                if sha != script.sha:
                    raise RuntimeError(
                        f"Redis returned SHA {sha} for the router's {name!r} script, expected {script.sha}"
                    )
            await self._exercise_scripts()
        except ScriptsRefused as exc:
            raise RuntimeError(
                f"Redis refused the router's Lua scripts ({exc}). Fix: give the router's Redis user "
                "+@scripting (EVAL, EVALSHA, SCRIPT LOAD) and access to its keys (~*), make sure EVALSHA "
                "and SCRIPT are not renamed or disabled, check the credentials in ROUTER_REDIS_URL; "
                "or unset ROUTER_REDIS_URL to keep state in-process"
            ) from None
        except StateUnavailable:
            raise
        except ResponseError as exc:
            raise RuntimeError(f"Redis at {self._where()} rejected the router's Lua scripts: {exc}") from None

    async def _exercise_scripts(self) -> None:
        probe = copy.copy(self)
        probe.prefix = f"{self.prefix}:selftest:{uuid.uuid4().hex}"
        scope = BudgetScope(name="self-test", window="0", limit_micros=10, window_ttl_s=60)
        limit = RateLimit("self-test", requests_per_minute=60, tokens_per_minute=600)
        model = "self-test"
        checks: list[tuple[str, bool]] = []
        try:
            checks.append(("reserve", (await probe.reserve(scope, "a", 4, 60)).admitted))
            checks.append(("reserve over the limit", not (await probe.reserve(scope, "b", 7, 60)).admitted))
            checks.append(("settle", await probe.settle(scope, "a", 3)))
            checks.append(("settle twice", not await probe.settle(scope, "a", 3)))
            await probe.reserve(scope, "c", 2, 60)
            await probe.release(scope, "c")
            checks.append(("usage", await probe.budget_usage(scope) == Reservation(True, 3, 0)))
            decision = await probe.admit(limit, 10)  # a fresh limit: the answer does not depend on the clock
            fresh_r, fresh_t = (
                gcra(None, 0.0, 1, limit.requests_per_minute),
                gcra(None, 0.0, 10, limit.tokens_per_minute),
            )
            checks.append(
                (
                    "gcra",
                    decision.admitted
                    and fresh_r.remaining - 1
                    <= decision.remaining_requests
                    <= fresh_r.remaining  # floor() at a boundary
                    and fresh_t.remaining - 1 <= decision.remaining_tokens <= fresh_t.remaining
                    and abs(decision.reset_tokens_s - fresh_t.reset_s) < 1e-3,
                )
            )
            denied = await probe.admit(limit, 10_000)
            checks.append(("gcra denial", not denied.admitted and denied.retry_after_s > 0))
            checks.append(
                (
                    "record_failure",
                    (await probe.record_failure(model, 1000.0, immediate=True, total_models=2)).open_until > 1000.0,
                )
            )
            checks.append(
                (
                    "claim_probe",
                    await probe.claim_probe(model, 10_000.0) and not await probe.claim_probe(model, 10_000.0),
                )
            )
            checks.append(
                (
                    "record_rate_limited",
                    (await probe.record_rate_limited(model, 10_000.0, 1.0)).cooldown_until == 10_001.0,
                )
            )
            closed = await probe.record_success(model, 0.5, now=10_000.0)
            checks.append(("record_success", closed.state(10_000.0) == "closed" and closed.healthy_since == 10_000.0))
            checks.append(
                ("health", model in await probe.health([model]) and (await probe.latencies()) == {model: 0.5})
            )
        finally:
            keys = [
                *probe._budget_keys(scope),
                *probe._rate_keys(limit.name),
                probe._health_key(model),
                probe._open_key,
                probe._latency_key,
            ]
            try:
                await self._bounded(lambda: self._delete(keys))
            except (StateUnavailable, RedisError):
                pass  # they carry TTLs or are tiny; never hide the real error
        wrong = [name for name, ok in checks if not ok]
        if wrong:
            raise RuntimeError(
                f"Redis at {self._where()} ran the router's Lua scripts but gave wrong answers for: {', '.join(wrong)}"
            )

    async def _delete(self, keys: list[str]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:  # one key per command: cluster-safe
                pipe.delete(key)
            await pipe.execute()

    # budgets ------------------------------------------------------------------------------
    async def reserve(self, scope: BudgetScope, reservation_id: str, amount_micros: int, ttl_s: int) -> Reservation:
        admitted, spent, reserved = await self._run(
            "reserve",
            self._budget_keys(scope),
            [reservation_id, int(amount_micros), int(scope.limit_micros), ttl_s, int(scope.window_ttl_s)],
        )
        return Reservation(bool(admitted), int(spent), int(reserved))

    async def settle(self, scope: BudgetScope, reservation_id: str, actual_micros: int) -> bool:
        return bool(
            await self._run(
                "settle", self._budget_keys(scope), [reservation_id, int(actual_micros), int(scope.window_ttl_s)]
            )
        )

    async def release(self, scope: BudgetScope, reservation_id: str) -> None:
        await self._run("release", self._budget_keys(scope), [reservation_id])

    async def budget_usage(self, scope: BudgetScope) -> Reservation:
        spent, reserved = await self._run("usage", self._budget_keys(scope), [])
        return Reservation(True, int(spent), int(reserved))

    # rate limits --------------------------------------------------------------------------
    async def admit(self, limit: RateLimit, tokens: int) -> RateDecision:
        row = await self._run(
            "gcra", self._rate_keys(limit.name), [int(limit.requests_per_minute), int(limit.tokens_per_minute), tokens]
        )
        admitted, retry, rem_r, rem_t, reset_r, reset_t = (_text(v) for v in row)
        return RateDecision(
            admitted == "1", float(retry), int(float(rem_r)), int(float(rem_t)), float(reset_r), float(reset_t)
        )

    # model health -------------------------------------------------------------------------
    async def health(self, models: Iterable[str]) -> Mapping[str, ModelHealth]:
        models = list(models)
        if not models:
            return {}

        async def read() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for model in models:
                    pipe.hmget(self._health_key(model), *HEALTH_FIELDS)
                return await pipe.execute()

        rows = await self._bounded(read)
        return {m: _health(row) for m, row in zip(models, rows, strict=False) if any(v is not None for v in row)}

    async def record_success(self, model: str, latency_s: float | None, now: float | None = None) -> ModelHealth:
        keys = [self._health_key(model), self._latency_key, self._open_key]
        args = [
            model,
            "" if latency_s is None else repr(float(latency_s)),
            repr(time.time() if now is None else float(now)),
            repr(float(self.settings.decay_s)),
        ]
        return _health(await self._run("success", keys, args))

    async def record_failure(self, model: str, now: float, *, immediate: bool, total_models: int) -> ModelHealth:
        s = self.settings
        allowed_open = max(1, int(total_models * s.max_ejected_share))
        args = [
            model,
            repr(float(now)),
            "1" if immediate else "0",
            s.failure_threshold,
            repr(float(s.base_ejection_s)),
            repr(float(s.max_ejection_s)),
            allowed_open,
            repr(float(s.decay_s)),
        ]
        return _health(await self._run("failure", [self._health_key(model), self._open_key], args))

    async def record_rate_limited(self, model: str, now: float, retry_after_s: float | None) -> ModelHealth:
        s = self.settings
        wait = min(retry_after_s if retry_after_s is not None else s.default_cooldown_s, s.max_cooldown_s)
        return _health(
            await self._run("rate_limited", [self._health_key(model)], [repr(float(now)), repr(float(wait))])
        )

    async def claim_probe(self, model: str, now: float) -> bool:
        return bool(
            await self._run(
                "probe", [self._health_key(model)], [repr(float(now)), repr(float(self.settings.probe_timeout_s))]
            )
        )

    async def latencies(self) -> Mapping[str, float]:
        raw = await self._bounded(lambda: self.client.hgetall(self._latency_key))
        return {_text(k): float(v) for k, v in raw.items()}

    # cache --------------------------------------------------------------------------------
    async def cache_get(self, key: str) -> bytes | None:
        value = await self._bounded(lambda: self.client.get(self._cache_key(key)))
        return value.encode() if isinstance(value, str) else value  # str only with decode_responses

    async def cache_put(self, key: str, value: bytes, ttl_s: int) -> None:
        if ttl_s <= 0:  # already expired, as in the memory store: nothing to keep
            await self._bounded(lambda: self.client.delete(self._cache_key(key)))
            return
        await self._bounded(lambda: self.client.set(self._cache_key(key), value, ex=int(ttl_s)))

    # stored responses -----------------------------------------------------------------------
    async def response_get(self, response_id: str) -> bytes | None:
        value = await self._bounded(lambda: self.client.get(self._response_key(response_id)))
        return value.encode() if isinstance(value, str) else value

    async def response_put(self, response_id: str, value: bytes, ttl_s: int) -> None:
        await self._bounded(lambda: self.client.set(self._response_key(response_id), value, ex=max(int(ttl_s), 1)))

    async def response_delete(self, response_id: str) -> bool:
        return bool(await self._bounded(lambda: self.client.delete(self._response_key(response_id))))

    # lifecycle ----------------------------------------------------------------------------
    async def ping(self) -> bool:
        """True if Redis answers within the deadline; never raises for an outage."""
        try:
            return bool(await self._bounded(self.client.ping))
        except StateUnavailable:
            return False

    async def aclose(self) -> None:
        await self.client.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _health(row: list[Any]) -> ModelHealth:
    cf, ej, open_until, cooldown_until, probe_until, healthy_since = (
        float(_text(v)) if v is not None else 0.0 for v in row
    )
    return ModelHealth(int(cf), int(ej), open_until, cooldown_until, probe_until, healthy_since)
