"""Validation of create requests, answering 400 with the error envelope naming the ``param``.

Rules follow API-NOTES §7: ``model`` a string, ``input`` a string or an array of items,
``metadata`` within 16 keys x 64 chars / 512-char string values, ``service_tier`` per
flavour, ``background`` with ``store=false``, ``background_options.completion_window``, and
``text.format`` (``json_schema`` needs a valid ``name`` and an object ``schema``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flexpipe.emulator.config import EmulatorConfig

#: Tiers the OpenAI API accepts.
OPENAI_TIERS = frozenset({"auto", "default", "flex", "priority", "scale", "fast", "ultrafast"})
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class InvalidRequest(Exception):
    """Raised when a request body is invalid; carries the 400 envelope's fields."""

    def __init__(
        self, message: str, param: str | None = None, status: int = 400, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


def resolve_tier(config: EmulatorConfig, requested: Any) -> tuple[str, str]:
    """``(lane, echoed tier)`` for a requested ``service_tier`` (validated already)."""
    if requested == "flex":
        return "flex", "flex"
    if config.flavor == "doubleword":
        if requested == "background":
            return "background", "background"
        return "realtime", "priority"
    if requested in ("priority", "fast", "ultrafast"):
        return "realtime", "priority"
    if requested == "scale":
        return "realtime", "scale"
    return "realtime", "default"


def _check_model(config: EmulatorConfig, body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "Missing required parameter: 'model'.", "model", code="missing_required_parameter"
        )
    if config.strict_models and model not in config.models:
        raise InvalidRequest(
            f"The requested model '{model}' does not exist.", "model", code="model_not_found"
        )
    return model


def _check_metadata(body: Mapping[str, Any]) -> None:
    meta = body.get("metadata")
    if meta is None:
        return
    if not isinstance(meta, Mapping):
        raise InvalidRequest("Invalid type for 'metadata': expected an object.", "metadata")
    if len(meta) > 16:
        raise InvalidRequest(
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(meta)} properties instead.",
            "metadata",
        )
    for key, value in meta.items():
        if len(key) > 64:
            raise InvalidRequest(
                f"Invalid 'metadata': key '{key[:20]}...' is longer than 64 characters.", "metadata"
            )
        if not isinstance(value, str):
            raise InvalidRequest(
                f"Invalid type for 'metadata.{key}': expected a string.", f"metadata.{key}"
            )
        if len(value) > 512:
            raise InvalidRequest(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length 512, but got a string with length {len(value)} instead.",
                f"metadata.{key}",
            )


def _check_input(body: Mapping[str, Any]) -> None:
    value = body.get("input")
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise InvalidRequest(
            "Invalid 'input': expected a string or an array of input items.", "input"
        )
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise InvalidRequest(f"Invalid 'input[{i}]': expected an object.", f"input[{i}]")
        content = item.get("content")
        if ("role" in item or item.get("type") == "message") and not isinstance(
            content, str | list
        ):
            raise InvalidRequest(
                f"Invalid 'input[{i}].content': expected a string or an array.",
                f"input[{i}].content",
            )


def check_text_format(fmt: Any, param: str = "text.format") -> None:
    """Validate a Responses ``text.format`` object."""
    if fmt is None:
        return
    if not isinstance(fmt, Mapping):
        raise InvalidRequest(f"Invalid type for '{param}': expected an object.", param)
    kind = fmt.get("type")
    if kind not in ("text", "json_schema", "json_object"):
        raise InvalidRequest(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_schema' and "
            "'json_object'.",
            f"{param}.type",
        )
    if kind == "json_schema":
        name = fmt.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequest(
                f"Invalid '{param}.name': must be 1-64 characters of a-z, A-Z, 0-9, _ and -.",
                f"{param}.name",
            )
        if not isinstance(fmt.get("schema"), Mapping):
            raise InvalidRequest(
                f"Missing required parameter: '{param}.schema'.", f"{param}.schema"
            )


def _check_tier(config: EmulatorConfig, body: Mapping[str, Any]) -> None:
    tier = body.get("service_tier")
    if tier is None:
        return
    allowed = OPENAI_TIERS | ({"background"} if config.flavor == "doubleword" else set())
    if config.flavor == "openai" and tier not in allowed:
        raise InvalidRequest(
            f"Invalid value: '{tier}'. Supported values are: 'auto', 'default', 'flex', "
            "'scale', 'priority', 'fast' and 'ultrafast'.",
            "service_tier",
        )
    dw = config.flavor == "doubleword"
    if tier == "background" and dw and body.get("background") is not True:
        raise InvalidRequest(
            'service_tier: "background" requires background: true (submit-and-poll).',
            "service_tier",
        )


def _check_background(config: EmulatorConfig, body: Mapping[str, Any]) -> None:
    background = body.get("background") is True
    if background and config.store_required_for_background and body.get("store") is False:
        raise InvalidRequest("background can only be used when `store` is true", "background")
    options = body.get("background_options")
    if options is None:
        return
    if not isinstance(options, Mapping):
        raise InvalidRequest("Invalid type for 'background_options'.", "background_options")
    window = options.get("completion_window")
    if window is not None and window not in ("soonest", "2h", "8h"):
        raise InvalidRequest(
            f"Invalid value: '{window}'. Supported values are: 'soonest', '2h' and '8h'.",
            "background_options.completion_window",
        )
    if window in ("2h", "8h") and (not background or body.get("stream")):
        raise InvalidRequest(
            "The 2h and 8h completion windows require background: true and stream: false.",
            "background_options.completion_window",
        )


def _check_max_tokens(config: EmulatorConfig, body: Mapping[str, Any]) -> None:
    value = body.get("max_output_tokens")
    if value is None:
        return
    minimum = 16 if config.flavor == "openai" else 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(
            "Invalid type for 'max_output_tokens': expected an integer.", "max_output_tokens"
        )
    if value < minimum:
        raise InvalidRequest(
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
            f"{minimum}, but got {value} instead.",
            "max_output_tokens",
            code="integer_below_min_value",
        )


def validate_create(config: EmulatorConfig, body: Any) -> str:
    """Validate a ``POST /v1/responses`` body; return the model or raise ``InvalidRequest``."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("The request body must be a JSON object.")
    model = _check_model(config, body)
    _check_input(body)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str | list):
        raise InvalidRequest("Invalid type for 'instructions': expected a string.", "instructions")
    _check_metadata(body)
    _check_tier(config, body)
    _check_background(config, body)
    _check_max_tokens(config, body)
    text = body.get("text")
    if text is not None:
        if not isinstance(text, Mapping):
            raise InvalidRequest("Invalid type for 'text': expected an object.", "text")
        check_text_format(text.get("format"))
    return model


def validate_chat(config: EmulatorConfig, body: Any) -> str:
    """Validate a ``POST /v1/chat/completions`` body; return the model."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("The request body must be a JSON object.")
    model = _check_model(config, body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "Missing required parameter: 'messages'.", "messages", code="missing_required_parameter"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m:
            raise InvalidRequest(
                f"Invalid 'messages[{i}]': expected an object with a role.", f"messages[{i}]"
            )
    _check_metadata(body)
    tier = body.get("service_tier")
    if config.flavor == "openai" and tier is not None and tier not in OPENAI_TIERS:
        raise InvalidRequest(f"Invalid value: '{tier}'.", "service_tier")
    return model
