"""classify / summarize end to end with a real worker, on Redis + PostgreSQL and on the
embedded defaults: the Python API, the CLI twins, and invalid structured output asked for
once more (through the emulator's upstream mode, in front of a chat server that answers
badly on purpose)."""

from __future__ import annotations

import collections
import csv
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flexpipe.emulator import EmulatorConfig, run_in_thread
from flexpipe.flow import INVALID_OUTPUT
from flexpipe.models import Bulk
from flexpipe.states import JobStatus
from tests.integration import callbacks
from tests.integration.conftest import make_stack
from tests.integration.stack import TIME_SCALE, Stack

pytestmark = pytest.mark.integration

LABELS = ["billing", "bug", "account", "other"]
TICKETS = [
    f"Ticket {i}: " + text
    for i, text in enumerate(
        [
            "I was charged twice for the March invoice.",
            "The export button crashes the app.",
            "How do I change my email address?",
            "Is your office open on bank holidays?",
        ]
        * 5
    )
]
TOPICS = ["ferry", "volcano", "orchard", "glacier", "lighthouse"]
DOCS = [
    f"The {topic} report was published on Monday. Experts studied the {topic} for a year. "
    f"They say the {topic} needs more attention from the council."
    for topic in TOPICS
]


def wait_finished(stack: Stack, bulk_id: str, timeout: float = 90.0) -> Bulk:
    from flexpipe.tasks import api

    end = time.monotonic() + timeout
    while True:
        bulk = api.get_bulk(bulk_id)
        if bulk.finished:
            return bulk
        assert time.monotonic() < end, f"bulk not finished: {bulk}\n{stack.log_tail()}"
        time.sleep(0.1)


def creates_per_job(stack: Stack) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for record in stack.emulator("/_emulator/stats")["responses"].values():
        job_id = (record.get("metadata") or {}).get("flexpipe_job_id")
        if job_id:
            counts[job_id] += record["creates"]
    return counts


# -- the Python API ------------------------------------------------------------------------


def test_classify_labels_every_item_in_input_order(live: Stack) -> None:
    from flexpipe.tasks import api, bulk

    bulk_id = bulk.classify(
        TICKETS,
        LABELS,
        "You triage the support tickets of a software company.",
        name="tickets",
        on_complete="tests.record_callback",
    )
    finished = wait_finished(live, bulk_id)
    assert (finished.total, finished.completed) == (len(TICKETS), len(TICKETS))

    items = bulk.results(bulk_id)
    assert [item.index for item in items] == list(range(len(TICKETS)))
    creates = creates_per_job(live)
    for item, text in zip(items, TICKETS, strict=True):
        assert item.status is JobStatus.COMPLETED and item.error is None, item
        assert item.label in LABELS
        view = api.get(item.job_id)
        assert view.job.request.input == text
        assert view.parsed == {"label": item.label}  # validated against the enum, stored parsed
        assert creates[item.job_id] == 1
    deadline = time.monotonic() + 20
    while callbacks.counts(live.store.engine).get(bulk_id, 0) == 0:
        assert time.monotonic() < deadline, live.log_tail()
        time.sleep(0.1)


def test_summarize_keeps_each_summary_with_its_text(live: Stack) -> None:
    from flexpipe.tasks import bulk

    bulk_id = bulk.summarize(DOCS, "Summarise in one sentence.")
    assert wait_finished(live, bulk_id).completed == len(DOCS)
    items = bulk.results(bulk_id)
    for item, topic in zip(items, TOPICS, strict=True):
        assert item.status is JobStatus.COMPLETED and item.label is None
        assert item.summary and topic in item.summary.lower(), (topic, item.summary)


# -- the CLI -------------------------------------------------------------------------------


