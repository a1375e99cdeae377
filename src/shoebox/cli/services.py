"""Local services: starting both services on loopback when nothing answers, `up`, `ui` and `demo`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import typer
from rich.table import Table

from shoebox.binding import connect_host, is_loopback
from shoebox.cli.common import (
    api_errors,
    app,
    err,
    fail,
    host_option,
    insecure_option,
    is_test_model_dir,
    out,
    prepare_model,
    print_test_model_banner,
    refuse_open_bind,
    state,
)
from shoebox.cli.render import _hit_rows, print_duplicate_tiers, print_job_summary
from shoebox.client import ShoeboxClient


@dataclass
class LocalServices:
    url: str
    ml_url: str
    data_dir: Path
    log_dir: Path
    model_dir: Path
    processes: list[Any] = field(default_factory=list)


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        try:
            s.bind((host, port))
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
    host: str = "127.0.0.1",
    insecure: bool = False,
) -> Iterator[LocalServices]:
    """Both services as child processes, healthy on entry, stopped on exit.

    The ingestion service listens on `host`; the ML service always on loopback (only the
    ingestion service calls it). `url` is where this machine reaches the ingestion service.
    """
    from shoebox.ingest.config import IngestSettings
    from shoebox.launcher import free_port, start_service

    model_env = prepare_model()
    settings = IngestSettings()
    data_dir = data_dir or settings.data_dir
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    roots = [str(p) for p in settings.ingest_roots] + [str(p) for p in (allow or [])]
    api_key = state.api_key or settings.api_key
    port = port if port and _port_free(port, host) else free_port()
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
        url=f"http://{connect_host(host)}:{port}",
        ml_url=f"http://127.0.0.1:{ml_port}",
        data_dir=data_dir,
        log_dir=log_dir,
        model_dir=Path(model_env["SHOEBOX_MODEL_DIR"]),
    )
    try:
        with err.status("starting the ML and ingestion services…"):
            ml = start_service("ml", port=ml_port, env=ml_env, log_path=log_dir / "ml.log")
            services.processes.append(ml)
            ingest = start_service(
                "ingest", host=host, port=port, env=ingest_env, log_path=log_dir / "ingest.log", insecure=insecure
            )
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
    host: str = host_option("the ingestion service (and the admin UI with --ui)"),
    insecure: bool = insecure_option(),
) -> None:
    """Start both services (on loopback unless --host) and keep them running until Ctrl-C.

    The ML service always listens on loopback: only the ingestion service calls it.
    """
    from shoebox.ingest.config import IngestSettings

    keyed = bool(state.api_key or IngestSettings().api_key)
    refuse_open_bind(
        host,
        secret_set=keyed,
        insecure=insecure,
        what="the ingestion service",
        secret="SHOEBOX_API_KEY",
    )
    if ui:
        refuse_open_bind(
            host, secret_set=_ui_password_set(), insecure=insecure, what="the admin UI", secret="SHOEBOX_UI_PASSWORD"
        )
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
        with local_services(
            port=urlsplit(state.url).port or 8002, ml_port=ml_port, allow=roots, host=host, insecure=insecure
        ) as services:
            table = Table(title="Shoebox is up", show_header=False, title_justify="left")
            table.add_column(style="bold")
            table.add_column()
            table.add_row("API", services.url)
            if not is_loopback(host):
                table.add_row("listening on", f"{host} (X-API-Key: {'required' if keyed else 'NONE, --insecure'})")
            table.add_row("API docs", services.url + "/docs")
            table.add_row("ML service", services.ml_url)
            table.add_row("data", str(services.data_dir))
            table.add_row("logs", str(services.log_dir))
            if roots:
                table.add_row("ingest roots", "\n".join(map(str, roots)))
            if ui:
                ui_process = _start_admin_ui(
                    services.url, ui_port, services.log_dir, services.ml_url, host=host, insecure=insecure
                )
                if ui_process is not None:
                    table.add_row("admin UI", f"http://{connect_host(host)}:{ui_port}")
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


def _ui_password_set() -> bool:
    import os

    return bool(os.environ.get("SHOEBOX_UI_PASSWORD"))


def _start_admin_ui(
    url: str, port: int, log_dir: Path, ml_url: str | None = None, *, host: str = "127.0.0.1", insecure: bool = False
) -> Any:
    from shoebox.admin import launch

    if not _ui_available():
        err.print(
            "[yellow]the admin UI is not available in this install (needs shoebox\\[ui]); skipping it[/]"
        )
        return None
    log = open(log_dir / "admin.log", "ab")  # noqa: SIM115 - lives with the child
    return launch(
        url,
        state.api_key,
        port,
        ml_url=ml_url,
        address=host,
        insecure=insecure,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@app.command(rich_help_panel="Services")
def ui(
    port: int = typer.Option(8501, help="Port of the admin UI."),
    ml_url: str = typer.Option(
        "http://127.0.0.1:8001", envvar="SHOEBOX_ML_URL", help="The ML service (shown on the Services page)."
    ),
    host: str = host_option("the admin UI"),
    insecure: bool = insecure_option(),
) -> None:
    """Start the admin UI alone against SHOEBOX_URL, until Ctrl-C.

    Set SHOEBOX_UI_PASSWORD to ask for a password before any page (needed beyond loopback)."""
    from shoebox.admin import launch

    refuse_open_bind(
        host, secret_set=_ui_password_set(), insecure=insecure, what="the admin UI", secret="SHOEBOX_UI_PASSWORD"
    )
    if not _ui_available():
        fail("the admin UI needs the `ui` extra: pip install 'shoebox[ui]'", 2)
    # SIGTERM too (systemd, docker stop, a test): without it this process dies and Streamlit runs on.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    process = launch(state.url, state.api_key, port, ml_url=ml_url, address=host, insecure=insecure)
    out.print(f"admin UI: [bold]http://{connect_host(host)}:{port}[/] (against {state.url}); Ctrl-C to stop")
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
        from shoebox.cli.commands import run_ingest  # commands import this module

        job = run_ingest(api, directory, "demo", show_progress=True)
        print_job_summary(job, time.monotonic() - started)
        for query in queries or DEMO_QUERIES:
            out.rule(f"search: {query}")
            answer = api.post(
                "/api/v1/search/text", json={"query": query, "limit": limit, "collection_name": "demo"}
            )
            out.print(_hit_rows(answer["results"], f"“{query}”"))
        dupes = api.duplicates(collection="demo")
        out.rule("duplicates")
        print_duplicate_tiers(dupes)
        api.close()
        test_model = is_test_model_dir(services.model_dir)
    if test_model:
        print_test_model_banner()
    out.print(
        f"\nDone. The demo library lives in {data_dir}. For your own library: "
        '[bold]shoebox up --allow ~/Pictures[/] then [bold]shoebox ingest ~/Pictures[/] and [bold]shoebox search "…"[/].'
    )
