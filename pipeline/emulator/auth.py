"""Who may call what: the API key on ``/v1``, the admin key on ``/_emulator``, and the warning
printed when the emulator listens beyond loopback with neither.

The admin routes need ``admin_key`` when it is set, else ``api_key`` when that is set; with
no key at all they are open, which is only safe on loopback (:func:`exposure_warning`).
"""

from __future__ import annotations

import hmac
import ipaddress

from flexpipe.emulator.config import EmulatorConfig

ADMIN_PREFIX = "/_emulator/"


def admin_key(config: EmulatorConfig) -> str | None:
    """The key the admin routes require, or ``None`` if they are open."""
    return config.admin_key or config.api_key


def bearer_matches(header: str, key: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <key>`` (constant time)."""
    return hmac.compare_digest(header.encode(), f"Bearer {key}".encode())


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the emulator on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(config: EmulatorConfig, host: str) -> str | None:
    """The warning for listening on ``host`` without keys, or ``None`` when it is safe."""
    if is_loopback(host):
        return None
    if config.api_key is None and config.admin_key is None:
        return (
            f"WARNING: the emulator listens on {host} with no API key: anyone who can reach "
            "it can call /v1 and the admin routes (/_emulator/faults, /_emulator/reset, "
            "/_emulator/webhooks). Set FLEXPIPE_EMULATOR_API_KEY and/or "
            "FLEXPIPE_EMULATOR_ADMIN_KEY, or bind 127.0.0.1."
        )
    if config.api_key is None:
        return (
            f"WARNING: the emulator listens on {host} with no API key: anyone who can reach "
            "it can call /v1 (the admin routes need the admin key). Set "
            "FLEXPIPE_EMULATOR_API_KEY, or bind 127.0.0.1."
        )
    return None
