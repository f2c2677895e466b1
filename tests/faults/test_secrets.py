"""The API key never reaches task messages in Redis, the database, or any log."""

from __future__ import annotations

import logging

import pytest
import redis
import sqlalchemy as sa

from flexpipe.emulator import EmulatorConfig, run_in_thread
from flexpipe.schema import metadata
from tests.integration.conftest import make_stack
from tests.integration.stack import TIME_SCALE

pytestmark = [pytest.mark.integration]

SECRET = "sk-flexpipe-SENTINEL-7f3a9c0d2e"


def _redis_dump(client: redis.Redis) -> str:
    parts = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"list":
            parts += client.lrange(key, 0, -1)
        elif kind == b"hash":
            parts += [v for kv in client.hgetall(key).items() for v in kv]
        elif kind == b"zset":
            parts += client.zrange(key, 0, -1)
        elif kind == b"set":
            parts += list(client.smembers(key))
        elif kind == b"string":
            parts.append(client.get(key) or b"")
        parts.append(key)
    return b"\n".join(parts).decode(errors="replace")


def _database_dump(engine: sa.Engine) -> str:
    lines = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            lines += [repr(tuple(row)) for row in conn.execute(sa.select(table))]
    return "\n".join(lines)


def test_api_key_is_in_no_message_row_or_log(request, tmp_path_factory, redis_server,
                                             caplog) -> None:
    config = EmulatorConfig(time_scale=TIME_SCALE, slots=0, seed=3, api_key=SECRET,
                            faults={"fail_rate": 0.3, "create_429_rate": 0.2,
                                    "retry_after_s": 0.05})
    with run_in_thread(config) as emulator, caplog.at_level(logging.DEBUG):
        env = {"FLEXPIPE_API_KEY": SECRET, "FLEXPIPE_POLL_FIRST_DELAY": "100"}
        stack = make_stack(request, tmp_path_factory, "services", emulator.url, extra_env=env)
        stack.stop_worker()
        stack.loglevel = "debug"
        stack.start_worker()
        from flexpipe.tasks import api

        ids = [api.enqueue(f"Minutes of meeting {i}.", callback="tests.record_callback")
               for i in range(30)]
        # While jobs are in flight, their messages sit in Redis: look at all of them.
        client = redis.Redis.from_url(redis_server)
        in_flight_dump = _redis_dump(client)
        stack.wait_terminal(ids, timeout=120)
        after_dump = _redis_dump(client)
        database = _database_dump(stack.store.engine)
        worker_log = stack.log_path.read_text(errors="replace")

    assert "flexpipe.poll" in in_flight_dump or "flexpipe.submit" in in_flight_dump
    assert stack.store.status_counts(ids).get("completed", 0) > 0  # the key did work
    assert "Minutes of meeting" in database  # the dump really holds the rows
    assert "DEBUG" in worker_log and "HTTP Request" in worker_log  # debug really on
    for where, text in [("redis (in flight)", in_flight_dump), ("redis (after)", after_dump),
                        ("database", database), ("worker log", worker_log),
                        ("test process log", caplog.text)]:
        assert SECRET not in text, f"the API key leaked into the {where}"
