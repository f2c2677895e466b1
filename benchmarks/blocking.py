"""The "blocking task" alternative: one Celery task per job that creates the flex request,
then sleeps and polls inside the task until it is done (what many first versions do).

Its own Celery app on the same Redis, on a queue of its own. Configured from ``BENCH_*``
environment variables (set by :class:`benchmarks.services.BlockingWorker`). It polls on the
loop's schedule (5 s x U(1, 1.2), scaled) and, when a job is done, pushes
``[response_id, time, status]`` to the Redis list ``<BENCH_DONE_KEY>:<tag>`` so the benchmark
can count it (it stores nothing else).
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import openai
import redis
from celery import Celery

BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/7")
QUEUE = os.environ.get("BENCH_QUEUE", "flexbench-blocking")
DONE_KEY = os.environ.get("BENCH_DONE_KEY", "flexbench-blocking.done")
BASE_URL = os.environ.get("BENCH_BASE_URL", "http://127.0.0.1:8321/v1")
TIME_SCALE = float(os.environ.get("BENCH_TIME_SCALE", "1"))
MODEL = os.environ.get("BENCH_MODEL", "Qwen/Qwen3-30B-A3B-Instruct-2507")
POLL_INTERVAL = 5.0
MAX_WAIT = 7200.0  # emulated seconds; a bound on the loop
TERMINAL = {"completed", "failed", "cancelled", "incomplete"}

app = Celery("flexbench_blocking", broker=BROKER_URL, set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

_client: openai.OpenAI | None = None
_redis: redis.Redis | None = None


def client() -> openai.OpenAI:
    global _client
    if _client is None:
        _client = openai.OpenAI(base_url=BASE_URL, api_key="sk-bench-not-a-real-key")
    return _client


def done_list() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(BROKER_URL)
    return _redis


@app.task(name="flexbench.blocking_job")
def blocking_job(text: str, tag: str) -> str:
    sdk = client()
    response: Any = sdk.responses.create(
        model=MODEL,
        input=text,
        service_tier="flex",
        background=True,
        metadata={"bench": tag},
    )
    end = time.monotonic() + MAX_WAIT * TIME_SCALE
    while response.status not in TERMINAL and time.monotonic() < end:
        time.sleep(POLL_INTERVAL * random.uniform(1.0, 1.2) * TIME_SCALE)
        response = sdk.responses.retrieve(response.id)
    done_list().rpush(f"{DONE_KEY}:{tag}", json.dumps([response.id, time.time(), response.status]))
    return str(response.status)
