"""Running the emulator: in a daemon thread (tests, demos) or blocking (the CLI).

Binding port 0 picks a free port; the handle reports it. Binding beyond loopback without
keys prints (CLI) or logs (thread) a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from types import TracebackType

from aiohttp import web

from flexpipe.emulator.auth import exposure_warning
from flexpipe.emulator.config import EmulatorConfig
from flexpipe.emulator.server import build_app, emulator_of
from flexpipe.emulator.service import Emulator

log = logging.getLogger("flexpipe.emulator")


async def _start(config: EmulatorConfig, host: str, port: int) -> tuple[web.AppRunner, int]:
    app = build_app(config)
    if config.access_log:
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.25)
    else:
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.25)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return runner, bound


def banner(config: EmulatorConfig, host: str, port: int) -> str:
    """The one startup line the CLI prints."""
    return (
        f"flexpipe emulator listening on http://{host}:{port}/v1 "
        f"(flavor={config.flavor}, slots={config.slots}, time-scale={config.time_scale:g})"
    )


class EmulatorHandle:
    """A running emulator in a background thread; stop it with :meth:`stop` or ``with``."""

    def __init__(self, config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        warning = exposure_warning(config, host)
        if warning is not None:
            log.warning("%s", warning)
        self._thread = threading.Thread(target=self._run, name="flexpipe-emulator", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"emulator failed to start: {self._error}") from self._error

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (no ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, the ``base_url`` for an ``openai`` client."""
        return self.url + "/v1"

    @property
    def emulator(self) -> Emulator:
        """The in-process service (its store, stats and faults); touch only via :meth:`call`."""
        assert self._runner is not None
        return emulator_of(self._runner.app)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner, self.port = self._loop.run_until_complete(
                _start(self.config, self.host, self.port)
            )
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(self._runner.cleanup())
        pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
        for task in pending:
            task.cancel()
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def call(self, fn: object, *args: object) -> object:
        """Run ``fn(*args)`` on the emulator's loop and return its result (thread-safe)."""

        async def _do() -> object:
            return fn(*args)  # type: ignore[operator]

        return asyncio.run_coroutine_threadsafe(_do(), self._loop).result(30)

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_in_thread(
    config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> EmulatorHandle:
    """Start an emulator on a daemon thread with its own event loop; returns its handle."""
    return EmulatorHandle(config or EmulatorConfig(), host, port)


def serve(
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8321,
    announce: bool = True,
) -> None:
    """Serve until interrupted (blocking); prints the startup line."""
    config = config or EmulatorConfig()
    warning = exposure_warning(config, host)
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)

    async def main() -> None:
        runner, bound = await _start(config, host, port)
        if announce:
            print(banner(config, host, bound), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
