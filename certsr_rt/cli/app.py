"""The ``certsr-rt`` command line: a thin Typer app, one module per command.

Every command module keeps its heavy imports (torch, backends) inside the command function so that
``certsr-rt --help`` stays instant. Our own errors (:class:`~certsr_rt.errors.CertSRError`) become one
line on stderr and exit code 1; Ctrl-C becomes one line and exit code 130, SIGTERM the same clean-up and
exit code 143.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import typer

from certsr_rt.errors import CertSRError, Terminated

app = typer.Typer(
    name="certsr-rt",
    help="Robust 4x super-resolution with median randomized smoothing (CertSR).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so our errors print one line instead of a traceback, and SIGTERM acts as Ctrl-C.

    Exit codes: 1 for our errors, 130 for Ctrl-C, 143 for SIGTERM (128 + signal number, as shells do).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
        try:
            return fn(*args, **kwargs)
        except CertSRError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            what = "terminated" if isinstance(exc, Terminated) else "interrupted"
            typer.echo(f"{what}: no partial output was left behind", err=True)
            raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def _register() -> None:
    from certsr_rt.cli.evaluate import evaluate_command
    from certsr_rt.cli.export import export_command
    from certsr_rt.cli.models import models_command
    from certsr_rt.cli.train import train_command
    from certsr_rt.cli.upscale import upscale_command

    app.command("upscale")(guarded(upscale_command))
    app.command("export")(guarded(export_command))
    app.command("models")(guarded(models_command))
    app.command("train")(guarded(train_command))
    app.command("evaluate")(guarded(evaluate_command))


_register()


def _print_version(value: bool) -> None:
    """``--version``: print and exit while parsing, before Click asks for a command."""
    if value:
        from certsr_rt import __version__

        typer.echo(f"certsr-rt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        is_eager=True,
        expose_value=False,
        callback=_print_version,
    ),
) -> None:
    """Robust 4x super-resolution with median randomized smoothing (CertSR)."""


def main() -> None:
    """Console-script entry point."""
    app(prog_name="certsr-rt")


if __name__ == "__main__":
    sys.exit(main())
