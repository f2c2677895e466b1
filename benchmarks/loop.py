"""The "loop" alternative: a plain asyncio program with ``openai.AsyncOpenAI``.

Creates each request with ``service_tier="flex", background=True``, then polls it every
5 s x U(1, 1.2) (Doubleword's own client's interval; scaled by the time factor), 64 jobs
at a time, persisting nothing. Run as its own process so its CPU time is its own::

    python -m benchmarks.loop --base-url URL --jobs N --time-scale S --tag T --out FILE

Writes JSON: ``{"started", "finished", "cpu_s", "done": [[response_id, detected_at, status],
...], "unfinished"}`` (wall-clock times; ``cpu_s`` is this process's CPU time over the run,
start-up excluded). ``--max-seconds`` bounds the run (jobs still waiting are cancelled).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any

import openai

TERMINAL = {"completed", "failed", "cancelled", "incomplete"}
POLL_INTERVAL = 5.0
MAX_WAIT = 7200.0  # emulated seconds; a bound on each job's loop


async def run(
    base_url: str,
    jobs: int,
    time_scale: float,
    tag: str,
    concurrency: int,
    model: str,
    max_seconds: float,
) -> dict[str, Any]:
    sdk = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench-not-a-real-key")
    gate = asyncio.Semaphore(concurrency)
    done: list[list[Any]] = []

    async def one(i: int) -> None:
        async with gate:
            response: Any = await sdk.responses.create(
                model=model,
                input=job_text(i),
                service_tier="flex",
                background=True,
                metadata={"bench": tag},
            )
            end = time.monotonic() + MAX_WAIT * time_scale
            while response.status not in TERMINAL and time.monotonic() < end:
                await asyncio.sleep(POLL_INTERVAL * random.uniform(1.0, 1.2) * time_scale)
                response = await sdk.responses.retrieve(response.id)
            done.append([response.id, time.time(), response.status])

    started, cpu0 = time.time(), time.process_time()
    tasks = [asyncio.ensure_future(one(i)) for i in range(jobs)]
    _, pending = await asyncio.wait(tasks, timeout=max_seconds)
    for task in pending:
        task.cancel()
    finished, cpu = time.time(), time.process_time() - cpu0
    await asyncio.gather(*pending, return_exceptions=True)
    await sdk.close()
    return {
        "started": started,
        "finished": finished,
        "cpu_s": cpu,
        "done": done,
        "unfinished": len(pending),
    }


def job_text(i: int) -> str:
    """The input every alternative sends for job ``i`` (a short document to summarise)."""
    return (
        f"Benchmark document {i}. The harbour authority approved a new ferry timetable on "
        "Monday. Services to the islands will run every forty minutes in summer. The council "
        "expects the change to cut waiting times for commuters and visitors alike."
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--time-scale", type=float, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--model", default="Qwen/Qwen3-30B-A3B-Instruct-2507")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = asyncio.run(
        run(
            args.base_url,
            args.jobs,
            args.time_scale,
            args.tag,
            args.concurrency,
            args.model,
            args.max_seconds,
        )
    )
    with open(args.out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
