"""The summaries blueprint: ``POST /summaries`` enqueues a flexpipe job, ``GET
/summaries/<id>`` reads it back. Validation is flexpipe's; errors are JSON."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request, url_for
from flask.typing import ResponseReturnValue

import flexpipe
from flexpipe.errors import JobNotFound, ValidationError

bp = Blueprint("summaries", __name__, url_prefix="/summaries")

#: flexpipe's argument names, as the client of this API spells them.
FIELDS = {"input": "text", "idempotency_key": "Idempotency-Key"}


@bp.post("")
def create_summary() -> ResponseReturnValue:
    """Enqueue a summary of ``text``; answer 202 with the job id and where to poll."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    text = body.get("text")
    if not isinstance(text, str):
        raise ValidationError("text", "is required and must be a string")
    instructions = body.get("instructions", current_app.config["SUMMARY_INSTRUCTIONS"])
    if instructions is not None and not isinstance(instructions, str):
        # flexpipe checks this too, but after len(instructions): a TypeError, not a 400.
        raise ValidationError("instructions", "must be a string")
    job_id = flexpipe.enqueue(
        text,
        instructions=instructions,
        idempotency_key=request.headers.get("Idempotency-Key"),
        callback=current_app.config["SUMMARY_CALLBACK"],
    )
    status_url = url_for(".get_summary", job_id=job_id)
    return {"id": job_id, "status_url": status_url}, 202, {"Location": status_url}


@bp.get("/<job_id>")
def get_summary(job_id: str) -> ResponseReturnValue:
    """The job's status and, once it finished, its summary, token counts or error."""
    view = flexpipe.get(job_id)
    tokens: dict[str, int] | None = None
    if view.result is not None:
        usage = view.result.usage
        tokens = {
            "input": usage.input_tokens,
            "output": usage.output_tokens,
            "total": usage.total_tokens,
        }
    return {
        "id": view.id,
        "status": view.status.value,
        "summary": view.output_text,
        "tokens": tokens,
        "error": view.error,
    }


@bp.errorhandler(ValidationError)
def invalid_request(exc: ValidationError) -> tuple[dict[str, Any], int]:
    field = FIELDS.get(exc.field, exc.field)
    return {"error": "invalid_request", "field": field, "message": exc.reason}, 400


@bp.errorhandler(JobNotFound)
def job_not_found(exc: JobNotFound) -> tuple[dict[str, Any], int]:
    return {"error": "not_found", "message": exc.message}, 404
