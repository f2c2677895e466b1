"""``classify``, ``summarize`` and ``results`` (tasks/bulk.py) and their CLI twins, on a
local runtime: SQLite and the embedded broker in a temporary folder, no worker. Outcomes
are stored through the real flow with a scripted provider."""

from __future__ import annotations

import csv
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flexpipe.errors import JobNotFound, ValidationError
from flexpipe.flow import INVALID_OUTPUT, Flow, FlowSettings
from flexpipe.states import JobStatus
from flexpipe.tasks import bulk
from flexpipe.tasks.runtime import Runtime
from tests.unit.test_flow import QUEUED, ScriptedClient, done

LABELS = ["bug", "billing", "other"]
TEXTS = ["The app crashes on start.", "I was charged twice.", "Nice weather today."]


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """This process's settings, Celery app and runtime on a fresh folder."""
    from flexpipe.config.settings import configure
    from flexpipe.tasks.runtime import reset, runtime

    monkeypatch.setenv("FLEXPIPE_DATA_DIR", str(tmp_path / "flexpipe"))
    configure()
    rt = runtime()
    rt.store.create_tables()
    yield rt
    reset()
    monkeypatch.undo()
    configure()


def finish_all(rt: Runtime, bulk_id: str, answers: dict[int, list[Any]]) -> None:
    """Run every item of a bulk through the flow; ``answers[i]`` are item i's responses."""
    flow_settings = FlowSettings(learn_latency=False)
    for item in bulk.results(bulk_id):
        reads = answers[item.index]
        client = ScriptedClient(creates=[QUEUED] * len(reads), reads=list(reads))
        flow = Flow(rt.store, client, flow_settings)  # type: ignore[arg-type]
        step = flow.submit(item.job_id)
        while step.kind in ("poll", "submit"):
            step = flow.poll(item.job_id, step.seq) if step.kind == "poll" else flow.submit(
                item.job_id
            )
        assert step.kind == "done", step


def label(name: str) -> Any:
    return done(json.dumps({"label": name}))


# -- the Python API ------------------------------------------------------------------------


def test_classify_sends_one_structured_request_per_item(local: Runtime) -> None:
    bulk_id = bulk.classify(
        [TEXTS[0], {"input": TEXTS[1], "metadata": {"row": "7"}}],
        LABELS,
        "You triage support tickets.",
        name="tickets",
        metadata={"source": "unit"},
        service_tier="priority",
    )
    assert local.store.get_bulk(bulk_id).total == 2
    jobs = [local.store.require_job(item.job_id) for item in bulk.results(bulk_id)]
    first, second = (job.request for job in jobs)
    assert first.input == TEXTS[0] and second.input == TEXTS[1]
    assert first.schema == bulk.label_schema(LABELS)
    assert first.schema["properties"]["label"]["enum"] == LABELS
    assert first.schema_name == "classification"
    assert first.instructions.startswith("You triage support tickets.\n\n")
    assert '["bug", "billing", "other"]' in first.instructions
    assert first.service_tier == "priority"
    assert first.metadata == {"source": "unit", bulk.ITEM_KEY: "0"}
    assert second.metadata == {"source": "unit", "row": "7", bulk.ITEM_KEY: "1"}


def test_results_come_back_in_input_order_with_labels_and_errors(local: Runtime) -> None:
    texts = [f"Ticket number {i}." for i in range(12)]
    bulk_id = bulk.classify(texts, LABELS)
    answers = {i: [label(LABELS[i % 3])] for i in range(12)}
    answers[4] = [done("no idea"), done('{"label": "spam"}')]  # invalid twice
    answers[5] = [done("no idea"), label("other")]  # invalid once, then fine
    finish_all(local, bulk_id, answers)

    items = bulk.results(bulk_id)
    assert [item.index for item in items] == list(range(12))
    assert [local.store.require_job(i.job_id).request.input for i in items] == texts
    for item in items:
        if item.index == 4:
            assert item.status is JobStatus.FAILED and item.label is None
            assert item.error.startswith(f"{INVALID_OUTPUT}: output does not match the schema")
        else:
            assert item.status is JobStatus.COMPLETED and item.error is None
            want = "other" if item.index == 5 else LABELS[item.index % 3]
            assert item.label == want
        assert item.summary is None and item.metadata == {}
    finished = local.store.get_bulk(bulk_id)
    assert (finished.completed, finished.failed, finished.finished) == (11, 1, True)


def test_results_of_a_running_bulk_have_live_statuses(local: Runtime) -> None:
    bulk_id = bulk.summarize(TEXTS)
    items = bulk.results(bulk_id)
    assert [item.status for item in items] == [JobStatus.PENDING] * 3
    assert all(item.label is item.summary is item.error is None for item in items)


