"""The real autobatcher client (PyPI ``autobatcher``) gets its 24h batch calls answered.

autobatcher pins ``openai<3``, so it runs in its own venv, built once into the pytest cache
(``.pytest_cache/d/autobatcher-venv``; the first run pays the pip install) and driven by a
small script over HTTP against an emulator in this process. Its batch path: ``files.create``
→ ``batches.create(completion_window="24h")`` → ``batches.retrieve`` polls, with partial
reads of ``GET /files/{output_file_id}/content?offset=`` (``X-Incomplete``/``X-Last-Line``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from flexpipe.emulator import EmulatorHandle
from flexpipe.emulator.outputs import generate, messages_from_input
from tests.conftest import service_missing
from tests.emulator.helpers import stats

pytestmark = pytest.mark.integration

Start = Callable[..., EmulatorHandle]

#: The version whose client.py the emulator was checked against (API-NOTES §1.5).
AUTOBATCHER = "autobatcher==0.12.0"

TEXTS = [
    f"Report {i}: the orchard yields apples and pears, and the harvest is early." for i in range(4)
]

SCRIPT = """
import asyncio, json, sys
from autobatcher import BatchOpenAI

TEXTS = json.loads(sys.argv[2])

async def main() -> None:
    client = BatchOpenAI(
        base_url=sys.argv[1], api_key="test-key", completion_window="24h",
        batch_window_seconds=0.05, poll_interval_seconds=0.05, batch_size=100,
    )
    chats = [client.chat.completions.create(model="m", messages=[{"role": "user", "content": t}])
             for t in TEXTS]
    replies = [client.responses.create(model="m", input=t) for t in TEXTS]
    done = await asyncio.gather(*chats, *replies)
    await client.close()
    n = len(TEXTS)
    print(json.dumps({
        "chat": [r.choices[0].message.content for r in done[:n]],
        "responses": [r.output_text for r in done[n:]],
    }))

asyncio.run(main())
"""


@pytest.fixture(scope="session")
def autobatcher_python(request: pytest.FixtureRequest) -> Path:
    """The python of a venv with autobatcher installed (built once, then reused)."""
    root = Path(request.config.cache.mkdir("autobatcher"))
    venv = root / "venv"
    python = venv / "bin" / "python"
    if (venv / ".installed").exists():
        return python
    building = root / f"venv.building.{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, timeout=120)
    done = subprocess.run(
        [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", AUTOBATCHER],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        service_missing(f"pip install {AUTOBATCHER} ({done.stderr.strip()[-400:]})")
    (building / ".installed").write_text(AUTOBATCHER + "\n")
    try:
        building.rename(venv)  # atomic: a concurrent run that got there first wins
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
    return python


def test_autobatcher_24h_calls_are_answered(start: Start, autobatcher_python: Path) -> None:
    emu = start(
        flavor="doubleword",
        batch_latency="fixed:0.3",
        batch_validate_s=0.05,
        batch_finalize_s=0.05,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    run = subprocess.run(
        [str(autobatcher_python), "-c", SCRIPT, emu.base_url, json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    expected = [generate(messages_from_input(t), None, None, 0).text for t in TEXTS]
    assert got == {"chat": expected, "responses": expected}

    totals = stats(emu)["totals"]
    # One batch per endpoint: autobatcher groups pending requests by endpoint.
    assert (totals["file_uploads"], totals["batch_creates"]) == (2, 2)
    assert totals["batches_completed"] == 2
    assert totals["batch_lines_completed"] == 2 * len(TEXTS)
    assert totals["content_downloads"] >= 2
