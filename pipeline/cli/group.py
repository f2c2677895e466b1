"""The root ``flexpipe`` command group, its consoles and its one-line errors.

Errors print one line and exit with code 2.
"""

from __future__ import annotations

from typing import Any, NoReturn

import click
from rich.console import Console

from flexpipe.errors import FlexpipeError

console = Console()
err_console = Console(stderr=True)


class CliError(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        # soft_wrap: one line whatever the width (rich wraps at 80 columns without a tty).
        err_console.print(
            f"[red]error:[/red] {self.format_message()}", highlight=False, soft_wrap=True
        )


def fail(message: str) -> NoReturn:
    raise CliError(message)


class FlexpipeGroup(click.Group):
    """Turns flexpipe errors raised by any command into one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FlexpipeError as exc:
            raise CliError(str(exc)) from None


@click.group(cls=FlexpipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """flexpipe: durable background LLM work on flex inference, from Celery."""


def timestamp(value: Any) -> str:
    """A time as the CLI prints it, ``-`` for none."""
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")
