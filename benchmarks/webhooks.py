"""The webhook receiver's throughput: events per second on one ``flexpipe webhooks``
process, driven by a load generator in another process (aiohttp, many connections).

``python -m benchmarks.webhooks [--events N] [--connections C] [--database-url URL]``.
Each event is pre-signed (the emulator's signer) and names a real in-flight job, so
every one is verified by the SDK, recorded, takes over its job's chain and publishes
its poll (to a filesystem broker in a temporary directory nobody consumes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1000.0


def _prepare(env: dict[str, str], events: int) -> list[str]:
    os.environ.update(env)
    from flexpipe.config.settings import configure, get_settings
    from flexpipe.migrations import upgrade
    from flexpipe.models import build_request
    from flexpipe.states import JobStatus
    from flexpipe.store import NewJob, Store

    configure()
    upgrade(get_settings().db_url)
    store = Store.from_url(get_settings().db_url)
    pairs = store.add_jobs(
        [NewJob(request=build_request(f"job {i}", model="m")) for i in range(events)]
    )
    ids = []
    for i, (job_id, _) in enumerate(pairs):
        store.claim_submit(job_id, 60)
        store.record_submitted(
            job_id,
            attempt=1,
            response_id=f"resp_bench_{i}",
            status=JobStatus.IN_PROGRESS,
            tier="flex",
            next_poll_in=3600,
            parked=True,
        )
        ids.append(f"resp_bench_{i}")
    store.dispose()
    return ids


def _load(url: str, secret: str, response_ids: list[str], connections: int) -> float:
    """Post one signed event per response id; returns events/s (every answer must be 200)."""
    code = f"""
import asyncio, json, sys, time, aiohttp
from flexpipe.emulator.webhooks import event, secret_key, signature
ids = json.load(sys.stdin)
key = secret_key({secret!r})
now = int(time.time())
bodies = []
for i, rid in enumerate(ids):
    body = json.dumps(event("response.completed", rid)).encode()
    wid = f"wh_bench_{{i}}"
    sig = signature(key, wid, now, body)
    bodies.append((body, {{"content-type": "application/json", "webhook-id": wid,
                   "webhook-timestamp": str(now), "webhook-signature": sig}}))
async def main():
    conn = aiohttp.TCPConnector(limit={connections})
    async with aiohttp.ClientSession(connector=conn) as s:
        queue = list(reversed(bodies)); bad = 0
        async def worker():
            nonlocal bad
            while queue:
                body, headers = queue.pop()
                async with s.post({url!r}, data=body, headers=headers) as r:
                    await r.read()
                    bad += r.status != 200
        start = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range({connections})])
        took = time.perf_counter() - start
    print(json.dumps({{"took": took, "bad": bad}}))
asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(response_ids),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result = json.loads(out.stdout)
    if result["bad"]:
        raise SystemExit(f"{result['bad']} deliveries were not answered 200")
    return len(response_ids) / float(result["took"])


def run(events: int, connections: int, database_url: str | None) -> float:
    from flexpipe.emulator.webhooks import new_secret

    secret = new_secret()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "FLEXPIPE_DATA_DIR": tmp,
            "FLEXPIPE_BROKER_URL": "filesystem://",
            "FLEXPIPE_WEBHOOKS": "true",
            "FLEXPIPE_WEBHOOK_SECRET": secret,
            "FLEXPIPE_QUEUE": "bench-webhooks",
            "FLEXPIPE_POLL_QUEUE": "bench-webhooks.poll",
        }
        if database_url:
            env["FLEXPIPE_DATABASE_URL"] = database_url
        ids = _prepare(env, events)
        port = 18000 + os.getpid() % 1000
        url = f"http://127.0.0.1:{port}/"
        receiver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flexpipe.cli",
                "webhooks",
                "--port",
                str(port),
                "-l",
                "warning",
            ],
            env={**os.environ, **env},
            cwd=tmp,
        )
        try:
            end = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(url, timeout=1)
                except urllib.error.HTTPError:
                    break
                except OSError:
                    if time.monotonic() > end:
                        raise SystemExit("receiver did not start") from None
                    time.sleep(0.1)
            return _load(url, secret, ids, connections)
        finally:
            receiver.terminate()
            receiver.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    rate = run(args.events, args.connections, args.database_url)
    verdict = "met" if rate >= TARGET else "missed"
    print(
        f"webhook receiver: {rate:,.0f} events/s on one process "
        f"(target >= {TARGET:,.0f}/s): {verdict}"
    )


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
