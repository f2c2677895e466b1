"""flexpipe's admin pages in the newsroom, through Django's test client, on jobs that the
newsroom's worker really ran: the changelists with their filters and search, the result
and bulk pages, and the cancel and retry actions (which go through flexpipe's API)."""

from __future__ import annotations

import uuid

from django.test import Client
from harness import Newsroom

from flexpipe.tasks import api as flexpipe
from flexpipe.tasks.runtime import runtime

JOBS = "/admin/flexpipe/job/"
STORY = "The Harbour Board approved a new ferry timetable for the evening sailings."


def page(client: Client, url: str, **params: str) -> str:
    response = client.get(url, params)
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def test_admin_lists_filters_searches_and_acts_on_real_jobs(
    newsroom: Newsroom, admin_client: Client
) -> None:
    key = f"story-{uuid.uuid4().hex[:8]}"
    single = flexpipe.enqueue(STORY, idempotency_key=key, metadata={"desk": "harbour-desk"})
    bulk_id = flexpipe.enqueue_many([f"{STORY} ({n})" for n in range(3)], name="evening")
    in_bulk = runtime().store.bulk_job_ids(bulk_id)
    newsroom.stack.wait_terminal([single, *in_bulk])

    everything = page(admin_client, JOBS)
    assert single in everything and all(job_id in everything for job_id in in_bulk)
    for name in ("status", "model", "requested_tier", "result__served_tier", "bulk"):
        assert f'href="?{name}' in everything, f"filter {name} offered"

    completed = page(admin_client, JOBS, status="completed")
    assert single in completed
    of_bulk = page(admin_client, JOBS, bulk__id__exact=bulk_id)
    assert single not in of_bulk and all(job_id in of_bulk for job_id in in_bulk)
    assert single in page(admin_client, JOBS, requested_tier="flex")
    assert single in page(admin_client, JOBS, model=flexpipe.get(single).job.request.model)
    assert single in page(admin_client, JOBS, bulk__isnull="True")
    assert single in page(admin_client, JOBS, result__served_tier="flex")
    assert single not in page(admin_client, JOBS, status="failed")

    for query in (key, "harbour-desk", single):
        found = page(admin_client, JOBS, q=query)
        assert single in found and in_bulk[0] not in found, query

    assert "flex" in page(admin_client, f"{JOBS}{single}/change/")
    results = page(admin_client, "/admin/flexpipe/result/")
    assert flexpipe.get(single).output_text[:40] in results
    bulks = page(admin_client, "/admin/flexpipe/bulk/")
    assert bulk_id in bulks and "3/3 (100%)" in bulks

    # A stored job not yet sent (the sweeper would send it 10 s later): cancel, then retry.
    parked, _ = runtime().store.add_job(flexpipe.prepare(STORY))
    response = admin_client.post(
        JOBS, {"action": "cancel_jobs", "_selected_action": [parked]}, follow=True
    )
    assert "1 job(s) cancelled." in response.content.decode()
    assert flexpipe.get(parked).status.value == "cancelled"

    response = admin_client.post(
        JOBS, {"action": "retry_jobs", "_selected_action": [parked, single]}, follow=True
    )
    shown = " | ".join(str(m) for m in response.context["messages"])
    assert "1 job(s) retried." in shown
    assert f"{single}: " in shown and "can be retried" in shown  # a completed job is refused
    newsroom.stack.wait_terminal([parked])
    assert flexpipe.get(parked).status.value == "completed"

    # Read-only: nothing to add, change or delete.
    assert admin_client.get(f"{JOBS}add/").status_code == 403
    assert admin_client.post(f"{JOBS}{single}/delete/").status_code == 403
