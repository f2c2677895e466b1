"""The ``flexpipe`` command line: submit and inspect jobs, run workers, the emulator, the demo.

One module per command group: :mod:`.jobs` (one job at a time), :mod:`.bulk` (files of
rows), :mod:`.services` (worker, beat, Flower, database), :mod:`.demo`; the emulator's
commands come from :mod:`flexpipe.emulator.cli`. Errors print one line and exit with code 2.
"""

from __future__ import annotations

import sys

from flexpipe.cli import bulk, demo, doctor, jobs, services, webhooks  # noqa: F401  (each adds its commands)
from flexpipe.cli.group import cli, err_console, error_line
from flexpipe.errors import FlexpipeError

__all__ = ["cli", "main"]


def _add_emulator() -> None:
    from flexpipe.emulator.cli import emulator

    cli.add_command(emulator)


def main() -> None:
    _add_emulator()
    try:
        cli.main(prog_name="flexpipe", standalone_mode=True)
    except FlexpipeError as exc:  # raised while importing settings, before a command ran
        err_console.print(error_line(str(exc)), soft_wrap=True)
        sys.exit(2)
