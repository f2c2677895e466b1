"""A local server of the flex (async) Responses API that the ``openai`` SDK cannot tell from
the real service: Doubleword and OpenAI flavours, a slot-limited queue, scaled latency models,
deterministic outputs and faults, an upstream mode, and request counting.

Start it with ``python -m flexpipe.emulator`` / ``flexpipe emulator``, or in-process::

    with run_in_thread(EmulatorConfig(time_scale=0.01)) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="x")
"""

from flexpipe.emulator.config import EmulatorConfig
from flexpipe.emulator.latency import LatencyModel
from flexpipe.emulator.runner import EmulatorHandle, run_in_thread, serve
from flexpipe.emulator.server import build_app

__all__ = [
    "EmulatorConfig",
    "EmulatorHandle",
    "LatencyModel",
    "build_app",
    "run_in_thread",
    "serve",
]
