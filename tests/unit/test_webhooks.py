"""The webhook receiver: verified by the SDK, deduped by webhook-id, and a poll of the job
through its fenced chain (one live chain, one store), including the event that comes
before the submit's commit. Signatures are made by the emulator's signer."""

from __future__ import annotations

import io
import json
import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest

from flexpipe.client import ProviderResponse, WebhookVerifier
from flexpipe.config.logs import RedactSecrets
from flexpipe.config.settings import Settings, load_settings
from flexpipe.emulator.webhooks import event, new_secret, secret_key, signature
from flexpipe.errors import ConfigurationError
from flexpipe.flow import Flow, FlowSettings
from flexpipe.models import WebhookEvent, build_request
from flexpipe.policy import LatencyEstimate, PollPolicy, RetryPolicy
from flexpipe.states import JobStatus
from flexpipe.store import NewJob, Store
from flexpipe.tasks import steps, sweeper
from flexpipe.tasks.webhooks import Inbox, Receiver, wsgi_app
from tests.unit.test_flow import QUEUED, ScriptedClient, done

SECRET = new_secret()


def delivery(
    response_id: str,
    *,
    type_: str = "response.completed",
    webhook_id: str | None = None,
    secret: str = SECRET,
    timestamp: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event(type_, response_id)).encode()
    webhook_id = webhook_id or f"wh_{response_id}"
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature(secret_key(secret), webhook_id, ts, body),
    }
    return body, headers


