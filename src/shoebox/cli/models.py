"""`shoebox models`: the catalogue with what is present locally and what a running ML service
hosts; `shoebox models pull NAME`: download (or copy from SHOEBOX_MODEL_SOURCE) with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from shoebox.cli.common import err, fail, models_app, out, print_json


def _hosted() -> dict[str, dict[str, Any]]:
    """Models a running ML service hosts, by name (nothing when none answers)."""
    from shoebox.client import APIError, ShoeboxClient
    from shoebox.ml.config import MLSettings

    settings = MLSettings()
    url = f"http://{settings.host}:{settings.port}"
    try:
        with ShoeboxClient(url, settings.api_key, timeout=2.0, connect_timeout=2.0) as ml:
            models = ml.get("/api/v1/capabilities").get("models") or []
    except APIError:
        return {}
    return {m["model_name"].split(":", 1)[-1]: m for m in models}


@models_app.callback()
def models_list(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    multilingual: bool = typer.Option(
        False, "--multilingual", help="Only models for queries in any language."
    ),
) -> None:
    """List the known models: family, embedding dimension, approximate size, present here, hosted."""
    if ctx.invoked_subcommand is not None:
        return
    from shoebox.ml.config import MLSettings
    from shoebox.ml.models.catalogue import CATALOGUE

    cache = Path(MLSettings().model_cache_dir).expanduser()
    hosted = _hosted()
    rows = [
        {
            "name": m.name,
            "family": m.family,
            "dim": m.dim,
            "size_mb": m.size_mb,
            "multilingual": m.multilingual,
            "present": m.present_in(cache),
            "hosted": m.name in hosted,
            "model_id": hosted.get(m.name, {}).get("model_id"),
        }
        for m in CATALOGUE
        if m.multilingual or not multilingual
    ]
    if json_out:
        print_json({"cache_dir": str(cache), "models": rows})
        return
    table = Table(title=f"Known models ({len(rows)}); local copies in {cache}", title_justify="left")
    table.add_column("name", overflow="fold", min_width=24)
    table.add_column("family")
    table.add_column("dim", justify="right")
    table.add_column("≈ size", justify="right", no_wrap=True)
    table.add_column("languages")
    table.add_column("here", justify="center")
    table.add_column("hosted", justify="center")
    for row in rows:
        table.add_row(
            row["name"],
            row["family"],
            str(row["dim"]),
            f"{row['size_mb']:,} MB",
            "many" if row["multilingual"] else "English",
            "✔" if row["present"] else "",
            "✔" if row["hosted"] else "",
        )
    out.print(table)
    out.print("Download one with `shoebox models pull NAME`; host several with SHOEBOX_MODELS=NAME1,NAME2.")


@models_app.command("pull")
def models_pull(
    name: str = typer.Argument(..., help="A catalogue name (see `shoebox models`)."),
    force: bool = typer.Option(False, "--force", help="Fetch again even when a complete copy is here."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Download a model into the model cache, with a progress bar (from SHOEBOX_MODEL_SOURCE when set)."""
    from shoebox.ml.config import MLSettings
    from shoebox.ml.models.catalogue import lookup
    from shoebox.ml.models.download import ModelUnavailableError, fetch_model, is_complete

    settings = MLSettings()
    if lookup(name) is None:
        fail(f"unknown model {name!r}: `shoebox models` lists the known names")
    target = Path(settings.model_cache_dir).expanduser() / name
    if is_complete(target) and not force:
        if json_out:
            print_json({"name": name, "path": str(target), "fetched": False})
        else:
            out.print(f"{name} is already in {target} (use --force to fetch it again)")
        return
    if settings.offline:
        fail(f"SHOEBOX_OFFLINE is set: {name} cannot be downloaded")
    progress = Progress(
        TextColumn(f"[bold]{name}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=json_out,
    )
    task = progress.add_task("pull", total=None)

    def advance(done: int, total: int) -> None:
        if not progress.live.is_started:  # drawn from the first bytes copied: a refusal is one line
            progress.start()
        progress.update(task, completed=done, total=total)

    try:
        if settings.model_source is None:  # huggingface_hub draws its own per-file bars
            err.print(f"downloading {name} from {settings.model_repo_prefix}/{name} on the Hugging Face hub…")
            path = fetch_model(name, target, settings)
        else:
            try:
                path = fetch_model(name, target, settings, progress=advance)
            finally:
                if progress.live.is_started:
                    progress.stop()
    except ModelUnavailableError as exc:
        fail(exc.message)
    if json_out:
        print_json({"name": name, "path": str(path), "fetched": True})
    else:
        out.print(f"[green]{name}[/] is in {path}")
