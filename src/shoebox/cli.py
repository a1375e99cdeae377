"""The `shoebox` command line: talks to the services over HTTP, or starts them itself.

Every command speaks the HTTP API of the ingestion service at `SHOEBOX_URL` (with
`SHOEBOX_API_KEY`). When nothing answers there and the URL is on this machine, the command
starts both services itself on loopback with the embedded defaults and stops them at exit, so
`shoebox ingest ~/Photos` works with nothing running. Tables go to stdout, `--json` prints
the API's answer for scripts; progress, banners and errors go to stderr.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from shoebox.client import DEFAULT_URL, FINISHED, APIError, ShoeboxClient

TEST_MODEL_PREFIX = "TEST-RANDOM-WEIGHTS"

app = typer.Typer(
    help="Shoebox: a searchable library from folders of photos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Model folders (ONNX, Immich/OpenCLIP layout).", no_args_is_help=True)
app.add_typer(model_app, name="model", rich_help_panel="Services")
collections_app = typer.Typer(help="List, create, delete and select collections.")
app.add_typer(collections_app, name="collections", rich_help_panel="Library")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class TestModelSize(str, Enum):
    tiny = "tiny"
    vit_b_32 = "vit-b-32"


class TestModelBuilder(str, Enum):
    onnx = "onnx"
    torch = "torch"


@model_app.command("make-test")
def model_make_test(
    size: TestModelSize = typer.Option(TestModelSize.tiny, help="tiny (tests) or vit-b-32 (benchmarks)."),
    out: Path = typer.Option(..., help="Folder to write the model into."),
    seed: int = typer.Option(0, help="Seed of the random weights."),
    builder: TestModelBuilder = typer.Option(
        TestModelBuilder.onnx,
        help="onnx (graphs written with the onnx package) or torch (needs the `dev` extra).",
    ),
) -> None:
    """Write a RANDOM-WEIGHT model in the real on-disk layout."""
    if builder is TestModelBuilder.torch:
        try:
            from shoebox.ml.models.testmodel import make_test_model as build
        except ImportError as exc:
            fail(f"--builder torch needs torch ({exc}); install shoebox\\[dev] or use --builder onnx")
    else:
        from shoebox.ml.models.onnx_testmodel import build_onnx_test_model as build

    path = build(size.value, out, seed=seed)
    typer.secho(
        f"wrote a random-weight test model to {path} — search results with it are meaningless",
        fg=typer.colors.YELLOW,
    )


# ---------------------------------------------------------------- HTTP client


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


# ---------------------------------------------------------------- the model


TEST_MODEL_BANNER = (
    "[bold]RANDOM TEST MODEL — SEARCH RESULTS ARE MEANINGLESS[/]\n"
    "No real CLIP model is available, so Shoebox runs a model with random weights: every stage of the "
    "pipeline really runs, but the rankings are noise.\nFor real search set SHOEBOX_MODEL_DIR to a model "
    "folder, or let Shoebox download ViT-B-32__openai once while online."
)


def print_test_model_banner() -> None:
    err.print(Panel(TEST_MODEL_BANNER, title="WARNING", border_style="bold red", style="red"))


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


def warn_if_test_model(hits: list[dict[str, Any]]) -> None:
    if any(str((h.get("payload") or {}).get("model_name", "")).startswith(TEST_MODEL_PREFIX) for h in hits):
        print_test_model_banner()


# ---------------------------------------------------------------- local services


@dataclass
class LocalServices:
    url: str
    ml_url: str
    data_dir: Path
    log_dir: Path
    model_dir: Path
    processes: list[Any] = field(default_factory=list)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in {"127.0.0.1", "localhost", "::1"}


@contextmanager
def local_services(
    *,
    port: int | None = None,
    ml_port: int | None = None,
    allow: list[Path] | None = None,
    data_dir: Path | None = None,
) -> Iterator[LocalServices]:
    """Both services as child processes on loopback, healthy on entry, stopped on exit."""
    from shoebox.ingest.config import IngestSettings
    from shoebox.launcher import free_port, start_service

    model_env = prepare_model()
    settings = IngestSettings()
    data_dir = data_dir or settings.data_dir
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    roots = [str(p) for p in settings.ingest_roots] + [str(p) for p in (allow or [])]
    api_key = state.api_key or settings.api_key
    port = port if port and _port_free(port) else free_port()
    ml_port = ml_port if ml_port and _port_free(ml_port) else free_port()

    ml_env = {**model_env}
    ingest_env = {
        "SHOEBOX_DATA_DIR": str(data_dir),
        "SHOEBOX_ML_URL": f"http://127.0.0.1:{ml_port}",
        "SHOEBOX_ML_URLS": "",
        "SHOEBOX_INGEST_ROOTS": json.dumps(roots),
    }
    if api_key:
        ml_env["SHOEBOX_API_KEY"] = ingest_env["SHOEBOX_API_KEY"] = ingest_env["SHOEBOX_ML_API_KEY"] = api_key
    services = LocalServices(
        url=f"http://127.0.0.1:{port}",
        ml_url=f"http://127.0.0.1:{ml_port}",
        data_dir=data_dir,
        log_dir=log_dir,
        model_dir=Path(model_env["SHOEBOX_MODEL_DIR"]),
    )
    try:
        with err.status("starting the ML and ingestion services…"):
            ml = start_service("ml", port=ml_port, env=ml_env, log_path=log_dir / "ml.log")
            services.processes.append(ml)
            ingest = start_service("ingest", port=port, env=ingest_env, log_path=log_dir / "ingest.log")
            services.processes.append(ingest)
            try:
                ml.wait_healthy(timeout=600, require="model_loaded")
                ingest.wait_healthy(timeout=120)
            except (RuntimeError, TimeoutError) as exc:
                fail(f"{exc}\n(logs in {log_dir})")
        yield services
    finally:
        for process in reversed(services.processes):
            process.stop()


@contextmanager
def connect(allow: list[Path] | None = None) -> Iterator[ShoeboxClient]:
    """The API at SHOEBOX_URL, or — when nothing answers there on this machine — services of our own."""
    api = ShoeboxClient(state.url, state.api_key)
    try:
        if api.health() is not None:
            yield api
            return
    finally:
        api.close()
    if not _is_loopback(state.url):
        fail(f"no Shoebox service answers at {state.url}")
    err.print(f"No Shoebox service at {state.url}: starting one for this command (stopped at exit).")
    with local_services(port=urlsplit(state.url).port, allow=allow) as services:
        own = ShoeboxClient(services.url, state.api_key)
        try:
            yield own
        finally:
            own.close()


# ---------------------------------------------------------------- ingest


def _counts(job: dict[str, Any]) -> str:
    return (
        f"[green]{job.get('indexed', 0)} indexed[/] · {job.get('cached', 0)} cached · "
        f"{job.get('unchanged', 0)} unchanged · [red]{job.get('failed', 0)} failed[/]"
    )


def follow_job(api: ShoeboxClient, job_id: str, *, show_progress: bool) -> dict[str, Any]:
    """Poll a job until it ends, with a live bar; Ctrl-C cancels the job on the server."""
    started = time.monotonic()
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} files/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[counts]}"),
        console=err,
        disable=not show_progress,
        transient=False,
    )
    try:
        with progress:
            task = progress.add_task("ingest", total=None, rate=0.0, counts="")
            while True:
                job = api.get(f"/api/v1/ingest/status/{job_id}")
                done = job.get("processed_files", 0)
                elapsed = max(time.monotonic() - started, 1e-6)
                progress.update(
                    task,
                    description=job.get("status", "?"),
                    total=job.get("total_files") or None,
                    completed=done,
                    rate=done / elapsed,
                    counts=_counts(job),
                )
                if job.get("status") in FINISHED:
                    return job
                time.sleep(0.25)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted: cancelling job {job_id}…[/]")
        try:
            job = api.post(f"/api/v1/ingest/{job_id}/cancel")
        except APIError as exc:
            err.print(f"could not cancel: {exc}")
        raise typer.Exit(130) from None


def print_job_summary(job: dict[str, Any], elapsed: float | None = None) -> None:
    table = Table(title=f"job {job['job_id']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    status_style = {"completed": "green", "completed_with_errors": "yellow"}.get(job["status"], "red")
    table.add_row("status", f"[{status_style}]{job['status']}[/]")
    table.add_row("collection", job.get("collection_name", ""))
    table.add_row("folder", job.get("directory_path", ""))
    for key in ("total_files", "indexed", "cached", "unchanged", "failed"):
        table.add_row(key.replace("_", " "), str(job.get(key, 0)))
    if job.get("offline"):
        table.add_row("offline", f"[yellow]{job['offline']}[/]")
    if elapsed:
        table.add_row("time", f"{elapsed:.1f} s ({job.get('processed_files', 0) / elapsed:.1f} files/s)")
    out.print(table)
    for warning in job.get("warnings") or []:
        err.print(f"[yellow]warning {warning.get('code')}: {warning.get('message')}[/]")
    print_errors_by_code(job.get("errors") or [])


def print_errors_by_code(errors: list[dict[str, Any]]) -> None:
    if not errors:
        return
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for error in errors:
        grouped[error.get("code", "?")].append(error)
    table = Table(title="errors by code", title_justify="left")
    table.add_column("code", style="red")
    table.add_column("files", justify="right")
    table.add_column("examples")
    for code, items in sorted(grouped.items(), key=lambda kv: -len(kv[1])):
        examples = "\n".join(f"{Path(e['file']).name}: {e.get('message', '')}" for e in items[:3])
        table.add_row(code, str(len(items)), examples)
    out.print(table)


def run_ingest(
    api: ShoeboxClient, directory: Path, collection: str | None, *, show_progress: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {"directory_path": str(directory)}
    if collection:
        body["collection_name"] = collection
    try:
        started = api.post("/api/v1/ingest/", json=body)
    except APIError as exc:
        if exc.code == "ERR_PATH_NOT_ALLOWED":
            fail(
                f"the service at {api.url} does not allow {directory} (SHOEBOX_INGEST_ROOTS). Restart it with "
                f"`shoebox up --allow {directory}`, or stop it and let `shoebox ingest` start its own.",
                2,
            )
        raise
    return follow_job(api, started["job_id"], show_progress=show_progress)


@app.command(rich_help_panel="Library")
def ingest(
    directory: Path = typer.Argument(..., help="Folder of photos to add (searched recursively)."),
    collection: str | None = typer.Option(
        None, "--collection", "-c", help="Collection (default: the selected one)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the finished job as JSON."),
) -> None:
    """Index a folder: live progress, a summary, errors by code; exit 1 when files failed."""
    directory = directory.expanduser().resolve()
    if not directory.is_dir():
        fail(f"not a folder: {directory}", 2)
    started = time.monotonic()
    with api_errors(), connect(allow=[directory]) as api:
        job = run_ingest(api, directory, collection, show_progress=not json_out)
    if json_out:
        print_json(job)
    else:
        print_job_summary(job, time.monotonic() - started)
    if job["status"] != "completed" or job.get("failed", 0):
        raise typer.Exit(1)


# ---------------------------------------------------------------- search


def _hit_rows(hits: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("file")
    table.add_column("taken")
    table.add_column("camera")
    table.add_column("path", overflow="fold")
    table.add_column("id", style="dim")
    for rank, hit in enumerate(hits, 1):
        payload = hit.get("payload") or {}
        make, model = payload.get("camera_make") or "", payload.get("camera_model") or ""
        # Many cameras repeat the make in the model ("Canon" + "Canon EOS R5").
        camera = (
            model if make and model.lower().startswith(make.split()[0].lower()) else f"{make} {model}".strip()
        )
        score = hit.get("score")
        table.add_row(
            str(rank),
            f"{score:.3f}" if isinstance(score, (int, float)) else "",
            hit.get("filename", ""),
            (payload.get("taken_at") or "")[:19],
            camera,
            hit.get("path", ""),
            hit.get("id", "")[:8],
        )
    return table


def build_filters(
    taken_after: str | None,
    taken_before: str | None,
    camera_make: list[str] | None,
    camera_model: list[str] | None,
    formats: list[str] | None,
    folder: Path | None,
    gps: bool | None,
    bbox: str | None,
) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    if taken_after:
        filters["taken_after"] = taken_after
    if taken_before:
        filters["taken_before"] = taken_before
    if camera_make:
        filters["camera_make"] = camera_make
    if camera_model:
        filters["camera_model"] = camera_model
    if formats:
        filters["format"] = formats
    if folder is not None:
        filters["folder"] = str(folder.expanduser().resolve())
    if gps is not None:
        filters["has_gps"] = gps
    if bbox:
        try:
            min_lat, min_lon, max_lat, max_lon = (float(x) for x in bbox.split(","))
        except ValueError:
            fail("--bbox takes MIN_LAT,MIN_LON,MAX_LAT,MAX_LON", 2)
        filters["gps_bbox"] = {"min_lat": min_lat, "min_lon": min_lon, "max_lat": max_lat, "max_lon": max_lon}
    return filters


@app.command(rich_help_panel="Library")
def search(
    query: str = typer.Argument(..., help="What to look for, in words."),
    limit: int = typer.Option(10, "--limit", "-n", min=1, max=1000),
    offset: int = typer.Option(0, min=0),
    collection: str | None = typer.Option(None, "--collection", "-c"),
    taken_after: str | None = typer.Option(None, "--after", help="Taken on/after (ISO date or date-time)."),
    taken_before: str | None = typer.Option(
        None, "--before", help="Taken on/before (ISO date or date-time)."
    ),
    camera_make: list[str] | None = typer.Option(None, "--make", help="Camera make (repeatable)."),
    camera_model: list[str] | None = typer.Option(None, "--camera-model", help="Camera model (repeatable)."),
    formats: list[str] | None = typer.Option(
        None, "--format", help="File format: jpg, png, heic, dng… (repeatable)."
    ),
    folder: Path | None = typer.Option(None, "--folder", help="Only photos under this folder."),
    gps: bool | None = typer.Option(None, "--gps/--no-gps", help="Only photos with / without GPS."),
    bbox: str | None = typer.Option(None, "--bbox", help="MIN_LAT,MIN_LON,MAX_LAT,MAX_LON"),
    json_out: bool = typer.Option(False, "--json", help="Print the API's JSON answer."),
) -> None:
    """Search the library by text."""
    body: dict[str, Any] = {"query": query, "limit": limit, "offset": offset}
    if collection:
        body["collection_name"] = collection
    filters = build_filters(taken_after, taken_before, camera_make, camera_model, formats, folder, gps, bbox)
    if filters:
        body["filters"] = filters
    with api_errors(), connect() as api:
        answer = api.post("/api/v1/search/text", json=body)
    _show_hits(answer, f"“{query}”", json_out)


def _show_hits(answer: dict[str, Any], title: str, json_out: bool) -> None:
    hits = answer["results"]
    warn_if_test_model(hits)
    if json_out:
        print_json(answer)
    else:
        out.print(_hit_rows(hits, f"{title} — {len(hits)} results"))


@app.command(rich_help_panel="Library")
def similar(
    target: str = typer.Argument(..., help="A photo file to upload (any format, RAW too), or an image id."),
    limit: int = typer.Option(10, "--limit", "-n", min=1, max=1000),
    collection: str | None = typer.Option(None, "--collection", "-c"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Photos that look like a given photo."""
    path = Path(target).expanduser()
    with api_errors(), connect() as api:
        if path.is_file():
            form: dict[str, Any] = {"limit": str(limit)}
            if collection:
                form["collection_name"] = collection
            with path.open("rb") as f:
                answer = api.post("/api/v1/search/image", files={"file": (path.name, f)}, data=form)
        else:
            try:
                image_id = str(uuid.UUID(target))
            except ValueError:
                fail(f"{target} is neither a file nor an image id", 2)
            params: dict[str, Any] = {"limit": limit}
            if collection:
                params["collection_name"] = collection
            answer = api.get(f"/api/v1/images/{image_id}/similar", params=params)
    _show_hits(answer, f"like {target}", json_out)


