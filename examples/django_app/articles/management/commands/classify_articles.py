"""``manage.py classify_articles``: label unlabelled articles with one flexpipe bulk job.

Run it from cron or Celery beat; ``--wait`` blocks and prints progress until every item
ended (the labels are written by the newsroom's Celery worker either way).
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from articles import llm
from flexpipe.tasks import api as flexpipe

POLL_INTERVAL = 0.25


class Command(BaseCommand):
    help = "Classify unlabelled articles into sections as one flexpipe bulk job."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--limit", type=int, default=1000, help="at most this many")
        parser.add_argument("--wait", action="store_true", help="block until it finished")
        parser.add_argument("--timeout", type=float, default=3600.0, help="for --wait, seconds")

    def handle(self, *args: Any, limit: int, wait: bool, timeout: float, **options: Any) -> None:
        bulk_id, count = llm.classify_unlabelled(limit)
        if bulk_id is None:
            self.stdout.write("no unlabelled articles")
            return
        self.stdout.write(f"bulk {bulk_id}: {count} articles")
        if wait:
            self.wait(bulk_id, timeout)

    def wait(self, bulk_id: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        shown = ""
        while True:
            bulk = flexpipe.get_bulk(bulk_id)
            line = f"{bulk.done}/{bulk.total} done: {bulk.completed} completed, "
            line += f"{bulk.done - bulk.completed} failed, {bulk.in_flight} in flight"
            if line != shown:
                self.stdout.write(line)
                shown = line
            if bulk.finished:
                return
            if time.monotonic() > end:
                raise CommandError(f"bulk {bulk_id} not finished after {timeout:g}s")
            time.sleep(POLL_INTERVAL)
