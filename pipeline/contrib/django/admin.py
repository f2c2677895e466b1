"""Read-only admin pages of flexpipe's jobs, results and bulk jobs, with retry and cancel
actions that go through flexpipe's API (never a write through the models)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from flexpipe.contrib.django import settings
from flexpipe.contrib.django.models import Bulk, Job, Result


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable, never added, changed or deleted here; read from flexpipe's database."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).using(settings.alias())

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "status",
        "model",
        "requested_tier",
        "served_tier",
        "created_at",
        "finished_at",
        "poll_count",
        "error_code",
    )
    list_filter = ("status", "model", "requested_tier", "result__served_tier", "bulk")
    search_fields = ("=id", "id", "=idempotency_key", "request__metadata")
    list_select_related = ("result",)
    date_hierarchy = "created_at"
    actions = ("retry_jobs", "cancel_jobs")

    @admin.display(description="served tier")
    def served_tier(self, job: Job) -> str | None:
        try:
            return job.result.served_tier
        except Result.DoesNotExist:
            return None

    @admin.action(description="Retry selected jobs (failed, expired, cancelled, incomplete)")
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        import flexpipe

        self._each(request, queryset, flexpipe.retry, "retried")

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        import flexpipe

        self._each(request, queryset, flexpipe.cancel, "cancelled")

    def _each(self, request: HttpRequest, queryset: QuerySet[Job], call: Any, done: str) -> None:
        from flexpipe.errors import FlexpipeError

        ok, refused = 0, []
        for job_id in queryset.values_list("id", flat=True):
            try:
                call(job_id)
                ok += 1
            except FlexpipeError as exc:
                refused.append(f"{job_id}: {exc}")
        if ok:
            self.message_user(request, f"{ok} job(s) {done}.", messages.SUCCESS)
        for line in refused:
            self.message_user(request, line, messages.WARNING)


@admin.register(Result)
class ResultAdmin(ReadOnlyAdmin):
    list_display = ("job", "status", "served_tier", "total_tokens", "stored_at", "short_output")
    list_filter = ("status", "served_tier")
    search_fields = ("=job__id", "output")

    @admin.display(description="output")
    def short_output(self, result: Result) -> str:
        text = result.output_text or ""
        return text if len(text) <= 80 else text[:79] + "…"


@admin.register(Bulk)
class BulkAdmin(ReadOnlyAdmin):
    list_display = ("id", "name", "progress", "completed", "failed", "created_at", "finished_at")
    search_fields = ("=id", "name")
