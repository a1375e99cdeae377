"""What the fault and load tests share: a fault-injecting proxy, the after-recovery audit of a
data dir, memory sampling, and the record of the figures the README quotes.

Everything here runs on loopback only, and every loop is bounded in count or time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

# ---------------------------------------------------------------- figures


def record_figures(name: str, figures: dict) -> None:
    """Print one scenario's figures, and append them to `$SHOEBOX_RELIABILITY_JSON` when it is set
    (`scripts/reliability` sets it and prints the table the README quotes)."""
    line = json.dumps({"scenario": name, **figures}, sort_keys=True)
    print(f"\nFIGURES {line}")
    out = os.environ.get("SHOEBOX_RELIABILITY_JSON")
    if out:
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# ---------------------------------------------------------------- the audit after recovery


@dataclass
class Audit:
    """The state of a data dir after recovery (the service stopped): what must hold, and the counts."""

    files_on_disk: int = 0
    known_files: int = 0
    distinct_contents: int = 0
    points: int = 0
    cache_entries: int = 0
    problems: list[str] = field(default_factory=list)


def sha256_of_files(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


def audit_data_dir(data_dir: Path, collection: str, root: Path) -> Audit:
    """Open the catalog, the store and the embedding cache of a stopped service and check that
    nothing is half-written: the catalog passes `PRAGMA integrity_check`, knows every file on disk
    exactly once with its content, the store holds one point per distinct content (never one twice,
    each with its vector), and the cache opens and passes its own check."""
    from shoebox.ingest.cache import EmbeddingCache
    from shoebox.ingest.catalog import Catalog
    from shoebox.store import point_id
    from shoebox.store.edge import EdgeStore

    audit = Audit()
    on_disk = sha256_of_files(root)
    audit.files_on_disk = len(on_disk)

    conn = sqlite3.connect(str(data_dir / "catalog.sqlite3"))
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        running = conn.execute("SELECT COUNT(*) FROM jobs WHERE status IN ('running', 'pending')").fetchone()[
            0
        ]
    finally:
        conn.close()
    if integrity != "ok":
        audit.problems.append(f"catalog integrity_check: {integrity}")
    if running:
        audit.problems.append(f"{running} jobs left running or pending")

    catalog = Catalog(data_dir / "catalog.sqlite3")
    try:
        known = catalog.known_files_under(collection, str(root))
    finally:
        catalog.close()
    audit.known_files = len(known)
    known_sha = {path: kf.sha256 for path, kf in known.items()}
    if known_sha != on_disk:
        missing = sorted(set(on_disk) - set(known_sha))
        extra = sorted(set(known_sha) - set(on_disk))
        wrong = sorted(p for p in set(on_disk) & set(known_sha) if on_disk[p] != known_sha[p])
        audit.problems.append(
            f"catalog vs disk: {len(missing)} missing (e.g. {missing[:3]}), {len(extra)} extra, {len(wrong)} wrong sha"
        )
    contents = set(on_disk.values())
    audit.distinct_contents = len(contents)

    store = EdgeStore(data_dir / "edge", background_index=False)
    try:
        stored: set[str] = set()
        for page in store.iter_points(collection):
            for rec in page:
                sha = rec.payload["sha256"]
                if sha in stored:
                    audit.problems.append(f"content {sha} stored twice")
                if rec.id != point_id(sha) or not rec.vector:
                    audit.problems.append(f"point {rec.id} is half-written")
                stored.add(sha)
        audit.points = store.count(collection)
    finally:
        store.close()
    if audit.points != len(stored) or stored != contents:
        audit.problems.append(
            f"store vs contents: {audit.points} points, {len(stored)} read, {len(contents)} distinct contents, "
            f"{len(contents - stored)} contents without a point, {len(stored - contents)} points of no file"
        )

    cache = EmbeddingCache(data_dir / "embedding_cache", 2 * 1024**3)
    try:
        audit.cache_entries = len(cache)
        warnings = cache._cache.check()  # diskcache's own consistency check (SQLite index vs files)
        if warnings:
            audit.problems.append(f"embedding cache check: {[str(w.message) for w in warnings][:3]}")
    finally:
        cache.close()
    return audit


def accounting_problems(job, total: int) -> list[str]:
    """A finished job's books: every file counted once, in exactly one outcome."""
    problems = []
    if job.status.value == "running" or not job.status.finished:
        problems.append(f"job {job.job_id} is {job.status.value}")
    if job.total_files != total or job.processed_files != total:
        problems.append(f"job counted {job.processed_files}/{job.total_files} of {total} files")
    if job.indexed + job.cached + job.unchanged + job.failed != job.total_files:
        problems.append(
            f"indexed {job.indexed} + cached {job.cached} + unchanged {job.unchanged} + failed {job.failed} "
            f"!= {job.total_files}"
        )
    return problems


# ---------------------------------------------------------------- memory


class RssSampler:
    """Peak resident memory of processes (each with its children), sampled every `every_s`."""

    def __init__(self, pids: dict[str, int], every_s: float = 0.2) -> None:
        import psutil

        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self._every = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self, proc) -> int:
        import psutil

        total = 0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(self._every):
            for name, proc in self._procs.items():
                try:
                    self.peak[name] = max(self.peak[name], self._rss(proc))
                except psutil.Error:
                    pass

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def peak_mib(self) -> dict[str, float]:
        return {name: round(v / 2**20, 1) for name, v in self.peak.items()}


