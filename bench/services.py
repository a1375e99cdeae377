"""The two services as real processes (the way a user runs them), jobs over HTTP (through the one
client of the API, `shoebox.client`), and memory sampling."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil

from shoebox.client import ShoeboxClient
from shoebox.launcher import ServiceProcess, start_service
from shoebox.protocol import Job


@dataclass
class Workspace:
    """Where one run's services keep their state: a temp dir, so nothing touches the user's data."""

    root: Path
    corpus_root: Path
    probe_cache: Path

    def base_env(self) -> dict[str, str]:
        return {
            "XDG_CACHE_HOME": str(self.root / "xdg-cache"),
            "XDG_DATA_HOME": str(self.root / "xdg-data"),
            "SHOEBOX_OFFLINE": "1",
            "SHOEBOX_API_KEY": "",
            "SHOEBOX_LOG_LEVEL": "WARNING",
        }


def start_ml(
    ws: Workspace, model_dir: Path | list[Path], name: str, timeout: float = 600.0
) -> tuple[ServiceProcess, float]:
    """Start the ML service on `model_dir` (a list: several models, `SHOEBOX_MODELS`, the first the
    default, each its own lane and probe); returns it and the seconds until it answered model_loaded."""
    models = {"SHOEBOX_MODELS": ",".join(str(d) for d in model_dir)} if isinstance(model_dir, list) else {}
    env = {
        **ws.base_env(),
        "SHOEBOX_MODEL_DIR": str(model_dir[0] if isinstance(model_dir, list) else model_dir),
        **models,
        # The safe-batch probe is cached per (model, device, runtime): the first run pays for it once.
        "SHOEBOX_PROBE_CACHE_DIR": str(ws.probe_cache),
    }
    t0 = time.monotonic()
    svc = start_service("ml", env=env, log_path=ws.root / f"{name}.log")
    try:
        svc.wait_healthy(timeout=timeout, require="model_loaded")
    except Exception:
        svc.kill9()
        raise
    return svc, time.monotonic() - t0


def spawn_ingest(
    ws: Workspace, ml: ServiceProcess, data_dir: Path, name: str, env: dict[str, str] | None = None
) -> ServiceProcess:
    """Start the ingestion service process and return at once (no waiting for /health)."""
    full_env = {
        **ws.base_env(),
        "SHOEBOX_DATA_DIR": str(data_dir),
        "SHOEBOX_ML_URL": ml.url,
        "SHOEBOX_ML_URLS": "",
        "SHOEBOX_INGEST_ROOTS": str(ws.corpus_root),
        **(env or {}),
    }
    return start_service("ingest", env=full_env, log_path=ws.root / f"{name}.log")


def start_ingest(
    ws: Workspace,
    ml: ServiceProcess,
    data_dir: Path,
    name: str,
    timeout: float = 300.0,
    env: dict[str, str] | None = None,
) -> tuple[ServiceProcess, float]:
    """Start the ingestion service on `ml`; `env` adds settings of this case (SHOEBOX_RAW_TRANSPORT…)."""
    t0 = time.monotonic()
    svc = spawn_ingest(ws, ml, data_dir, name, env)
    try:
        svc.wait_healthy(timeout=timeout)
    except Exception:
        svc.kill9()
        raise
    return svc, time.monotonic() - t0


@contextmanager
def running(svc: ServiceProcess) -> Iterator[ServiceProcess]:
    try:
        yield svc
    finally:
        svc.stop()


@dataclass
class JobRun:
    wall_s: float  # client side: POST submitted → the status poll that saw it finished
    job: Job

    @property
    def status(self) -> str:
        return self.job.status.value

    @property
    def server_s(self) -> float | None:
        """The service's own account: job created → finished (no HTTP, no polling)."""
        if not self.job.finished_at:
            return None
        try:
            start = datetime.fromisoformat(self.job.created_at.replace("Z", "+00:00"))
            end = datetime.fromisoformat(self.job.finished_at.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (end - start).total_seconds()

    def counts(self) -> dict[str, int]:
        return {k: getattr(self.job, k) for k in ("total_files", "indexed", "cached", "unchanged", "failed")}

    def error_summary(self) -> str:
        codes: dict[str, int] = {}
        for e in self.job.errors:
            codes[e.code.value] = codes.get(e.code.value, 0) + 1
        return ", ".join(f"{c}×{n}" for c, n in sorted(codes.items()))


def run_ingest_job(
    ingest: ServiceProcess, folder: Path, collection: str, timeout: float = 1800.0, poll_s: float = 0.02
) -> JobRun:
    """Submit an ingest of `folder` and poll it to its end (every `poll_s`: the wall time's resolution)."""
    with ShoeboxClient(ingest.url, timeout=60.0) as client:
        t0 = time.perf_counter()
        job_id = client.ingest(folder, collection)["job_id"]
        job = client.follow(job_id, poll_s=poll_s, timeout=timeout)
        return JobRun(time.perf_counter() - t0, job)


@dataclass
class RssSampler:
    """Peak resident memory of service processes (children included), sampled in a thread."""

    procs: dict[str, int]  # label → pid
    interval_s: float = 0.1
    peaks: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        handles = {label: psutil.Process(pid) for label, pid in self.procs.items()}
        while not self._stop.is_set():
            for label, proc in handles.items():
                try:
                    total = proc.memory_info().rss
                    for child in proc.children(recursive=True):
                        try:
                            total += child.memory_info().rss
                        except psutil.Error:
                            pass
                except psutil.Error:
                    continue
                self.peaks[label] = max(self.peaks.get(label, 0), total)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
