"""The ``emulator`` click command: help text, option parsing, and a real process start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openai
from click.testing import CliRunner

from flexpipe.emulator.cli import emulator

REPO = Path(__file__).resolve().parents[2]

OPTIONS = (
    "--host",
    "--port",
    "--flavor",
    "--slots",
    "--seed",
    "--time-scale",
    "--latency-flex",
    "--latency-background",
    "--latency-realtime",
    "--queue-delay-flex",
    "--max-hold",
    "--flex-deadline",
    "--retention",
    "--api-key",
    "--model",
    "--strict-models",
    "--store-optional",
    "--cancel-terminal-400",
    "--idempotency-replay",
    "--upstream",
    "--upstream-api-key",
    "--upstream-model",
    "--faults",
    "--fault",
    "--log-level",
    "--access-log",
)


def test_help_documents_every_option() -> None:
    result = CliRunner().invoke(emulator, ["--help"])
    assert result.exit_code == 0
    for option in OPTIONS:
        assert option in result.output, option
    assert "8321" in result.output and "doubleword|openai" in result.output


def test_bad_options_are_rejected() -> None:
    runner = CliRunner()
    bad = runner.invoke(emulator, ["--latency-flex", "gamma:1"])
    assert bad.exit_code == 2 and "latency" in bad.output
    bad_fault = runner.invoke(emulator, ["--fault", "nope=1"])
    assert bad_fault.exit_code == 2 and "unknown fault" in bad_fault.output
    bad_json = runner.invoke(emulator, ["--faults", "{not json"])
    assert bad_json.exit_code == 2


def test_python_m_starts_a_server_and_prints_its_url() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXPIPE_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flexpipe.emulator",
            "--port",
            "0",
            "--flavor",
            "openai",
            "--time-scale",
            "0.001",
            "--fault",
            "fail_rate=0",
            "--faults",
            '{"slow_ms": 0}',
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("flexpipe emulator listening on http://127.0.0.1:")
        assert line.endswith("/v1 (flavor=openai, slots=64, time-scale=0.001)")
        base_url = line.split()[4]
        c = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        assert c.responses.create(model="m", input="hello").status == "completed"
    finally:
        proc.terminate()
        proc.wait(10)