class Polls:
    """The polls the receiver would send, kept instead of published."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def __call__(self, polls: list[tuple[str, int]]) -> None:
        self.sent.extend(polls)


def _flow(store: Store, client: ScriptedClient, **kw: Any) -> Flow:
    settings = FlowSettings(
        poll=PollPolicy(first_delay=1, jitter=0),
        retry=RetryPolicy(jitter=0),
        park_after=30,
        learn_latency=False,
        **{"webhooks": True, **kw},
    )
    return Flow(store, client, settings)  # type: ignore[arg-type]


def _submitted(store: Store, client: ScriptedClient) -> tuple[str, int]:
    job_id = store.add_job(NewJob(request=build_request("hi", model="m"), callback={"task": "c"}))[
        0
    ]
    step = _flow(store, client).submit(job_id)
    assert step.kind == "poll"
    return job_id, step.seq


@pytest.fixture
def receive(store: Store):
    polls = Polls()
    rx = Receiver(WebhookVerifier(SECRET), Inbox(store, polls))
    return rx, polls


def test_a_verified_event_takes_over_the_chain_and_the_old_poll_stops(store, receive) -> None:
    rx, polls = receive
    client = ScriptedClient(creates=[QUEUED], reads=[done()])
    job_id, old_seq = _submitted(store, client)

    reply = rx.handle(*delivery("resp_1"))

    assert reply.status == 200
    assert polls.sent == [(job_id, old_seq + 1)]
    flow = _flow(store, client)
    assert flow.poll(job_id, old_seq).reason == "stale poll chain"  # no second live chain
    step = flow.poll(job_id, old_seq + 1)
    assert step.kind == "done" and step.callback == {"task": "c"}
    job = store.require_job(job_id)
    assert job.status is JobStatus.COMPLETED and job.poll_count == 1
    assert client.calls == ["create", "retrieve"]  # one GET


def test_a_redelivery_is_answered_200_and_does_nothing(store, receive) -> None:
    rx, polls = receive
    job_id, seq = _submitted(store, ScriptedClient(creates=[QUEUED]))
    body, headers = delivery("resp_1")
    assert rx.handle(body, headers).status == 200
    assert rx.handle(body, headers).status == 200
    assert polls.sent == [(job_id, seq + 1)]
    assert store.require_job(job_id).poll_seq == seq + 1
    assert store.webhook_counts() == {"handled": 1, "waiting": 0}


@pytest.mark.parametrize(
    "spoil",
    [
        lambda b, h: (b, {**h, "webhook-signature": "v1,bm90IHRoZSBzaWduYXR1cmU="}),
        lambda b, h: (b.replace(b"resp_1", b"resp_2"), h),  # body changed after signing
        lambda b, h: (b, {k: v for k, v in h.items() if k != "webhook-signature"}),
        lambda b, h: (b, {**h, "webhook-id": "wh_other"}),
    ],
    ids=["wrong signature", "tampered body", "no signature", "other id"],
)
def test_a_bad_signature_is_refused_and_nothing_is_recorded(store, receive, spoil) -> None:
    rx, polls = receive
    job_id, seq = _submitted(store, ScriptedClient(creates=[QUEUED]))
    reply = rx.handle(*spoil(*delivery("resp_1")))
    assert reply.status == 400
    assert polls.sent == []
    assert store.webhook_counts() == {"handled": 0, "waiting": 0}
    assert store.require_job(job_id).poll_seq == seq


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_timestamp_outside_the_tolerance_is_refused(store, receive, skew) -> None:
    rx, polls = receive
    _submitted(store, ScriptedClient(creates=[QUEUED]))
    reply = rx.handle(*delivery("resp_1", timestamp=int(time.time()) + skew))
    assert reply.status == 400 and "timestamp" in reply.body["error"]
    assert polls.sent == []
    assert store.webhook_counts() == {"handled": 0, "waiting": 0}


def test_a_secret_of_another_endpoint_is_refused(store, receive) -> None:
    rx, _ = receive
    assert rx.handle(*delivery("resp_1", secret=new_secret())).status == 400


def test_unknown_response_ids_are_answered_200_and_kept(store, receive, caplog) -> None:
    rx, polls = receive
    with caplog.at_level(logging.INFO, "flexpipe.webhooks"):
        assert rx.handle(*delivery("resp_nobody")).status == 200
    assert polls.sent == []
    assert "resp_nobody" in caplog.text
    assert store.webhook_counts() == {"handled": 0, "waiting": 1}


def test_other_event_types_are_acknowledged_and_ignored(store, receive) -> None:
    rx, polls = receive
    reply = rx.handle(*delivery("batch_1", type_="batch.completed"))
    assert reply.status == 200 and reply.body["status"] == "ignored"
    assert polls.sent == []
    assert store.webhook_counts() == {"handled": 0, "waiting": 0}


def test_an_event_about_a_finished_job_sends_no_poll(store, receive) -> None:
    rx, polls = receive
    client = ScriptedClient(creates=[QUEUED], reads=[done()])
    job_id, seq = _submitted(store, client)
    assert _flow(store, client).poll(job_id, seq).kind == "done"
    assert rx.handle(*delivery("resp_1")).status == 200
    assert polls.sent == []
    assert store.webhook_counts() == {"handled": 1, "waiting": 0}


def test_a_webhook_before_the_submit_commit_is_claimed_by_the_submit(store, receive) -> None:
    rx, polls = receive
    # The provider finished and its webhook came while the submit was still committing.
    assert rx.handle(*delivery("resp_1")).status == 200
    assert polls.sent == []
    client = ScriptedClient(creates=[QUEUED], reads=[done()])
    job_id = store.add_job(NewJob(request=build_request("hi", model="m")))[0]
    flow = _flow(store, client)

    step = flow.submit(job_id)

    assert step.kind == "poll" and step.delay == 0 and not step.parked
    assert flow.poll(job_id, step.seq).kind == "done"
    assert store.webhook_counts() == {"handled": 1, "waiting": 0}


def test_an_early_webhook_missed_by_the_submit_is_matched_by_the_sweeper(
    store, receive, monkeypatch
) -> None:
    rx, polls = receive
    client = ScriptedClient(creates=[QUEUED])
    job_id = store.add_job(NewJob(request=build_request("hi", model="m")))[0]
    # The submit's check ran before the receiver's commit: it saw nothing.
    step = _flow(store, client, webhooks=False).submit(job_id)
    assert step.kind == "poll" and step.delay > 0
    assert rx.handle(*delivery("resp_1")).status == 200
    assert polls.sent == [(job_id, step.seq + 1)]  # it holds the id now: taken over
    # And the case where even that missed: an event still waiting, matched by the sweeper.
    store.record_webhooks([WebhookEvent("wh_late", "evt", "response.completed", "resp_2")])
    job2 = store.add_job(NewJob(request=build_request("hi", model="m")))[0]
    client.creates.append(ProviderResponse(id="resp_2", status="queued"))
    step2 = _flow(store, client, webhooks=False).submit(job2)
    sent: list[tuple[str, tuple[Any, ...]]] = []
    monkeypatch.setattr(
        steps.poll_many, "apply_async", lambda args, **_: sent.append(("poll_many", args))
    )
    rt = SimpleNamespace(
        settings=Settings(webhooks=True), store=store, flow=_flow(store, client)
    )
    monkeypatch.setattr(sweeper, "runtime", lambda: rt)
    assert sweeper.sweep()["webhooks"] == 1
    assert sent == [("poll_many", ([[job2, step2.seq + 1]],))]
    assert sweeper.sweep()["webhooks"] == 0


def test_the_inbox_records_a_group_in_one_transaction(store) -> None:
    polls = Polls()
    inbox = Inbox(store, polls)
    client = ScriptedClient(creates=[ProviderResponse(id=f"resp_{i}", status="queued")
                                     for i in range(5)])
    jobs = [_submitted(store, client) for _ in range(5)]
    group = [
        (WebhookEvent(f"wh_{i % 5}", "evt", "response.completed", f"resp_{i % 5}"), None)
        for i in range(10)
    ]
    from concurrent.futures import Future

    futures = [Future() for _ in group]
    inbox._record([(e, f) for (e, _), f in zip(group, futures, strict=True)])
    batch = futures[0].result()
    assert batch.duplicates == 5
    assert sorted(polls.sent) == sorted((j, s + 1) for j, s in jobs)


def test_the_wsgi_app_answers_like_the_receiver(store, receive, monkeypatch) -> None:
    rx, polls = receive
    monkeypatch.setattr("flexpipe.tasks.webhooks.receiver", lambda: rx)
    job_id, seq = _submitted(store, ScriptedClient(creates=[QUEUED]))

    def call(body: bytes, headers: dict[str, str], method: str = "POST") -> tuple[str, Any]:
        environ = {
            "REQUEST_METHOD": method,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
        }
        answer: list[str] = []
        out = b"".join(wsgi_app(environ, lambda status, _headers: answer.append(status)))
        return answer[0], json.loads(out)

    good = delivery("resp_1")
    assert call(*good)[0] == "200 OK"
    assert call(good[0], {**good[1], "webhook-signature": "v1,AAAA"})[0] == "400 Bad Request"
    assert call(*good, method="GET")[0] == "405 Method Not Allowed"
    assert polls.sent == [(job_id, seq + 1)]


# -- the safety-net schedule --------------------------------------------------------------


def test_with_webhooks_one_poll_at_the_learned_p99_then_a_slow_backoff() -> None:
    estimate = LatencyEstimate(median=60.0, sigma=0.6, samples=100)
    policy = PollPolicy(webhooks=True, jitter=0)
    first = policy.next_delay(polls_done=0, elapsed=0.0, estimate=estimate)
    assert first == pytest.approx(estimate.quantile(0.99))
    assert first > 200  # ~242 s: past nearly every job, whose webhook came long before
    later = policy.next_delay(polls_done=1, elapsed=first, estimate=estimate)
    assert later == pytest.approx(first)  # twice the time waited
    without = policy.next_delay(polls_done=0, elapsed=0.0, estimate=None)
    assert without == 300.0
    assert policy.next_delay(polls_done=5, elapsed=9000, estimate=None) == 1800.0
    plain = PollPolicy(jitter=0).next_delay(polls_done=0, elapsed=0.0, estimate=estimate)
    assert plain < 60  # without webhooks: the learned schedule, unchanged


def test_webhook_settings_and_the_secret_from_either_variable(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_WEBHOOK_SECRET", "whsec_c2RrLXNlY3JldC12YWx1ZQ==")
    settings = load_settings(webhooks=True)
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == "whsec_c2RrLXNlY3JldC12YWx1ZQ=="
    monkeypatch.setenv("FLEXPIPE_WEBHOOK_SECRET", "whsec_b3Vycy1zZWNyZXQ=")
    assert load_settings().webhook_secret.get_secret_value() == "whsec_b3Vycy1zZWNyZXQ="
    given = load_settings(webhook_secret="whsec_Z2l2ZW4tc2VjcmV0")
    assert given.webhook_secret.get_secret_value() == "whsec_Z2l2ZW4tc2VjcmV0"
    assert settings.flow_settings().webhooks and settings.flow_settings().poll.webhooks
    assert not load_settings().flow_settings().poll.webhooks  # off unless asked for


def test_doubleword_keeps_polling() -> None:
    with pytest.raises(ConfigurationError, match="Doubleword sends no response webhooks"):
        load_settings(webhooks=True, api_base_url="https://api.doubleword.ai/v1")


def test_the_webhook_secret_never_reaches_a_log(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_WEBHOOK_SECRET", raising=False)
    settings = load_settings(webhook_secret=SECRET)
    assert SECRET in settings.secrets
    assert SECRET not in repr(settings)
    record = logging.LogRecord("x", logging.INFO, "", 0, "secret is %s", (SECRET,), None)
    RedactSecrets(settings.secrets).filter(record)
    assert SECRET not in record.getMessage()


def test_a_receiver_without_a_secret_fails_loudly(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ConfigurationError, match="FLEXPIPE_WEBHOOK_SECRET"):
        WebhookVerifier(None)


def test_the_flask_blueprint_answers_like_the_receiver(store, receive, monkeypatch) -> None:
    from flask import Flask

    from flexpipe.contrib.flask import webhook_blueprint

    rx, polls = receive
    monkeypatch.setattr("flexpipe.tasks.webhooks.receiver", lambda: rx)
    job_id, seq = _submitted(store, ScriptedClient(creates=[QUEUED]))
    app = Flask("host")
    app.register_blueprint(webhook_blueprint(), url_prefix="/flexpipe/webhooks")
    client = app.test_client()
    body, headers = delivery("resp_1")
    assert client.post("/flexpipe/webhooks/", data=body, headers=headers).status_code == 200
    bad = {**headers, "webhook-signature": "v1,AAAA"}
    assert client.post("/flexpipe/webhooks/", data=body, headers=bad).status_code == 400
    assert polls.sent == [(job_id, seq + 1)]
