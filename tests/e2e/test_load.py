"""Load: concurrent clients on both services while a bulk ingest runs, on loopback.

Each client loops over three requests: a text embedding from the ML service, a small multipart
batch (two photos) to the ML service, and a text search on the ingestion service. Nothing may
answer 5xx, every 429 must carry Retry-After, and the peak memory of both services is sampled.
The text-search p95 while the ingest runs is compared with the p95 of the same load without
the ingest (reported, not asserted: the machine is shared). Default: 10 clients for ~5 s;
`scripts/test -m long`: 50 clients for ~60 s (the README's figures).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from reliability import RssSampler, percentile, record_figures

from servers import POLL_S, write_photos
from shoebox.devtools import photos

# Generous bounds: a leak or an unbounded queue shows as several times these.
PEAK_RSS_MIB = {"ml": 1500, "ingest": 1500}


@dataclass
class LoadResult:
    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    no_retry_after: int = 0
    transport_errors: list[str] = field(default_factory=list)
    search_s: list[tuple[float, float]] = field(default_factory=list)  # (when it ended, seconds)

    def add(self, other: LoadResult) -> None:
        self.requests += other.requests
        for code, n in other.by_status.items():
            self.by_status[code] = self.by_status.get(code, 0) + n
        self.no_retry_after += other.no_retry_after
        self.transport_errors += other.transport_errors
        self.search_s += other.search_s

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.by_status.items() if code >= 500)


def _client_loop(
    ml_url: str, ingest_url: str, collection: str, images: list[bytes], stop_at: float
) -> LoadResult:
    result = LoadResult()
    kinds = itertools.cycle(["text", "batch", "search"])
    with httpx.Client(timeout=60.0) as http:
        for n, kind in enumerate(kinds):
            if time.monotonic() >= stop_at or n >= 100_000:
                break
            started = time.monotonic()
            try:
                if kind == "text":
                    r = http.post(f"{ml_url}/api/v1/embed_text", json={"text": f"a photo of a hill {n}"})
                elif kind == "batch":
                    files = [
                        ("files", (f"q{i}.jpg", images[(n + i) % len(images)], "image/jpeg"))
                        for i in range(2)
                    ]
                    r = http.post(f"{ml_url}/api/v1/batch_embed_and_caption_multipart", files=files)
                else:
                    r = http.post(
                        f"{ingest_url}/api/v1/search/text",
                        json={
                            "query": f"sunset over the sea {n % 7}",
                            "collection_name": collection,
                            "limit": 10,
                        },
                    )
            except httpx.HTTPError as exc:
                result.transport_errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                continue
            ended = time.monotonic()
            result.requests += 1
            result.by_status[r.status_code] = result.by_status.get(r.status_code, 0) + 1
            if r.status_code == 429:
                if "retry-after" not in r.headers:
                    result.no_retry_after += 1
                time.sleep(min(float(r.headers.get("retry-after", "1")), 1.0))
            if kind == "search" and r.status_code == 200:
                result.search_s.append((ended, ended - started))
    return result


def _run_load(
    clients: int, seconds: float, ml_url: str, ingest_url: str, collection: str, images: list[bytes]
):
    results = [LoadResult() for _ in range(clients)]
    stop_at = time.monotonic() + seconds

    def run(i: int) -> None:
        results[i] = _client_loop(ml_url, ingest_url, collection, images, stop_at)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    total = LoadResult()
    for r in results:
        total.add(r)
    return total


@pytest.mark.parametrize(
    ("n_clients", "seconds", "n_files"),
    [
        pytest.param(10, 5.0, 300, id="10-clients-5s"),
        pytest.param(50, 60.0, 6000, id="50-clients-60s", marks=pytest.mark.long),
    ],
)
def test_concurrent_clients_during_a_bulk_ingest_get_no_5xx_and_memory_stays_bounded(
    n_clients: int,
    seconds: float,
    n_files: int,
    services,
    clients,
    tiny_model_dir: Path,
    photo_root: Path,
    tmp_path: Path,
) -> None:
    """`n_clients` threads hit embed_text, a 2-photo multipart batch and text search for `seconds`,
    first with the services idle, then while a bulk ingest runs: zero 5xx, zero transport
    errors, every 429 with Retry-After; the peak RSS of each service stays under its bound."""
    write_photos(photo_root / "seed", 40, size=(96, 72), seed=100_000)
    write_photos(photo_root / "bulk", n_files, size=(96, 72))
    images = [photos.jpeg_bytes(photos.synthetic_photo(96, 72, seed=900_000 + i)) for i in range(8)]
    ml = services("ml", tiny_model_dir, tmp_path / "ml")
    ingest = services("ingest", tmp_path / "data", [ml.url], [photo_root])
    api = clients(ingest.url)
    seeded = api.ingest_and_follow(photo_root / "seed", "load", poll_s=POLL_S, timeout=120)
    assert seeded.status == "completed"
    _run_load(2, 1.0, ml.url, ingest.url, "load", images)  # warm-up: first calls load lazy parts

    with RssSampler({"ml": ml.proc.pid, "ingest": ingest.proc.pid}) as rss:
        idle = _run_load(n_clients, seconds / 2, ml.url, ingest.url, "load", images)
        job_id = api.ingest(photo_root / "bulk", "load")["job_id"]
        busy = _run_load(n_clients, seconds, ml.url, ingest.url, "load", images)
        job = api.job(job_id)
        ingest_running_until = time.monotonic() if not job.status.finished else None
        job = api.follow(job_id, poll_s=POLL_S, timeout=600)

    # Only the searches that ended while the ingest still ran count as "while ingesting".
    finished_at = ingest_running_until or _finished_monotonic(job)
    during = [s for ended, s in busy.search_s if ended <= finished_at]
    idle_p95 = percentile([s for _, s in idle.search_s], 95)
    busy_p95 = percentile(during, 95)
    figures = {
        "clients": n_clients,
        "seconds": seconds,
        "bulk_files": n_files,
        "requests": idle.requests + busy.requests,
        "requests_while_ingesting": busy.requests,
        "by_status": {str(k): v for k, v in sorted({**_merge(idle.by_status, busy.by_status)}.items())},
        "server_errors": idle.server_errors + busy.server_errors,
        "transport_errors": len(idle.transport_errors) + len(busy.transport_errors),
        "search_p95_idle_ms": round(idle_p95 * 1000, 1),
        "search_p95_ingesting_ms": round(busy_p95 * 1000, 1),
        "p95_ratio": round(busy_p95 / idle_p95, 2) if idle_p95 else None,
        "searches_while_ingesting": len(during),
        "ingest_status": job.status.value,
        "ingest_indexed": job.indexed,
        "peak_rss_mib": rss.peak_mib(),
    }
    record_figures("load", figures)
    assert idle.server_errors + busy.server_errors == 0, figures
    assert idle.transport_errors + busy.transport_errors == [], (
        idle.transport_errors + busy.transport_errors
    )[:5]
    assert idle.no_retry_after + busy.no_retry_after == 0
    assert during, "no search ended while the ingest ran: the test proves nothing"
    assert job.status == "completed" and job.indexed == n_files
    for name, peak in rss.peak_mib().items():
        assert 0 < peak < PEAK_RSS_MIB[name], figures


def _merge(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}


def _finished_monotonic(job) -> float:
    """The monotonic clock reading when a finished job ended (from its wall-clock `finished_at`)."""
    from datetime import datetime

    ended = datetime.fromisoformat(str(job.finished_at).replace("Z", "+00:00")).timestamp()
    return time.monotonic() - (time.time() - ended)
