"""``manage.py classify_articles``: one bulk job with a JSON schema, labels written back
by the per-item callbacks, the run recorded by the completion callback (exactly once)."""

from __future__ import annotations

import io
from collections import Counter

from django.core.management import call_command
from harness import Newsroom

from articles.models import Article, CallbackReceipt, ClassificationRun, Section
from flexpipe.tasks import api as flexpipe

STORIES = [
    "The council voted to raise parking fees in the city centre from April.",
    "Researchers measured the melting rate of a glacier with new satellite radar.",
    "The home side won the cup final after extra time in front of a full stadium.",
    "Shares in the shipping group fell after it cut its profit forecast.",
]
N = 12


def test_classify_articles_labels_every_unlabelled_article(newsroom: Newsroom) -> None:
    for i in range(N):
        Article.objects.create(title=f"Story {i}", body=f"{STORIES[i % 4]} (story {i})")
    filed = Article.objects.create(title="Filed", body=STORIES[2], label=Section.SPORT)

    out = io.StringIO()
    call_command("classify_articles", "--wait", "--timeout", "60", stdout=out)
    run = ClassificationRun.objects.get()
    assert f"bulk {run.bulk_id}: {N} articles" in out.getvalue()
    assert f"{N}/{N} done: {N} completed, 0 failed" in out.getvalue()

    newsroom.wait_until(lambda: not Article.objects.filter(label="").exists(), "all labelled")
    newsroom.wait_until(
        lambda: ClassificationRun.objects.get().finished_at is not None, "run recorded"
    )
    run = ClassificationRun.objects.get()
    assert (run.total, run.completed, run.failed) == (N, N, 0)
    assert set(Article.objects.values_list("label", flat=True)) <= set(Section.values)
    assert Article.objects.get(pk=filed.pk).label == Section.SPORT

    newsroom.settle()
    receipts = list(CallbackReceipt.objects.values_list("task", "flexpipe_id"))
    assert Counter(task for task, _ in receipts) == {"label_ready": N, "classification_done": 1}
    assert ("classification_done", run.bulk_id) in receipts
    job_ids = {ref for task, ref in receipts if task == "label_ready"}
    assert len(job_ids) == N
    for job_id in job_ids:
        view = flexpipe.get(job_id)
        assert view.job.bulk_id == run.bulk_id
        article = Article.objects.get(pk=int(view.job.request.metadata["article"]))
        assert view.parsed == {"label": article.label}

    again = io.StringIO()
    call_command("classify_articles", stdout=again)
    assert again.getvalue().strip() == "no unlabelled articles"
