"""Shared state in Redis: budgets, rate limits, model health and the response cache agree
across replicas because every read-modify-write is one Lua script.

Key layout (Redis Cluster-safe: the keys one script touches share a ``{hash tag}``):

    tr:{budget:<scope>:<window>}:spent     string, micro-dollars charged
    tr:{budget:<scope>:<window>}:res       hash   reservation id -> micro-dollars
    tr:{budget:<scope>:<window>}:exp       zset   reservation id -> expiry (unix s)
    tr:{budget:<scope>:<window>}:settled   hash   reservation id -> micro-dollars (idempotence)
    tr:{rl:<key>}:rpm / :tpm               string, GCRA theoretical arrival time (unix s)
    tr:{health}:<model>                    hash   ModelHealth fields
    tr:{health}:latency                    hash   model -> EWMA seconds
    tr:cache:<sha256>                      string, cached response (own key, single-key ops)

Scripts read the clock with ``TIME`` so replicas with skewed clocks agree. Every call is
bounded by ``timeout_s``; an unreachable Redis raises ``StateUnavailable`` at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.circuit import CircuitSettings, ModelHealth
from router.state.base import BudgetScope, RateDecision, RateLimit, Reservation, StateUnavailable

UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)
HEALTH_FIELDS = ("consecutive_failures", "ejections", "open_until", "cooldown_until", "probe_until")
LATENCY_WEIGHT = 0.2

_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"

_DROP_EXPIRED = """
local function drop_expired(res, exp, now)
  local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
  for _, id in ipairs(gone) do redis.call('HDEL', res, id); redis.call('ZREM', exp, id) end
end
local function reserved(res)
  local total = 0
  local values = redis.call('HVALS', res)
  for _, v in ipairs(values) do total = total + tonumber(v) end
  return total
