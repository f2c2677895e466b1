"""The one settings object, read from ``FLEXPIPE_*`` environment variables and ``.env``.

Nothing else in flexpipe reads the environment. Defaults need no server: SQLite in
``.flexpipe/``, the embedded filesystem broker, and the bundled emulator's URL.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from flexpipe.errors import ConfigurationError
from flexpipe.flow import FlowSettings
from flexpipe.policy import PollPolicy, RetryPolicy

EMULATOR_PORT = 8321
_DOTTED_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLEXPIPE_", env_file=".env", extra="ignore", frozen=True
    )

    # Provider
    api_base_url: str = f"http://127.0.0.1:{EMULATOR_PORT}/v1"
    api_key: SecretStr = SecretStr("emulator")
    model: str = "Qwen/Qwen3-30B-A3B-Instruct-2507"
    service_tier: Literal["flex", "priority"] = "flex"
    request_timeout: float = Field(60.0, gt=0)
    blocking_timeout: float = Field(600.0, gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    sdk_max_retries: int = Field(2, ge=0)
    max_input_chars: int = Field(400_000, gt=0)
    #: The largest ``max_output_tokens`` (in tokens) a request may ask for.
    max_output_length: int = Field(1_000_000, gt=0)
    #: How deeply input items, schemas and callback arguments may nest.
    max_nesting: int = Field(32, ge=2, le=64)
    #: The furthest deadline a request may set (seconds from enqueue).
    max_deadline: float = Field(30 * 86_400.0, gt=0)

    # Where things live
    data_dir: Path = Path(".flexpipe")
    database_url: str | None = None
    #: PostgreSQL: seconds to wait for a connection, and the longest any statement may run.
    db_connect_timeout: float = Field(10.0, gt=0)
    db_statement_timeout: float = Field(60.0, gt=0)
    #: A PostgreSQL schema for flexpipe's tables (created by ``flexpipe db upgrade``), so
    #: they and their version table never meet a host's. Table names are ``flexpipe_*``.
    db_schema: str | None = None
    broker_url: str = "filesystem://"

    # Queues and Celery
    queue: str = "flexpipe"
    poll_queue: str = "flexpipe.poll"
    visibility_timeout: float = Field(3600.0, gt=0)
    worker_eta_task_limit: int = Field(20_000, gt=0)
    worker_concurrency: int | None = None
    #: Also publish a task-sent event beside every task message (Flower's "sent" state);
    #: it doubles the publishes of an enqueue, so it is off unless asked for.
    task_sent_events: bool = False
    #: Comma-separated modules the worker also imports (e.g. your callback tasks).
    imports: str = ""
    #: Queue for callbacks whose signature names none ("celery": any Celery app's default).
    callback_queue: str = "celery"
    #: Comma-separated fnmatch patterns of callback task names accepted beyond the tasks
    #: registered in this process (e.g. ``myapp.*``); flexpipe's own are never accepted.
    callbacks: str = ""
    #: Every task's soft time limit (it is then retried) and hard limit (its process is
    #: replaced), in seconds; both must exceed a blocking-mode request's timeout.
    task_soft_time_limit: float = Field(1800.0, gt=0)
    task_time_limit: float = Field(1900.0, gt=0)
    #: Unexpected errors (a bug, not a provider answer) a job's step may hit in a row
    #: before the job fails with that error instead of being tried again.
    max_unexpected_errors: int = Field(3, ge=1)

    # Poll schedule (seconds; multiplied by time_scale)
    time_scale: float = Field(1.0, gt=0)
    poll_first_delay: float = Field(10.0, gt=0)
    poll_multiplier: float = Field(1.5, ge=1)
    poll_max_delay: float = Field(60.0, gt=0)
    poll_min_delay: float = Field(1.0, gt=0)
    poll_jitter: float = Field(0.2, ge=0, le=1)
    poll_ratio: float = Field(1.15, gt=1)
    poll_first_quantile: float = Field(0.15, gt=0, lt=1)
    poll_min_samples: int = Field(20, ge=2)
    learn_latency: bool = True
    #: How often each worker process re-reads learned latencies from SQL (real seconds).
    estimate_refresh: float = Field(30.0, gt=0)
    park_after: float = Field(30.0, gt=0)

    # Webhooks: the provider at api_base_url POSTs a signed event when a response ends, the
    # receiver (flexpipe.tasks.webhooks) sends that job's poll, and the poll schedule
    # stretches to a safety net. OpenAI sends response.* webhooks; Doubleword does not.
    webhooks: bool = False
    #: The endpoint's ``whsec_...`` secret; ``OPENAI_WEBHOOK_SECRET`` (the SDK's) also works.
    webhook_secret: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(
            "webhook_secret", "FLEXPIPE_WEBHOOK_SECRET", "OPENAI_WEBHOOK_SECRET"
        ),
    )
    #: Replay window of a delivery's timestamp, both ways (seconds; the SDK's default).
    webhook_tolerance: int = Field(300, gt=0)
    #: With webhooks: the one safety-net poll at this quantile of the learned latency...
    poll_webhook_quantile: float = Field(0.99, gt=0, lt=1)
    #: ... or after this many seconds without an estimate; then each wait this ratio of
    #: the time waited, up to the maximum (seconds, multiplied by time_scale).
    poll_webhook_first_delay: float = Field(300.0, gt=0)
    poll_webhook_ratio: float = Field(2.0, gt=1)
    poll_webhook_max_delay: float = Field(1800.0, gt=0)
    #: How long an event about a response id no job holds yet is matched by the sweeper
    #: (the provider finished before the submit's commit), in real seconds.
    webhook_match_window: float = Field(600.0, gt=0)
    #: How long delivered webhook ids are kept for dedupe (OpenAI redelivers up to 72 h).
    webhook_retention: float = Field(4 * 86400.0, gt=0)

    # Retries of transient provider errors
    retry_base_delay: float = Field(1.0, gt=0)
    retry_max_delay: float = Field(60.0, gt=0)
    retry_max_after: float = Field(600.0, gt=0)
    max_not_found: int = Field(5, ge=1)
    lost_response: Literal["fail", "resubmit"] = "fail"
    max_attempts: int = Field(3, ge=1)
    #: New attempts for structured output that does not match its schema (then it fails).
    invalid_output_retries: int = Field(1, ge=0)
    submit_lease: float = Field(120.0, gt=0)
    #: Creates of one bulk chunk (submit_many) sent at once by each worker process.
    submit_concurrency: int = Field(8, ge=1, le=64)

    # Shared rate limits (0 = off); they live in Redis (the broker's, unless set).
    submits_per_window: int = Field(0, ge=0)
    rate_window: float = Field(60.0, gt=0)
    max_in_flight: int = Field(0, ge=0)
    limits_redis_url: str | None = None

    # Redis as the broker (config/redis_memory.py, config/worker_exit.py)
    #: Accept a Redis whose maxmemory-policy evicts keys (it drops queued messages).
    redis_allow_eviction: bool = False
    #: Warn (at start-up and every sweep) when Redis uses this fraction of its maxmemory.
    redis_memory_warn: float = Field(0.8, gt=0, le=1)
    #: Seconds a worker stopping on an error may wait for its pool before it is killed.
    worker_exit_grace: float = Field(30.0, gt=0)

    # Sweeper (beat). These are about the infrastructure (how late a message may be when
    # queues are backed up), not the provider, so time_scale does not apply to them.
    sweep_interval: float = Field(5.0, gt=0)
    #: How often a worker checks that its embedded beat (``--beat``) is still alive.
    beat_watch_interval: float = Field(1.0, gt=0)
    #: ``flexpipe doctor``: a sweeper heartbeat older than this (or 3 sweep intervals,
    #: whichever is longer) means no beat is sweeping.
    beat_stale_after: float = Field(30.0, gt=0)
    #: ``flexpipe doctor``: how long to wait for the broker and for workers to answer.
    doctor_timeout: float = Field(2.0, gt=0)
    poll_overdue_after: float = Field(60.0, gt=0)
    submit_stale_after: float = Field(120.0, gt=0)
    callback_overdue_after: float = Field(30.0, gt=0)
    #: A callback sent this many seconds ago and never received by a worker that records
    #: receipts (``flexpipe.tasks.delivery``) is sent again, same task id (0: never).
    callback_receipt_timeout: float = Field(600.0, ge=0)

    # Retention: beat deletes finished jobs older than this (an age like 30d; empty: off).
    retention: str = ""
    #: Jobs deleted per transaction, and the pause between two of them (s).
    retention_batch: int = Field(1000, gt=0)
    retention_pause: float = Field(0.0, ge=0)
    #: How often beat runs the prune when FLEXPIPE_RETENTION is set (s).
    retention_interval: float = Field(3600.0, gt=0)

    # Deadlines per tier (seconds after enqueue; flex: the provider's 1 h window + slack)
    deadline_flex: float = Field(4500.0, gt=0)
    deadline_priority: float = Field(900.0, gt=0)

    # Flower
    flower_user: str = "flexpipe"
    flower_password: SecretStr | None = None

    # Scheduled bulk classification: beat calls this function every N seconds (0: off).
    classify_schedule: float = Field(0.0, ge=0)
    #: Dotted path of the job function, e.g. ``myapp.jobs.classify_new_tickets``.
    classify_job: str = ""

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        try:
            make_url(value).get_dialect()
        except (ArgumentError, NoSuchModuleError, ValueError) as exc:
            raise ValueError(f"not a database URL SQLAlchemy can use ({exc})") from None
        return value

    @field_validator("db_schema")
    @classmethod
    def _db_schema(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", value):
            raise ValueError("must be a plain identifier such as flexpipe")
        return value

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str) -> str:
        if value.strip():
            from flexpipe.retention import parse_age

            parse_age(value)
        return value.strip()

    @field_validator("api_base_url")
    @classmethod
    def _api_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://api.doubleword.ai/v1")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "must not carry credentials (user:password@); set FLEXPIPE_API_KEY instead"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        limit = self.visibility_timeout / 2
        countdowns = {
            "park_after": self.park_after * self.time_scale,
            "retry_max_delay": self.retry_max_delay * self.time_scale,
            "retry_max_after": self.retry_max_after,
        }
        for name, value in countdowns.items():
            if value >= limit:
                raise ValueError(
                    f"FLEXPIPE_{name.upper()} ({value:g}s after time scaling) must stay below "
                    f"half of FLEXPIPE_VISIBILITY_TIMEOUT ({self.visibility_timeout:g}s), or "
                    "Redis redelivers the waiting task again and again"
                )
        host = urlsplit(self.api_base_url).hostname or ""
        if self.webhooks and (host == "doubleword.ai" or host.endswith(".doubleword.ai")):
            raise ValueError(
                "FLEXPIPE_WEBHOOKS is on but Doubleword sends no response webhooks (only "
                "batch events): its jobs would wait for the slow safety-net polls"
            )
        if not self.blocking_timeout < self.task_soft_time_limit < self.task_time_limit:
            raise ValueError(
                "FLEXPIPE_TASK_SOFT_TIME_LIMIT must exceed FLEXPIPE_BLOCKING_TIMEOUT, and "
                "FLEXPIPE_TASK_TIME_LIMIT must exceed FLEXPIPE_TASK_SOFT_TIME_LIMIT"
            )
        if self.poll_min_delay > self.poll_max_delay:
            raise ValueError("FLEXPIPE_POLL_MIN_DELAY must not exceed FLEXPIPE_POLL_MAX_DELAY")
        if self.db_schema and not self.db_url.startswith("postgresql"):
            raise ValueError(
                "FLEXPIPE_DB_SCHEMA needs a PostgreSQL FLEXPIPE_DATABASE_URL (SQLite has no "
                "schemas; give flexpipe a database file of its own instead)"
            )
        if self.classify_schedule and not self.classify_job:
            raise ValueError(
                "FLEXPIPE_CLASSIFY_SCHEDULE is set but FLEXPIPE_CLASSIFY_JOB (the dotted path "
                "of the function to run) is not"
            )
        if self.classify_job and not _DOTTED_PATH.fullmatch(self.classify_job):
            raise ValueError(
                f"FLEXPIPE_CLASSIFY_JOB {self.classify_job!r} is not a dotted path like "
                "myapp.jobs.classify_new_tickets"
            )
        return self

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'flexpipe.db').resolve()}"

    def engine_options(self) -> dict[str, Any]:
        """Keyword arguments for the SQLAlchemy engine: timeouts, so no database call can
        block a worker for ever (SQLite has its busy timeout in the store)."""
        if not self.db_url.startswith("postgresql"):
            return {}
        statement_ms = int(self.db_statement_timeout * 1000)
        return {
            "connect_args": {
                "connect_timeout": max(1, round(self.db_connect_timeout)),
                "options": f"-c statement_timeout={statement_ms}",
            }
        }

    @property
    def callback_patterns(self) -> list[str]:
        return [name.strip() for name in self.callbacks.split(",") if name.strip()]

    @property
    def longest_countdown(self) -> float:
        """The longest countdown flexpipe gives a task message (seconds): a broker must keep
        an unacknowledged message longer than this (Redis: its visibility timeout)."""
        return max(
            self.park_after * self.time_scale,
            self.retry_max_delay * self.time_scale,
            self.retry_max_after,
        )

    @property
    def retention_age(self) -> timedelta | None:
        """How old finished jobs may get before beat prunes them; None: kept for ever."""
        if not self.retention:
            return None
        from flexpipe.retention import parse_age

        return parse_age(self.retention)

    @property
    def import_list(self) -> list[str]:
        return [name.strip() for name in self.imports.split(",") if name.strip()]

    @property
    def limits_url(self) -> str | None:
        """Where shared rate limits live; None when no limit is configured."""
        if not (self.submits_per_window or self.max_in_flight):
            return None
        if self.limits_redis_url:
            return self.limits_redis_url
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        raise ConfigurationError(
            "bad setting: rate limits are shared through Redis; set FLEXPIPE_LIMITS_REDIS_URL "
            "(the broker is not Redis)"
        )

    @property
    def secrets(self) -> list[str]:
        """Every secret value set, for the log redaction (config/logs.py)."""
        values = [self.api_key, self.flower_password, self.webhook_secret]
        return [v.get_secret_value() for v in values if v is not None]

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    def deadline_for(self, tier: str) -> float:
        return self.deadline_priority if tier == "priority" else self.deadline_flex

    def flow_settings(self) -> FlowSettings:
        scale = self.time_scale
        return FlowSettings(
            poll=PollPolicy(
                first_delay=self.poll_first_delay,
                multiplier=self.poll_multiplier,
                max_delay=self.poll_max_delay,
                min_delay=self.poll_min_delay,
                jitter=self.poll_jitter,
                ratio=self.poll_ratio,
                first_quantile=self.poll_first_quantile,
                min_samples=self.poll_min_samples,
                time_scale=scale,
                webhooks=self.webhooks,
                webhook_quantile=self.poll_webhook_quantile,
                webhook_first_delay=self.poll_webhook_first_delay,
                webhook_ratio=self.poll_webhook_ratio,
                webhook_max_delay=self.poll_webhook_max_delay,
            ),
            retry=RetryPolicy(
                base_delay=self.retry_base_delay,
                max_delay=self.retry_max_delay,
                max_retry_after=self.retry_max_after,
                time_scale=scale,
            ),
            park_after=self.park_after * scale,
            submit_lease=self.submit_lease,
            blocking_lease=self.blocking_timeout + self.submit_lease,
            max_not_found=self.max_not_found,
            lost_response=self.lost_response,
            max_attempts=self.max_attempts,
            max_unexpected_errors=self.max_unexpected_errors,
            invalid_output_retries=self.invalid_output_retries,
            escalate_deadline=self.deadline_priority * scale,
            learn_latency=self.learn_latency,
            estimate_refresh=self.estimate_refresh,
            webhooks=self.webhooks,
        )


def load_settings(**values: Any) -> Settings:
    """Read settings now (``values`` win over the environment); bad ones raise
    :class:`ConfigurationError` with one line that names the variable."""
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        name = f"FLEXPIPE_{where.upper()}: " if where else ""
        message = str(first.get("msg", exc)).removeprefix("Value error, ")
        raise ConfigurationError(f"bad setting: {name}{message}") from None


_lock = threading.Lock()
_current: Settings | None = None
_given: Settings | None = None
_listeners: list[Callable[[], None]] = []


def get_settings() -> Settings:
    """The process-wide settings: those given to :func:`configure`, else the environment's
    (read once, on first use)."""
    global _current
    current = _current
    if current is None:
        with _lock:
            if _current is None:
                _current = _given if _given is not None else load_settings()
            current = _current
    return current


def configure(settings: Settings | None = None, /, **values: Any) -> Settings:
    """Give flexpipe its settings in code, instead of (or on top of) ``FLEXPIPE_*``.

    ``configure(database_url="postgresql+psycopg://...", broker_url="redis://...")`` or
    ``configure(Settings(...))``; ``configure()`` with nothing goes back to the environment.
    Whatever was built from the old settings in this process (the Celery app's
    configuration, the database engine, the HTTP client) is rebuilt on next use.
    Raises :class:`ConfigurationError` for a bad value; the old settings then stay.
    """
    global _current, _given
    if settings is not None and values:
        raise TypeError("configure() takes a Settings object or keyword values, not both")
    given = settings if settings is not None else (load_settings(**values) if values else None)
    with _lock:
        _given = given
        _current = given
    for listener in list(_listeners):
        listener()
    return get_settings()


def on_configure(listener: Callable[[], None]) -> Callable[[], None]:
    """Call ``listener`` after every :func:`configure` (the Celery app and the runtime use it)."""
    _listeners.append(listener)
    return listener
