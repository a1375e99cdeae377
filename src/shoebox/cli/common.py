"""What every `shoebox` command shares: the Typer apps, the consoles, the connection settings, error exits, the model helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.panel import Panel

from shoebox.client import DEFAULT_URL, APIError

TEST_MODEL_PREFIX = "TEST-RANDOM-WEIGHTS"


app = typer.Typer(
    help="Shoebox: a searchable library from folders of photos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


model_app = typer.Typer(help="Model folders (ONNX, Immich/OpenCLIP layout).", no_args_is_help=True)


app.add_typer(model_app, name="model", rich_help_panel="Services")

models_app = typer.Typer(
    help="The model catalogue: what is known, what is here, and downloads (`shoebox models pull NAME`).",
    invoke_without_command=True,
)
app.add_typer(models_app, name="models", rich_help_panel="Services")


collections_app = typer.Typer(help="List, create, delete and select collections.")


app.add_typer(collections_app, name="collections", rich_help_panel="Library")


out = Console(soft_wrap=True)


err = Console(stderr=True, soft_wrap=True)


@dataclass
class CLIState:
    url: str = DEFAULT_URL
    api_key: str | None = None


state = CLIState()


@app.callback()
def main(
    url: str = typer.Option(DEFAULT_URL, envvar="SHOEBOX_URL", help="The ingestion service's URL."),
    api_key: str | None = typer.Option(None, envvar="SHOEBOX_API_KEY", help="X-API-Key for the services."),
) -> None:
    """Shoebox: a searchable library from folders of photos."""
    state.url = url
    state.api_key = api_key or None


def host_option(what: str) -> Any:
    return typer.Option(
        "127.0.0.1",
        "--host",
        help=f"Address {what} listens on. Anything but loopback needs SHOEBOX_API_KEY (the admin UI: "
        "SHOEBOX_UI_PASSWORD) or --insecure.",
    )


def insecure_option() -> Any:
    return typer.Option(
        False,
        "--insecure",
        help="Listen on a non-loopback --host without a key or password: anyone who reaches it may use it.",
    )


def refuse_open_bind(host: str, *, secret_set: bool, insecure: bool, what: str, secret: str) -> None:
    """Exit 2 with one line when `host` is not loopback and neither a secret nor --insecure allows it;
    with --insecure, a loud warning instead."""
    from shoebox.binding import refusal, warn_if_open

    if reason := refusal(host, secret_set=secret_set, insecure=insecure, what=what, secret=secret):
        fail(reason, 2)
    warn_if_open(host, secret_set=secret_set, what=what, prog="shoebox")


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    # Plain stdout, not rich: scripts parse it.
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextmanager
def api_errors() -> Iterator[None]:
    try:
        yield
    except APIError as exc:
        fail(f"{exc.code}: {exc.message}")


def test_model_dir() -> Path:
    from shoebox.settings_common import default_cache_dir

    return default_cache_dir() / "test-model"


def is_test_model_dir(model_dir: Path) -> bool:
    return (model_dir / "SHOEBOX_TEST_MODEL").is_file()


def ensure_test_model() -> Path:
    """The random-weight tiny model under ~/.cache/shoebox/test-model, built once."""
    from shoebox.ml.models.download import is_complete

    target = test_model_dir()
    if is_test_model_dir(target) and is_complete(target):
        return target
    try:
        from shoebox.ml.models.onnx_testmodel import build_onnx_test_model
    except ImportError as exc:
        fail(f"cannot build the fallback test model ({exc}); install shoebox\\[ml] or set SHOEBOX_MODEL_DIR")
    with err.status("building the random test model (once)…"):
        return build_onnx_test_model("tiny", target)


def prepare_model() -> dict[str, str]:
    """Environment that points the ML service at a usable model: the real one, else the test model.

    Resolved here, before the service starts, so that a missing model is one clear line and a
    fallback, not a service that dies at start-up.
    """
    from shoebox.ml.config import MLSettings
    from shoebox.ml.models.download import resolve_model_dir

    try:
        model_dir = resolve_model_dir(MLSettings())
    except Exception as exc:  # offline, a failed download, a bad SHOEBOX_MODEL_DIR: all mean no real model
        reason = " ".join(str(getattr(exc, "message", exc)).split()) or type(exc).__name__
        err.print(
            f"[yellow]No real CLIP model ({reason}); falling back to a random test model.[/]", highlight=False
        )
        model_dir = ensure_test_model()
    if is_test_model_dir(model_dir):
        print_test_model_banner()
    return {"SHOEBOX_MODEL_DIR": str(model_dir)}


TEST_MODEL_BANNER = (
    "[bold]RANDOM TEST MODEL — SEARCH RESULTS ARE MEANINGLESS[/]\n"
    "No real CLIP model is available, so Shoebox runs a model with random weights: every stage of the "
    "pipeline really runs, but the rankings are noise.\nFor real search set SHOEBOX_MODEL_DIR to a model "
    "folder, or let Shoebox download ViT-B-32__openai once while online."
)


def print_test_model_banner() -> None:
    err.print(Panel(TEST_MODEL_BANNER, title="WARNING", border_style="bold red", style="red"))
