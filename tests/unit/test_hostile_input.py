"""Hostile input at the request path (issue 11): every bad request is a ValidationError that
names its field, and nothing is written (no jobs row) or sent (no broker message).

On a local runtime: SQLite and the embedded broker in a temporary folder, no worker; the
messages published are the files in the broker's folder.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from flexpipe.errors import IdempotencyConflict, ValidationError
from flexpipe.tasks import api, remote, steps
from flexpipe.tasks.runtime import Runtime


@pytest.fixture(autouse=True)
def registered_callback() -> str:
    """A task registered on flexpipe's Celery app in this process, as an app's would be."""
    from flexpipe.config.celery import app

    if "tests.unit.cb" not in app.tasks:

        def cb(job_id: str) -> None:
            """Does nothing."""

        app.task(name="tests.unit.cb")(cb)
    return "tests.unit.cb"


class Local:
    """The runtime, with what it wrote and sent."""

    def __init__(self, rt: Runtime, folder: Path) -> None:
        self.rt = rt
        self.messages_folder = folder / "broker" / "messages"

    def jobs(self) -> int:
        return sum(self.rt.store.status_counts().values())

    def messages(self) -> int:
        return len(list(self.messages_folder.glob("*.msg")))

    def nothing_written(self) -> bool:
        return self.jobs() == 0 and self.messages() == 0


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Local]:
    from flexpipe.config.settings import configure
    from flexpipe.tasks.runtime import reset, runtime

    monkeypatch.setenv("FLEXPIPE_DATA_DIR", str(tmp_path / "flexpipe"))
    configure()
    rt = runtime()
    rt.store.create_tables()
    yield Local(rt, tmp_path / "flexpipe")
    reset()
    monkeypatch.undo()
    configure()


def nested(depth: int, leaf: Any = "x") -> Any:
    """A list nested ``depth`` deep, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def deep_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


DEEP = 100_000
USER = {"role": "user", "content": "hi"}

