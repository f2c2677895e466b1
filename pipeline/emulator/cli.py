"""``flexpipe emulator`` / ``python -m flexpipe.emulator``: run the flex API emulator.

Every option can also come from the environment as ``FLEXPIPE_EMULATOR_<OPTION>`` (dashes as
underscores, e.g. ``FLEXPIPE_EMULATOR_API_KEY``), so keys need not appear in ``ps``; a
command-line value wins. Repeatable options take space-separated values there.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import click

from flexpipe.emulator.config import DEFAULT_MODELS, FLAVORS, EmulatorConfig
from flexpipe.emulator.faults import FaultConfig, parse_assignment
from flexpipe.emulator.latency import LatencyModel
from flexpipe.emulator.runner import serve

_LATENCY_HELP = "fixed:S | uniform:LO,HI | lognormal:MEDIAN,SIGMA (unscaled seconds)"


def _latency(ctx: click.Context, param: click.Parameter, value: str | None) -> LatencyModel | None:
    if value is None:
        return None
    try:
        return LatencyModel.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _faults(json_text: str | None, assignments: tuple[str, ...]) -> dict[str, Any]:
    faults: dict[str, Any] = {}
    if json_text:
        try:
            loaded = json.loads(json_text)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--faults") from exc
        if not isinstance(loaded, dict):
            raise click.BadParameter("expected a JSON object", param_hint="--faults")
        faults.update(loaded)
    for text in assignments:
        try:
            name, value = parse_assignment(text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--fault") from exc
        faults[name] = value
    try:
        FaultConfig().merged(faults)
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from exc
    return faults


ENV_PREFIX = "FLEXPIPE_EMULATOR"


@click.command("emulator", context_settings={"auto_envvar_prefix": ENV_PREFIX})
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option(
    "--port",
    default=8321,
    show_default=True,
    type=int,
    help="TCP port to bind (0 picks a free port and prints it).",
)
@click.option(
    "--flavor",
    type=click.Choice(FLAVORS),
    default="doubleword",
    show_default=True,
    help="Wire behaviour to copy: Doubleword's control layer or OpenAI's API.",
)
@click.option(
    "--slots",
    default=64,
    show_default=True,
    type=click.IntRange(min=0),
    help="Processing slots for queued tiers (flex, then background); 0 = unlimited.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed for latencies, outputs and faults (same seed, same run).",
)
@click.option(
    "--time-scale",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Multiplier for every emulated duration (0.01 runs a minute in 0.6 s).",
)
@click.option(
    "--latency-flex",
    callback=_latency,
    metavar="MODEL",
    help=f"Flex processing time. Default lognormal:60,0.6. {_LATENCY_HELP}.",
)
@click.option(
    "--latency-background",
    callback=_latency,
    metavar="MODEL",
    help="Doubleword 'background' tier processing time. Default lognormal:120,0.6.",
)
@click.option(
    "--latency-realtime",
    callback=_latency,
    metavar="MODEL",
    help="Realtime (priority/default/auto) processing time. Default fixed:0.5.",
)
@click.option(
    "--queue-delay-flex",
    callback=_latency,
    metavar="MODEL",
    help="Minimum time a flex response stays queued before a slot. Default fixed:1.",
)
@click.option(
    "--queue-delay-background",
    callback=_latency,
    metavar="MODEL",
    help="Minimum queued time for the background tier. Default fixed:1.",
)
@click.option(
    "--max-hold",
    default=3600.0,
    show_default=True,
    type=float,
    help="Blocking requests (background=false, flex chat) are held at most this "
    "many emulated seconds (scaled by --time-scale), then answered 504.",
)
@click.option(
    "--flex-deadline",
    type=float,
    default=None,
    help="Queued flex/background responses older than this (emulated seconds) fail "
    "when they reach the head of the queue. Default: no deadline.",
)
@click.option(
    "--retention",
    default=3600.0,
    show_default=True,
    type=float,
    help="Real seconds a finished or deleted response is kept before it is "
    "forgotten (404); not scaled.",
)
@click.option(
    "--max-retained",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Most finished responses kept in memory; the oldest are forgotten first "
    "(0 = no limit besides --retention).",
)
@click.option(
    "--max-body-bytes",
    default=64 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(min=1),
    help="Largest request body accepted (413 in the error envelope beyond it).",
)
@click.option(
    "--api-key",
    default=None,
    envvar=f"{ENV_PREFIX}_API_KEY",
    show_envvar=True,
    help="Require 'Authorization: Bearer KEY' on /v1 (401 otherwise) and, without "
    "--admin-key, on the admin routes. Default: any key or none is accepted.",
)
@click.option(
    "--admin-key",
    default=None,
    envvar=f"{ENV_PREFIX}_ADMIN_KEY",
    show_envvar=True,
    help="Require 'Authorization: Bearer KEY' on the admin routes (/_emulator/*) "
    "instead of the API key.",
)
@click.option(
    "--webhook-url",
    "webhook_urls",
    multiple=True,
    metavar="URL",
    envvar=f"{ENV_PREFIX}_WEBHOOK_URL",
    show_envvar=True,
    help="openai flavour: POST signed response.* events of background responses here "
    "(repeatable). Change at run time with POST /_emulator/webhooks.",
)
@click.option(
    "--webhook-secret",
    default=None,
    envvar=f"{ENV_PREFIX}_WEBHOOK_SECRET",
    show_envvar=True,
    help="Standard Webhooks secret (whsec_<base64>) that signs the events.",
)
@click.option(
    "--webhook-max-attempts",
    default=6,
    show_default=True,
    type=click.IntRange(min=1),
    help="Delivery attempts per event and URL, the first included.",
)
@click.option(
    "--webhook-retry-delay",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Delay before the first retry of a failed delivery, doubled each time; "
    "emulated seconds (scaled by --time-scale).",
)
@click.option(
    "--webhook-retry-max-delay",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Longest delay between delivery retries; emulated seconds.",
)
@click.option(
    "--webhook-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Timeout of one delivery attempt, real seconds.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    envvar=f"{ENV_PREFIX}_MODEL",
    metavar="NAME",
    help=f"Model listed by GET /v1/models (repeatable). Default: {', '.join(DEFAULT_MODELS)}.",
)
@click.option(
    "--strict-models",
    is_flag=True,
    help="Reject models not given by --model (default: any model name works).",
)
@click.option(
    "--store-optional",
    is_flag=True,
    help="Allow background=true with store=false (default: 400, as documented).",
)
@click.option(
    "--cancel-terminal-400",
    is_flag=True,
    help="openai flavour: cancelling a finished response answers 400 (vLLM) instead "
    "of returning the final object.",
)
@click.option(
    "--idempotency-replay",
    is_flag=True,
    help="A repeated Idempotency-Key on create returns the first response.",
)
@click.option(
    "--upstream",
    "upstream_url",
    default=None,
    metavar="URL",
    envvar=f"{ENV_PREFIX}_UPSTREAM",
    help="Process jobs by calling this OpenAI-compatible base URL's realtime "
    "POST /chat/completions (e.g. http://127.0.0.1:8000/v1 for vLLM).",
)
@click.option(
    "--upstream-api-key",
    default=None,
    envvar=f"{ENV_PREFIX}_UPSTREAM_API_KEY",
    show_envvar=True,
    help="Bearer key for the upstream.",
)
@click.option(
    "--upstream-model",
    default=None,
    help="Model name sent upstream (default: the request's model).",
)
@click.option(
    "--upstream-timeout",
    default=600.0,
    show_default=True,
    type=float,
    help="Timeout of one upstream call, real seconds.",
)
@click.option(
    "--faults",
    "faults_json",
    default=None,
    metavar="JSON",
    envvar=f"{ENV_PREFIX}_FAULTS",
    help="Fault knobs as a JSON object, e.g. '{\"create_429_rate\": 0.1}'. Knobs: "
    "create_429_rate, create_429_no_retry_after_rate, get_429_rate, "
    "create_5xx_rate, get_5xx_rate, error_statuses, retry_after_s, "
    "retry_after_ms, should_retry, fail_rate, read_lag_ms, read_once, "
    "drop_rate, slow_ms, webhook_drop_rate, webhook_duplicate_rate, "
    "webhook_delay_rate, webhook_reorder_rate, webhook_bad_signature_rate, "
    "webhook_delay_ms. Change them at runtime with POST /_emulator/faults.",
)
@click.option(
    "--fault",
    "fault_items",
    multiple=True,
    metavar="NAME=VALUE",
    envvar=f"{ENV_PREFIX}_FAULT",
    help="One fault knob (repeatable; applied after --faults), e.g. --fault fail_rate=0.05.",
)
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Logging level of the emulator.",
)
@click.option("--access-log", is_flag=True, help="Log every request (slower).")
def emulator(
    host: str,
    port: int,
    flavor: str,
    slots: int,
    seed: int,
    time_scale: float,
    latency_flex: LatencyModel | None,
    latency_background: LatencyModel | None,
    latency_realtime: LatencyModel | None,
    queue_delay_flex: LatencyModel | None,
    queue_delay_background: LatencyModel | None,
    max_hold: float,
    flex_deadline: float | None,
    retention: float,
    max_retained: int,
    max_body_bytes: int,
    api_key: str | None,
    admin_key: str | None,
    webhook_urls: tuple[str, ...],
    webhook_secret: str | None,
    webhook_max_attempts: int,
    webhook_retry_delay: float,
    webhook_retry_max_delay: float,
    webhook_timeout: float,
    models: tuple[str, ...],
    strict_models: bool,
    store_optional: bool,
    cancel_terminal_400: bool,
    idempotency_replay: bool,
    upstream_url: str | None,
    upstream_api_key: str | None,
    upstream_model: str | None,
    upstream_timeout: float,
    faults_json: str | None,
    fault_items: tuple[str, ...],
    log_level: str,
    access_log: bool,
) -> None:
    """Run a local flex (async) Responses API emulator that the openai SDK can talk to.

    Endpoints: POST /v1/responses, GET/DELETE /v1/responses/{id}, POST
    /v1/responses/{id}/cancel (openai flavour), POST /v1/chat/completions, GET /v1/models,
    GET /health; admin: /_emulator/faults, /_emulator/stats, /_emulator/responses/{id},
    /_emulator/webhooks, /_emulator/reset. Every option also reads FLEXPIPE_EMULATOR_<OPTION>
    from the environment (e.g. FLEXPIPE_EMULATOR_API_KEY), which keeps keys out of ps.
    """
    latency = {
        k: v
        for k, v in (
            ("flex", latency_flex),
            ("background", latency_background),
            ("realtime", latency_realtime),
        )
        if v is not None
    }
    queue_delay = {
        k: v
        for k, v in (("flex", queue_delay_flex), ("background", queue_delay_background))
        if v is not None
    }
    config_kwargs: dict[str, Any] = dict(
        flavor=flavor,
        models=models or DEFAULT_MODELS,
        strict_models=strict_models,
        api_key=api_key or None,
        admin_key=admin_key or None,
        max_body_bytes=max_body_bytes,
        max_retained=max_retained,
        webhook_urls=webhook_urls,
        webhook_secret=webhook_secret or None,
        webhook_max_attempts=webhook_max_attempts,
        webhook_retry_delay_s=webhook_retry_delay,
        webhook_retry_max_delay_s=webhook_retry_max_delay,
        webhook_timeout_s=webhook_timeout,
        slots=slots,
        seed=seed,
        time_scale=time_scale,
        latency=latency,
        queue_delay=queue_delay,
        max_hold_s=max_hold,
        flex_deadline_s=flex_deadline,
        retention_s=retention,
        store_required_for_background=not store_optional,
        cancel_terminal_400=cancel_terminal_400,
        idempotency_replay=idempotency_replay,
        upstream_url=upstream_url,
        upstream_api_key=upstream_api_key,
        upstream_model=upstream_model,
        upstream_timeout_s=upstream_timeout,
        faults=_faults(faults_json, fault_items),
        log_level=log_level.upper(),
        access_log=access_log,
    )
    try:
        config = EmulatorConfig(**config_kwargs)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(name)s %(message)s")
    serve(config, host, port)
