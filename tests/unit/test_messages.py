"""Task messages name what their ids mean (``argsrepr``), never the prompt; the sweep
sends no task events."""

from __future__ import annotations

from typing import Any

import pytest

from flexpipe.tasks import messages
from flexpipe.tasks.steps import poll

JOB = "5f0c" + "0" * 28


@pytest.mark.parametrize(
    ("task", "args", "text"),
    [
        ("flexpipe.submit", (JOB, 0), f"job {JOB} submit"),
        ("flexpipe.submit", (JOB, 2), f"job {JOB} submit after 2 failures"),
        ("flexpipe.poll", (JOB, 3, 0), f"job {JOB} poll 3"),
        ("flexpipe.poll", (JOB, 3, 1), f"job {JOB} poll 3 after 1 failures"),
        ("flexpipe.store", (JOB,), f"job {JOB} store"),
        ("flexpipe.cancel", (JOB,), f"job {JOB} cancel"),
        ("flexpipe.poll_many", ([[JOB, 1], ["b" * 32, 2]],), f"2 polls: job {JOB} poll 1, "
                                                            f"job {'b' * 32} poll 2"),
        ("flexpipe.submit_many", ([JOB, "a", "b", "c", "d"],), f"5 submits: job {JOB}, job a, "
                                                               "job b and 2 more"),
        ("flexpipe.sweep", (), None),
        ("myapp.callback", (JOB,), None),
        ("flexpipe.poll", (3,), None),  # another shape: Celery's own repr stays
    ],
)
def test_describe(task: str, args: tuple[Any, ...], text: str | None) -> None:
    assert messages.describe(task, args) == text


def test_the_signal_rewrites_the_headers_of_flexpipe_messages_only() -> None:
    headers: dict[str, Any] = {"argsrepr": f"('{JOB}', 3, 0)"}
    messages._name_the_ids(sender="flexpipe.poll", headers=headers, body=((JOB, 3, 0), {}, {}))
    assert headers["argsrepr"] == f"job {JOB} poll 3"
    other: dict[str, Any] = {"argsrepr": "('x',)"}
    messages._name_the_ids(sender="myapp.done", headers=other, body=(("x",), {}, {}))
    assert other == {"argsrepr": "('x',)"}


def test_the_enqueue_task_shows_argument_names_not_the_prompt() -> None:
    headers: dict[str, Any] = {"kwargsrepr": "{'input': 'secret prompt'}"}
    body = ((), {"input": "secret prompt", "model": "m"}, {})
    messages._name_the_ids(sender="flexpipe.enqueue", headers=headers, body=body)
    assert headers["kwargsrepr"] == "request with input, model"
    assert "secret" not in repr(headers)


def test_a_published_message_carries_the_argsrepr() -> None:
    """Through Celery's own publishing path, as far as the message (no broker)."""
    seen: dict[str, Any] = {}

    def capture(sender: Any = None, headers: Any = None, **_: Any) -> None:
        seen.update(headers)

    from celery import signals

    signals.before_task_publish.connect(capture, weak=False)
    try:
        with poll.app.producer_or_acquire() as producer:
            producer.publish = lambda *args, **kwargs: None  # type: ignore[method-assign]
            poll.apply_async((JOB, 4, 0), producer=producer)
    finally:
        signals.before_task_publish.disconnect(capture)
    assert seen["argsrepr"] == f"job {JOB} poll 4"


def test_the_sweep_sends_no_task_events() -> None:
    from flexpipe.tasks.steps import submit
    from flexpipe.tasks.sweeper import sweep

    assert sweep.send_events is False and submit.send_events is True
