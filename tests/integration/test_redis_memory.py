"""Redis as a broker: an evicting maxmemory-policy is refused at start-up, a filling
Redis is warned about, and a worker stopping on an error exits even when its pool hangs.

Each test starts its own ``redis-server`` on a free port in a temp dir (never the
shared one), with the policy under test.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flexpipe.config import redis_memory
from flexpipe.errors import ConfigurationError

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def disposable_redis(tmp_path: Path) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
         "--save", "", "--appendonly", "no", "--maxmemory", "16mb"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            if client.ping():
                break
        except redis.exceptions.ConnectionError:
            time.sleep(0.02)
    try:
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def test_an_evicting_policy_is_an_error_unless_allowed(disposable_redis: str) -> None:
    import redis

    client = redis.Redis.from_url(disposable_redis)
    client.config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(ConfigurationError, match="allkeys-lru"):
        redis_memory.check_policy(disposable_redis, allow_eviction=False)
    assert redis_memory.check_policy(disposable_redis, allow_eviction=True) == "allkeys-lru"
    client.config_set("maxmemory-policy", "noeviction")
    assert redis_memory.check_policy(disposable_redis, allow_eviction=False) == "noeviction"
    client.close()


def test_used_memory_past_the_threshold_is_warned(
    disposable_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    client = redis.Redis.from_url(disposable_redis)
    client.config_set("maxmemory-policy", "noeviction")
    with caplog.at_level(logging.WARNING, logger="flexpipe.redis"):
        low = redis_memory.warn_if_full(disposable_redis, 0.9)
        assert low is not None and low < 0.9 and not caplog.records
        n = 0
        while (redis_memory.used_fraction(disposable_redis) or 0) < 0.92:
            client.set(f"ballast{n}", b"x" * 100_000)  # as queued messages fill it
            n += 1
        high = redis_memory.warn_if_full(disposable_redis, 0.9)
    assert high is not None and high >= 0.9
    assert "maxmemory" in caplog.records[-1].getMessage()
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("more", b"x" * 4_000_000)
    client.close()


HANGING_WORKER = """
import sys, time
from billiard import Process
from flexpipe.config import worker_exit

def blocked():
    time.sleep(600)

child = Process(target=blocked)
child.start()
worker_exit.arm(71, 0.5)
child.join()  # what a warm shutdown does: wait for the pool, for ever
sys.exit(0)
"""


def test_a_failing_stop_exits_even_when_the_pool_hangs() -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", HANGING_WORKER], timeout=60, check=False)
    assert done.returncode == 71
    assert time.monotonic() - started < 30
