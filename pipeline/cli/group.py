"""The root ``flexpipe`` command group, its consoles and its one-line errors.

Errors print one line and exit with code 2; so does a database that cannot be reached.
The consoles interpret no markup and highlight nothing: stored values (a provider's error
message, a bulk's name) are printed literally, whatever brackets they hold. Style comes
from :class:`rich.text.Text` and ``style=`` arguments, never from markup in a string.
"""

from __future__ import annotations

from typing import Any, NoReturn

import click
from rich.console import Console
from rich.text import Text

from flexpipe.errors import FlexpipeError

console = Console(markup=False, highlight=False)
err_console = Console(stderr=True, markup=False, highlight=False)


def error_line(message: str) -> Text:
    """``error: message`` with the label in red and the message literal."""
    return Text.assemble(("error:", "red"), " ", message)


class CliError(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        # soft_wrap: one line whatever the width (rich wraps at 80 columns without a tty).
        err_console.print(error_line(self.format_message()), soft_wrap=True)


def fail(message: str) -> NoReturn:
    raise CliError(message)


class FlexpipeGroup(click.Group):
    """Turns flexpipe errors raised by any command, and a database that cannot be
    reached, into one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            unreachable = database_unreachable(exc)
            if unreachable is not None:
                raise CliError(unreachable) from None
            if isinstance(exc, FlexpipeError):
                raise CliError(str(exc)) from None
            raise


def database_unreachable(exc: BaseException) -> str | None:
    """A one-line message if ``exc`` says the database is away, else None."""
    from flexpipe.store import TRANSIENT_DB_ERRORS

    if not isinstance(exc, TRANSIENT_DB_ERRORS):
        return None
    from flexpipe.config.settings import get_settings
    from flexpipe.store import safe_url

    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = reason[0] if reason else type(exc).__name__
    try:
        where = safe_url(get_settings().db_url)
    except Exception:  # settings that cannot be read say so elsewhere
        where = "the database"
    return f"cannot reach {where}: {first}"


@click.group(cls=FlexpipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """flexpipe: durable background LLM work on flex inference, from Celery."""


def timestamp(value: Any) -> str:
    """A time as the CLI prints it, ``-`` for none."""
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")
