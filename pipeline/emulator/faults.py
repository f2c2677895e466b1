"""Fault injection: deterministic, seedable misbehaviour of the emulated service.

Each knob is a rate in ``[0, 1]`` or a rule. Rates are decided by hashing
``(seed, fault name, n)`` where ``n`` counts the decisions taken for that fault, so a given
seed and request sequence always misbehaves the same way. Knobs are set at start
(``EmulatorConfig.faults``) and merged at runtime by ``POST /_emulator/faults``.

=================================  ==========================================================
``create_429_rate``                create answers 429 "Resource Unavailable" with Retry-After
``create_429_no_retry_after_rate`` create answers 429 (Doubleword unverified cap), no Retry-After
``get_429_rate``                   GET answers 429 rate limit with Retry-After
``create_5xx_rate``                create answers one of ``error_statuses`` (with Retry-After)
``get_5xx_rate``                   GET answers one of ``error_statuses`` (with Retry-After)
``error_statuses``                 statuses for the 5xx knobs (default ``[500, 502, 503]``)
``retry_after_s``                  ``retry-after`` header value in seconds (``null``: none)
``retry_after_ms``                 ``retry-after-ms`` header value (``null``: none)
``should_retry``                   ``x-should-retry: true|false`` on injected errors (``null``)
``fail_rate``                      a job ends ``failed`` with a server error
``read_lag_ms``                    GET answers 404 for this long after create
``read_once``                      after the first terminal GET, GETs answer 410 (ZDR)
``drop_rate``                      create/GET closes the connection without an answer
``slow_ms``                        every /v1 answer is delayed this long
``webhook_drop_rate``              a webhook event is never sent
``webhook_duplicate_rate``         a webhook event is sent twice (same ``webhook-id``)
``webhook_delay_rate``             a webhook event is sent ``webhook_delay_ms`` late
``webhook_reorder_rate``           a webhook event is held back and sent after the next one
                                   (or after ``webhook_delay_ms`` if none comes)
``webhook_bad_signature_rate``     a webhook event is signed with the wrong key
``webhook_delay_ms``               delay of the two knobs above (default 1000)
``upload_429_rate``                ``POST /v1/files`` answers 429 with Retry-After
``upload_5xx_rate``                ``POST /v1/files`` answers one of ``error_statuses``
``batch_fail_rate``                a batch fails validation (``failed``, keyed by batch index)
``batch_expire_rate``              a batch ``expired`` with half its lines done (partial results)
``batch_line_fail_rate``           a batch line fails with a 500 into the error file
=================================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from flexpipe.emulator.text import digest

_RATES = (
    "create_429_rate",
    "create_429_no_retry_after_rate",
    "get_429_rate",
    "create_5xx_rate",
    "get_5xx_rate",
    "fail_rate",
    "drop_rate",
    "webhook_drop_rate",
    "webhook_duplicate_rate",
    "webhook_delay_rate",
    "webhook_reorder_rate",
    "webhook_bad_signature_rate",
    "upload_429_rate",
    "upload_5xx_rate",
    "batch_fail_rate",
    "batch_expire_rate",
    "batch_line_fail_rate",
)


@dataclass
class FaultConfig:
    """The current fault knobs (all off by default)."""

    create_429_rate: float = 0.0
    create_429_no_retry_after_rate: float = 0.0
    get_429_rate: float = 0.0
    create_5xx_rate: float = 0.0
    get_5xx_rate: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: [500, 502, 503])
    retry_after_s: float | None = 1.0
    retry_after_ms: float | None = None
    should_retry: bool | None = None
    fail_rate: float = 0.0
    read_lag_ms: float = 0.0
    read_once: bool = False
    drop_rate: float = 0.0
    slow_ms: float = 0.0
    webhook_drop_rate: float = 0.0
    webhook_duplicate_rate: float = 0.0
    webhook_delay_rate: float = 0.0
    webhook_reorder_rate: float = 0.0
    webhook_bad_signature_rate: float = 0.0
    webhook_delay_ms: float = 1000.0
    upload_429_rate: float = 0.0
    upload_5xx_rate: float = 0.0
    batch_fail_rate: float = 0.0
    batch_expire_rate: float = 0.0
    batch_line_fail_rate: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def merged(self, changes: Mapping[str, Any]) -> FaultConfig:
        """A copy with ``changes`` applied; raises ``ValueError`` naming a bad knob."""
        known = {f.name for f in fields(self)}
        data = self.as_dict()
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown fault {key!r}; known: {sorted(known)}")
            data[key] = _coerce(key, value)
        return FaultConfig(**data)


def _coerce(key: str, value: Any) -> Any:
    if key in _RATES:
        rate = float(value)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault {key}: rate must be within [0, 1]")
        return rate
    if key in ("read_lag_ms", "slow_ms", "webhook_delay_ms"):
        ms = float(value)
        if ms < 0:
            raise ValueError(f"fault {key}: must be >= 0")
        return ms
    if key in ("retry_after_s", "retry_after_ms"):
        return None if value is None or value == "" else float(value)
    if key == "should_retry":
        if value is None or isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("", "none", "null"):
            return None
        return text in ("1", "true", "yes")
    if key == "read_once":
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    if key == "error_statuses":
        statuses = [int(x) for x in (value if isinstance(value, list) else str(value).split(","))]
        if not statuses or any(not 400 <= s <= 599 for s in statuses):
            raise ValueError("fault error_statuses: a non-empty list of 4xx/5xx codes")
        return statuses
    raise ValueError(f"unknown fault {key!r}")


def parse_assignment(text: str) -> tuple[str, Any]:
    """``name=value`` from the CLI (``value`` may be JSON) → ``(name, value)``."""
    import json

    name, sep, raw = text.partition("=")
    if not sep:
        raise ValueError(f"fault {text!r}: expected name=value")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name.strip(), value


class Faults:
    """Holds the knobs and takes the deterministic decisions."""

    __slots__ = ("_counters", "config", "seed")

    def __init__(self, seed: int, initial: Mapping[str, Any] | None = None) -> None:
        self.seed = seed
        self.config = FaultConfig().merged(initial or {})
        self._counters: dict[str, int] = {}

    def update(self, changes: Mapping[str, Any]) -> None:
        self.config = self.config.merged(changes)

    def roll(self, name: str) -> bool:
        """Whether fault ``name`` (a rate knob) fires now."""
        rate: float = getattr(self.config, name)
        if rate <= 0.0:
            return False
        n = self._counters.get(name, 0)
        self._counters[name] = n + 1
        if rate >= 1.0:
            return True
        return digest(self.seed, name, n) % 1_000_000 < rate * 1_000_000

    def fails(self, index: int) -> bool:
        """Whether the job created ``index``-th ends ``failed`` (keyed by index, not order)."""
        rate = self.config.fail_rate
        return rate > 0 and digest(self.seed, "fail", index) % 1_000_000 < rate * 1_000_000

    def hits(self, name: str, *key: object) -> bool:
        """Whether rate knob ``name`` fires for ``key`` (keyed by identity, not by order)."""
        rate: float = getattr(self.config, name)
        return rate > 0 and digest(self.seed, name, *key) % 1_000_000 < rate * 1_000_000

    def error_status(self) -> int:
        statuses = self.config.error_statuses
        n = self._counters.get("_status", 0)
        self._counters["_status"] = n + 1
        return statuses[digest(self.seed, "status", n) % len(statuses)]

    def retry_headers(self) -> dict[str, str]:
        """Retry-After / retry-after-ms / x-should-retry headers for an injected error."""
        headers: dict[str, str] = {}
        cfg = self.config
        if cfg.retry_after_s is not None:
            headers["retry-after"] = f"{cfg.retry_after_s:g}"
        if cfg.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{cfg.retry_after_ms:g}"
        if cfg.should_retry is not None:
            headers["x-should-retry"] = "true" if cfg.should_retry else "false"
        return headers

    def reset_counters(self) -> None:
        self._counters.clear()
