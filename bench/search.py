"""Search section: text-search latency through HTTP at 10k and 100k points in embedded Qdrant.

The collection is made by the service itself (a real ingest of a few photos, so its Qdrant setup
and catalog entry are the service's own); synthetic points with realistic payloads are then
upserted straight into it through the store's client while the service is stopped (embedded
Qdrant is one process at a time), and the service is started again to answer queries.
"""

from __future__ import annotations

import hashlib
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.corpus import Corpus
from bench.ml import query_texts
from bench.report import Report, Row
from bench.services import Workspace, run_ingest_job, running, start_ingest
from shoebox.launcher import ServiceProcess

COLLECTION = "bench_search"
CAMERAS = [
    ("Canon", "EOS R6"),
    ("NIKON CORPORATION", "NIKON Z 6"),
    ("SONY", "ILCE-7M3"),
    ("Apple", "iPhone 13"),
    ("FUJIFILM", "X-T4"),
    ("samsung", "SM-G991B"),
    ("OLYMPUS", "E-M10"),
    ("Google", "Pixel 7"),
]
FORMATS = ["jpg"] * 14 + ["heic"] * 4 + ["dng"] * 1 + ["png"] * 1


def synthetic_points(
    start: int, count: int, dim: int, model_name: str
) -> list[tuple[str, list[float], dict[str, Any]]]:
    """Points shaped like the ingest pipeline's: clustered unit vectors and the full payload."""
    rng = np.random.default_rng(start)
    centres = np.random.default_rng(7).standard_normal((64, dim)).astype(np.float32)
    vecs = centres[rng.integers(0, 64, count)] + 0.6 * rng.standard_normal((count, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    out = []
    for k in range(count):
        i = start + k
        sha = hashlib.sha256(f"bench-point-{i}".encode()).hexdigest()
        year, month = 2010 + i % 15, 1 + (i // 7) % 12
        folder = f"/photos/{year}/{year}-{month:02d} trip {i % 37}"
        fmt = FORMATS[i % len(FORMATS)]
        path = f"{folder}/IMG_{i:06d}.{fmt}"
        make, model = CAMERAS[i % len(CAMERAS)]
        ts = time.mktime((year, month, 1 + i % 28, 12, i % 60, 0, 0, 0, -1))
        gps = {"lat": 30 + (i % 2000) / 100, "lon": -10 + (i % 3000) / 100} if i % 3 == 0 else None
        payload: dict[str, Any] = {
            "sha256": sha,
            "paths": [path],
            "path": path,
            "folders": _ancestors(folder),
            "filename": Path(path).name,
            "size": 2_000_000 + (i * 7919) % 4_000_000,
            "mtime": ts + 3600,
            "format": fmt,
            "width": 4000,
            "height": 3000,
            "taken_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts)),
            "taken_ts": ts,
            "camera_make": make,
            "camera_model": model,
            "lens": "24-70mm F2.8",
            "exposure_time": 1 / 125,
            "f_number": 2.8,
            "iso": 100 * (1 + i % 16),
            "focal_length": 35.0,
            "has_gps": gps is not None,
            "orientation": 1,
            "model_name": model_name,
            "thumbnail": f"{sha[:2]}/{sha}.jpg",
        }
        if gps:
            payload["gps"] = gps
        out.append((sha, vecs[k].tolist(), payload))
    return out


def _ancestors(folder: str) -> list[str]:
    parts = folder.strip("/").split("/")
    return ["/"] + ["/" + "/".join(parts[: j + 1]) for j in range(len(parts))]


def load_points(
    data_dir: Path, start: int, count: int, dim: int, model_name: str, log: Callable[[str], None]
) -> float:
    """Upsert synthetic points with the service's own store code; returns seconds taken."""
    from shoebox.ingest.config import IngestSettings
    from shoebox.ingest.store import VectorStore

    t0 = time.monotonic()
    # Embedded Qdrant warns past 20,000 points; the benchmark measures exactly that regime.
    warnings.filterwarnings("ignore", message="Local mode is not recommended", category=UserWarning)
    store = VectorStore(IngestSettings(data_dir=data_dir))
    try:
        if not store.collection_exists(COLLECTION):
            raise RuntimeError(f"the seed ingest did not create Qdrant collection {COLLECTION!r}")
        _fast_local_writes(store)
        step = 2000
        for s in range(start, start + count, step):
            store.upsert(COLLECTION, synthetic_points(s, min(step, start + count - s), dim, model_name))
        total = store.count(COLLECTION)
    finally:
        store.close()
    dt = time.monotonic() - t0
    log(f"search: loaded {count:,} synthetic points in {dt:.0f} s (collection now {total:,})")
    return dt


def _fast_local_writes(store: Any) -> None:
    """Embedded Qdrant commits (fsyncs) every point; for this bulk load only, let SQLite skip that.

    Only the loader's own connection changes; the file format and the service's query path do not.
    """
    try:
        coll = store._raw._client.collections[COLLECTION]
        conn = coll.storage.storage
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA journal_mode=MEMORY")
    except Exception:  # noqa: BLE001 - an internal detail of qdrant-client; slower without it, still right
        pass


def latency(ingest: ServiceProcess, n_queries: int, salt: str) -> tuple[list[float], int, int]:
    """Sequential text searches with distinct queries: seconds per request (client side), hits, cache hits."""
    texts = query_texts(n_queries + 5, salt=salt)
    times = []
    hits = cache_hits = 0
    with httpx.Client(base_url=ingest.url, timeout=60.0) as client:
        for i, text in enumerate(texts):
            t0 = time.perf_counter()
            r = client.post(
                "/api/v1/search/text", json={"query": text, "limit": 20, "collection_name": COLLECTION}
            )
            dt = time.perf_counter() - t0
            r.raise_for_status()
            if i >= 5:  # the first few warm connections and caches
                times.append(dt)
                hits += len(r.json()["results"])
                cache_hits += r.headers.get("X-Query-Embedding-Cache") == "hit"
    return times, hits, cache_hits


def cached_latency(ingest: ServiceProcess, n_queries: int) -> list[float]:
    """One query repeated: its embedding comes from the service's cache, leaving HTTP + Qdrant."""
    times = []
    with httpx.Client(base_url=ingest.url, timeout=60.0) as client:
        for i in range(n_queries + 2):
            t0 = time.perf_counter()
            r = client.post(
                "/api/v1/search/text",
                json={"query": "a photo of a dog on the beach", "limit": 20, "collection_name": COLLECTION},
            )
            dt = time.perf_counter() - t0
            r.raise_for_status()
            if i >= 2:
                times.append(dt)
    return times


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def run(
    report: Report, ws: Workspace, corpus: Corpus, ml: ServiceProcess, quick: bool, log: Callable[[str], None]
) -> None:
    caps = httpx.get(ml.url + "/api/v1/capabilities", timeout=30).json()
    dim, model_name = int(caps["embedding_dim"]), str(caps["model_name"])
    data_dir = ws.root / "data" / "search"
    sizes = (1_000, 10_000) if quick else (10_000, 100_000)
    n_queries = 40 if quick else 200
    try:
        ingest, _ = start_ingest(ws, ml, data_dir, "ingest-search-seed")
        with running(ingest):
            seed = run_ingest_job(ingest, corpus.search_seed, COLLECTION)
        if seed.status != "completed":
            raise RuntimeError(f"seed ingest ended {seed.status}: {seed.error_summary()}")
        have = seed.counts()["indexed"]
        for size in sizes:
            load_s = load_points(data_dir, 10_000_000 + have, size - have, dim, model_name, log)
            have = size
            ingest, startup = start_ingest(ws, ml, data_dir, f"ingest-search-{size}")
            with running(ingest):
                times, hits, cache_hits = latency(ingest, n_queries, salt=f"{size} ")
                cached = cached_latency(ingest, max(20, n_queries // 4))
            p50, p95 = _pct(times, 50) * 1000, _pct(times, 95) * 1000
            target = "p95 <= 100 ms" if size == 10_000 else None
            note = (
                f"{len(times)} distinct queries, limit 20, text embedding included; mean {statistics.mean(times) * 1000:.0f} ms,"
                f" max {max(times) * 1000:.0f} ms; service start {startup:.1f} s, load {load_s:.0f} s"
            )
            if hits == 0:
                note += "; NO RESULTS RETURNED"
            if cache_hits:
                note += f"; {cache_hits} answered from the query cache (should be 0)"
            report.add(Row("search", f"text search p50 @ {size:,} points", p50, "ms", note="embedded Qdrant"))
            report.add(
                Row(
                    "search",
                    f"text search p95 @ {size:,} points",
                    p95,
                    "ms",
                    None,
                    target,
                    (p95 <= 100 and hits > 0) if target else None,
                    note,
                )
            )
            report.add(
                Row(
                    "search",
                    f"  same query repeated, p50 / p95 @ {size:,} points",
                    _pct(cached, 50) * 1000,
                    "ms",
                    note=f"p95 {_pct(cached, 95) * 1000:.0f} ms; embedding from the query cache: HTTP + Qdrant only",
                )
            )
            log(f"search: {size:,} points p50 {p50:.0f} ms p95 {p95:.0f} ms")
    except Exception as exc:  # noqa: BLE001
        report.errors.append(f"search: {exc!r}")
        log(f"search: FAILED: {exc!r}")
