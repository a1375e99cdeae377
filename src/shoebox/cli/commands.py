"""The library commands: ingest, search, similar, duplicates, status, collections, prune, store export, model make-test."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Any

import typer
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

from shoebox.cli.common import api_errors, app, collections_app, err, fail, model_app, out, print_json
from shoebox.cli.render import _counts, _show_hits, print_duplicate_tiers, print_job_summary
from shoebox.cli.services import connect
from shoebox.client import FINISHED, APIError, ShoeboxClient
from shoebox.query_syntax import QuerySyntaxError, QueryTerm, parse_query


class TestModelSize(str, Enum):
    tiny = "tiny"
    vit_b_32 = "vit-b-32"


class TestModelBuilder(str, Enum):
    onnx = "onnx"
    torch = "torch"


class TestModelFamily(str, Enum):
    openclip = "openclip"
    siglip = "siglip"
    mclip = "mclip"
    nllb = "nllb"


@model_app.command("make-test")
def model_make_test(
    size: TestModelSize = typer.Option(TestModelSize.tiny, help="tiny (tests) or vit-b-32 (benchmarks)."),
    out: Path = typer.Option(..., help="Folder to write the model into."),
    seed: int = typer.Option(0, help="Seed of the random weights."),
    builder: TestModelBuilder = typer.Option(
        TestModelBuilder.onnx,
        help="onnx (graphs written with the onnx package) or torch (needs the `dev` extra; openclip only).",
    ),
    family: TestModelFamily = typer.Option(
        TestModelFamily.openclip,
        help="The CLIP family whose folder, tokenizer and text inputs to write: "
        "openclip, siglip, mclip (XLM-R) or nllb.",
    ),
) -> None:
    """Write a RANDOM-WEIGHT model in the real on-disk layout."""
    if builder is TestModelBuilder.torch:
        if family is not TestModelFamily.openclip:
            fail(
                f"--builder torch writes openclip models only; use --builder onnx for --family {family.value}"
            )
        try:
            from shoebox.ml.models.testmodel import make_test_model
        except ImportError as exc:
            fail(f"--builder torch needs torch ({exc}); install shoebox\\[dev] or use --builder onnx")
        path = make_test_model(size.value, out, seed=seed)
    else:
        from shoebox.ml.models.onnx_testmodel import build_onnx_test_model

        path = build_onnx_test_model(size.value, out, seed=seed, family=family.value)
    typer.secho(
        f"wrote a random-weight test model to {path} — search results with it are meaningless",
        fg=typer.colors.YELLOW,
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


class SortOrder(str, Enum):
    relevance = "relevance"
    date = "date"
    newest = "-date"


_SORTS = {SortOrder.relevance: "relevance", SortOrder.date: "date_taken", SortOrder.newest: "-date_taken"}


@app.command(rich_help_panel="Library")
def search(
    query: str | None = typer.Argument(
        None,
        help='What to look for, in words; or a combined query: "2:dog + beach - people", '
        '"sunset - photo:~/x.jpg + id:UUID" (see the README).',
    ),
    not_texts: list[str] | None = typer.Option(
        None, "--not", help="Not like this text (repeatable; N:TEXT for a weight of -N)."
    ),
    like: list[str] | None = typer.Option(
        None, "--like", help="Like this photo file, uploaded (repeatable; N:PATH for a weight of N)."
    ),
    like_id: list[str] | None = typer.Option(
        None, "--like-id", help="Like this stored image (repeatable; N:ID for a weight of N)."
    ),
    weight: float = typer.Option(1.0, "--weight", "-w", help="Weight of the query argument's terms."),
    threshold: float | None = typer.Option(
        None, "--threshold", "--min-score", min=-1.0, max=1.0, help="Drop hits scoring below this."
    ),
    sort: SortOrder = typer.Option(
        SortOrder.relevance, "--sort", help="relevance, date (oldest first) or -date (newest first)."
    ),
    top_k: int | None = typer.Option(
        None, "--top-k", min=1, max=10_000, help="Date sorts: how many of the most relevant hits to order."
    ),
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
    """Search the library: words, photos like a given one, "not like", weights, a cutoff, by date."""
    terms = _search_terms(query, weight, not_texts or [], like or [], like_id or [])
    if not terms:
        fail("give a query, --like or --like-id", 2)
    uploads: list[tuple[str, bytes]] = []
    body_terms: list[dict[str, Any]] = []
    for term in terms:
        if term.kind == "photo":
            path = Path(term.value).expanduser()
            if not path.is_file():
                fail(f"no such photo: {path}", 2)
            body_terms.append({"image_upload": len(uploads), "weight": term.weight})
            uploads.append((path.name, path.read_bytes()))
        else:
            body_terms.append(term.as_api())
    filters = build_filters(taken_after, taken_before, camera_make, camera_model, formats, folder, gps, bbox)
    with api_errors(), connect() as api:
        answer = api.search_query(
            body_terms,
            uploads=uploads,
            limit=limit,
            offset=offset,
            filters=filters or None,
            score_threshold=threshold,
            sort=_SORTS[sort],
            top_k=top_k,
            collection=collection,
        )
    title = " ".join(f"{'−' if t.weight < 0 else '+'}{abs(t.weight):g}·{t.value}" for t in terms).lstrip("+")
    if answer.get("total") is not None:
        title += f" (by {sort.value}, {answer['total']} candidates)"
    _show_hits(answer, title, json_out, start=offset + 1)


def _search_terms(
    query: str | None, weight: float, not_texts: list[str], like: list[str], like_id: list[str]
) -> list[QueryTerm]:
    """The terms of the query argument (short form) and of the options, each option value with its
    optional `N:` weight prefix."""
    try:
        terms = [replace(t, weight=t.weight * weight) for t in parse_query(query)] if query else []
        for values, kind, sign in (
            (not_texts, "text", -1.0),
            (like, "photo", 1.0),
            (like_id, "image_id", 1.0),
        ):
            for value in values:
                w, rest = _weight_prefix(value)
                if kind == "photo" and Path(value).expanduser().exists():
                    w, rest = 1.0, value  # a file named "2:x.jpg" is a file, not a weight
                terms.append(QueryTerm(kind, rest, sign * w) if kind != "image_id" else _id_term(rest, w))
    except QuerySyntaxError as exc:
        fail(str(exc), 2)
    return terms


def _weight_prefix(value: str) -> tuple[float, str]:
    head, sep, rest = value.partition(":")
    if sep and rest:
        try:
            w = float(head)
        except ValueError:
            return 1.0, value
        if w == 0 or w != w:
            raise QuerySyntaxError(f"{value!r}: a weight of {head} means nothing")
        return w, rest
    return 1.0, value


def _id_term(value: str, w: float) -> QueryTerm:
    try:
        return QueryTerm("image_id", str(uuid.UUID(value)), w)
    except ValueError:
        raise QuerySyntaxError(f"not an image id: {value!r}") from None


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
    threshold: float = typer.Option(0.95, min=0.01, max=1.0, help="near: cosine similarity at or above."),
    phash_distance: int = typer.Option(
        6, "--phash-distance", min=0, max=16, help="same_picture: most bits two 64-bit hashes differ by."
    ),
    burst_seconds: float = typer.Option(
        2.0, "--burst-seconds", min=0.0, max=3600.0, help="bursts: most seconds between two shots."
    ),
    burst_threshold: float = typer.Option(
        0.90, "--burst-threshold", min=0.01, max=1.0, help="bursts: cosine similarity at or above."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the full answer (members, keep, thresholds)."),
) -> None:
    """Duplicates in tiers: exact (same bytes), same picture (re-encoded, resized, converted), near, bursts."""
    with api_errors(), connect() as api, err.status("looking for duplicates…"):
        # One neighbour search per photo: minutes on a big library, so no timeout.
        answer = api.duplicates(
            threshold=threshold,
            phash_distance=phash_distance,
            burst_seconds=burst_seconds,
            burst_threshold=burst_threshold,
            collection=collection,
        )
    if json_out:
        print_json(answer)
        return
    print_duplicate_tiers(answer)


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
def collections_create(
    name: str,
    model: str | None = typer.Option(
        None, "--model", help="Embed it with this hosted model (default: the ML service's first)."
    ),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Create an empty collection."""
    with api_errors(), connect() as api:
        answer = api.create_collection(name, model)
    if json_out:
        print_json(answer)
    else:
        out.print(
            f"created collection [bold]{name}[/]" + (f" with {answer.get('model_name')}" if model else "")
        )