#: (enqueue arguments, the field the error must name)
BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    # NUL in any text field
    ({"input": "a\x00b"}, "input"),
    ({"input": [{"role": "user", "content": "a\x00"}]}, "input"),
    ({"input": "x", "instructions": "be\x00brief"}, "instructions"),
    ({"input": "x", "model": "m\x00"}, "model"),
    ({"input": "x", "idempotency_key": "k\x00"}, "idempotency_key"),
    ({"input": "x", "metadata": {"k\x00": "v"}}, "metadata"),
    ({"input": "x", "metadata": {"k": "v\x00"}}, "metadata"),
    ({"messages": [{"role": "user", "content": "a\x00"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "\x00"}]}]}, "messages"),
    # lone surrogates
    ({"input": "\ud800"}, "input"),
    ({"input": [{"role": "user", "content": "\udfff"}]}, "input"),
    ({"input": "x", "instructions": "\ud83d"}, "instructions"),
    ({"input": "x", "metadata": {"k": "\ud800"}}, "metadata"),
    ({"input": "x", "idempotency_key": "\ud800"}, "idempotency_key"),
    ({"input": "x", "model": "\udc00"}, "model"),
    # nested beyond the bound (no RecursionError)
    ({"input": [{"role": "user", "content": nested(DEEP)}]}, "input"),
    ({"input": [{"role": "user", "content": nested(40)}]}, "input"),
    ({"messages": [{"role": "user", "content": nested(DEEP)}]}, "messages"),
    ({"input": "x", "schema": deep_schema(DEEP)}, "schema"),
    ({"input": "x", "callback": {"task": "tests.unit.cb", "kwargs": {"a": nested(DEEP)}}},
     "callback"),
    ({"input": "x", "callback": {"task": "tests.unit.cb", "args": nested(DEEP)}}, "callback"),
    ({"input": "x", "metadata": {"k": nested(DEEP)}}, "metadata"),
    # deadlines
    ({"input": "x", "deadline": math.nan}, "deadline"),
    ({"input": "x", "deadline": math.inf}, "deadline"),
    ({"input": "x", "deadline": -math.inf}, "deadline"),
    ({"input": "x", "deadline": 1e300}, "deadline"),
    ({"input": "x", "deadline": 10**400}, "deadline"),
    ({"input": "x", "deadline": timedelta.max}, "deadline"),
    ({"input": "x", "deadline": datetime.max.replace(tzinfo=UTC)}, "deadline"),
    ({"input": "x", "deadline": datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))},
     "deadline"),
    ({"input": "x", "deadline": datetime.min.replace(tzinfo=timezone(timedelta(hours=5)))},
     "deadline"),
    # numbers, tiers, flags, names
    ({"input": "x", "max_output_tokens": 10**30}, "max_output_tokens"),
    ({"input": "x", "max_output_tokens": 1_000_001}, "max_output_tokens"),
    ({"input": "x", "service_tier": ""}, "service_tier"),
    ({"input": "x", "service_tier": "turbo"}, "service_tier"),
    ({"input": "x", "service_tier": ["flex"]}, "service_tier"),
    ({"input": "x", "escalate": "no"}, "escalate"),
    ({"input": "x", "escalate": 1}, "escalate"),
    ({"input": "x", "model": ""}, "model"),
    ({"input": "x", "mode": ""}, "mode"),
    ({"input": "x", "schema_name": 7, "schema": {"type": "object"}}, "schema_name"),
    ({"messages": [{"role": ["user"], "content": "x"}]}, "messages"),
    # numbers JSON cannot carry, inside input items
    ({"input": [{"role": "user", "content": "x", "n": math.nan}]}, "input"),
    ({"input": [{"role": "user", "content": "x", "n": 10**5000}]}, "input"),
    # an unknown keyword argument
    ({"input": "x", "modle": "m"}, "modle"),
    ({"input": "x", "callback_queue": "q"}, "callback_queue"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_REQUESTS)
