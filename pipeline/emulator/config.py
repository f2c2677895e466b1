"""Every knob of the emulator in one dataclass, :class:`EmulatorConfig`.

Time units: latencies, ``queue_delay``, ``max_hold_s``, ``flex_deadline_s`` and the ``batch_*``
durations are *emulated* seconds and are multiplied by ``time_scale`` (0.001 turns an hour
into 3.6 s). ``webhook_retry_delay_s`` and ``webhook_retry_max_delay_s`` are emulated seconds
too. ``retention_s``, ``webhook_timeout_s`` and the fault knobs (``retry_after_*``,
``read_lag_ms``, ``slow_ms``, ``webhook_delay_ms``) are real wall-clock values and are never
scaled: they are what a client actually sees or waits.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from flexpipe.emulator.latency import LatencyModel

Flavor = Literal["doubleword", "openai"]
FLAVORS: tuple[str, ...] = ("doubleword", "openai")

#: Lanes a response can travel: ``flex`` and ``background`` wait for a slot, ``realtime`` does not.
LANES: tuple[str, ...] = ("flex", "background", "realtime")

DEFAULT_MODELS: tuple[str, ...] = (
    "Qwen/Qwen3-30B-A3B-Instruct-2507",
    "Qwen/Qwen3-235B-A22B-Instruct-2507",
)


def _default_latency() -> dict[str, LatencyModel]:
    return {
        "flex": LatencyModel.parse("lognormal:60,0.6"),
        "background": LatencyModel.parse("lognormal:120,0.6"),
        "realtime": LatencyModel.parse("fixed:0.5"),
    }


def _default_queue_delay() -> dict[str, LatencyModel]:
    return {
        "flex": LatencyModel.parse("fixed:1"),
        "background": LatencyModel.parse("fixed:1"),
        "realtime": LatencyModel.parse("fixed:0"),
    }


@dataclass
class EmulatorConfig:
    """Configuration of one emulator instance (all fields have working defaults)."""

    #: ``doubleword`` (default) or ``openai``: which service's wire behaviour to copy.
    flavor: Flavor = "doubleword"
    #: Model ids listed by ``GET /v1/models``.
    models: tuple[str, ...] = DEFAULT_MODELS
    #: Reject (400/404) models that are not in ``models``; by default any model is accepted.
    strict_models: bool = False
    #: When set, requests must carry ``Authorization: Bearer <api_key>`` (else 401); the admin
    #: routes (``/_emulator/*``) need it too unless ``admin_key`` is set.
    api_key: str | None = None
    #: When set, the admin routes need ``Authorization: Bearer <admin_key>`` (the API key alone
    #: is refused there). With neither key set, the admin routes are open.
    admin_key: str | None = None
    #: Largest request body accepted; a bigger one is answered 413 in the error envelope.
    max_body_bytes: int = 64 * 1024 * 1024
    #: Processing slots shared by the queued lanes (flex first, then background); 0 = unlimited.
    slots: int = 64
    #: Seed for latencies, outputs and faults.
    seed: int = 0
    #: Multiplier applied to every emulated duration.
    time_scale: float = 1.0
    #: Processing time per lane (``flex``, ``background``, ``realtime``), unscaled seconds;
    #: strings such as ``"fixed:2"`` are parsed, and missing lanes keep their defaults.
    latency: dict[str, LatencyModel] = field(default_factory=_default_latency)
    #: Minimum time in ``queued`` before a slot may be taken, per lane, unscaled seconds.
    queue_delay: dict[str, LatencyModel] = field(default_factory=_default_queue_delay)
    #: How long a blocking request (``background=false``) is held before 504; emulated seconds.
    max_hold_s: float = 3600.0
    #: A flex/background response still queued this long after creation fails when it
    #: reaches the head of the queue (``None``: no deadline); emulated seconds.
    flex_deadline_s: float | None = None
    #: Terminal responses are forgotten (404) this many real seconds after they finish.
    retention_s: float = 3600.0
    #: At most this many finished (or deleted) responses are kept; beyond it the oldest
    #: finished ones are forgotten first (0 = no limit besides ``retention_s``).
    max_retained: int = 100_000
    #: ``background=true`` with ``store=false`` answers 400.
    store_required_for_background: bool = True
    #: openai flavour: cancel of a completed/failed/incomplete response answers 400 (vLLM style)
    #: instead of returning the final object.
    cancel_terminal_400: bool = False
    #: A repeated ``Idempotency-Key`` on create returns the first response instead of a new one.
    idempotency_replay: bool = False
    #: Forward processing to this OpenAI-compatible base URL (``.../v1``) via chat completions.
    upstream_url: str | None = None
    #: Bearer key sent to the upstream.
    upstream_api_key: str | None = None
    #: Model name sent upstream instead of the request's model (``None``: pass it through).
    upstream_model: str | None = None
    #: Timeout of one upstream call, real seconds.
    upstream_timeout_s: float = 600.0
    #: Batch tier: how long a batch's lines take once it is ``in_progress`` (they finish
    #: evenly spread over it, in input order), unscaled seconds.
    batch_latency: LatencyModel = field(default_factory=lambda: LatencyModel.parse("fixed:300"))
    #: Batch tier: time in ``validating``, and in ``finalizing``/``cancelling``; emulated seconds.
    batch_validate_s: float = 2.0
    batch_finalize_s: float = 1.0
    #: Batch tier: most lines in one input file (more fails the batch's validation).
    batch_max_lines: int = 50_000
    #: Largest accepted ``POST /v1/files`` upload, bytes (bigger answers 413).
    max_file_bytes: int = 200 * 1024 * 1024
    #: Fault knobs (see :mod:`flexpipe.emulator.faults`), e.g. ``{"create_429_rate": 0.1}``.
    faults: Mapping[str, Any] = field(default_factory=dict)
    #: Receivers of signed webhook events (openai flavour: ``response.*`` of background
    #: responses); change them at run time with ``POST /_emulator/webhooks``.
    webhook_urls: tuple[str, ...] = ()
    #: Standard Webhooks secret, ``whsec_<base64>`` (the part after ``whsec_`` is the HMAC
    #: key); required when ``webhook_urls`` is set.
    webhook_secret: str | None = None
    #: Delivery attempts per event and URL (the first one included) before giving up.
    webhook_max_attempts: int = 6
    #: Delay before the first retry, doubled each time up to ``webhook_retry_max_delay_s``;
    #: emulated seconds.
    webhook_retry_delay_s: float = 5.0
    webhook_retry_max_delay_s: float = 300.0
    #: Timeout of one delivery attempt, real seconds.
    webhook_timeout_s: float = 10.0
    #: Python logging level name for the ``flexpipe.emulator`` logger.
    log_level: str = "WARNING"
    #: Log every request (aiohttp access log); off by default because it costs throughput.
    access_log: bool = False

    def __post_init__(self) -> None:
        if self.flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {FLAVORS}, not {self.flavor!r}")
        if self.slots < 0:
            raise ValueError("slots must be >= 0 (0 = unlimited)")
        if self.time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        for name in ("latency", "queue_delay"):
            table: dict[str, LatencyModel] = getattr(self, name)
            defaults = _default_latency() if name == "latency" else _default_queue_delay()
            merged = {**defaults, **{k: _model(v) for k, v in table.items()}}
            unknown = set(merged) - set(LANES)
            if unknown:
                raise ValueError(f"{name}: unknown lane(s) {sorted(unknown)}; use {LANES}")
            setattr(self, name, merged)
        self.batch_latency = _model(self.batch_latency)
        if self.upstream_url:
            self.upstream_url = self.upstream_url.rstrip("/")
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be >= 1")
        if self.max_retained < 0:
            raise ValueError("max_retained must be >= 0 (0 = no limit)")
        if self.webhook_max_attempts < 1:
            raise ValueError("webhook_max_attempts must be >= 1")
        if min(self.webhook_retry_delay_s, self.webhook_retry_max_delay_s) < 0:
            raise ValueError("webhook retry delays must be >= 0")
        self.webhook_urls = tuple(self.webhook_urls)
        if self.webhook_urls and not self.webhook_secret:
            raise ValueError("webhook_urls need a webhook_secret (whsec_...)")
        if self.webhook_secret:
            secret_key(self.webhook_secret)

    def scaled(self, seconds: float) -> float:
        """Emulated seconds → real seconds."""
        return seconds * self.time_scale


def _model(value: LatencyModel | str) -> LatencyModel:
    return value if isinstance(value, LatencyModel) else LatencyModel.parse(value)


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: base64-decoded after ``whsec_``, else the raw text."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("webhook secret: the part after 'whsec_' must be base64") from exc
    return secret.encode()
