"""Callbacks lost with Redis's data are sent again, as the same messages (issue 15 §4).

300 jobs finish while no worker consumes their callback queue, so 300 callbacks wait in
Redis; Redis is then restarted with nothing on disk, and they are gone. A worker that
runs callbacks (and so records their receipts, ``flexpipe.tasks.delivery``) starts; the
sweeper finds 300 callbacks sent but never received, and sends each again with its
task id. Before receipts, flexpipe counted a callback as delivered once published, and
these 300 never ran.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from flexpipe.flow import callback_id
from flexpipe.schema import jobs
from tests.faults.conftest import JOBS, assert_nothing_lost_nothing_twice, enqueue_jobs, wait_until
from tests.integration import callbacks

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

#: Callbacks unreceived this long are sent again. Long enough that 300 callbacks sent at
#: once run before the next round (a second round would only deliver them twice, with
#: the same id), short enough for the test.
RECEIPT_TIMEOUT = "8"


def test_callbacks_lost_with_redis_are_sent_again_with_the_same_ids(scenario) -> None:
    queue = f"callbacks-{uuid.uuid4().hex[:8]}"
    sc = scenario(
        redis=True,
        env={
            "FLEXPIPE_CALLBACK_QUEUE": queue,
            "FLEXPIPE_CALLBACK_RECEIPT_TIMEOUT": RECEIPT_TIMEOUT,
            # The first worker imports no callback module, so it does not consume `queue`.
            "FLEXPIPE_IMPORTS": "",
        },
    )
    stack = sc.stack
    ids = enqueue_jobs()
    stack.wait_terminal(ids, timeout=120)

    def published() -> int:
        with stack.store.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(jobs)
                    .where(jobs.c.id.in_(ids), jobs.c.callback_sent_at.is_not(None))
                ).scalar_one()
            )

    wait_until(lambda: published() == JOBS, 60, "callbacks published", stack)
    assert sc.redis.count("llen", queue) == JOBS  # all waiting, none received
    assert not callbacks.counts(stack.store.engine)

    sc.redis.restart()  # no persistence: it comes back empty
    assert sc.redis.count("llen", queue) == 0

    stack.stop_worker()
    stack.env["FLEXPIPE_IMPORTS"] = "tests.integration.callbacks"  # now it consumes `queue`
    stack.activate()  # the worker's queues come from this process's settings
    stack.start_worker()
    # At least once each (one more round may deliver some twice), always as the message
    # flexpipe sent first: one distinct task id per job, the job's callback id.
    assert_nothing_lost_nothing_twice(sc, ids, redelivery=True)
    with stack.store.engine.connect() as conn:
        task_ids = dict(
            conn.execute(sa.select(callbacks.calls.c.job_id, callbacks.calls.c.task_id)).all()
        )
        unreceived = conn.execute(
            sa.select(sa.func.count())
            .select_from(jobs)
            .where(jobs.c.id.in_(ids), jobs.c.callback_received_at.is_(None))
        ).scalar_one()
    assert task_ids == {job_id: callback_id(job_id, 1) for job_id in ids}
    assert unreceived == 0
