"""The ``eddyline`` command: ``eddyline <noun> <verb>``. Data to stdout, messages to stderr,
one-line errors (tracebacks with ``--debug``): exit code 2 for what the user can fix (Typer's
usage errors, ``UserError``), 1 for a failure."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from eddyline.cli import data, kafka, models, privacy
from eddyline.cli.common import DEBUG, app, err
from eddyline.schemas.errors import EddylineError


def _version(value: bool) -> None:
    if value:
        from eddyline import __version__

        print(f"eddyline {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option(help="show tracebacks")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    DEBUG["on"] = debug
    # A command turns what stops it into its one-line error; librdkafka's lines about it
    # (a refused password, a broker away) show with --debug. A worker logs them itself.
    logging.getLogger("eddyline.kafka").setLevel(logging.DEBUG if debug else logging.CRITICAL)


def main() -> None:
    """Entry point: one-line errors unless --debug."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except EddylineError as exc:
        if DEBUG["on"] or "--debug" in sys.argv:
            raise
        _error(str(exc))
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug, or a library's error no command turned into ours
        if DEBUG["on"] or "--debug" in sys.argv:
            raise
        _error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        sys.exit(1)


def _error(message: str) -> None:
    """One line on stderr, whatever the message holds (its own lines are joined)."""
    from rich.text import Text

    line = " ".join(message.split())
    err.print(Text.assemble(("error: ", "red"), line), soft_wrap=True)


__all__ = ["app", "data", "kafka", "main", "models", "privacy"]
