"""Redis as a broker must never evict, and must say when it is filling up.

An evicting ``maxmemory-policy`` (``allkeys-lru``, ``volatile-ttl``...) drops queued
messages and the ``unacked`` hash without an error: work is lost silently. With
``noeviction`` a full Redis refuses writes (``OOM command not allowed``), which flexpipe's
workers turn into a non-zero exit (:mod:`flexpipe.config.worker_exit`) and a supervisor
restart; the jobs wait in SQL. So at start-up anything but ``noeviction`` is an error
unless ``FLEXPIPE_REDIS_ALLOW_EVICTION`` is set, and every sweep warns when used memory
passes ``FLEXPIPE_REDIS_MEMORY_WARN`` of ``maxmemory``. docs/deploy.md says how to size it.
"""

from __future__ import annotations

import logging
from typing import Any

from flexpipe.errors import ConfigurationError

log = logging.getLogger("flexpipe.redis")

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def check_policy(url: str, *, allow_eviction: bool) -> str | None:
    """Raise :class:`ConfigurationError` if the Redis at ``url`` evicts keys; return its
    policy (None when Redis cannot say: ``CONFIG`` disabled, or not reachable yet)."""
    import redis

    if not url.startswith(REDIS_SCHEMES):
        return None
    client = _client(url)
    try:
        policy = str(client.config_get("maxmemory-policy").get("maxmemory-policy", ""))
    except redis.exceptions.RedisError as exc:
        log.warning("could not read Redis maxmemory-policy (%s); make sure it is noeviction", exc)
        return None
    finally:
        client.close()
    if policy and policy != "noeviction" and not allow_eviction:
        raise ConfigurationError(
            f"Redis maxmemory-policy is {policy}: Redis would drop queued task messages when "
            "full. Set `maxmemory-policy noeviction` (or FLEXPIPE_REDIS_ALLOW_EVICTION=true "
            "to accept losing them; the sweeper re-sends from SQL, later)"
        )
    return policy


def used_fraction(url: str) -> float | None:
    """``used_memory / maxmemory`` of the Redis at ``url`` (None without a maxmemory)."""
    if not url.startswith(REDIS_SCHEMES):
        return None
    client = _client(url)
    try:
        info = client.info("memory")
    finally:
        client.close()
    limit = int(info.get("maxmemory", 0) or 0)
    return int(info.get("used_memory", 0)) / limit if limit else None


def warn_if_full(url: str, threshold: float) -> float | None:
    """Log a warning when Redis uses more than ``threshold`` of its ``maxmemory``."""
    import redis

    try:
        fraction = used_fraction(url)
    except redis.exceptions.RedisError:
        return None  # the broker's own errors are reported where they happen
    if fraction is not None and fraction >= threshold:
        log.warning(
            "Redis broker uses %.0f%% of its maxmemory (warning at %.0f%%): when full it "
            "refuses new messages and workers exit; see docs/deploy.md, sizing Redis",
            fraction * 100, threshold * 100,
        )
    return fraction
