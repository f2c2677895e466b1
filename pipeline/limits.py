"""Rate limits shared by every worker: submits per model per window, and a cap on jobs in
flight at the provider.

:class:`RedisLimiter` keeps both in Redis and decides with one atomic Lua script, so any
number of worker processes share one budget. A job over the limit is not failed and
not held in a worker: the flow parks it as ``pending`` in SQL and the sweeper sends its
submit again when the limiter said to come back. In-flight slots are leases: a worker
killed before it released one frees it when the lease runs out.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import redis

_ACQUIRE = """
local rate_key, flight_key = KEYS[1], KEYS[2]
local now, window, rate, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
    tonumber(ARGV[4])
local job, lease_until, retry = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', rate_key, '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', flight_key, '-inf', now)
local holding = cap > 0 and redis.call('ZSCORE', flight_key, job)
if cap > 0 and not holding and redis.call('ZCARD', flight_key) >= cap then
    return tostring(retry)
end
if rate > 0 and redis.call('ZCARD', rate_key) >= rate then
    local oldest = redis.call('ZRANGE', rate_key, 0, 0, 'WITHSCORES')
    return tostring(math.max(tonumber(oldest[2]) + window - now, 0.001))
end
if rate > 0 then
    redis.call('ZADD', rate_key, now, job .. ':' .. now)
    redis.call('EXPIRE', rate_key, math.ceil(window) + 1)
end
if cap > 0 then
    redis.call('ZADD', flight_key, lease_until, job)
end
return '0'
"""


class Limiter(Protocol):
    def acquire(self, job_id: str, model: str) -> float:
        """Take a submit slot; return 0 to go ahead, or seconds to wait before asking again."""

    def release(self, job_id: str) -> None:
        """Give back the job's in-flight slot (it reached a terminal status)."""


class NoLimits:
    """The limiter used when no limit is configured."""

    def acquire(self, job_id: str, model: str) -> float:
        return 0.0

    def release(self, job_id: str) -> None:
        return None


class RedisLimiter:
    """Limits shared through Redis (one Lua script; no per-worker counters)."""

    def __init__(
        self,
        client: redis.Redis[Any],
        *,
        submits_per_window: int = 0,
        window_s: float = 60.0,
        max_in_flight: int = 0,
        lease_s: float = 7200.0,
        retry_s: float = 1.0,
        prefix: str = "flexpipe:limits",
    ) -> None:
        self._client = client
        self._script = client.register_script(_ACQUIRE)
        self.submits_per_window = submits_per_window
        self.window_s = window_s
        self.max_in_flight = max_in_flight
        self.lease_s = lease_s
        self.retry_s = retry_s
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisLimiter:
        return cls(redis.Redis.from_url(url), **kwargs)

    @property
    def _flight_key(self) -> str:
        return f"{self._prefix}:in_flight"

    def acquire(self, job_id: str, model: str) -> float:
        now = time.time()
        wait = self._script(
            keys=[f"{self._prefix}:submits:{model}", self._flight_key],
            args=[now, self.window_s, self.submits_per_window, self.max_in_flight, job_id,
                  now + self.lease_s, self.retry_s],
        )
        return float(wait)

    def release(self, job_id: str) -> None:
        if self.max_in_flight:
            self._client.zrem(self._flight_key, job_id)

    def in_flight(self) -> int:
        self._client.zremrangebyscore(self._flight_key, "-inf", time.time())
        return int(self._client.zcard(self._flight_key))

    def reset(self) -> None:
        keys = list(self._client.scan_iter(match=f"{self._prefix}:*"))
        if keys:
            self._client.delete(*keys)
