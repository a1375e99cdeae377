"""Search section: the vector store backends under a real query path, at 10k, 100k (and 500k) points.

For each backend (`edge`: Qdrant Edge embedded, the default; `local`: qdrant-client's local mode,
which is the server backend's code path, because no Qdrant server can run here) the collection
is made by the service itself (a real ingest of a few photos, so the store's collection and the
catalog entry are the service's own). Synthetic points with realistic payloads are then loaded
through the store API (`shoebox.store.open_store`) while the service is stopped (one process owns
a data dir), the edge index is built and awaited the way the service builds it (`after_writes`,
a child process), and the service is started again: from its spawn to the first text search
that answers, then text, filtered and similar searches over HTTP (text embedding by the ML
service included), the near-duplicate scan, and the service's peak memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from bench.corpus import Corpus
from bench.ml import query_texts
from bench.report import Report, Row
from bench.services import RssSampler, Workspace, run_ingest_job, running, spawn_ingest, start_ingest
from shoebox.client import APIError, ShoeboxClient
from shoebox.launcher import ServiceProcess

COLLECTION = "bench_search"
BACKENDS = ("edge", "local")
LOCAL_LABEL = "qdrant-client local mode = the server backend's code path; a real server was not available"
LOCAL_NOTE = "server code path via local mode (no real server here)"
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
# Planted duplicates, one of each tier, so the duplicate scan has something to find (the rows check
# that it finds at least these): every 500th content is also stored under a second path (exact);
# every 100th point is a near copy (cosine ≈ 0.99, another camera and day) of the one before it
# (near); every 250th is the previous point re-encoded smaller as PNG: its pHash 2 bits away,
# cosine ≈ 0.995 (same picture); every 400th starts a burst of 3 shots by one camera 1 s apart,
# cosine ≈ 0.93 (bursts). Every other pHash is random: different scenes are ~32 bits apart.
NEAR_COPY_EVERY, SECOND_PATH_EVERY = 100, 500
SAME_PICTURE_EVERY, SAME_PICTURE_AT = 250, 124
BURST_EVERY, BURST_AT, BURST_SHOTS = 400, 200, 3

# The filtered search: one folder (a year), a date range in it, two camera makes, a GPS box. On the
# synthetic payloads it holds for ~1 point in 240 (the year's points all have GPS: i % 15 == 9);
# the loader counts the matches with the service's own filter translation.
FILTERS: dict[str, Any] = {
    "folder": "/photos/2019",
    "taken_after": "2019-03-01",
    "taken_before": "2019-10-31",
    "camera_make": ["Canon", "SONY"],
    "gps_bbox": {"min_lat": 30.0, "min_lon": -10.0, "max_lat": 45.0, "max_lon": 5.0},
}

# Targets (edge, at 100,000 points).
TARGET_POINTS = 100_000
TARGET_RESTART_S = 2.0
TARGET_P95_MS = 50.0
TARGET_DUPLICATES_S = 180.0
# The duplicate scan goes through HTTP up to this size; beyond, a sample of points is timed through
# the store API (service stopped) and extrapolated: local mode answers each neighbour query by a
# Python/numpy pass over every point, hours at 100,000.
FULL_SCAN_MAX = {"edge": 100_000, "local": 10_000}
SAMPLE_POINTS, SAMPLE_BUDGET_S = 4096, 30.0  # at most this many points, or until this many seconds
QUICK_SAMPLE = (1024, 10.0)
# Sequential queries stop early after this many seconds (local mode's filtered search is slow).
QUERY_BUDGET_S = 45.0
SIMILAR_QUERIES = 200


def synthetic_points(
    start: int, count: int, dim: int, model_name: str
) -> list[tuple[str, list[float], dict[str, Any]]]:
    """Points shaped like the ingest pipeline's: clustered unit vectors and the full payload."""
    rng = np.random.default_rng(start)
    hash_rng = np.random.default_rng(start + 1)
    centres = np.random.default_rng(7).standard_normal((64, dim)).astype(np.float32)
    vecs = centres[rng.integers(0, 64, count)] + 0.6 * rng.standard_normal((count, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    out = []
    for k in range(count):
        i = start + k
        copy_of_previous = {  # noise per dimension (× 1/√dim) for a cosine of 1/√(1 + noise²)
            "near": 0.15 if i % NEAR_COPY_EVERY == NEAR_COPY_EVERY - 1 else None,
            "same_picture": 0.1 if i % SAME_PICTURE_EVERY == SAME_PICTURE_AT else None,
            "burst": 0.4 if BURST_AT < i % BURST_EVERY < BURST_AT + BURST_SHOTS else None,
        }
        kind = next((k_ for k_, noise in copy_of_previous.items() if noise is not None), None) if k > 0 else None
        if kind is not None:
            noise = copy_of_previous[kind]
            vecs[k] = vecs[k - 1] + (noise / np.sqrt(dim)) * rng.standard_normal(dim).astype(np.float32)
            vecs[k] /= np.linalg.norm(vecs[k])
        sha = hashlib.sha256(f"bench-point-{i}".encode()).hexdigest()
        year, month = 2010 + i % 15, 1 + (i // 7) % 12
        folder = f"/photos/{year}/{year}-{month:02d} trip {i % 37}"
        fmt = FORMATS[i % len(FORMATS)]
        path = f"{folder}/IMG_{i:06d}.{fmt}"
        paths, folders = [path], _ancestors(folder)
        if i % SECOND_PATH_EVERY == SECOND_PATH_EVERY // 2:
            backup = f"/backup/{year}"
            paths.append(f"{backup}/IMG_{i:06d}.{fmt}")
            folders += [f for f in _ancestors(backup) if f not in folders]
        make, model = CAMERAS[i % len(CAMERAS)]
        ts = time.mktime((year, month, 1 + i % 28, 12, i % 60, 0, 0, 0, -1))
        phash = f"{int(hash_rng.integers(0, 2**63)) * 2 + int(hash_rng.integers(0, 2)):016x}"
        width, height = 4000, 3000
        if kind == "same_picture":  # the previous photo, re-encoded at half size as PNG
            flipped = int(out[-1][2]["phash"], 16) ^ (1 << (i % 64)) ^ (1 << ((i + 17) % 64))
            phash, fmt, width, height = f"{flipped:016x}", "png", 2000, 1500
            path = f"{folder}/IMG_{i:06d}.{fmt}"
            paths = [path]
        elif kind == "burst":  # the next shot of the previous point's camera, 1 s later
            prev = out[-1][2]
            make, model = prev["camera_make"], prev["camera_model"]
            ts = prev["taken_ts"] + 1.0
        gps = {"lat": 30 + (i % 2000) / 100, "lon": -10 + (i % 3000) / 100} if i % 3 == 0 else None
        payload: dict[str, Any] = {
            "sha256": sha,
            "paths": paths,
            "path": path,
            "folders": folders,
            "filename": Path(path).name,
            "size": 2_000_000 + (i * 7919) % 4_000_000,
            "mtime": ts + 3600,
            "format": fmt,
            "width": width,
            "height": height,
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
            "phash": phash,
            "sharpness": float(100 + (i * 37) % 900),
        }
        if gps:
            payload["gps"] = gps
        out.append((sha, vecs[k].tolist(), payload))
    return out


def _ancestors(folder: str) -> list[str]:
    parts = folder.strip("/").split("/")
    return ["/"] + ["/" + "/".join(parts[: j + 1]) for j in range(len(parts))]


def point_ids(start: int, count: int) -> list[str]:
    from shoebox.store import point_id

    return [
        point_id(hashlib.sha256(f"bench-point-{i}".encode()).hexdigest()) for i in range(start, start + count)
    ]


# ---------------------------------------------------------------- loading (service stopped)


@dataclass
class Loaded:
    """What the in-process phase (service stopped) found out."""

    total: int = 0
    open_s: float = 0.0
    reopen_s: float | None = None  # edge: opening the loaded (and indexed) store again, in-process
    load_s: float = 0.0
    build_s: float | None = None  # the store's own account (index_status().last_build_s)
    build_wall_s: float | None = None  # after_writes → wait_for_index returned, here
    indexed: int | None = None
    build_error: str | None = None
    filter_matches: int = 0
    scan: ScanEstimate | None = None


@dataclass
class ScanEstimate:
    """The duplicate scan timed on a sample of points and extrapolated to the collection."""

    points: int
    sampled: int
    sample_s: float
    exact_s: float
    pairs: int

    @property
    def estimate_s(self) -> float:
        return self.exact_s + self.sample_s / max(1, self.sampled) * self.points


def settings_for(data_dir: Path, backend: str, threshold: int | None) -> Any:
    from shoebox.ingest.config import IngestSettings

    extra = {"index_threshold": threshold} if threshold else {}
    return IngestSettings(data_dir=data_dir, store=backend, **extra)


def load_points(
    data_dir: Path,
    backend: str,
    start: int,
    count: int,
    dim: int,
    model_name: str,
    *,
    threshold: int | None,
    sample_scan: tuple[int, float] | None,
    log: Callable[[str], None],
) -> Loaded:
    """Upsert synthetic points through the store API, build the index (edge), count the filter's matches."""
    from shoebox.ingest.context import lock_data_dir
    from shoebox.ingest.search import SearchFilters, to_where
    from shoebox.store import open_store

    out = Loaded()
    lock = lock_data_dir(data_dir)
    try:
        # Local mode warns past 20,000 points; the benchmark measures exactly that regime.
        warnings.filterwarnings("ignore", message="Local mode is not recommended", category=UserWarning)
        t0 = time.monotonic()
        store = open_store(settings_for(data_dir, backend, threshold))
        try:
            if not store.collection_exists(COLLECTION):
                raise RuntimeError(f"the seed ingest did not create collection {COLLECTION!r}")
            store.wait_for_index(COLLECTION, timeout=600)  # the check an edge store makes at open
            out.open_s = time.monotonic() - t0
            t0 = time.monotonic()
            step = 2000
            for s in range(start, start + count, step):
                store.upsert(COLLECTION, synthetic_points(s, min(step, start + count - s), dim, model_name))
            out.load_s = time.monotonic() - t0
            out.total = store.count(COLLECTION)
            log(
                f"search/{backend}: loaded {count:,} points in {out.load_s:.0f} s"
                f" ({count / max(out.load_s, 1e-9):,.0f}/s; opened in {out.open_s:.1f} s; collection now {out.total:,})"
            )
            if backend == "edge":
                t0 = time.monotonic()
                store.after_writes(COLLECTION)
                if not store.wait_for_index(COLLECTION, timeout=3600):
                    raise TimeoutError("the index build did not end within an hour")
                status = store.index_status(COLLECTION)
                out.indexed, out.build_error = status.indexed, status.error
                if status.last_build_s is not None:
                    out.build_s, out.build_wall_s = status.last_build_s, time.monotonic() - t0
                    log(
                        f"search/{backend}: index built in {out.build_s:.1f} s ({status.indexed:,}/{status.points:,})"
                    )
            out.filter_matches = store.count(COLLECTION, to_where(SearchFilters.model_validate(FILTERS)))
            if sample_scan:
                out.scan = sample_duplicate_scan(store, out.total, *sample_scan)
                log(
                    f"search/{backend}: duplicate scan sampled on {out.scan.sampled:,} points in"
                    f" {out.scan.sample_s:.1f} s: ~{out.scan.estimate_s:.0f} s for {out.total:,} (extrapolated)"
                )
        finally:
            store.close()
        if backend == "edge":  # the store's share of a restart (local mode's is most of it: not repeated)
            t0 = time.monotonic()
            open_store(settings_for(data_dir, backend, threshold), background_index=False).close()
            out.reopen_s = time.monotonic() - t0
    finally:
        lock.close()
    return out


def sample_duplicate_scan(
    store: Any, total: int, max_points: int = SAMPLE_POINTS, budget_s: float = SAMPLE_BUDGET_S
) -> ScanEstimate:
    """The scan of `shoebox.ingest.duplicates.find_duplicates` (the same neighbour queries, batch
    sizes and payload keys) on the first points in id order (ids are content hashes: a random
    sample), until `max_points` or `budget_s`; the exact-duplicate part (one filtered scroll) runs
    in full. The pHash pass over every hash is measured whole by `hash_pass_s`."""
    from shoebox.ingest import duplicates

    t0 = time.monotonic()
    duplicates.exact_duplicates(store, COLLECTION)
    exact_s = time.monotonic() - t0
    sampled = pairs = 0
    t0 = time.monotonic()
    pages = store.iter_points(COLLECTION, page=duplicates._SCROLL_PAGE, payload=duplicates._MEMBER_KEYS)
    for page in pages:
        for s in range(0, len(page), duplicates._QUERY_BATCH):
            batch = [r.vector for r in page[s : s + duplicates._QUERY_BATCH] if r.vector is not None]
            answers = store.query_batch(
                COLLECTION,
                batch,
                limit=duplicates.NEIGHBOURS + 1,
                score_threshold=min(duplicates.DEFAULT_NEAR_THRESHOLD, duplicates.DEFAULT_BURST_THRESHOLD),
                breadth=duplicates.BREADTH,
            )
            pairs += sum(max(0, len(a) - 1) for a in answers)
            sampled += len(batch)
            if sampled >= max_points or time.monotonic() - t0 > budget_s:
                return ScanEstimate(total, sampled, time.monotonic() - t0, exact_s, pairs)
    return ScanEstimate(total, sampled, time.monotonic() - t0, exact_s, pairs)


def hash_pass_s(count: int, seed: int = 5) -> tuple[float, int]:
    """The same-picture tier's own work on `count` random hashes with a planted copy every
    SAME_PICTURE_EVERY: `close_pairs` at the default distance. Returns (seconds, pairs found)."""
    from shoebox.imaging.fingerprint import close_pairs, hashes_to_array
    from shoebox.ingest.duplicates import DEFAULT_PHASH_DISTANCE

    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**63, count, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    for i in range(SAME_PICTURE_AT, count, SAME_PICTURE_EVERY):
        values[i] = values[i - 1] ^ np.uint64(0b101)
    hashes = hashes_to_array([f"{int(v):016x}" for v in values])
    t0 = time.perf_counter()
    pairs = close_pairs(hashes, DEFAULT_PHASH_DISTANCE)
    return time.perf_counter() - t0, len(pairs)


def planted(start: int, count: int) -> dict[str, int]:
    """How many groups of each tier `synthetic_points` plants among points start … start + count."""
    ids = range(start, start + count)
    return {
        "exact": sum(i % SECOND_PATH_EVERY == SECOND_PATH_EVERY // 2 for i in ids),
        "near": sum(i % NEAR_COPY_EVERY == NEAR_COPY_EVERY - 1 for i in ids),
        "same_picture": sum(i % SAME_PICTURE_EVERY == SAME_PICTURE_AT for i in ids),
        "bursts": sum(i % BURST_EVERY == BURST_AT + 1 for i in ids),
    }


# ---------------------------------------------------------------- the service


def start_until_first_search(
    ws: Workspace,
    ml: ServiceProcess,
    data_dir: Path,
    name: str,
    env: dict[str, str],
    *,
    sample_rss: bool = False,
    timeout: float = 600.0,
) -> tuple[ServiceProcess, float, float, RssSampler | None]:
    """Spawn the ingestion service and poll a text search until it answers 200.

    Returns the service, seconds from spawn to that answer, that first search's own latency, and
    (`sample_rss`) a running sampler of the service's memory from its spawn on: the caller stops it.
    """
    t0 = time.monotonic()
    svc = spawn_ingest(ws, ml, data_dir, name, env)
    rss = RssSampler({"ingest": svc.proc.pid}).__enter__() if sample_rss else None
    body = {"query": f"first search after a restart {name}", "limit": 20, "collection_name": COLLECTION}
    last: object = None
    try:
        with httpx.Client(base_url=svc.url, timeout=60.0) as client:
            while time.monotonic() - t0 < timeout:
                if svc.proc.poll() is not None:
                    raise RuntimeError(f"ingest service exited with {svc.proc.returncode}: {svc.tail_log()}")
                q0 = time.monotonic()
                try:
                    r = client.post("/api/v1/search/text", json=body)
                except httpx.TransportError as exc:  # not listening yet
                    last = exc
                else:
                    if r.status_code == 200:
                        now = time.monotonic()
                        return svc, now - t0, now - q0, rss
                    last = f"{r.status_code} {r.text[:200]}"
                time.sleep(0.01)
        raise TimeoutError(f"no search answer {timeout:.0f} s after the start ({last}): {svc.tail_log()}")
    except BaseException:
        if rss is not None:
            rss.__exit__(None, None, None)
        svc.kill9()
        raise


@dataclass
class Timings:
    times: list[float] = field(default_factory=list)  # seconds per request, client side
    hits: list[int] = field(default_factory=list)
    cache_hits: int = 0
    asked: int = 0

    def note(self) -> str:
        cut = (
            f" (of {self.asked}: stopped after {QUERY_BUDGET_S:.0f} s)"
            if len(self.times) < self.asked
            else ""
        )
        return (
            f"{len(self.times)} queries{cut}; p50 {_pct(self.times, 50) * 1000:.1f} ms, "
            f"mean {statistics.mean(self.times) * 1000:.1f}, max {max(self.times) * 1000:.0f} ms"
        )


def latency(
    ingest: ServiceProcess,
    n_queries: int,
    salt: str,
    filters: dict[str, Any] | None = None,
    budget_s: float | None = None,
) -> Timings:
    """Sequential text searches with distinct queries (limit 20; 5 warm-up queries first)."""
    texts = query_texts(n_queries + 5, salt=salt)
    out = Timings(asked=n_queries)
    body: dict[str, Any] = {"limit": 20, "collection_name": COLLECTION}
    if filters:
        body["filters"] = filters
    with httpx.Client(base_url=ingest.url, timeout=120.0) as client:
        started = time.monotonic()
        for i, text in enumerate(texts):
            t0 = time.perf_counter()
            r = client.post("/api/v1/search/text", json={**body, "query": text})
            dt = time.perf_counter() - t0
            r.raise_for_status()
            if i >= 5:  # the first few warm connections and caches
                out.times.append(dt)
                out.hits.append(len(r.json()["results"]))
                out.cache_hits += r.headers.get("X-Query-Embedding-Cache") == "hit"
                if budget_s and time.monotonic() - started > budget_s and len(out.times) >= 20:
                    break
    return out


def combined_latency(
    ingest: ServiceProcess, n_queries: int, n_terms: int, salt: str, cached: bool = False
) -> Timings:
    """Sequential combined queries (POST /search/query) of `n_terms` text terms, the last one
    negative when there are several ("a + b - c"). Distinct terms: every term's embedding is
    computed (one ML call for all of them), so an extra term costs its embedding plus the weighted
    sum. `cached`: the same query every time, its terms' embeddings from the query cache, which
    leaves what combining costs (HTTP, the weighted sum, the store)."""
    texts = query_texts((1 if cached else n_queries + 5) * n_terms, salt=salt)
    out = Timings(asked=n_queries)
    with httpx.Client(base_url=ingest.url, timeout=120.0) as client:
        for i in range(n_queries + 5):
            at = 0 if cached else i
            words = texts[at * n_terms : (at + 1) * n_terms]
            terms = [{"text": t, "weight": -0.5 if k == n_terms - 1 and n_terms > 1 else 1.0} for k, t in enumerate(words)]
            t0 = time.perf_counter()
            r = client.post(
                "/api/v1/search/query", json={"terms": terms, "limit": 20, "collection_name": COLLECTION}
            )
            dt = time.perf_counter() - t0
            r.raise_for_status()
            if i >= 5:
                out.times.append(dt)
                out.hits.append(len(r.json()["results"]))
                out.cache_hits += r.headers.get("X-Query-Embedding-Cache") == "hit"
    return out


def cached_latency(
    ingest: ServiceProcess, n_queries: int, filters: dict[str, Any] | None = None
) -> list[float]:
    """One query repeated: its embedding comes from the service's cache, leaving HTTP + the store."""
    times: list[float] = []
    body: dict[str, Any] = {
        "query": "a photo of a dog on the beach",
        "limit": 20,
        "collection_name": COLLECTION,
    }
    if filters:
        body["filters"] = filters
    with httpx.Client(base_url=ingest.url, timeout=120.0) as client:
        started = time.monotonic()
        for i in range(n_queries + 2):
            t0 = time.perf_counter()
            r = client.post("/api/v1/search/text", json=body)
            dt = time.perf_counter() - t0
            r.raise_for_status()
            if i >= 2:
                times.append(dt)
                if time.monotonic() - started > QUERY_BUDGET_S / 3 and len(times) >= 10:
                    break
    return times


def similar_latency(ingest: ServiceProcess, ids: list[str]) -> Timings:
    """GET /api/v1/images/{id}/similar?limit=20 for distinct stored images (no embedding: stored vectors)."""
    out = Timings(asked=len(ids) - 5)
    with httpx.Client(base_url=ingest.url, timeout=120.0) as client:
        started = time.monotonic()
        for i, pid in enumerate(ids):
            t0 = time.perf_counter()
            r = client.get(
                f"/api/v1/images/{pid}/similar", params={"limit": 20, "collection_name": COLLECTION}
            )
            dt = time.perf_counter() - t0
            r.raise_for_status()
            if i >= 5:
                out.times.append(dt)
                out.hits.append(len(r.json()["results"]))
                if time.monotonic() - started > QUERY_BUDGET_S and len(out.times) >= 20:
                    break
    return out


def duplicate_scan(ingest: ServiceProcess) -> tuple[float, dict[str, Any]]:
    with httpx.Client(base_url=ingest.url, timeout=3600.0) as client:
        t0 = time.perf_counter()
        r = client.get("/api/v1/duplicates", params={"collection_name": COLLECTION})
        dt = time.perf_counter() - t0
        r.raise_for_status()
    return dt, r.json()


@contextlib.contextmanager
def _stopping(rss: RssSampler) -> Iterator[RssSampler]:
    """Stop a sampler already started (by `start_until_first_search`) when the block ends."""
    try:
        yield rss
    finally:
        rss.__exit__(None, None, None)


def import_time(backend: str) -> float:
    """Seconds a fresh interpreter takes to import what the ingestion service imports before it serves."""
    store = "shoebox.store.edge" if backend == "edge" else "shoebox.store.server"
    modules = ["shoebox.ingest.__main__", "shoebox.ingest.app", store]
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import " + ", ".join(modules)], check=True)
    return time.monotonic() - t0


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def _mib(n: int | None) -> float | None:
    return None if n is None else n / 2**20


# ---------------------------------------------------------------- the section


def run(
    report: Report,
    ws: Workspace,
    corpus: Corpus,
    ml: ServiceProcess,
    quick: bool,
    log: Callable[[str], None],
    large: bool = False,
) -> None:
    caps = httpx.get(ml.url + "/api/v1/capabilities", timeout=30).json()
    dim, model_name = int(caps["embedding_dim"]), str(caps["model_name"])
    sizes: tuple[int, ...] = (1_000, 10_000) if quick else (10_000, 100_000)
    if large:
        sizes += (500_000,)
    # --quick: a lower index threshold, so that its 10,000 points take the index path too.
    threshold = 5_000 if quick else None
    n_queries = 40 if quick else 200
    report.notes.append(f"search: local = {LOCAL_LABEL}")
    section_t0 = time.monotonic()
    timings: dict[str, float] = {}
    for backend in BACKENDS:
        t0 = time.monotonic()
        try:
            run_backend(
                report,
                ws,
                corpus,
                ml,
                backend,
                sizes,
                threshold,
                n_queries,
                dim,
                model_name,
                log,
                quick=quick,
            )
        except Exception as exc:  # noqa: BLE001 - the other backend's rows still stand
            report.errors.append(f"search/{backend}: {exc!r}")
            log(f"search/{backend}: FAILED: {exc!r}")
        timings[backend] = time.monotonic() - t0
    total = time.monotonic() - section_t0
    report.context["search_section_s"] = {
        **{k: round(v, 1) for k, v in timings.items()},
        "total": round(total, 1),
    }
    report.add(
        Row(
            "search",
            "search section wall time (both backends, all sizes)",
            total,
            "s",
            note=", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
            + "; loading, index builds, restarts and scans included",
        )
    )


def run_backend(
    report: Report,
    ws: Workspace,
    corpus: Corpus,
    ml: ServiceProcess,
    backend: str,
    sizes: tuple[int, ...],
    threshold: int | None,
    n_queries: int,
    dim: int,
    model_name: str,
    log: Callable[[str], None],
    *,
    quick: bool = False,
) -> None:
    data_dir = ws.root / "data" / f"search-{backend}"
    # --quick: local mode's 10,000 take the sampled path too (its whole scan takes a minute there).
    full_scan_max = 1_000 if quick and backend == "local" else FULL_SCAN_MAX[backend]
    env = {"SHOEBOX_STORE": backend}
    if threshold:
        env["SHOEBOX_INDEX_THRESHOLD"] = str(threshold)
    ingest, _ = start_ingest(ws, ml, data_dir, f"ingest-search-{backend}-seed", env=env)
    with running(ingest):
        seed = run_ingest_job(ingest, corpus.search_seed, COLLECTION)
    if seed.status != "completed":
        raise RuntimeError(f"seed ingest ended {seed.status}: {seed.error_summary()}")
    seeded = have = seed.counts()["indexed"]
    first = 10_000_000 + seeded  # synthetic point numbers: first, first + 1, … (size - seeded of them)
    rng = np.random.default_rng(11)
    last: tuple[int, int] | None = None  # (points, peak RSS of the service) of the size before
    for size in sizes:
        if last is not None and not enough_memory(report, backend, size, *last, log):
            return
        loaded = load_points(
            data_dir,
            backend,
            first + have - seeded,
            size - have,
            dim,
            model_name,
            threshold=threshold,
            sample_scan=(QUICK_SAMPLE if quick else (SAMPLE_POINTS, SAMPLE_BUDGET_S))
            if size > full_scan_max
            else None,
            log=log,
        )
        have = size
        ids = point_ids(first, size - seeded)
        sample = rng.choice(len(ids), size=min(len(ids), SIMILAR_QUERIES + 5), replace=False)
        peak = measure_size(
            report, ws, ml, backend, size, loaded, env, n_queries, [ids[i] for i in sample], log
        )
        last = (size, peak) if peak else None


def enough_memory(
    report: Report, backend: str, size: int, prev_size: int, prev_peak: int, log: Callable[[str], None]
) -> bool:
    """Whether `size` points fit: the service's peak per point at the size before, twice (the loader,
    in this process, holds the store too while it loads; local mode keeps every point as Python objects)."""
    need = 2 * prev_peak / prev_size * size
    available = psutil.virtual_memory().available
    if need <= available:
        return True
    why = (
        f"not measured: {backend} needs ~{need / 2**30:.1f} GiB for {size:,} points (twice the service's"
        f" {prev_peak / prev_size / 1024:.0f} KiB per point at {prev_size:,}: loader + service),"
        f" {available / 2**30:.1f} GiB available"
    )
    report.add(Row("search", f"{backend}: every row @ {size:,} points", None, "", note=why))
    report.notes.append(f"search: {backend} @ {size:,} points {why}")
    log(f"search/{backend}: {why}")
    return False


def measure_size(
    report: Report,
    ws: Workspace,
    ml: ServiceProcess,
    backend: str,
    size: int,
    loaded: Loaded,
    env: dict[str, str],
    n_queries: int,
    similar_ids: list[str],
    log: Callable[[str], None],
) -> int | None:
    """The rows of one backend at one size; returns the service's peak RSS (bytes)."""
    data_dir = ws.root / "data" / f"search-{backend}"
    at = f"@ {size:,} points"
    targeted = backend == "edge" and size == TARGET_POINTS
    pre = "" if backend == "edge" else f"{LOCAL_NOTE}; "
    extra = {"backend": backend, "points": loaded.total}

    def add(
        name: str,
        value: float | None,
        unit: str,
        note: str,
        target: str | None = None,
        ok: bool | None = None,
        **more: Any,
    ) -> None:
        report.add(
            Row(
                "search",
                f"{backend}: {name} {at}",
                value,
                unit,
                target=target if targeted else None,
                met=ok if targeted else None,
                note=pre + note,
                extra={**extra, **more},
            )
        )

    # Restart until the first search answers: edge starts are cheap, so three (the median counts).
    n_starts = 3 if backend == "edge" else 1
    starts: list[tuple[float, float]] = []
    for k in range(n_starts):
        kept = k == n_starts - 1
        svc, restart_s, first_q, rss = start_until_first_search(
            ws, ml, data_dir, f"ingest-search-{backend}-{size}-{k}", env, sample_rss=kept
        )
        starts.append((restart_s, first_q))
        if not kept:
            svc.stop()
    restart = statistics.median(s for s, _ in starts)
    imports_s = import_time(backend)
    assert rss is not None
    with running(svc), _stopping(rss):
        with ShoeboxClient(svc.url, timeout=60.0) as client:
            try:
                index = client.collection_info(COLLECTION).get("index") or {}
            except APIError as exc:  # the rows still stand, with "no index info"
                log(f"search/{backend}: collection info @ {size:,} points failed: {exc}")
                index = {}
        text = latency(svc, n_queries, salt=f"{backend} {size} ", budget_s=QUERY_BUDGET_S)
        cached = cached_latency(svc, max(20, n_queries // 4))
        cached_filtered = cached_latency(svc, max(20, n_queries // 4), filters=FILTERS)
        filtered = latency(
            svc, n_queries, salt=f"{backend} {size} filtered ", filters=FILTERS, budget_s=QUERY_BUDGET_S
        )
        similar = similar_latency(svc, similar_ids)
        n_combined = max(20, min(n_queries, 60))
        combined = {
            k: combined_latency(svc, n_combined, k, salt=f"{backend} {size} combined{k} ") for k in (1, 2, 3)
        }
        combined_cached = {
            k: combined_latency(svc, n_combined, k, salt=f"{backend} {size} cached{k} ", cached=True)
            for k in (1, 2, 3)
        }
        scan_s: float | None = None
        dups: dict[str, Any] = {}
        if loaded.scan is None:
            scan_s, dups = duplicate_scan(svc)
        if svc.proc.poll() is not None:
            raise RuntimeError(f"ingest service died: {svc.tail_log()}")
    peak = rss.peaks.get("ingest")

    index_note = (
        "exact search (local mode has no index)"
        if backend != "edge"
        else f"service saw {index.get('indexed', '?'):,}/{index.get('points', '?'):,} indexed"
        f"{', exact search' if index.get('exact') else ''}{', building' if index.get('building') else ''}"
        if index
        else "no index info"
    )
    starts_note = ", ".join(f"{s:.2f}" for s, _ in starts)
    add(
        "restart → first text search answers",
        restart,
        "s",
        f"spawn of `python -m shoebox.ingest` to the first 200 of POST /search/text (its embedding included:"
        f" {starts[-1][1] * 1000:.0f} ms); {'median of ' + starts_note + ' s' if len(starts) > 1 else 'one start'};"
        f" {index_note}; a bare `python -c 'import shoebox.ingest…'` takes {imports_s:.2f} s"
        + (
            f"; opening the store alone (in-process, before the restart) {loaded.reopen_s:.2f} s"
            if loaded.reopen_s is not None
            else ""
        ),
        f"<= {TARGET_RESTART_S:.0f} s",
        restart <= TARGET_RESTART_S,
        starts_s=[s for s, _ in starts],
    )
    p50, p95 = _pct(text.times, 50) * 1000, _pct(text.times, 95) * 1000
    add(
        "text search p50",
        p50,
        "ms",
        "distinct queries, limit 20, text embedding by the ML service included",
        samples_ms=[round(t * 1000, 2) for t in text.times],
    )
    cached_p50 = _pct(cached, 50) * 1000
    text_note = (
        f"{text.note()}; the same query repeated (embedding cached: HTTP + store only) p50 {cached_p50:.1f} ms,"
        f" p95 {_pct(cached, 95) * 1000:.1f} ms"
    )
    if sum(text.hits) == 0:
        text_note += "; NO RESULTS RETURNED"
    if text.cache_hits:
        text_note += f"; {text.cache_hits} answered from the query cache (should be 0)"
    add(
        "text search p95",
        p95,
        "ms",
        text_note,
        f"p95 <= {TARGET_P95_MS:.0f} ms",
        p95 <= TARGET_P95_MS and sum(text.hits) > 0,
        cached_ms=[round(t * 1000, 2) for t in cached],
    )
    f95 = _pct(filtered.times, 95) * 1000
    fhits = filtered.hits
    fnote = (
        f"folder + date range + 2 camera makes + GPS box, text embedding included; {filtered.note()};"
        f" hits per query {min(fhits)}–{max(fhits)} (limit 20) of {loaded.filter_matches:,} matching points"
        f" ({loaded.filter_matches / max(1, loaded.total):.2%}); the same filtered query repeated (embedding"
        f" cached) p50 {_pct(cached_filtered, 50) * 1000:.1f} ms, p95 {_pct(cached_filtered, 95) * 1000:.1f} ms"
    )
    if min(fhits) == 0:
        fnote += "; SOME QUERIES RETURNED 0 HITS"
    add(
        "filtered search p95",
        f95,
        "ms",
        fnote,
        f"p95 <= {TARGET_P95_MS:.0f} ms",
        f95 <= TARGET_P95_MS and min(fhits) > 0,
        filter=FILTERS,
        matches=loaded.filter_matches,
        hits=fhits,
    )
    s95 = _pct(similar.times, 95) * 1000
    add(
        "similar p95",
        s95,
        "ms",
        f"GET /api/v1/images/{{id}}/similar?limit=20, distinct stored images (stored vector, no embedding);"
        f" {similar.note()}; hits {min(similar.hits)}–{max(similar.hits)}",
    )
    c95 = {k: _pct(t.times, 95) * 1000 for k, t in combined.items()}
    per_term = max(c95[2] - c95[1], (c95[3] - c95[1]) / 2)
    k95 = {k: _pct(t.times, 95) * 1000 for k, t in combined_cached.items()}
    per_cached_term = max(k95[2] - k95[1], (k95[3] - k95[1]) / 2)
    add(
        "combined query p95, 1 / 2 / 3 cached terms",
        k95[3],
        "ms",
        f"the same query repeated, its terms' embeddings from the query cache (HTTP + weighted sum +"
        f" store): p95 {k95[1]:.1f} / {k95[2]:.1f} / {k95[3]:.1f} ms; each extra term {per_cached_term:+.1f} ms"
        f" at p95 (the embedding of a new term is the row below)",
        "+ < 10 ms per extra term",
        per_cached_term < 10.0,
        p95_by_terms={str(k): round(v, 2) for k, v in k95.items()},
        per_extra_term_ms=round(per_cached_term, 2),
    )
    add(
        "combined query p95, 1 / 2 / 3 text terms",
        c95[3],
        "ms",
        f"POST /api/v1/search/query, distinct terms (each embedded), the last one negative: p95 {c95[1]:.0f} /"
        f" {c95[2]:.0f} / {c95[3]:.0f} ms (p50 {_pct(combined[1].times, 50) * 1000:.0f} /"
        f" {_pct(combined[2].times, 50) * 1000:.0f} / {_pct(combined[3].times, 50) * 1000:.0f} ms); one term vs"
        f" plain text search p95 {c95[1] - p95:+.0f} ms; each extra term {per_term:+.1f} ms at p95",
        "+ < 10 ms per extra term",
        per_term < 10.0 and all(min(t.hits) > 0 for t in combined.values()),
        p95_by_terms={str(k): round(v, 2) for k, v in c95.items()},
        per_extra_term_ms=round(per_term, 2),
    )
    if backend == "edge":
        if loaded.build_s is not None:
            add(
                "index build",
                loaded.build_s,
                "s",
                f"HNSW (m 16, ef_construct 100) in a child process at nice 10, service stopped, store's own"
                f" last_build_s; {loaded.build_wall_s:.1f} s from after_writes to wait_for_index;"
                f" {loaded.indexed:,}/{loaded.total:,} indexed; load of the new points {loaded.load_s:.1f} s"
                " (store API, batches of 2,000)",
                build_wall_s=loaded.build_wall_s,
                load_s=loaded.load_s,
            )
        else:
            why = loaded.build_error or (
                "below the index threshold: exact search"
                if (loaded.indexed or 0) < loaded.total
                else "already indexed"
            )
            add(
                "index build", None, "s", f"no build: {why}; load {loaded.load_s:.1f} s", load_s=loaded.load_s
            )
    else:
        add(
            "index build",
            None,
            "s",
            f"n/a, no index (local mode searches exactly); load {loaded.load_s:.1f} s",
            load_s=loaded.load_s,
        )
    if loaded.scan is None:
        tiers = {t: len(dups.get(t) or []) for t in ("exact", "same_picture", "bursts", "near")}
        want = planted(0, loaded.total)
        tier_s = dups.get("seconds") or {}
        found_note = ", ".join(f"{t} {tiers[t]} (planted {want.get(t, 0)})" for t in tiers)
        add(
            "duplicate scan, every tier",
            scan_s,
            "s",
            f"GET /api/v1/duplicates (defaults), whole collection over HTTP: {found_note}; server-side seconds"
            f" per step: {', '.join(f'{k} {v:.2f}' for k, v in tier_s.items())}",
            f"<= {TARGET_DUPLICATES_S:.0f} s",
            scan_s is not None and scan_s <= TARGET_DUPLICATES_S and all(tiers[t] >= want.get(t, 0) for t in tiers),
            groups=tiers,
            planted=want,
            tier_seconds=tier_s,
        )
    else:
        est = loaded.scan
        hash_s, hash_pairs = hash_pass_s(est.points)
        add(
            "same-picture tier (pHash pass), whole",
            hash_s,
            "s",
            f"the tier's own work on {est.points:,} hashes (multi-index Hamming search within"
            f" {hash_pairs} planted pairs found), in-process",
        )
        add(
            "near-duplicate scan (EXTRAPOLATED)",
            est.estimate_s,
            "s",
            f"EXTRAPOLATED, not measured whole: the service's scan calls through the store API (service"
            f" stopped) on {est.sampled:,} of {est.points:,} points in {est.sample_s:.1f} s, times"
            f" {est.points / max(1, est.sampled):.1f}, + the exact-duplicate scroll {est.exact_s:.1f} s"
            f" ({est.pairs} pairs >= 0.95 in the sample)",
            f"<= {TARGET_DUPLICATES_S:.0f} s",
            False if est.estimate_s > TARGET_DUPLICATES_S else None,
            extrapolated=True,
            sampled=est.sampled,
            sample_s=est.sample_s,
            exact_s=est.exact_s,
        )
    add(
        "peak RSS of the ingestion service",
        _mib(peak),
        "MiB",
        "psutil every 0.1 s, children included, from the spawn of the measured start through the searches"
        + (" and the duplicate scan" if loaded.scan is None else ""),
    )
    log(
        f"search/{backend} {size:,}: restart {restart:.2f} s, text p95 {p95:.0f} ms, filtered p95 {f95:.0f} ms,"
        f" similar p95 {s95:.0f} ms, scan {scan_s if scan_s is not None else loaded.scan.estimate_s if loaded.scan else 0:.0f} s,"
        f" RSS {_mib(peak) or 0:.0f} MiB"
    )
    return peak
