"""The ``certsr-rt`` command line: a thin Typer app, one module per command.

Every command module keeps its heavy imports (torch, backends) inside the command function so that
``certsr-rt --help`` stays instant. Our own errors (:class:`~certsr_rt.errors.CertSRError`) become one
line on stderr and exit code 1; Ctrl-C becomes one line and exit code 130.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer

from certsr_rt.errors import CertSRError

app = typer.Typer(
    name="certsr-rt",
    help="Robust 4x super-resolution with median randomized smoothing (CertSR).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so our errors print one line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CertSRError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: no partial output was left behind", err=True)
            raise typer.Exit(130) from None

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


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    """Robust 4x super-resolution with median randomized smoothing (CertSR)."""
    if version:
        from certsr_rt import __version__

        typer.echo(f"certsr-rt {__version__}")
        raise typer.Exit()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="certsr-rt")


if __name__ == "__main__":
    sys.exit(main())
