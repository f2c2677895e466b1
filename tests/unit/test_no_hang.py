"""Nothing a job carries can make a worker fetch, hang or loop (issue 11): output
validation never retrieves a schema, every call has a timeout, every task a time limit,
and a poison job fails after a bounded number of tries. Secrets in URLs are redacted."""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from flexpipe import errors
from flexpipe.client import FlexClient
from flexpipe.config.celery import celery_config
from flexpipe.config.logs import RedactSecrets, redact
from flexpipe.config.settings import Settings, load_settings
from flexpipe.flow import INTERNAL_ERROR, INVALID_SCHEMA, parse_structured
from flexpipe.models import JobRequest, build_request
from flexpipe.states import JobStatus
from flexpipe.store import NewJob, Store
from tests.unit.test_flow import QUEUED, RUNNING, ScriptedClient, done

# -- S1: output validation retrieves nothing ----------------------------------------------


@pytest.fixture
def schema_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server that serves a schema and records every request it gets."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = json.dumps({"enum": ["INTERNAL-SECRET-value-42"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/internal.json", hits
    finally:
        server.shutdown()
        server.server_close()


def test_output_validation_never_fetches_a_remote_ref(schema_server) -> None:
    url, hits = schema_server
    schema = {"type": "object", "properties": {"kind": {"$ref": url}}}
    value, problem = parse_structured('{"kind": "json"}', schema)
    assert hits == []
    assert value is None and problem is not None
    assert "not resolved" in problem
    assert "INTERNAL-SECRET" not in problem


def test_a_stored_remote_ref_fails_the_job_without_a_fetch(store: Store, schema_server) -> None:
    """A schema stored before enqueue refused remote refs (written here directly)."""
    from flexpipe.flow import Flow, FlowSettings

    url, hits = schema_server
    request = JobRequest(
        model="m", input="x", schema={"type": "object", "properties": {"k": {"$ref": url}}}
    )
    job_id, _ = store.add_job(NewJob(request=request))
    client = ScriptedClient(creates=[QUEUED], reads=[done('{"k": "json"}')] * 3)
    flow = Flow(store, client, FlowSettings(learn_latency=False))  # type: ignore[arg-type]
    step = flow.submit(job_id)
    while step.kind in ("poll", "submit"):
        step = flow.poll(job_id, step.seq) if step.kind == "poll" else flow.submit(job_id)
    job = store.require_job(job_id)
    assert job.status is JobStatus.FAILED and job.error_code == INVALID_SCHEMA
    assert hits == []


def test_deeply_nested_output_is_invalid_output_not_a_crash() -> None:
    schema = {"type": "object"}
    value, problem = parse_structured("[" * 100_000 + "]" * 100_000, schema)
    assert value is None and problem is not None and "deep" in problem