def test_bad_requests_are_validation_errors_and_nothing_is_written(
    local: Local, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        api.enqueue(**kwargs)
    assert info.value.field == field, info.value
    assert str(info.value).startswith(f"{field}: ")
    assert local.nothing_written()


def test_a_good_request_writes_one_row_and_sends_one_message(local: Local) -> None:
    """The counterpart of every row above: the counting itself works."""
    api.enqueue("hello", deadline=timedelta(days=1), max_output_tokens=1_000_000)
    assert (local.jobs(), local.messages()) == (1, 1)


@pytest.mark.parametrize(("kwargs", "field"), BAD_REQUESTS[:12] + BAD_REQUESTS[-2:])
def test_the_by_name_task_makes_the_same_checks_and_logs_without_the_prompt(
    local: Local, kwargs: dict[str, Any], field: str, caplog: pytest.LogCaptureFixture
) -> None:
    kwargs = {"input": "the secret prompt", **kwargs}
    if "messages" in kwargs:
        del kwargs["input"]
    with (
        caplog.at_level(logging.ERROR, logger="flexpipe.tasks"),
        pytest.raises(ValidationError) as info,
    ):
        remote.enqueue(**kwargs)
    assert info.value.field == field
    assert local.nothing_written()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "rejected a request" in errors[0].getMessage()
    assert field in errors[0].getMessage()
    assert "secret prompt" not in caplog.text


def test_the_by_name_task_refuses_positional_arguments(local: Local) -> None:
    with pytest.raises(ValidationError) as info:
        remote.enqueue("hello")
    assert info.value.field == "args"
    assert local.nothing_written()


def test_the_by_name_task_enqueues_a_good_request(local: Local) -> None:
    job_id = remote.enqueue(input="hello", idempotency_key="by-name-1")
    assert local.rt.store.require_job(job_id).idempotency_key == "by-name-1"
    assert (local.jobs(), local.messages()) == (1, 1)


# -- idempotency keys -------------------------------------------------------------------


def test_the_same_key_and_request_returns_the_first_id_and_sends_nothing(local: Local) -> None:
    first = api.enqueue("hello", idempotency_key="k1", metadata={"a": "b"})
    again = api.enqueue("hello", idempotency_key="k1", metadata={"a": "b"})
    assert again == first
    assert (local.jobs(), local.messages()) == (1, 1)


@pytest.mark.parametrize(
    "changed",
    [
        {"input": "goodbye"},
        {"input": "hello", "instructions": "Be brief."},
        {"input": "hello", "model": "other-model"},
        {"input": "hello", "metadata": {"a": "c"}},
        {"input": "hello", "service_tier": "priority"},
        {"input": "hello", "escalate": True},
        {"input": "hello", "callback": "tests.unit.cb"},
    ],
)
def test_the_same_key_with_another_request_is_a_conflict(
    local: Local, changed: dict[str, Any]
) -> None:
    first = api.enqueue("hello", idempotency_key="k1", metadata={"a": "b"})
    with pytest.raises(IdempotencyConflict) as info:
        api.enqueue(**{"metadata": {"a": "b"}, **changed}, idempotency_key="k1")
    assert info.value.field == "idempotency_key"
    assert first in str(info.value)
    assert isinstance(info.value, ValidationError)
    assert (local.jobs(), local.messages()) == (1, 1)


# -- bulks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requests", "defaults", "field"),
    [
        ([], {}, "requests"),
        (iter(()), {}, "requests"),
        ("abc", {}, "requests"),
        (
            [{"input": "a", "idempotency_key": "k"}, {"input": "b", "idempotency_key": "k"}],
            {},
            "requests[1].idempotency_key",
        ),
        (["a", {"input": "b", "modle": "m"}], {}, "requests[1].modle"),
        (["a", "b"], {"modle": "m"}, "modle"),
        (["a", {"input": "b\x00"}], {}, "requests[1].input"),
        (["a", 42], {}, "requests[1]"),
        (["a"], {"on_complete": "os.system"}, "on_complete"),
    ],
)
def test_bad_bulks_are_validation_errors_and_nothing_is_written(
    local: Local, requests: Any, defaults: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        api.enqueue_many(requests, **defaults)
    assert info.value.field == field, info.value
    assert local.nothing_written()
    assert local.rt.store.get_bulk("0" * 32) is None


def test_a_bulk_item_reusing_a_key_for_another_request_writes_nothing(local: Local) -> None:
    api.enqueue("first", idempotency_key="k1")
    with pytest.raises(IdempotencyConflict) as info:
        api.enqueue_many(["a", {"input": "other", "idempotency_key": "k1"}, "b"])
    assert info.value.field == "requests[1]"
    assert (local.jobs(), local.messages()) == (1, 1)


def test_a_bulk_item_repeating_a_request_with_its_key_is_not_sent_again(local: Local) -> None:
    first = api.enqueue("first", idempotency_key="k1")
    bulk_id = api.enqueue_many(["a", {"input": "first", "idempotency_key": "k1"}])
    assert local.rt.store.get_bulk(bulk_id).total == 1
    assert first not in local.rt.store.bulk_job_ids(bulk_id)
    assert local.jobs() == 2


# -- S1: schemas never reach the network ------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/internal.json"}}},
        {"type": "object", "$ref": "https://example.com/s.json"},
        {"type": "object", "properties": {"a": {"$ref": "file:///etc/passwd"}}},
        {"type": "object", "properties": {"a": {"$ref": "other.json#/x"}}},
        {"type": "object", "properties": {"a": {"$ref": "//host/x"}}},
        {"type": "object", "properties": {"a": {"$dynamicRef": "http://h/x#meta"}}},
        {"type": "object", "allOf": [{"$ref": "urn:x"}]},
    ],
)
def test_a_schema_with_a_non_local_ref_is_refused(local: Local, schema: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        api.enqueue("x", schema=schema)
    assert info.value.field == "schema"
    assert "local" in info.value.reason
    assert local.nothing_written()


def test_a_schema_with_local_refs_is_accepted(local: Local) -> None:
    schema = {
        "type": "object",
        "$defs": {"label": {"type": "string", "enum": ["a", "b"]}},
        "properties": {"label": {"$ref": "#/$defs/label"}},
    }
    job_id = api.enqueue("x", schema=schema)
    assert local.rt.store.require_job(job_id).request.schema == schema


# -- S3: callbacks are checked, not imported --------------------------------------------


@pytest.fixture
def hostile_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module on sys.path whose import leaves a mark."""
    mark = tmp_path / "imported"
    (tmp_path / "hostile_callback_mod.py").write_text(
        f"open({str(mark)!r}, 'w').close()\ndef x(job_id): pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return mark


def test_a_callback_module_is_never_imported(local: Local, hostile_module: Path) -> None:
    with pytest.raises(ValidationError) as info:
        api.enqueue("x", callback="hostile_callback_mod.x")
    assert info.value.field == "callback"
    assert not hostile_module.exists()
    assert local.nothing_written()


@pytest.mark.parametrize(
    "callback",
    [
        "os.system",
        "subprocess.run",
        "flexpipe.cancel",
        "flexpipe.enqueue",
        "celery.backend_cleanup",
        "celery.chord_unlock",
        {"task": "flexpipe.cancel", "options": {"queue": "flexpipe"}},
        {"task": "flexpipe.submit", "options": {"queue": "celery"}},
        {"task": "os.system", "options": {"queue": "celery"}},
        {"task": "tests.unit.cb", "options": {"link": {"task": "flexpipe.cancel"}}},
        {"task": "tests.unit.cb", "options": {"chain": []}},
        {"task": "tests.unit.cb", "options": "queue"},
        {"task": "tests.unit.cb", "args": "abc"},
        {"task": 42},
        {"task": ""},
        "",
        42,
    ],
)
def test_refused_callbacks(local: Local, callback: Any, registered_callback: str) -> None:
    with pytest.raises(ValidationError) as info:
        api.enqueue("x", callback=callback)
    assert info.value.field == "callback"
    assert local.nothing_written()


def test_a_registered_task_is_accepted(local: Local, registered_callback: str) -> None:
    job_id = api.enqueue(
        "x", callback={"task": registered_callback, "kwargs": {"a": 1}, "options": {"queue": "q"}}
    )
    callback = local.rt.store.require_job(job_id).callback
    assert callback["task"] == registered_callback
    assert callback["kwargs"] == {"a": 1}
    assert callback["options"]["queue"] == "q"


def test_the_allow_list_accepts_matching_names_but_never_flexpipes_own(
    local: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flexpipe.config.settings import configure

    configure(data_dir=local.rt.settings.data_dir, callbacks="myapp.*, other.done,*")
    from flexpipe.tasks.runtime import runtime

    runtime().store.create_tables()
    job_id = api.enqueue("x", callback="myapp.tasks.summary_ready")
    assert runtime().store.require_job(job_id).callback["task"] == "myapp.tasks.summary_ready"
    for name in ("flexpipe.cancel", "celery.backend_cleanup"):
        with pytest.raises(ValidationError):
            api.enqueue("x", callback=name)
    assert sum(runtime().store.status_counts().values()) == 1


def test_a_stored_callback_naming_flexpipes_own_task_is_not_sent(
    local: Local, caplog: pytest.LogCaptureFixture
) -> None:
    """A row stored before callbacks were checked is not obeyed either."""
    with caplog.at_level(logging.ERROR, logger="flexpipe.tasks"):
        steps._send({"task": "flexpipe.cancel", "options": {"queue": "flexpipe"}}, "j1", "t1")
    assert local.messages() == 0
    assert "refused" in caplog.text