def _show_migration(status: dict[str, Any]) -> None:
    colour = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(status["status"], "bold")
    out.print(
        f"[{colour}]{status['status']}[/]: {status['collection_name']} → {status['model']} "
        f"({status['done']}/{status['total']} photos; {status['from_files']} from their files, "
        f"{status['from_thumbnails']} from thumbnails, {status['failed']} failed)"
    )
    if status.get("message"):
        out.print(status["message"])


@collections_app.command("migrate")
def collections_migrate(
    name: str,
    model: str = typer.Option(..., "--model", help="The model to switch to (a hosted model's id or name)."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the migration to its end."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Re-embed a collection with another model, in the background: searches keep answering with
    the old model until the switch. Migrating back to the model it had is a rollback."""
    with api_errors(), connect() as api:
        status = api.migrate(name, model)
        if wait:
            progress = Progress(
                SpinnerColumn(),
                TextColumn(f"[bold]migrating {name}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=err,
                disable=json_out,
            )
            task = progress.add_task("migrate", total=None)

            def show(s: dict[str, Any]) -> None:
                progress.update(task, completed=s["done"], total=s["total"] or None)

            with progress:
                try:
                    status = api.follow_migration(name, poll_s=0.5, on_update=show)
                except KeyboardInterrupt:
                    progress.stop()
                    err.print(
                        "stopped following; the migration goes on (`shoebox collections cancel-migration` stops it)"
                    )
                    raise typer.Exit(130) from None
    if json_out:
        print_json(status)
    else:
        _show_migration(status)
    if status["status"] == "failed":
        raise typer.Exit(1)


@collections_app.command("migration")
def collections_migration(name: str, json_out: bool = typer.Option(False, "--json")) -> None:
    """The collection's last migration: progress and outcome."""
    with api_errors(), connect() as api:
        status = api.migration(name)
    print_json(status) if json_out else _show_migration(status)


@collections_app.command("cancel-migration")
def collections_cancel_migration(name: str, json_out: bool = typer.Option(False, "--json")) -> None:
    """Stop a migration; the collection keeps its model."""
    with api_errors(), connect() as api:
        status = api.cancel_migration(name)
    print_json(status) if json_out else _show_migration(status)


@collections_app.command("drop-model")
def collections_drop_model(name: str, model: str, json_out: bool = typer.Option(False, "--json")) -> None:
    """Delete a collection's kept embeddings by a model it no longer answers with (no rollback to it after)."""
    with api_errors(), connect() as api:
        answer = api.drop_model(name, model)
    print_json(answer) if json_out else out.print(f"dropped the {answer['dropped']} embeddings of {name}")


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
