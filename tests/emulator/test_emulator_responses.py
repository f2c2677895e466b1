"""Contract tests of the Responses endpoints through the real openai SDK over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from flexpipe.emulator import EmulatorHandle
from tests.emulator.helpers import aclient, client, http, stats

DOC = (
    "The Rhine is one of the major rivers of Europe. It rises in the Swiss Alps and flows "
    "north through Germany to the North Sea. Barges on the Rhine carry coal, grain and "
    "containers between Basel and Rotterdam. The river also forms part of the border between "
    "Germany and France. Tourists visit the castles along the Middle Rhine valley."
)


def poll(c: openai.OpenAI, resp: Any, interval: float = 0.01) -> Any:
    seen = [resp.status]
    while resp.status in ("queued", "in_progress"):
        time.sleep(interval)
        resp = c.responses.retrieve(resp.id)
        seen.append(resp.status)
    resp.seen = seen  # type: ignore[attr-defined]
    return resp


# -- the Doubleword quick start, unchanged ------------------------------------------------------


def test_doubleword_quick_start_runs_unchanged(dw: EmulatorHandle) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=dw.base_url, api_key="any-key")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        resp = client.responses.create(
            model="Qwen/Qwen3-30B-A3B-Instruct-2507",
            input="Summarize: " + DOC,
            service_tier="flex",
            background=True,
        )
        while resp.status in ("queued", "in_progress"):
            time.sleep(0.02)
            resp = client.responses.retrieve(resp.id)
        print(resp.output_text)
    printed = out.getvalue()
    assert resp.status == "completed"
    assert "Rhine" in printed
    assert resp.service_tier == "flex"


def test_doubleword_blocking_mode_returns_completed_object(dw: EmulatorHandle) -> None:
    c = client(dw)
    resp = c.responses.create(model="m", input=DOC, service_tier="flex")
    assert resp.status == "completed"
    assert "Rhine" in resp.output_text
    assert resp.background is False
    s = stats(dw)["responses"][resp.id]
    assert s["queued_at"] <= s["in_progress_at"] <= s["finished_at"]


def test_doubleword_background_create_is_202_minimal_body(dw: EmulatorHandle) -> None:
    c = client(dw)
    raw = c.responses.with_raw_response.create(
        model="m", input="hi", service_tier="flex", background=True, metadata={"job": "7"}
    )
    assert raw.status_code == 202
    assert raw.headers["x-request-id"].startswith("req_")
    body = json.loads(raw.content)
    assert body == {
        "id": body["id"],
        "object": "response",
        "status": "queued",
        "model": "m",
        "background": True,
        "service_tier": "flex",
        "output": [],
    }
    import uuid

    assert uuid.UUID(body["id"].removeprefix("resp_"))
    parsed = raw.parse()
    assert parsed.created_at is None and parsed.status == "queued"


def test_doubleword_get_object_shape_and_no_metadata(dw: EmulatorHandle) -> None:
    c = client(dw)
    resp = poll(
        c,
        c.responses.create(
            model="m", input=DOC, service_tier="flex", background=True, metadata={"job": "7"}
        ),
    )
    status, headers, body = http(dw, "GET", f"/v1/responses/{resp.id}")
    data = json.loads(body)
    assert status == 200 and headers["x-request-id"].startswith("req_")
    assert set(data) == {
        "id",
        "object",
        "created_at",
        "status",
        "model",
        "background",
        "output",
        "service_tier",
        "usage",
        "completed_at",
    }
    assert resp.metadata is None
    item = data["output"][0]
    assert item["id"].startswith("item_") and item["status"] == "completed"
    assert item["content"][0]["annotations"] == [] and item["content"][0]["logprobs"] == []
    assert stats(dw)["responses"][resp.id]["metadata"] == {"job": "7"}


def test_doubleword_id_without_prefix_and_plain_text_404(dw: EmulatorHandle) -> None:
    c = client(dw)
    resp = c.responses.create(model="m", input="hi", service_tier="flex", background=True)
    bare = resp.id.removeprefix("resp_")
    assert c.responses.retrieve(bare).id == resp.id
    with pytest.raises(openai.NotFoundError) as err:
        c.responses.retrieve("resp_00000000-0000-4000-8000-000000000000")
    assert err.value.body == "response with ID resp_00000000-0000-4000-8000-000000000000 not found"
    assert err.value.response.headers["content-type"].startswith("text/plain")
    assert err.value.request_id and err.value.request_id.startswith("req_")
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve("not-a-uuid")


def test_doubleword_has_no_cancel_route(dw: EmulatorHandle) -> None:
    c = client(dw)
    resp = c.responses.create(model="m", input="hi", service_tier="flex", background=True)
    with pytest.raises(openai.NotFoundError):
        c.responses.cancel(resp.id)


def test_doubleword_truncation_is_on_the_message_item(dw: EmulatorHandle) -> None:
    c = client(dw)
    resp = poll(
        c,
        c.responses.create(
            model="m", input=DOC, service_tier="flex", background=True, max_output_tokens=5
        ),
    )
    assert resp.status == "completed"
    assert resp.incomplete_details is None
    assert resp.output[0].status == "incomplete"
    assert len(resp.output_text) == 20
    assert resp.usage is not None and resp.usage.output_tokens == 5


def test_doubleword_unknown_tier_is_realtime_echoed_priority(dw: EmulatorHandle) -> None:
    c = client(dw)
    for tier in ("priority", "default", "auto", None, "turbo"):
        kwargs: dict[str, Any] = {"service_tier": tier} if tier else {}
        resp = c.responses.create(model="m", input="hi", **kwargs)
        assert resp.status == "completed"
        assert resp.service_tier == "priority"
    raw = c.responses.with_raw_response.create(
        model="m", input="hi", service_tier="priority", background=True
    )
    assert raw.status_code == 202
    assert json.loads(raw.content)["status"] == "in_progress"


def test_doubleword_background_tier(dw: EmulatorHandle) -> None:
    c = client(dw)
    resp = c.responses.create(model="m", input="hi", service_tier="background", background=True)  # type: ignore[arg-type]
    assert resp.service_tier == "background"
    assert poll(c, resp).status == "completed"
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.create(model="m", input="hi", service_tier="background")  # type: ignore[arg-type]
    assert err.value.param == "service_tier"


# -- the OpenAI flavour ---------------------------------------------------------------------------


def test_openai_background_lifecycle_validates_against_schema(
    start: Callable[..., EmulatorHandle], check_response: Callable[[Any], dict[str, Any]]
) -> None:
    oa = start(flavor="openai", slots=1)
    c = client(oa)
    first = c.responses.create(
        model="gpt-x",
        input=DOC,
        service_tier="flex",
        background=True,
        store=True,
        metadata={"k": "v"},
        instructions="Be brief.",
    )
    second = c.responses.create(model="gpt-x", input="second", service_tier="flex", background=True)
    assert first.status == "queued" and first.usage is None and first.output == []
    assert first.id.startswith("resp_") and len(first.id) == 5 + 48
    check_response(first)
    done = poll(c, first)
    assert "in_progress" in done.seen or "queued" in done.seen
    data = check_response(done)
    assert done.status == "completed" and done.completed_at is not None
    assert done.metadata == {"k": "v"} and done.instructions == "Be brief."
    assert done.service_tier == "flex" and done.background is True
    assert data["parallel_tool_calls"] is True and data["tools"] == []
    assert data["truncation"] == "disabled" and data["text"]["format"] == {"type": "text"}
    assert done.output[0].id.startswith("msg_")
    usage = done.usage
    assert usage is not None
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens == -(-len("Be brief.\n" + DOC) // 4)
    assert usage.output_tokens == -(-len(done.output_text) // 4)
    # slots=1: the second waited for the first
    snap = stats(oa)["responses"]
    second_done = poll(c, second)
    snap = stats(oa)["responses"]
    assert snap[second.id]["in_progress_at"] >= snap[first.id]["finished_at"]
    check_response(second_done)


def test_openai_blocking_and_truncation(
    oa: EmulatorHandle, check_response: Callable[[Any], dict[str, Any]]
) -> None:
    c = client(oa)
    resp = c.responses.create(model="m", input=DOC, service_tier="flex", max_output_tokens=16)
    check_response(resp)
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.output[0].status == "incomplete"
    assert resp.completed_at is None
    full = c.responses.create(model="m", input=DOC)
    check_response(full)
    assert full.status == "completed" and full.service_tier == "default"
    for tier, echoed in (("priority", "priority"), ("fast", "priority"), ("auto", "default")):
        got = c.responses.create(model="m", input="x", service_tier=tier)  # type: ignore[arg-type]
        assert got.service_tier == echoed


def test_openai_cancel_semantics(
    start: Callable[..., EmulatorHandle], check_response: Callable[[Any], dict[str, Any]]
) -> None:
    oa = start(flavor="openai", slots=1, latency={"flex": "fixed:30"})
    c = client(oa)
    running = c.responses.create(model="m", input="a", service_tier="flex", background=True)
    queued = c.responses.create(model="m", input="b", service_tier="flex", background=True)
    deadline = time.time() + 5
    while c.responses.retrieve(running.id).status != "in_progress" and time.time() < deadline:
        time.sleep(0.01)
    assert c.responses.retrieve(queued.id).status == "queued"
    for resp in (running, queued):
        cancelled = c.responses.cancel(resp.id)
        check_response(cancelled)
        assert cancelled.status == "cancelled"
        assert c.responses.cancel(resp.id).status == "cancelled"  # idempotent
        assert c.responses.retrieve(resp.id).status == "cancelled"
    assert stats(oa, responses=False)["totals"]["slots_busy"] == 0
    sync = c.responses.create(model="m", input="c")
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.cancel(sync.id)
    assert "Cannot cancel a synchronous response." in err.value.message
    with pytest.raises(openai.NotFoundError) as nf:
        c.responses.cancel("resp_" + "0" * 48)
    assert nf.value.body == {
        "message": f"Response with id 'resp_{'0' * 48}' not found.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_openai_cancel_of_finished_returns_final_or_400(
    start: Callable[..., EmulatorHandle],
) -> None:
    oa = start(flavor="openai")
    c = client(oa)
    done = poll(c, c.responses.create(model="m", input="a", background=True))
    assert c.responses.cancel(done.id).status == "completed"
    strict = start(flavor="openai", cancel_terminal_400=True)
    c2 = client(strict)
    done2 = poll(c2, c2.responses.create(model="m", input="a", background=True))
    with pytest.raises(openai.BadRequestError):
        c2.responses.cancel(done2.id)


@pytest.mark.parametrize("flavor", ["openai", "doubleword"])
def test_delete(start: Callable[..., EmulatorHandle], flavor: str) -> None:
    h = start(flavor=flavor)
    c = client(h)
    resp = c.responses.create(model="m", input="x", service_tier="flex", background=True)
    status, _, body = http(h, "DELETE", f"/v1/responses/{resp.id}")
    assert status == 200
    assert json.loads(body) == {"id": resp.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.delete(resp.id)
    other = c.responses.create(model="m", input="y", background=True)
    assert c.responses.delete(other.id) is None
    totals = stats(h, responses=False)["totals"]
    assert totals["deleted"] == 2


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", ["openai", "doubleword"])
@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m", "input": 5}, "input"),
        ({"model": "m", "input": [3]}, "input[0]"),
        ({"model": "m", "input": "x", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"model": "m", "input": "x", "metadata": {"k" * 65: "v"}}, "metadata"),
        ({"model": "m", "input": "x", "metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"model": "m", "input": "x", "background": True, "store": False}, "background"),
        (
            {"model": "m", "input": "x", "background_options": {"completion_window": "2h"}},
            "background_options.completion_window",
        ),
        (
            {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}},
            "text.format.name",
        ),
        (
            {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "a"}}},
            "text.format.schema",
        ),
        ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ],
)
def test_validation_answers_400_naming_the_param(
    start: Callable[..., EmulatorHandle], flavor: str, kwargs: dict[str, Any], param: str
) -> None:
    h = start(flavor=flavor)
    c = client(h)
    with pytest.raises(openai.BadRequestError) as err:
        c.post("/responses", body=kwargs, cast_to=object)
    assert err.value.param == param
    assert err.value.type == "invalid_request_error"
    assert err.value.response.headers["content-type"] == "application/json"
    assert stats(h)["totals"]["creates"] == 0


def test_openai_rejects_unknown_tier_and_small_max_tokens(oa: EmulatorHandle) -> None:
    c = client(oa)
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.create(model="m", input="x", service_tier="turbo")  # type: ignore[arg-type]
    assert err.value.param == "service_tier"
    with pytest.raises(openai.BadRequestError) as err2:
        c.responses.create(model="m", input="x", max_output_tokens=3)
    assert err2.value.param == "max_output_tokens"


def test_strict_models_and_models_list(start: Callable[..., EmulatorHandle]) -> None:
    h = start(strict_models=True, models=("a", "b"))
    c = client(h)
    assert [m.id for m in c.models.list()] == ["a", "b"]
    assert c.models.retrieve("a").id == "a"
    assert c.responses.create(model="a", input="x").status == "completed"
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.create(model="zzz", input="x")
    assert err.value.param == "model"
    default = start()
    ids = [m.id for m in client(default).models.list()]
    assert ids == ["Qwen/Qwen3-30B-A3B-Instruct-2507", "Qwen/Qwen3-235B-A22B-Instruct-2507"]
    assert client(default).responses.create(model="anything", input="x").model == "anything"


# -- input shapes ---------------------------------------------------------------------------------


def test_input_item_shapes_give_same_text(oa: EmulatorHandle) -> None:
    c = client(oa)
    texts = []
    for input_ in (
        DOC,
        [{"role": "user", "content": DOC}],
        [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": DOC}]}],
        [{"role": "developer", "content": "x"}, {"role": "user", "content": DOC}],
    ):
        resp = c.responses.create(model="m", input=input_)  # type: ignore[arg-type]
        assert "Rhine" in resp.output_text
        texts.append(resp.output_text)
    assert texts[0] == texts[1] == texts[2]
    assert texts[3] != texts[0]  # the system message is part of the prompt
    with_instructions = c.responses.create(model="m", input=DOC, instructions="x")
    assert with_instructions.output_text == texts[3]


# -- auth, health, request ids --------------------------------------------------------------------


def test_auth(start: Callable[..., EmulatorHandle]) -> None:
    for flavor in ("doubleword", "openai"):
        h = start(flavor=flavor, api_key="sekret")
        good = client(h, api_key="sekret")
        bad = client(h, api_key="wrong")
        resp = good.responses.create(model="m", input="x", service_tier="flex", background=True)
        with pytest.raises(openai.AuthenticationError) as post_err:
            bad.responses.create(model="m", input="x")
        assert isinstance(post_err.value.body, dict)
        with pytest.raises(openai.AuthenticationError) as get_err:
            bad.responses.retrieve(resp.id)
        if flavor == "doubleword":
            assert get_err.value.body == "Authentication required"
        else:
            assert isinstance(get_err.value.body, dict)
        status, _, _ = http(h, "GET", f"/v1/responses/{resp.id}")
        assert status == 401
        assert http(h, "GET", "/health")[0] == 200
        assert stats(h)["requests"]["GET /v1/responses/{id}"]["401"] == 2


def test_health_and_request_ids_everywhere(dw: EmulatorHandle) -> None:
    status, headers, body = http(dw, "GET", "/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    ids = set()
    for method, path in (
        ("GET", "/health"),
        ("GET", "/nope"),
        ("GET", "/_emulator/stats"),
        ("GET", "/v1/responses/resp_x"),
        ("POST", "/v1/responses"),
    ):
        _, headers, _ = http(dw, method, path, {} if method == "POST" else None)
        assert headers["x-request-id"].startswith("req_")
        ids.add(headers["x-request-id"])
    assert len(ids) == 5


def test_async_client_background_and_blocking(
    start: Callable[..., EmulatorHandle], check_response: Callable[[Any], dict[str, Any]]
) -> None:
    async def main(h: EmulatorHandle, flavor: str) -> None:
        c = aclient(h)
        resps = await asyncio.gather(
            *(
                c.responses.create(
                    model="m", input=f"{DOC} Item {i}.", service_tier="flex", background=True
                )
                for i in range(20)
            )
        )
        done = []
        for resp in resps:
            while resp.status in ("queued", "in_progress"):
                await asyncio.sleep(0.01)
                resp = await c.responses.retrieve(resp.id)
            done.append(resp)
        assert {r.status for r in done} == {"completed"}
        assert len({r.output_text for r in done}) == 20
        blocking = await c.responses.create(model="m", input=DOC, service_tier="flex")
        assert blocking.status == "completed"
        if flavor == "openai":
            for r in [*done, blocking]:
                check_response(r)
        await c.close()

    for flavor in ("doubleword", "openai"):
        asyncio.run(main(start(flavor=flavor, slots=4), flavor))


# -- blocking hold, retention, reset, idempotency -------------------------------------------------


@pytest.mark.parametrize("flavor", ["openai", "doubleword"])
def test_blocking_hold_times_out_with_504(
    start: Callable[..., EmulatorHandle], flavor: str
) -> None:
    h = start(flavor=flavor, max_hold_s=0.2, latency={"flex": "fixed:10"})
    c = client(h)
    with pytest.raises(openai.InternalServerError) as err:
        c.responses.create(model="m", input="x", service_tier="flex")
    assert err.value.status_code == 504
    assert "Request timed out: " in err.value.message
    assert err.value.type == "server_error"


def test_retention_forgets_finished_responses(start: Callable[..., EmulatorHandle]) -> None:
    h = start(retention_s=0.2)
    c = client(h)
    resp = poll(c, c.responses.create(model="m", input="x", service_tier="flex", background=True))
    assert stats(h)["totals"]["responses_live"] == 1
    time.sleep(0.3)
    c.responses.create(model="m", input="tick")  # any activity runs expiry; so does the timer
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(resp.id)
    assert resp.id not in stats(h)["responses"]
    assert stats(h)["totals"]["creates"] == 2


def test_reset_forgets_everything(dw: EmulatorHandle) -> None:
    c = client(dw)
    resp = c.responses.create(model="m", input="x", service_tier="flex", background=True)
    assert http(dw, "POST", "/_emulator/reset")[0] == 200
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(resp.id)
    assert stats(dw)["totals"]["creates"] == 0


def test_idempotency_key(start: Callable[..., EmulatorHandle]) -> None:
    plain = start()
    c = client(plain, default_headers={"Idempotency-Key": "k1"})
    a = c.responses.create(model="m", input="x", service_tier="flex", background=True)
    b = c.responses.create(model="m", input="x", service_tier="flex", background=True)
    assert a.id != b.id
    replay = start(idempotency_replay=True)
    c2 = client(replay)
    a2 = c2.responses.create(
        model="m", input="x", background=True, extra_headers={"Idempotency-Key": "k1"}
    )
    b2 = c2.responses.create(
        model="m", input="x", background=True, extra_headers={"Idempotency-Key": "k1"}
    )
    c3 = c2.responses.create(
        model="m", input="x", background=True, extra_headers={"Idempotency-Key": "k2"}
    )
    assert a2.id == b2.id != c3.id
    totals = stats(replay)["totals"]
    assert totals["creates"] == 2 and totals["idempotent_replays"] == 1


def test_previous_response_id(oa: EmulatorHandle) -> None:
    c = client(oa)
    first = c.responses.create(model="m", input=DOC)
    follow = c.responses.create(model="m", input="And the Danube?", previous_response_id=first.id)
    assert follow.previous_response_id == first.id
    alone = c.responses.create(model="m", input="And the Danube?")
    assert follow.output_text != alone.output_text
    assert follow.usage is not None and alone.usage is not None
    assert follow.usage.input_tokens > alone.usage.input_tokens
    with pytest.raises(openai.BadRequestError) as err:
        c.responses.create(model="m", input="x", previous_response_id="resp_missing")
    assert err.value.param == "previous_response_id"


def test_openai_clients_schema_check_every_response(oa: EmulatorHandle) -> None:
    import httpx2

    from tests.emulator.helpers import VIOLATIONS

    c = client(oa)
    hooks = c._client.event_hooks["response"]
    assert len(hooks) == 1
    c.responses.create(model="m", input="x")
    assert VIOLATIONS == []
    bad = httpx2.Response(
        200, json={"object": "response"}, request=httpx2.Request("GET", "http://127.0.0.1/")
    )
    hooks[0](bad)
    assert any("'created_at' is a required property" in v for v in VIOLATIONS)
    VIOLATIONS.clear()