@app.command(rich_help_panel="Library")
def duplicates(
    collection: str | None = typer.Option(None, "--collection", "-c"),
    threshold: float = typer.Option(0.95, min=0.01, max=1.0, help="Cosine similarity for near-duplicates."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Exact duplicates (same bytes, several paths) and near-duplicates (resized, re-encoded…)."""
    params: dict[str, Any] = {"threshold": threshold}
    if collection:
        params["collection_name"] = collection
    with api_errors(), connect() as api, err.status("looking for duplicates…"):
        # One neighbour search per photo: minutes on a big library in embedded mode, so no timeout.
        answer = api.get("/api/v1/duplicates", params=params, timeout=None)
    if json_out:
        print_json(answer)
        return
    exact = Table(title=f"exact duplicates: {len(answer['exact'])}", title_justify="left")
    exact.add_column("id", style="dim")
    exact.add_column("paths", overflow="fold")
    for group in answer.get("exact_groups") or [{"id": g[0], "paths": []} for g in answer["exact"]]:
        exact.add_row(group["id"][:8], "\n".join(group.get("paths", [])))
    out.print(exact)
    near = Table(
        title=f"near-duplicate groups (cosine ≥ {threshold}): {len(answer['near'])}", title_justify="left"
    )
    near.add_column("group", justify="right")
    near.add_column("photos", overflow="fold")
    for number, group in enumerate(answer.get("near_groups") or [], 1):
        near.add_row(str(number), "\n".join(h.get("path", h.get("id", "")) for h in group))
    out.print(near)


# ---------------------------------------------------------------- status and collections


@app.command(rich_help_panel="Services")
def status(
    job_id: str | None = typer.Argument(None, help="A job id; without it, the service and its recent jobs."),
    limit: int = typer.Option(10, "--limit", "-n", help="Jobs shown."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """The service's health and recent ingest jobs, or one job in detail."""
    with api_errors(), connect() as api:
        if job_id:
            job = api.get(f"/api/v1/ingest/status/{job_id}")
            if json_out:
                print_json(job)
                return
            print_job_summary(job)
            for line in (job.get("logs") or [])[-10:]:
                out.print(f"[dim]{line}[/]", highlight=False)
            return
        health = api.health(timeout=10.0) or {}
        jobs = api.get("/api/v1/ingest/jobs")
        url = api.url
    if json_out:
        print_json({"url": url, "health": health, "jobs": jobs[:limit]})
        return
    ml = health.get("ml") or {}
    out.print(
        f"[bold]{url}[/] · vector db: {health.get('vector_db', '?')} · ML reachable: {ml.get('reachable')} "
        f"(safe batch {ml.get('safe_clip_batch')})",
        highlight=False,
    )
    table = Table(title=f"recent jobs ({min(limit, len(jobs))} of {len(jobs)})", title_justify="left")
    for column in (
        "job",
        "status",
        "collection",
        "folder",
        "files",
        "indexed",
        "cached",
        "unchanged",
        "failed",
        "created",
    ):
        table.add_column(column)
    for job in jobs[:limit]:
        table.add_row(
            job["job_id"],
            job["status"],
            job.get("collection_name", ""),
            job.get("directory_path", ""),
            f"{job.get('processed_files', 0)}/{job.get('total_files', 0)}",
            *(str(job.get(k, 0)) for k in ("indexed", "cached", "unchanged", "failed")),
            (job.get("created_at") or "")[:19],
        )
    out.print(table)


def _collection_rows(api: ShoeboxClient) -> list[dict[str, Any]]:
    rows = []
    for name in api.get("/api/v1/collections"):
        try:
            rows.append(api.get(f"/api/v1/collections/{name}/info"))
        except APIError:
            rows.append({"name": name})
    return rows


@collections_app.callback(invoke_without_command=True)
def collections_default(ctx: typer.Context, json_out: bool = typer.Option(False, "--json")) -> None:
    """Without a subcommand: the list."""
    if ctx.invoked_subcommand is None:
        collections_list(json_out)


@collections_app.command("list")
def collections_list(json_out: bool = typer.Option(False, "--json")) -> None:
    """Every collection with its size and model."""
    with api_errors(), connect() as api:
        rows = _collection_rows(api)
    if json_out:
        print_json(rows)
        return
    table = Table(title="collections", title_justify="left")
    for column in ("name", "photos", "model", "dim", "created", "selected"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.get("name", ""),
            str(row.get("points_count", "")),
            str(row.get("model_name") or ""),
            str(row.get("embedding_dim") or ""),
            str(row.get("created_at") or "")[:19],
            "✓" if row.get("selected") else "",
        )
    out.print(table)


@collections_app.command("create")
def collections_create(name: str, json_out: bool = typer.Option(False, "--json")) -> None:
    """Create an empty collection."""
    with api_errors(), connect() as api:
        answer = api.post("/api/v1/collections", json={"collection_name": name})
    if json_out:
        print_json(answer)
    else:
        out.print(f"created collection [bold]{name}[/]")


@collections_app.command("delete")
def collections_delete(
    name: str,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Delete a collection and its vectors (the photos on disk are untouched)."""
    if not yes and not json_out:
        typer.confirm(f"Delete collection {name!r} and its index?", abort=True)
    with api_errors(), connect() as api:
        answer = api.delete(f"/api/v1/collections/{name}")
    if json_out:
        print_json(answer)
    else:
        out.print(f"deleted collection [bold]{name}[/]")


@collections_app.command("select")
def collections_select(name: str, json_out: bool = typer.Option(False, "--json")) -> None:
    """Make a collection the default of searches and ingests."""
    with api_errors(), connect() as api:
        answer = api.post("/api/v1/collections/select", json={"collection_name": name})
    if json_out:
        print_json(answer)
    else:
        out.print(f"selected collection [bold]{name}[/]")


@app.command(rich_help_panel="Library")
def prune(
    collection: str | None = typer.Option(
        None, "--collection", "-c", help="Collection (default: the selected one)."
    ),
    folder: Path | None = typer.Option(None, "--folder", help="Only the offline files below this folder."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Remove offline files from the index: files an ingest found missing in bulk (an unmounted
    share, an emptied folder) are kept, marked offline, until they come back or you prune them."""
    with api_errors(), connect() as api:
        name = collection or next((r["name"] for r in _collection_rows(api) if r.get("selected")), "shoebox")
        info = api.get(f"/api/v1/collections/{name}/info")
        if not yes and not json_out:
            typer.confirm(
                f"Remove {info.get('offline_count', 0)} offline files of {name!r}"
                + (f" below {folder}" if folder else "")
                + " from the index?",
                abort=True,
            )
        body = {"directory_path": str(folder.expanduser().absolute())} if folder else {}
        answer = api.post(f"/api/v1/collections/{name}/prune", json=body)
    if json_out:
        print_json(answer)
    else:
        out.print(
            f"pruned {answer['pruned_files']} offline files from [bold]{name}[/] "
            f"({answer['deleted_points']} photos left the index)"
        )


# ---------------------------------------------------------------- the vector store


store_app = typer.Typer(
    help="The vector store of a data dir: move a library to a Qdrant server.", no_args_is_help=True
)
app.add_typer(store_app, name="store", rich_help_panel="Library")


def _export_next_step(to: str | None, api_key: str | None, prefix: str, data_dir: Path) -> str:
    if to is None:
        return "the points are in a qdrant-client local-mode folder (the stand-in of a server in tests)"
    settings = f"SHOEBOX_QDRANT_URL={to}" + (" (and SHOEBOX_QDRANT_API_KEY)" if api_key else "")
    if prefix != "shoebox__":
        settings += f", SHOEBOX_QDRANT_PREFIX={prefix}"
    return (
        f"set {settings} and restart, with the same data dir ({data_dir}): the library is served from the "
        "server. The embedded store in the data dir is left as it was."
    )


@store_app.command("export")
def store_export(
    to: str | None = typer.Option(
        None, "--to", metavar="URL", help="The Qdrant server (or cluster) to copy to."
    ),
    collections: list[str] | None = typer.Option(
        None, "--collection", "-c", metavar="NAME", help="Only this collection (repeatable); default: all."
    ),
    qdrant_api_key: str | None = typer.Option(
        None,
        "--api-key",
        metavar="KEY",
        envvar="SHOEBOX_QDRANT_API_KEY",
        help="API key of the Qdrant server.",
    ),
    prefix: str = typer.Option(
        "shoebox__",
        "--prefix",
        metavar="PREFIX",
        envvar="SHOEBOX_QDRANT_PREFIX",
        help="Prefix of Shoebox's collection names on the server (the service's SHOEBOX_QDRANT_PREFIX).",
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", metavar="DIR", help="The library's data dir (default: SHOEBOX_DATA_DIR)."
    ),
    to_local_path: Path | None = typer.Option(
        None,
        "--to-local-path",
        hidden=True,
        help="Tests: a qdrant-client local-mode folder standing in for the server (the same client calls).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Copy the embedded store of a data dir to a Qdrant server: every point, ids, vectors, payloads.

    Run it with the services stopped (it takes the data dir's lock). Copying again is harmless
    (the same points are written again); the embedded store is left as it was.
    """
    import warnings

    from shoebox.ingest.config import IngestSettings
    from shoebox.ingest.context import DataDirInUse, lock_data_dir
    from shoebox.protocol import ShoeboxError
    from shoebox.store import open_store
    from shoebox.store.export import check_target, copy_store
    from shoebox.store.server import ServerStore

    if (to is None) == (to_local_path is None):
        fail("give the server to copy to: --to URL", 2)
    settings = IngestSettings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir.expanduser()})
    # The embedded store whatever SHOEBOX_STORE / SHOEBOX_QDRANT_URL say: that is what is exported.
    settings = settings.model_copy(update={"store": "edge"})
    data = settings.data_dir
    if not data.is_dir():
        fail(f"no library at {data} (see --data-dir / SHOEBOX_DATA_DIR)", 2)
    try:
        lock = lock_data_dir(data)
    except DataDirInUse as exc:
        fail(
            f"{exc.message}.\nThe store cannot be exported while the service uses it: stop the Shoebox "
            "services first (Ctrl-C on `shoebox up`, or stop `python -m shoebox.ingest`), then export again."
        )
    started = time.monotonic()
    try:
        source = open_store(settings, background_index=False)
        try:
            if to_local_path is not None:
                target = ServerStore(path=to_local_path.expanduser(), prefix=prefix)
            else:
                # The client checks the server's version in a thread of its own and warns when it
                # cannot: an unreachable server is reported below, in one line.
                warnings.filterwarnings("ignore", "Failed to obtain server version", UserWarning)
                target = ServerStore(url=to, api_key=qdrant_api_key, prefix=prefix)
            try:
                try:
                    target.list_collections()
                except ShoeboxError as exc:
                    fail(f"cannot use the Qdrant server at {target.where}: {exc.message}")
                names = list(dict.fromkeys(collections or source.list_collections()))
                if not names:
                    fail(f"nothing to export: the store in {data} holds no collection", 2)
                unknown = [n for n in names if not source.collection_exists(n)]
                if unknown:
                    have = ", ".join(source.list_collections()) or "none"
                    fail(f"no collection {', '.join(map(repr, unknown))} in {data} (it has: {have})", 2)
                for name in names:  # a conflict refuses before the progress bar, not half-way
                    check_target(source, target, name)
                progress = Progress(
                    SpinnerColumn(),
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("points"),
                    TimeElapsedColumn(),
                    TextColumn("ETA"),
                    TimeRemainingColumn(),
                    console=err,
                    disable=json_out,
                )
                with progress:
                    tasks = {n: progress.add_task(n, total=source.count(n), start=False) for n in names}

                    def step(name: str, done: int, total: int) -> None:
                        if not done:
                            progress.start_task(tasks[name])
                        progress.update(tasks[name], completed=done, total=total)

                    reports = copy_store(source, target, names, progress=step)
                where_from, where_to = source.describe(), target.describe()
            finally:
                target.close()
        finally:
            source.close()
    except ShoeboxError as exc:
        fail(f"{exc.code.value}: {exc.message}")
    finally:
        lock.close()
    elapsed = time.monotonic() - started
    next_step = _export_next_step(to, qdrant_api_key, prefix, data)
    if json_out:
        print_json(
            {
                "source": where_from,
                "target": where_to,
                "collections": [
                    {
                        "name": r.name,
                        "copied": r.copied,
                        "source_count": r.source_count,
                        "target_count": r.target_count,
                        "seconds": round(r.seconds, 3),
                    }
                    for r in reports
                ],
                "seconds": round(elapsed, 3),
                "next_step": next_step,
            }
        )
        return
    table = Table(
        title=f"exported {data} → {where_to.get('location')} (prefix {prefix!r})", title_justify="left"
    )
    for column in ("collection", "points copied", "on the target", "seconds", "points/s"):
        table.add_column(column, justify="left" if column == "collection" else "right")
    for r in reports:
        table.add_row(r.name, str(r.copied), str(r.target_count), f"{r.seconds:.1f}", f"{r.rate:.0f}")
    out.print(table)
    for r in reports:
        if r.target_count > r.source_count:
            err.print(
                f"[yellow]{r.name}: the target holds {r.target_count - r.source_count} more points than the "
                "source (left there by an earlier export and deleted here since)[/]",
                highlight=False,
            )
    out.print(f"Next: {next_step}", highlight=False)


# ---------------------------------------------------------------- up and demo


def _ui_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("streamlit") is not None


@app.command(rich_help_panel="Services")
def up(
    ui: bool = typer.Option(False, "--ui", help="Also start the admin UI (needs shoebox[ui])."),
    allow: list[Path] | None = typer.Option(
        None, "--allow", help="A folder clients may ingest (repeatable)."
    ),
    ml_port: int = typer.Option(8001, help="Port of the ML service."),
    ui_port: int = typer.Option(8501, help="Port of the admin UI."),
) -> None:
    """Start both services on loopback and keep them running until Ctrl-C."""
    api = ShoeboxClient(state.url, state.api_key)
    already = api.health()
    api.close()
    if already is not None:
        out.print(f"Shoebox is already running at [bold]{state.url}[/]")
        return
    if not _is_loopback(state.url):
        fail(f"`shoebox up` starts services on this machine; SHOEBOX_URL={state.url} is not loopback", 2)
    roots = [p.expanduser().resolve() for p in allow or []]
    # Ctrl-C — even when started from a shell that ignores SIGINT in background jobs — and SIGTERM
    # (systemd, docker stop) both end the services cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    ui_process = None
    try:
        with local_services(port=urlsplit(state.url).port or 8002, ml_port=ml_port, allow=roots) as services:
            table = Table(title="Shoebox is up", show_header=False, title_justify="left")
            table.add_column(style="bold")
            table.add_column()
            table.add_row("API", services.url)
            table.add_row("API docs", services.url + "/docs")
            table.add_row("ML service", services.ml_url)
            table.add_row("data", str(services.data_dir))
            table.add_row("logs", str(services.log_dir))
            if roots:
                table.add_row("ingest roots", "\n".join(map(str, roots)))
            if ui:
                ui_process = _start_admin_ui(services.url, ui_port, services.log_dir, services.ml_url)
                if ui_process is not None:
                    table.add_row("admin UI", f"http://127.0.0.1:{ui_port}")
            out.print(table)
            if services.url != state.url:
                out.print(f"[yellow]port taken: export SHOEBOX_URL={services.url}[/]")
            out.print("Press Ctrl-C to stop.")
            sys.stdout.flush()  # a pipe or a service log sees the URLs now, not at exit
            while True:
                for process in services.processes:
                    if process.proc.poll() is not None:
                        fail(
                            f"the {process.kind} service stopped (exit {process.proc.returncode}); see {services.log_dir}"
                        )
                time.sleep(0.5)
    except KeyboardInterrupt:
        err.print("stopping…")
    finally:
        if ui_process is not None and ui_process.poll() is None:
            ui_process.terminate()
            ui_process.wait(10)
    err.print("stopped.")


def _interrupt(*_: Any) -> NoReturn:
    raise KeyboardInterrupt


def _start_admin_ui(url: str, port: int, log_dir: Path, ml_url: str | None = None) -> Any:
    from shoebox.admin import launch

    if not _ui_available():
        err.print(
            "[yellow]the admin UI is not available in this install (needs shoebox\\[ui]); skipping it[/]"
        )
        return None
    log = open(log_dir / "admin.log", "ab")  # noqa: SIM115 - lives with the child
    return launch(url, state.api_key, port, ml_url=ml_url, stdout=log, stderr=subprocess.STDOUT)


@app.command(rich_help_panel="Services")
def ui(
    port: int = typer.Option(8501, help="Port of the admin UI."),
    ml_url: str = typer.Option(
        "http://127.0.0.1:8001", envvar="SHOEBOX_ML_URL", help="The ML service (shown on the Services page)."
    ),
) -> None:
    """Start the admin UI alone against SHOEBOX_URL, until Ctrl-C."""
    from shoebox.admin import launch

    if not _ui_available():
        fail("the admin UI needs the `ui` extra: pip install 'shoebox[ui]'", 2)
    process = launch(state.url, state.api_key, port, ml_url=ml_url)
    out.print(f"admin UI: [bold]http://127.0.0.1:{port}[/] (against {state.url}); Ctrl-C to stop")
    sys.stdout.flush()
    try:
        process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait(10)


DEMO_QUERIES = ["a beach at sunset", "a city street at night", "a forest with a lake"]


@app.command(rich_help_panel="Start here")
def demo(
    directory: Path | None = typer.Argument(
        None, help="Your own folder; default: a generated sample folder."
    ),
    queries: list[str] | None = typer.Option(None, "--query", "-q", help="Search text (repeatable)."),
    limit: int = typer.Option(5, "--limit", "-n", min=1, max=100),
) -> None:
    """The whole job in one command: services up, a folder ingested, searches run, results printed."""
    from shoebox.ingest.config import IngestSettings
    from shoebox.settings_common import default_cache_dir

    if directory is None:
        from shoebox.samples import write_sample_library

        directory = default_cache_dir() / "demo-photos"
        with err.status("writing a sample folder of photos…"):
            files = write_sample_library(directory)
        err.print(f"sample folder: {directory} ({len(files)} files)")
    directory = directory.expanduser().resolve()
    if not directory.is_dir():
        fail(f"not a folder: {directory}", 2)
    # Its own data dir: the demo must not lock or mix with a library that `shoebox up` serves.
    data_dir = IngestSettings().data_dir / "demo"
    with api_errors(), local_services(allow=[directory], data_dir=data_dir) as services:
        api = ShoeboxClient(services.url, state.api_key)
        out.rule("ingest")
        started = time.monotonic()
        job = run_ingest(api, directory, "demo", show_progress=True)
        print_job_summary(job, time.monotonic() - started)
        for query in queries or DEMO_QUERIES:
            out.rule(f"search: {query}")
            answer = api.post(
                "/api/v1/search/text", json={"query": query, "limit": limit, "collection_name": "demo"}
            )
            out.print(_hit_rows(answer["results"], f"“{query}”"))
        dupes = api.get("/api/v1/duplicates", params={"collection_name": "demo"})
        out.rule("duplicates")
        out.print(
            f"{len(dupes['exact'])} photo(s) stored under several paths, {len(dupes['near'])} near-duplicate group(s)"
        )
        for group in dupes.get("exact_groups", []):
            out.print("  same bytes: " + ", ".join(group["paths"]), highlight=False)
        for hits in dupes.get("near_groups", []):
            out.print("  look alike: " + ", ".join(h["path"] for h in hits), highlight=False)
        api.close()
        test_model = is_test_model_dir(services.model_dir)
    if test_model:
        print_test_model_banner()
    out.print(
        f"\nDone. The demo library lives in {data_dir}. For your own library: "
        '[bold]shoebox up --allow ~/Pictures[/] then [bold]shoebox ingest ~/Pictures[/] and [bold]shoebox search "…"[/].'
    )


if __name__ == "__main__":
    app()
