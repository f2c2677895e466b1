"""Per-process objects: the settings, the SQL store, the provider client and the flow.

Made once per worker process (and again after a fork), never per task.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from flexpipe.client import FlexClient
from flexpipe.config.settings import Settings, get_settings, on_configure
from flexpipe.flow import Flow
from flexpipe.limits import Limiter, NoLimits, RedisLimiter
from flexpipe.spool import Spool
from flexpipe.store import Store


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: Store
    client: FlexClient
    flow: Flow


_lock = threading.Lock()
_runtime: Runtime | None = None
_pid = 0


def runtime() -> Runtime:
    """The runtime of this process, built on first use."""
    global _runtime, _pid
    current = _runtime
    if current is not None and _pid == os.getpid():
        return current
    with _lock:
        if _runtime is None or _pid != os.getpid():
            _runtime = _build(get_settings())
            _pid = os.getpid()
        return _runtime


def _build(settings: Settings) -> Runtime:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.from_url(settings.db_url, schema=settings.db_schema, **settings.engine_options())
    try:
        store.ensure_schema()
    except Exception:
        store.dispose()
        raise
    client = FlexClient(
        settings.api_base_url,
        settings.api_key.get_secret_value(),
        timeout=settings.request_timeout,
        blocking_timeout=settings.blocking_timeout,
        connect_timeout=settings.connect_timeout,
        max_retries=settings.sdk_max_retries,
    )
    limiter: Limiter = NoLimits()
    if settings.limits_url is not None:
        limiter = RedisLimiter.from_url(
            settings.limits_url,
            submits_per_window=settings.submits_per_window,
            window_s=settings.rate_window,
            max_in_flight=settings.max_in_flight,
            lease_s=max(settings.deadline_flex, settings.deadline_priority) * settings.time_scale,
            prefix=f"flexpipe:limits:{settings.queue}",
        )
    spool = Spool.in_dir(settings.data_dir)
    flow = Flow(store, client, settings.flow_settings(), limiter=limiter, spool=spool)
    return Runtime(settings, store, client, flow)


@on_configure
def reset() -> None:
    """Forget this process's runtime; :func:`flexpipe.configure` calls this."""
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.store.dispose()
            _runtime.client.close()
        _runtime = None