def test_summarize_keeps_the_text(local: Runtime) -> None:
    bulk_id = bulk.summarize(TEXTS, name="notes")
    job = local.store.require_job(bulk.results(bulk_id)[0].job_id)
    assert job.request.instructions == bulk.SUMMARY_INSTRUCTIONS and job.request.schema is None
    answers = {0: [done("Crash.")], 1: [done("Charged twice.")], 2: [done("x", status="failed")]}
    finish_all(local, bulk_id, answers)
    items = bulk.results(bulk_id)
    assert [item.summary for item in items] == ["Crash.", "Charged twice.", None]
    assert items[2].error == "provider_failed: the provider reported failure"


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([], "labels: give at least one label"),
        ("bug,billing", "labels: must be a list of label strings"),
        (["bug", " bug "], "labels: 'bug' is given twice"),
        (["bug", ""], "labels: '' is not a non-empty string"),
        (["bug", 3], "labels: 3 is not a non-empty string"),
    ],
)
def test_bad_labels_are_refused_before_anything_is_written(
    local: Runtime, labels: Any, message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        bulk.classify(TEXTS, labels)
    assert str(info.value) == message
    assert local.store.status_counts() == {}


def test_bad_items_and_reserved_arguments_are_refused(local: Runtime) -> None:
    with pytest.raises(ValidationError, match=r"^schema: is set by classify"):
        bulk.classify(TEXTS, LABELS, schema={"type": "object"})
    with pytest.raises(ValidationError, match=r"^requests\[1\]: must not set schema"):
        bulk.classify(["a", {"input": "b", "schema": {}}], LABELS)
    with pytest.raises(ValidationError, match=r"^requests\[1\]\.input: must not be empty"):
        bulk.summarize(["a", "  "])
    with pytest.raises(ValidationError, match=r"^items: must be a list"):
        bulk.summarize("one text")
    assert local.store.status_counts() == {}


def test_results_of_an_unknown_bulk(local: Runtime) -> None:
    with pytest.raises(JobNotFound):
        bulk.results("0" * 32)


# -- the CLI -------------------------------------------------------------------------------


def run(*args: str) -> Any:
    from flexpipe.cli import cli

    # click < 8.2 (the floor is 8.1.2) mixes stderr into stdout unless told not to.
    separate = "mix_stderr" in inspect.signature(CliRunner).parameters
    runner = CliRunner(mix_stderr=False) if separate else CliRunner()  # type: ignore[call-arg]
    return runner.invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def tickets_csv(tmp_path: Path) -> Path:
    path = tmp_path / "tickets.csv"
    path.write_text("id,body\n" + "".join(f'{i},"{text}"\n' for i, text in enumerate(TEXTS)))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["classify", "{csv}"], "--labels: give the labels, comma-separated"),
        (["classify", "{csv}", "--labels", " , "], "--labels: give the labels"),
        (["classify", "{csv}", "--labels", "a,a"], "labels: 'a' is given twice"),
        (["classify", "{dir}/nope.csv", "--labels", "a"], "nope.csv: no such file"),
        (["classify", "{csv}", "--labels", "a"], "tickets.csv: no column 'text' (columns: id"),
        (["summarize", "{csv}", "--field", "body", "-o", "{dir}/o.xlsx"], "write .jsonl or .csv"),
        (["summarize", "{csv}", "--field", "body", "-o", "{dir}/o.csv", "--no-wait"], "--output"),
        (["bulk", "results", "f" * 32], "no bulk job with id"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2_and_enqueue_nothing(
    local: Runtime, tickets_csv: Path, args: list[str], message: str
) -> None:
    where = {"csv": str(tickets_csv), "dir": str(tickets_csv.parent)}
    result = run(*(arg.format(**where) for arg in args))
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert local.store.status_counts() == {}


def test_cli_no_wait_prints_the_bulk_id_and_results_are_readable_later(
    local: Runtime, tickets_csv: Path, tmp_path: Path
) -> None:
    result = run(
        "classify", str(tickets_csv), "--field", "body", "--labels", "bug, billing,other",
        "--no-wait", "--name", "t1",
    )
    assert result.exit_code == 0, result.output
    bulk_id = result.stdout.strip()
    found = local.store.get_bulk(bulk_id)
    assert (found.name, found.total) == ("t1", 3)
    request = local.store.require_job(bulk.results(bulk_id)[0].job_id).request
    assert request.schema["properties"]["label"]["enum"] == LABELS
    finish_all(local, bulk_id, {0: [label("bug")], 1: [label("billing")], 2: [label("other")]})

    out = tmp_path / "results.csv"
    result = run("bulk", "results", bulk_id, "--output", str(out))
    assert result.exit_code == 0, result.output
    with out.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["item"], r["status"], r["label"], r["error"]) for r in rows] == [
        ("0", "completed", "bug", ""),
        ("1", "completed", "billing", ""),
        ("2", "completed", "other", ""),
    ]