# -- S4: secrets in URLs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("broker redis://:s3cretpw@redis:6379/0 up", "broker redis://:***@redis:6379/0 up"),
        (
            "db postgresql+psycopg://flexpipe:pa55word@pg:5432/x",
            "db postgresql+psycopg://flexpipe:***@pg:5432/x",
        ),
        ("POST http://u:sk-abcdef123456@host/v1/responses", "POST http://u:***@host/v1/responses"),
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
        ("http://host:8080/path@x and no password", "http://host:8080/path@x and no password"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ],
)
def test_url_passwords_are_redacted(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_logged_urls_lose_their_password(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("flexpipe.test.urls")
    caplog.handler.addFilter(RedactSecrets([]))
    with caplog.at_level(logging.INFO, logger="flexpipe.test.urls"):
        logger.info("connecting to %s", "redis://user:hunter2hunter2@redis:6379/0")
        try:
            raise ConnectionError("cannot reach postgresql://app:topsecret1@db/app")
        except ConnectionError:
            logger.exception("database down")
    for record in caplog.records:
        caplog.handler.format(record)
    assert "hunter2hunter2" not in caplog.text
    assert "topsecret1" not in caplog.text
    assert "redis://user:***@redis:6379/0" in caplog.text


@pytest.mark.parametrize(
    "url", ["http://u:sk-live-123@host/v1", "https://user@api.example.com/v1", "http://:k@h/v1"]
)
def test_a_provider_url_with_credentials_is_refused(url: str) -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        load_settings(api_base_url=url)
    assert "FLEXPIPE_API_BASE_URL" in str(info.value)
    assert "FLEXPIPE_API_KEY" in str(info.value)
    assert "sk-live-123" not in str(info.value)


# -- timeouts and time limits -------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_a_provider_that_never_answers_is_a_timeout_not_a_hang(silent_server: str) -> None:
    client = FlexClient(silent_server, "k", timeout=0.3, blocking_timeout=0.3, max_retries=0)
    try:
        with pytest.raises(errors.ProviderUnreachable, match="timed out"):
            client.create("job1", build_request("x", model="m"))
        with pytest.raises(errors.ProviderUnreachable, match="timed out"):
            client.create("job2", build_request("x", model="m", mode="blocking"))
        with pytest.raises(errors.ProviderUnreachable, match="timed out"):
            client.retrieve("resp_1")
    finally:
        client.close()


def test_postgres_connections_get_connect_and_statement_timeouts() -> None:
    settings = Settings(
        database_url="postgresql+psycopg://u@h/db", db_connect_timeout=5, db_statement_timeout=2.5
    )
    args = settings.engine_options()["connect_args"]
    assert args == {"connect_timeout": 5, "options": "-c statement_timeout=2500"}
    assert Settings().engine_options() == {}  # SQLite: the store sets its busy timeout


def test_every_task_has_a_soft_and_a_hard_time_limit() -> None:
    config = celery_config(Settings())
    assert config["task_soft_time_limit"] > Settings().blocking_timeout
    assert config["task_time_limit"] > config["task_soft_time_limit"]
    from flexpipe.tasks import steps

    for task in (steps.submit, steps.submit_many, steps.poll, steps.poll_many, steps.store,
                 steps.cancel):
        assert SoftTimeLimitExceeded in task.autoretry_for, task.name


@pytest.mark.parametrize(
    "values",
    [
        {"task_soft_time_limit": 100.0, "blocking_timeout": 600.0},
        {"task_soft_time_limit": 900.0, "task_time_limit": 900.0},
    ],
)
def test_time_limits_must_leave_room_for_a_blocking_request(values: dict[str, float]) -> None:
    with pytest.raises(errors.ConfigurationError, match="TIME_LIMIT"):
        load_settings(**values)


# -- poison jobs --------------------------------------------------------------------------


def _flow(store: Store, client: ScriptedClient, **kw: object):
    from flexpipe.flow import Flow, FlowSettings
    from flexpipe.policy import PollPolicy, RetryPolicy

    settings = FlowSettings(
        poll=PollPolicy(first_delay=1, jitter=0), retry=RetryPolicy(jitter=0),
        learn_latency=False, **kw,  # type: ignore[arg-type]
    )
    return Flow(store, client, settings)  # type: ignore[arg-type]


def _add(store: Store) -> str:
    return store.add_job(NewJob(request=build_request("hello", model="m")))[0]


def test_a_submit_that_always_raises_a_bug_fails_after_bounded_tries(store: Store) -> None:
    client = ScriptedClient(creates=[KeyError("poison")] * 10)
    flow = _flow(store, client, max_unexpected_errors=3)
    job_id = _add(store)
    kinds = []
    step = flow.submit(job_id)
    while step.kind == "retry":
        kinds.append(step.kind)
        step = flow.submit(job_id, step.failures)
    assert kinds == ["retry", "retry"] and step.kind == "done"
    job = store.require_job(job_id)
    assert job.status is JobStatus.FAILED and job.error_code == INTERNAL_ERROR
    assert "KeyError" in (job.error_message or "") and "poison" in (job.error_message or "")
    assert client.calls == ["create"] * 3
    # The sweeper has nothing left to re-send: the job is terminal.
    assert store.take_stale_pending(stale_after=0, limit=10) == []
    assert store.take_due_polls(overdue_after=0, horizon=10, limit=10) == []


def test_a_poll_that_always_raises_a_bug_fails_after_bounded_tries(store: Store) -> None:
    client = ScriptedClient(creates=[QUEUED], reads=[RUNNING] + [ValueError("bad body")] * 10)
    flow = _flow(store, client, max_unexpected_errors=2)
    job_id = _add(store)
    step = flow.submit(job_id)
    step = flow.poll(job_id, step.seq, step.failures)
    assert step.kind == "poll" and step.failures == 0
    step = flow.poll(job_id, step.seq, step.failures)
    assert step.kind == "poll" and step.failures == 1 and step.reason == INTERNAL_ERROR
    # The retry moved the chain on in SQL, so the sweeper does not start a second one.
    assert store.require_job(job_id).poll_seq == step.seq
    step = flow.poll(job_id, step.seq, step.failures)
    assert step.kind == "done"
    job = store.require_job(job_id)
    assert job.status is JobStatus.FAILED and job.error_code == INTERNAL_ERROR
    assert "ValueError: bad body" in (job.error_message or "")


def test_a_soft_time_limit_in_a_step_is_a_counted_retry(store: Store) -> None:
    client = ScriptedClient(creates=[SoftTimeLimitExceeded(), QUEUED])
    flow = _flow(store, client)
    job_id = _add(store)
    step = flow.submit(job_id)
    assert step.kind == "retry" and step.failures == 1
    assert store.require_job(job_id).status is JobStatus.PENDING
    assert flow.submit(job_id, step.failures).kind == "poll"