def test_cli_classifies_a_csv_file_into_a_csv_file(live: Stack, tmp_path: Path) -> None:
    from flexpipe.cli import cli

    source, out = tmp_path / "tickets.csv", tmp_path / "labelled.csv"
    with source.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "body"])
        for number, text in enumerate(TICKETS[:6], 100):
            writer.writerow([number, f'{text} "Quoted", with a comma.'])
    result = CliRunner().invoke(
        cli,
        ["classify", str(source), "--labels", ",".join(LABELS), "--field", "body", "-o", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "6 completed, 0 failed" in result.stderr and str(out) in result.stderr
    with out.open(newline="") as file:
        reader = csv.DictReader(file)
        assert reader.fieldnames == ["id", "body", "label", "status", "error", "job_id"]
        rows = list(reader)
    assert [row["id"] for row in rows] == [str(n) for n in range(100, 106)]
    for row, text in zip(rows, TICKETS, strict=False):
        assert row["body"] == f'{text} "Quoted", with a comma.'
        assert row["label"] in LABELS and row["status"] == "completed" and row["error"] == ""
        assert row["job_id"]


def test_cli_summarizes_a_jsonl_file_to_stdout(live: Stack, tmp_path: Path) -> None:
    from flexpipe.cli import cli

    source = tmp_path / "docs.jsonl"
    source.write_text(
        "".join(
            json.dumps({"doc": {"topic": topic}, "content": text}) + "\n"
            for topic, text in zip(TOPICS, DOCS, strict=True)
        )
    )
    result = CliRunner().invoke(
        cli, ["summarize", str(source), "--field", "content"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["doc"]["topic"] for row in rows] == TOPICS
    for row in rows:
        assert row["status"] == "completed" and row["error"] is None
        assert row["doc"]["topic"] in row["summary"].lower()
        assert set(row) == {"doc", "content", "summary", "status", "error", "job_id"}


# -- invalid output, asked for once more -------------------------------------------------


class BadAnswers(BaseHTTPRequestHandler):
    """A realtime chat-completions server that labels a text with the label it names, but
    answers off-schema the first time a text says INVALID-ONCE and never answers JSON to a
    text that says ALWAYS-INVALID. It counts the requests per text."""

    seen: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        text = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        labels = body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"]
        with self.lock:
            self.seen[text] += 1
            first = self.seen[text] == 1
        if "ALWAYS-INVALID" in text:
            content = "This looks like an account problem to me."
        elif "INVALID-ONCE" in text and first:
            content = json.dumps({"label": "weather"})
        else:
            content = json.dumps({"label": next((x for x in labels if x in text), labels[0])})
        reply = json.dumps(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def bad_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BadAnswers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def fronted_emulator(bad_upstream: str) -> Iterator[str]:
    """The flex emulator in front of the bad chat server (its upstream mode)."""
    config = EmulatorConfig(time_scale=TIME_SCALE, slots=0, seed=13, upstream_url=bad_upstream)
    with run_in_thread(config) as handle:
        yield handle.url


@pytest.fixture(scope="module", params=["services", "embedded"])
def upstream_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fronted_emulator: str,
) -> Stack:
    return make_stack(request, tmp_path_factory, request.param, fronted_emulator)


def test_invalid_output_is_asked_for_once_more_then_fails(upstream_stack: Stack) -> None:
    from flexpipe.tasks import bulk

    upstream_stack.activate()
    run = uuid.uuid4().hex[:8]  # the server counts per text; the module runs twice
    texts = [
        f"[{run}] A billing question about my invoice.",
        f"[{run}] INVALID-ONCE: a bug in the login page.",
        f"[{run}] ALWAYS-INVALID: my account is locked.",
    ]
    bulk_id = bulk.classify(texts, LABELS)
    finished = wait_finished(upstream_stack, bulk_id)
    assert (finished.total, finished.done, finished.completed, finished.failed) == (3, 3, 2, 1)

    plain, once, never = bulk.results(bulk_id)
    store = upstream_stack.store
    assert plain.label == "billing" and plain.status is JobStatus.COMPLETED
    assert once.label == "bug" and once.status is JobStatus.COMPLETED and once.error is None
    assert never.label is None and never.status is JobStatus.FAILED
    assert never.error.startswith(f"{INVALID_OUTPUT}: output is not JSON")

    assert [store.require_job(i.job_id).attempt for i in (plain, once, never)] == [1, 2, 2]
    first_try = store.attempts(once.job_id)[0]
    assert first_try["error_message"].startswith(
        f"{INVALID_OUTPUT}: output does not match the schema: 'weather' is not one of"
    )
    responses = {row["response_id"] for row in store.attempts(never.job_id)}
    assert len(responses) == 2 and None not in responses  # two provider requests, both kept
    creates = creates_per_job(upstream_stack)
    assert [creates[i.job_id] for i in (plain, once, never)] == [1, 2, 2]
    assert [BadAnswers.seen[text] for text in texts] == [1, 2, 2]