# ---------------------------------------------------------------- the fault-injecting proxy

# What the proxy answers in a fault window, one phase after another.
TOO_MANY = "429"  # 429 ERR_BUSY with Retry-After
UNAVAILABLE = "503"  # 503 with an HTML body, as a load balancer would
GARBAGE = "garbage"  # 200 with a malformed answer: cycles through the GARBAGE_KINDS below
GARBAGE_KINDS = ("not_json", "truncated", "wrong_shape")


@dataclass
class Phase:
    """One fault answered to every request for `seconds`, or to the next `requests` requests."""

    fault: str
    seconds: float | None = None
    requests: int | None = None


class FaultProxy:
    """A reverse proxy on loopback between the ingestion service and the ML service.

    It forwards every request until `arm()`, or until it has forwarded `arm_after` batch requests;
    then, for each phase of `window` in turn, it answers every request with that phase's fault
    instead of forwarding it; then it forwards again. `served` counts what it answered.
    """

    def __init__(self, upstream: str, window: list[Phase], *, arm_after: int | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.window = window
        self.arm_after = arm_after
        self.served: dict[str, int] = {}
        self.armed_at: float | None = None
        self.recovered_at: float | None = None
        self._phase, self._phase_started, self._phase_served = 0, 0.0, 0
        self._lock = threading.Lock()
        self._garbage_turn = 0
        self._http = httpx.Client(timeout=120.0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._fault_now(self.path)
                if fault is None:
                    proxy._forward(self, body)
                else:
                    proxy._answer_fault(self, fault)

            do_GET = do_POST = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def arm(self) -> None:
        with self._lock:
            self._arm(time.monotonic())

    def _arm(self, now: float) -> None:
        if self.armed_at is None:
            self.armed_at = self._phase_started = now

    def window_over(self) -> bool:
        with self._lock:
            self._advance(time.monotonic())
            return self.recovered_at is not None

    @property
    def window_s(self) -> float | None:
        """How long the faults lasted, once they are over."""
        if self.armed_at is None or self.recovered_at is None:
            return None
        return round(self.recovered_at - self.armed_at, 2)

    def _advance(self, now: float) -> None:
        """Move past the phases that are over (by time or by requests answered)."""
        while self.armed_at is not None and self._phase < len(self.window):
            phase = self.window[self._phase]
            timed_out = phase.seconds is not None and now - self._phase_started >= phase.seconds
            counted = phase.requests is not None and self._phase_served >= phase.requests
            if not (timed_out or counted):
                return
            self._phase, self._phase_started, self._phase_served = self._phase + 1, now, 0
        if self.armed_at is not None and self.recovered_at is None:
            self.recovered_at = now

    def _fault_now(self, path: str) -> str | None:
        with self._lock:
            now = time.monotonic()
            if self.armed_at is None and self.arm_after is not None and "batch" in path:
                self.served["forwarded_batches"] = self.served.get("forwarded_batches", 0) + 1
                if self.served["forwarded_batches"] > self.arm_after:
                    self._arm(now)
            if self.armed_at is None:
                return None
            self._advance(now)
            if self._phase >= len(self.window):
                return None
            fault = self.window[self._phase].fault
            if fault == GARBAGE:
                fault = GARBAGE_KINDS[self._garbage_turn % len(GARBAGE_KINDS)]
                self._garbage_turn += 1
            self._phase_served += 1
            self.served[fault] = self.served.get(fault, 0) + 1
            return fault

    def _forward(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {
            k: v
            for k, v in handler.headers.items()
            if k.lower() not in ("host", "content-length", "connection")
        }
        try:
            r = self._http.request(
                handler.command, self.upstream + handler.path, content=body, headers=headers
            )
        except httpx.HTTPError:
            handler.close_connection = True
            _send(handler, 502, b"upstream unreachable", "text/plain")
            return
        _send(
            handler,
            r.status_code,
            r.content,
            r.headers.get("content-type", "application/json"),
            {k: v for k, v in r.headers.items() if k.lower() == "retry-after"},
        )

    def _answer_fault(self, handler: BaseHTTPRequestHandler, fault: str) -> None:
        if fault == TOO_MANY:
            body = b'{"error": {"code": "ERR_BUSY", "message": "busy (fault proxy)"}}'
            _send(handler, 429, body, "application/json", {"Retry-After": "1"})
        elif fault == UNAVAILABLE:
            _send(handler, 503, b"<html><body>503 Service Unavailable</body></html>", "text/html")
        elif fault == "not_json":
            _send(handler, 200, b"<html>this is not JSON", "application/json")
        elif fault == "wrong_shape":
            _send(handler, 200, b'{"results": "nope", "embedding_dim": "x", "models": 7}', "application/json")
        else:  # truncated: promise more bytes than are sent, then close the connection
            handler.close_connection = True
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", "4096")
            handler.end_headers()
            handler.wfile.write(b'{"results": [{"unique_id": "0", "embedding": [0.1, 0.')
            handler.wfile.flush()


def _send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str,
    extra: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for k, v in (extra or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(body)
