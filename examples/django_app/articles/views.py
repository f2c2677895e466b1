"""JSON endpoints: ``POST /articles/`` creates an article and queues its summary,
``GET /articles/<id>/`` shows it with the summary's status."""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from articles import llm
from articles.forms import ArticleForm
from articles.models import Article


@csrf_exempt  # a JSON API for other services; put your token check here
@require_POST
def create_article(request: HttpRequest) -> JsonResponse:
    try:
        data = json.loads(request.body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return errors({"__all__": [{"message": "expected a JSON object", "code": "invalid"}]})
    form = ArticleForm(data)
    if not form.is_valid():
        return errors(form.errors.get_json_data())
    with transaction.atomic():
        article = form.save()
        llm.summarise_on_commit(article)
    article.refresh_from_db()  # the enqueue after commit stored the job id
    return JsonResponse(as_json(article), status=201)


@require_GET
def show_article(request: HttpRequest, pk: int) -> JsonResponse:
    article = Article.objects.filter(pk=pk).first()
    if article is None:
        return JsonResponse({"error": f"no article {pk}"}, status=404)
    return JsonResponse(as_json(article))


def as_json(article: Article) -> dict[str, Any]:
    return {
        "id": article.pk,
        "title": article.title,
        "summary": article.summary,
        "summary_status": llm.live_summary_status(article),
        "label": article.label,
        "job_id": article.flexpipe_job_id,
        "created_at": article.created_at.isoformat(),
        "updated_at": article.updated_at.isoformat(),
    }


def errors(detail: dict[str, Any]) -> JsonResponse:
    return JsonResponse({"errors": detail}, status=400)