end
"""

# KEYS: spent, res, exp, settled   ARGV: id, amount, limit, ttl, window_ttl
RESERVE = _NOW + _DROP_EXPIRED + """
drop_expired(KEYS[2], KEYS[3], now)
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local held = reserved(KEYS[2])
local amount = tonumber(ARGV[2])
if spent + held + amount > tonumber(ARGV[3]) then return {0, spent, held} end
redis.call('HSET', KEYS[2], ARGV[1], amount)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[1])
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return {1, spent, held + amount}
"""

# KEYS: spent, res, exp, settled   ARGV: id, actual, window_ttl
SETTLE = """
if redis.call('HSETNX', KEYS[4], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('INCRBY', KEYS[1], ARGV[2])
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return 1
"""

# KEYS: spent, res, exp   ARGV: id
RELEASE = """
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# KEYS: spent, res, exp
USAGE = _NOW + _DROP_EXPIRED + """
drop_expired(KEYS[2], KEYS[3], now)
return {tonumber(redis.call('GET', KEYS[1]) or '0'), reserved(KEYS[2])}
"""

# KEYS: rpm tat, tpm tat   ARGV: rpm, tpm, tokens   (a zero rate is unlimited)
# Returns strings: admitted, retry_after, remaining_rpm, remaining_tpm, reset_rpm, reset_tpm
GCRA = _NOW + """
local window = 60.0
local function check(key, rate, cost)
  if rate == 0 then return {true, 0, -1, 0, nil} end
  local interval = window / rate
  local tat = tonumber(redis.call('GET', key) or '0')
  local start = math.max(tat, now)
  local new_tat = start + cost * interval
  local ahead = new_tat - now
  if ahead > window then
    local current = start - now
    return {false, ahead - window, math.max(0, math.floor((window - current) / interval)), current, nil}
  end
  return {true, 0, math.max(0, math.floor((window - ahead) / interval)), ahead, new_tat}
end
local r = check(KEYS[1], tonumber(ARGV[1]), 1)
local t = check(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]))
local admitted = r[1] and t[1]
if admitted then
  if r[5] then redis.call('SET', KEYS[1], tostring(r[5]), 'PX', math.ceil((r[5] - now) * 1000) + 1000) end
  if t[5] then redis.call('SET', KEYS[2], tostring(t[5]), 'PX', math.ceil((t[5] - now) * 1000) + 1000) end
end
return {admitted and '1' or '0', tostring(math.max(r[2], t[2])), tostring(r[3]), tostring(t[3]), tostring(r[4]), tostring(t[4])}
"""

_HEALTH = """
local function load(key)
  local v = redis.call('HMGET', key, 'consecutive_failures', 'ejections', 'open_until', 'cooldown_until', 'probe_until')
  return {tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0'), tonumber(v[4] or '0'), tonumber(v[5] or '0')}
end
local function save(key, h)
  redis.call('HSET', key, 'consecutive_failures', h[1], 'ejections', h[2], 'open_until', tostring(h[3]), 'cooldown_until', tostring(h[4]), 'probe_until', tostring(h[5]))
  redis.call('EXPIRE', key, 86400)
  return {tostring(h[1]), tostring(h[2]), tostring(h[3]), tostring(h[4]), tostring(h[5])}
end
"""

# KEYS: health, latency hash   ARGV: model, latency ('' if none)
SUCCESS = _HEALTH + """
if ARGV[2] ~= '' then
  local previous = redis.call('HGET', KEYS[2], ARGV[1])
  local value = tonumber(ARGV[2])
  if previous then value = tonumber(previous) + """ + str(LATENCY_WEIGHT) + """ * (value - tonumber(previous)) end
  redis.call('HSET', KEYS[2], ARGV[1], tostring(value))
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'0', '0', '0', '0', '0'} end
local h = load(KEYS[1])
return save(KEYS[1], {0, 0, 0, h[4], 0})
"""

# KEYS: health, every other model's health key...   ARGV: now, immediate, threshold, base, max, allowed_open
FAILURE = _HEALTH + """
local now = tonumber(ARGV[1])
local h = load(KEYS[1])
local half_open = h[3] <= now and h[2] > 0
local failures = h[1] + 1
local opened = 0
for i = 2, #KEYS do
  local other = tonumber(redis.call('HGET', KEYS[i], 'open_until') or '0')
  if other > now then opened = opened + 1 end
end
local may_eject = opened + 1 <= tonumber(ARGV[6])
if ARGV[2] == '1' or half_open or (failures >= tonumber(ARGV[3]) and may_eject) then
  local ejections = h[2] + 1
  local duration = math.min(tonumber(ARGV[4]) * ejections, tonumber(ARGV[5]))
  return save(KEYS[1], {0, ejections, now + duration, h[4], 0})
end
return save(KEYS[1], {failures, h[2], h[3], h[4], h[5]})
"""

# KEYS: health   ARGV: now, wait
RATE_LIMITED = _HEALTH + """
local h = load(KEYS[1])
h[4] = math.max(h[4], tonumber(ARGV[1]) + tonumber(ARGV[2]))
return save(KEYS[1], h)
"""

# KEYS: health   ARGV: now, probe_timeout
PROBE = _HEALTH + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
local now = tonumber(ARGV[1])
local h = load(KEYS[1])
if h[3] > now or h[2] == 0 then return 1 end
if h[5] > now then return 0 end
h[5] = now + tonumber(ARGV[2])
save(KEYS[1], h)
return 1
"""

SCRIPTS = {"reserve": RESERVE, "settle": SETTLE, "release": RELEASE, "usage": USAGE, "gcra": GCRA, "success": SUCCESS, "failure": FAILURE, "rate_limited": RATE_LIMITED, "probe": PROBE}


class RedisStateStore:
    def __init__(self, url: str, *, circuit: CircuitSettings | None = None, timeout_s: float = 0.25, prefix: str = "tr") -> None:
        self.settings = circuit or CircuitSettings()
        self.prefix = prefix
        self.client = aioredis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False, health_check_interval=5)
        self.scripts = {name: self.client.register_script(body) for name, body in SCRIPTS.items()}
        self.known_models: set[str] = set()

    async def _run(self, name: str, keys: list[str], args: list[object]):  # type: ignore[no-untyped-def]
        try:
            return await self.scripts[name](keys=keys, args=args)
        except UNAVAILABLE as exc:
            raise StateUnavailable(f"Redis unreachable: {type(exc).__name__}") from None

    async def self_test(self) -> None:
        """Load and run every script once; refuse to start if Redis will not run them."""
        try:
            for name, body in SCRIPTS.items():
                await self.client.script_load(body)
            scope = BudgetScope(name="self-test", window="0", limit_micros=10, window_ttl_s=60)
            await self.reserve(scope, "self-test", 1, 5)
            await self.settle(scope, "self-test", 0)
            await self.release(scope, "self-test")
            await self.budget_usage(scope)
            await self.admit(RateLimit("self-test", 1_000_000, 0), 1)
            await self.health(["self-test"])
        except (NoPermissionError, NoScriptError, ResponseError) as exc:
            raise RuntimeError(
                f"Redis refused the router's Lua scripts ({exc}); allow EVAL/EVALSHA/SCRIPT for the router's user "
                "(ACL +@scripting) or unset ROUTER_REDIS_URL"
            ) from None
        except UNAVAILABLE as exc:
            raise StateUnavailable(f"Redis unreachable: {type(exc).__name__}") from None

    # budgets ------------------------------------------------------------------------------
    def _budget_keys(self, scope: BudgetScope) -> list[str]:
        tag = f"{self.prefix}:{{budget:{scope.name}:{scope.window}}}"
        return [f"{tag}:spent", f"{tag}:res", f"{tag}:exp", f"{tag}:settled"]

    async def reserve(self, scope: BudgetScope, reservation_id: str, amount_micros: int, ttl_s: int) -> Reservation:
        admitted, spent, held = await self._run("reserve", self._budget_keys(scope), [reservation_id, amount_micros, scope.limit_micros, ttl_s, scope.window_ttl_s])
        return Reservation(bool(admitted), int(spent), int(held))

    async def settle(self, scope: BudgetScope, reservation_id: str, actual_micros: int) -> bool:
        return bool(await self._run("settle", self._budget_keys(scope), [reservation_id, actual_micros, scope.window_ttl_s]))

    async def release(self, scope: BudgetScope, reservation_id: str) -> None:
        await self._run("release", self._budget_keys(scope)[:3], [reservation_id])

    async def budget_usage(self, scope: BudgetScope) -> Reservation:
        spent, held = await self._run("usage", self._budget_keys(scope)[:3], [])
        return Reservation(True, int(spent), int(held))

    # rate limits --------------------------------------------------------------------------
    async def admit(self, limit: RateLimit, tokens: int) -> RateDecision:
        tag = f"{self.prefix}:{{rl:{limit.name}}}"
        result = await self._run("gcra", [f"{tag}:rpm", f"{tag}:tpm"], [limit.requests_per_minute, limit.tokens_per_minute, tokens])
        admitted, retry, rem_r, rem_t, reset_r, reset_t = (v.decode() if isinstance(v, bytes) else str(v) for v in result)
        return RateDecision(admitted == "1", float(retry), int(float(rem_r)), int(float(rem_t)), float(reset_r), float(reset_t))

    # model health -------------------------------------------------------------------------
    def _health_key(self, model: str) -> str:
        return f"{self.prefix}:{{health}}:{model}"

    async def health(self, models: Iterable[str]) -> Mapping[str, ModelHealth]:
        models = list(models)
        self.known_models.update(models)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for model in models:
                    pipe.hmget(self._health_key(model), *HEALTH_FIELDS)
                rows = await pipe.execute()
        except UNAVAILABLE as exc:
            raise StateUnavailable(f"Redis unreachable: {type(exc).__name__}") from None
        return {m: _health(row) for m, row in zip(models, rows) if row[0] is not None}

    async def record_success(self, model: str, latency_s: float | None) -> ModelHealth:
        row = await self._run("success", [self._health_key(model), self._health_key("latency")], [model, "" if latency_s is None else repr(latency_s)])
        return _health(row)

    async def record_failure(self, model: str, now: float, *, immediate: bool, total_models: int) -> ModelHealth:
        self.known_models.add(model)
        others = [self._health_key(m) for m in sorted(self.known_models) if m != model]
        allowed_open = max(1, int(total_models * self.settings.max_ejected_share))
        s = self.settings
        row = await self._run("failure", [self._health_key(model), *others], [repr(now), "1" if immediate else "0", s.failure_threshold, s.base_ejection_s, s.max_ejection_s, allowed_open])
        return _health(row)

    async def record_rate_limited(self, model: str, now: float, retry_after_s: float | None) -> ModelHealth:
        wait = min(retry_after_s if retry_after_s is not None else self.settings.default_cooldown_s, self.settings.max_cooldown_s)
        return _health(await self._run("rate_limited", [self._health_key(model)], [repr(now), repr(wait)]))

    async def claim_probe(self, model: str, now: float) -> bool:
        return bool(await self._run("probe", [self._health_key(model)], [repr(now), repr(self.settings.probe_timeout_s)]))

    async def latencies(self) -> Mapping[str, float]:
        try:
            raw = await self.client.hgetall(self._health_key("latency"))
        except UNAVAILABLE as exc:
            raise StateUnavailable(f"Redis unreachable: {type(exc).__name__}") from None
        return {k.decode(): float(v) for k, v in raw.items()}

    # cache --------------------------------------------------------------------------------
    async def cache_get(self, key: str) -> bytes | None:
        try:
            return await self.client.get(f"{self.prefix}:cache:{key}")
        except UNAVAILABLE as exc:
            raise StateUnavailable(f"Redis unreachable: {type(exc).__name__}") from None

    async def cache_put(self, key: str, value: bytes, ttl_s: int) -> None:
        try:
            await self.client.set(f"{self.prefix}:cache:{key}", value, ex=ttl_s)
        except UNAVAILABLE as exc:
            raise StateUnavailable(f"Redis unreachable: {type(exc).__name__}") from None

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except UNAVAILABLE:
            return False

    async def aclose(self) -> None:
        await self.client.aclose()


def _health(row: list) -> ModelHealth:  # type: ignore[type-arg]
    values = [float(v) if v is not None else 0.0 for v in row]
    return ModelHealth(int(values[0]), int(values[1]), values[2], values[3], values[4])
