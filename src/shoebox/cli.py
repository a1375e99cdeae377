"""The `shoebox` command line: talks to the services over HTTP, or starts them itself."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

app = typer.Typer(help="Shoebox: a searchable library from folders of photos.", no_args_is_help=True)
model_app = typer.Typer(help="Model folders (ONNX, Immich/OpenCLIP layout).", no_args_is_help=True)
app.add_typer(model_app, name="model")


class TestModelSize(str, Enum):
    tiny = "tiny"
    vit_b_32 = "vit-b-32"


@model_app.command("make-test")
def model_make_test(
    size: TestModelSize = typer.Option(TestModelSize.tiny, help="tiny (tests) or vit-b-32 (benchmarks)."),
    out: Path = typer.Option(..., help="Folder to write the model into."),
    seed: int = typer.Option(0, help="Seed of the random weights."),
) -> None:
    """Write a RANDOM-WEIGHT model in the real on-disk layout (needs the `dev` extra: torch)."""
    from shoebox.ml.models.testmodel import make_test_model

    path = make_test_model(size.value, out, seed=seed)
    typer.secho(
        f"wrote a random-weight test model to {path} — search results with it are meaningless",
        fg=typer.colors.YELLOW,
    )


if __name__ == "__main__":
    app()
