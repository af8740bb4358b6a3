"""``certsr-rt models``: list the registered models."""

from __future__ import annotations

from typing import Annotated

import typer


def models_command(
    show_all: Annotated[
        bool,
        typer.Option("--all", help="Also list the tiny test-only models (random weights, for tests)."),
    ] = False,
) -> None:
    """List the registered models: architecture, size, scale, recommended σ and license.

    Pass a name as the model, or a .pth / .pt / .safetensors checkpoint path (its architecture is detected).
    With --all, also the models marked "test": random weights, registered only for fast tests.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from certsr_rt.models.registry import list_specs

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("architecture", overflow="fold")
    table.add_column("parameters", justify="right", overflow="fold")
    table.add_column("scale", justify="right")
    table.add_column("default σ", justify="right")
    table.add_column("license", overflow="fold")
    table.add_column("", no_wrap=True)
    for spec in list_specs(include_test=show_all):
        marker = "default" if spec.is_default else ("test" if spec.is_test_only else "")
        table.add_row(
            spec.name,
            spec.architecture,
            f"{spec.num_parameters:,}",
            f"x{spec.scale}",
            f"{spec.default_sigma:g}",
            spec.license,
            marker,
            style="dim" if spec.is_test_only else None,
        )
    console = Console()
    if not console.is_terminal:
        # Rich assumes 80 columns when piped; the table needs about 100 and must not be cut.
        console = Console(width=max(console.width, 110))
    console.print(table)
    console.print("σ: noise strength of the median smoothing, in [0, 1] image units; --sigma overrides it.")
