"""Migrate section: switching a collection to another model, against a plain ingest with that model.

One ML service hosts two random-weight full-size ViT-B/32 models (`SHOEBOX_MODELS=A,B`: the
corpus' `models/vit-b-32`, seed 0, the default, and `models/vit-b-32-seed1`, built here the same
way with seed 1). The same N 12 MP JPEGs of the corpus are

1. ingested into a collection created with model B (`create_collection(name, B)`): the plain
   ingest, the reference;
2. ingested into two collections on model A (setup), each then migrated to B
   (`ShoeboxClient.migrate` + `follow_migration`): once with nothing else running (the rate
   compared with the plain ingest's), once with a client thread issuing text searches back to back
   on the migrating collection from the migration's start to its end;
3. searched while idle (distinct query texts, so the query cache never answers) before the
   migrations: the reference of the searches during the migration.

Each ingestion service has its own fresh data dir (no embedding cache shared between the cases);
the setup ingests run first, so every measured read finds the files in the page cache alike.
"""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.corpus import Corpus, _model_ready
from bench.ingest import _fresh, _job_note, _slim
from bench.ml import query_texts
from bench.report import Report, Row
from bench.services import JobRun, RssSampler, Workspace, run_ingest_job, running, start_ingest, start_ml
from shoebox.client import ShoeboxClient
from shoebox.launcher import ServiceProcess

SECTION = "migrate"
MiB = 1024**2
N_FILES, QUICK_FILES = 300, 40
IDLE_QUERIES, QUICK_IDLE_QUERIES = 60, 30
WARMUP_QUERIES = 5
TARGET_P95_RATIO = 2.0  # p95 during the migration / p95 idle
PLAIN = "bench_plain_b"  # created on model B, ingested: the reference
QUIET = "bench_migrate_quiet"  # model A, migrated to B with nothing else running
BUSY = "bench_migrate_busy"  # model A, migrated to B under back-to-back searches
MODEL_B_SEED = 1


# ---------------------------------------------------------------- setup


def model_b_dir(corpus: Corpus) -> Path:
    return corpus.models / f"vit-b-32-seed{MODEL_B_SEED}"


def _make_model_seeded(args: tuple[str, Path, int]) -> str:
    from shoebox.ml.models.testmodel import make_test_model

    size, out, seed = args
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    make_test_model(size, tmp, seed=seed)  # type: ignore[arg-type]
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return str(out)


def ensure_model_b(corpus: Corpus, log: Callable[[str], None]) -> Path:
    """The second model, built once (in a child process, as the corpus builds its models)."""
    path = model_b_dir(corpus)
    if not _model_ready(path):
        corpus.models.mkdir(parents=True, exist_ok=True)
        log(f"migrate: building the random-weight vit-b-32 test model, seed {MODEL_B_SEED}, in {path}")
        with ProcessPoolExecutor(1) as pool:
            pool.submit(_make_model_seeded, ("vit-b-32", path, MODEL_B_SEED)).result()
    return path


def file_set(ws: Workspace, corpus: Corpus, n: int) -> Path:
    """A folder of the first `n` 12 MP JPEGs of the corpus (hard links; copies across file systems)."""
    files = sorted(corpus.jpeg12mp.rglob("*.jpg"))[:n]
    if len(files) < n:
        raise RuntimeError(f"the corpus has {len(files)} 12 MP JPEGs, {n} needed")
    folder = ws.root / "files" / f"jpeg12mp-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    for src in files:
        dst = folder / src.name
        if dst.exists():
            continue
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    return folder


# ---------------------------------------------------------------- searches


@dataclass
class Searches:
    times: list[float] = field(default_factory=list)  # seconds per answered request, client side
    failures: list[str] = field(default_factory=list)
    empty: int = 0
    cache_hits: int = 0
    models: dict[str, int] = field(default_factory=dict)  # model_name of the answers → how many

    def p(self, q: int) -> float:
        return _pct(self.times, q) * 1000

    def note(self) -> str:
        if not self.times:
            return "no answered query"
        return (
            f"{len(self.times)} queries; p50 {self.p(50):.1f} ms, mean {statistics.mean(self.times) * 1000:.1f},"
            f" max {max(self.times) * 1000:.0f} ms"
        )


def _search(client: httpx.Client, collection: str, text: str, out: Searches) -> None:
    t0 = time.perf_counter()
    try:
        r = client.post(
            "/api/v1/search/text", json={"query": text, "limit": 20, "collection_name": collection}
        )
    except httpx.HTTPError as exc:
        out.failures.append(repr(exc))
        return
    dt = time.perf_counter() - t0
    if r.status_code != 200:
        out.failures.append(f"{r.status_code} {r.text[:200]}")
        return
    body = r.json()
    out.times.append(dt)
    out.empty += not body.get("results")
    out.cache_hits += r.headers.get("X-Query-Embedding-Cache") == "hit"
    model = str(body.get("model_name"))
    out.models[model] = out.models.get(model, 0) + 1


def idle_searches(ingest: ServiceProcess, collection: str, n: int, salt: str) -> Searches:
    """Sequential text searches with distinct texts (limit 20), after WARMUP_QUERIES not counted."""
    texts = query_texts(n + WARMUP_QUERIES, salt=salt)
    out, warm = Searches(), Searches()
    with httpx.Client(base_url=ingest.url, timeout=120.0) as client:
        for i, text in enumerate(texts):
            _search(client, collection, text, warm if i < WARMUP_QUERIES else out)
    out.failures += warm.failures
    return out


class SearchLoop:
    """A thread issuing distinct text searches back to back until stopped."""

    def __init__(self, ingest: ServiceProcess, collection: str, salt: str) -> None:
        self.url, self.collection, self.salt = ingest.url, collection, salt
        self.out = Searches()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-search-loop", daemon=True)

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120.0) as client:
            i = 0
            while not self._stop.is_set():
                # query_texts(k) grows by one distinct text per k; asking it in blocks keeps it cheap.
                for text in query_texts(i + 500, salt=self.salt)[i:]:
                    if self._stop.is_set():
                        return
                    _search(client, self.collection, text, self.out)
                i += 500

    def start(self) -> SearchLoop:
        self._thread.start()
        return self

    def stop(self) -> Searches:
        self._stop.set()
        self._thread.join(180)
        return self.out


# ---------------------------------------------------------------- migrations


@dataclass
class Migration:
    wall_s: float  # client side: POST …/migrate → the status poll that saw it finished
    status: dict[str, Any]
    searches: Searches | None = None

    @property
    def files(self) -> int:
        return int(self.status.get("done") or 0)

    @property
    def rate(self) -> float:
        return self.files / self.wall_s

    def note(self) -> str:
        s = self.status
        note = (
            f"{s.get('done')}/{s.get('total')} contents in {self.wall_s:.1f} s; from_files {s.get('from_files')},"
            f" from_thumbnails {s.get('from_thumbnails')}, failed {s.get('failed')}"
        )
        if s.get("elapsed_s") is not None:
            note += f"; service's own started→finished {s['elapsed_s']:.1f} s"
        if s.get("status") != "completed":
            note += f"; status {s.get('status')}: {s.get('message')}"
        return note


def migrate(
    ingest: ServiceProcess,
    collection: str,
    model: str,
    *,
    search_salt: str | None = None,
    timeout: float = 1800.0,
) -> Migration:
    """Migrate `collection` to `model` and follow it to its end (polls every 20 ms); with
    `search_salt`, a thread searches the collection back to back from the POST's answer to the end."""
    with ShoeboxClient(ingest.url, timeout=60.0) as client:
        loop = None
        t0 = time.perf_counter()
        try:
            client.migrate(collection, model)
            if search_salt is not None:
                loop = SearchLoop(ingest, collection, search_salt).start()
            status = client.follow_migration(collection, poll_s=0.02, timeout=timeout)
            wall = time.perf_counter() - t0
        finally:
            searches = loop.stop() if loop is not None else None
        return Migration(wall, status, searches)


def _ingest_setup(ingest: ServiceProcess, folder: Path, collection: str, n: int) -> JobRun:
    job = run_ingest_job(ingest, folder, collection)
    c = job.counts()  # the second collection's vectors come from the embedding cache: same contents
    if job.status != "completed" or c["indexed"] + c["cached"] != n or c["failed"]:
        raise RuntimeError(f"the ingest of {collection} ended {job.status}: {_job_note(job)}")
    return job


def _model_ids(caps: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    models = caps.get("models") or []
    if len(models) < 2:
        raise RuntimeError(f"the ML service hosts {len(models)} model(s), 2 expected: {caps.get('model_id')}")
    a = next(m for m in models if m.get("default"))
    b = next(m for m in models if not m.get("default"))
    return a, b


# ---------------------------------------------------------------- the section


def run(report: Report, ws: Workspace, corpus: Corpus, quick: bool, log: Callable[[str], None]) -> None:
    t_section = time.monotonic()
    n = QUICK_FILES if quick else N_FILES
    n_idle = QUICK_IDLE_QUERIES if quick else IDLE_QUERIES
    try:
        model_b = ensure_model_b(corpus, log)
        folder = file_set(ws, corpus, n)
        ml, startup = start_ml(ws, [corpus.vit_b_32, model_b], "ml-two-models", timeout=900.0)
    except Exception as exc:  # noqa: BLE001 - the other sections' rows still stand
        report.errors.append(f"migrate: setup: {exc!r}")
        log(f"migrate: setup FAILED: {exc!r}")
        return
    log(f"migrate: ML service with two models up in {startup:.1f} s at {ml.url}")
    with running(ml):
        try:
            caps = httpx.get(ml.url + "/api/v1/capabilities", timeout=30).json()
            a, b = _model_ids(caps)
            report.context["migrate_models"] = [a, b]
            report.add(
                Row(
                    SECTION,
                    "ML service start-up, two ViT-B/32 models (load + identity + safe-batch probe each)",
                    startup,
                    "s",
                    note=f"A (default) {a['model_id']} safe_clip_batch {a.get('safe_clip_batch')};"
                    f" B {b['model_id']} safe_clip_batch {b.get('safe_clip_batch')}",
                )
            )
            _measure(report, ws, ml, folder, n, n_idle, a["model_id"], b["model_id"], log)
        except Exception as exc:  # noqa: BLE001
            report.errors.append(f"migrate: {exc!r}")
            log(f"[red]migrate: FAILED: {exc!r}[/]")
    report.add(
        Row(
            SECTION,
            "migrate section wall time",
            time.monotonic() - t_section,
            "s",
            note="model B build (first run only), services' start-ups, setup ingests and every row above",
        )
    )


def _measure(
    report: Report,
    ws: Workspace,
    ml: ServiceProcess,
    folder: Path,
    n: int,
    n_idle: int,
    model_a: str,
    model_b: str,
    log: Callable[[str], None],
) -> None:
    roots = {"SHOEBOX_INGEST_ROOTS": f"{ws.corpus_root},{folder.parent}"}
    files = f"{n:,} x 12 MP JPEG"

    # Setup first (reads every file once: the measured runs below all find them in the page cache):
    # the two collections on model A that get migrated, and the idle searches on one of them.
    ingest, _ = start_ingest(ws, ml, _fresh(ws, "migrate"), "ingest-migrate", env=roots)
    with running(ingest):
        setup = [_ingest_setup(ingest, folder, name, n) for name in (QUIET, BUSY)]
        setup_rate = n / setup[0].wall_s
        log(
            f"migrate: setup ingest with model A: {setup_rate:.1f} files/s, the second {setup[1].wall_s:.1f} s"
        )
        idle = idle_searches(ingest, BUSY, n_idle, salt="migrate idle ")
        log(f"migrate: idle text search p50 {idle.p(50):.0f} ms, p95 {idle.p(95):.0f} ms")
        if set(idle.models) != {model_a}:
            report.errors.append(f"migrate: idle searches answered by {idle.models}, not only {model_a}")

        # The reference: the same files ingested straight into a collection on model B, by a fresh
        # service and data dir (this one waits, idle).
        plain_svc, _ = start_ingest(ws, ml, _fresh(ws, "migrate-plain"), "ingest-migrate-plain", env=roots)
        with running(plain_svc), RssSampler({"ml": ml.proc.pid, "ingest": plain_svc.proc.pid}) as plain_rss:
            with ShoeboxClient(plain_svc.url, timeout=60.0) as client:
                client.create_collection(PLAIN, model_b)
                plain = run_ingest_job(plain_svc, folder, PLAIN)
                plain_model = client.collection_info(PLAIN).get("model_name")
        plain_rate = plain.counts()["indexed"] / plain.wall_s
        log(f"migrate: plain ingest with model B {plain_rate:.1f} files/s ({_job_note(plain)})")

        with RssSampler({"ml": ml.proc.pid, "ingest": ingest.proc.pid}) as quiet_rss:
            quiet = migrate(ingest, QUIET, model_b)
        log(f"migrate: migration A → B, quiet: {quiet.rate:.1f} files/s ({quiet.note()})")
        before = {"ml": _rss(ml), "ingest": _rss(ingest)}
        with RssSampler({"ml": ml.proc.pid, "ingest": ingest.proc.pid}) as busy_rss:
            busy = migrate(ingest, BUSY, model_b, search_salt="migrate during ")
        during = busy.searches or Searches()
        log(
            f"migrate: migration A → B under searches: {busy.rate:.1f} files/s; searches p95"
            f" {during.p(95) if during.times else float('nan'):.0f} ms, {len(during.failures)} failed,"
            f" {during.empty} empty"
        )
        after = idle_searches(ingest, BUSY, n_idle, salt="migrate after ")
        with ShoeboxClient(ingest.url, timeout=60.0) as client:
            infos = {name: client.collection_info(name) for name in (QUIET, BUSY)}

    # ------------------------------------------------------------ rows
    def add(
        metric: str,
        value: float | None,
        unit: str,
        note: str = "",
        target: str | None = None,
        met: bool | None = None,
        **extra: Any,
    ) -> None:
        report.add(Row(SECTION, metric, value, unit, None, target, met, note, extra))

    add(
        f"setup: ingest of {files} into two collections on model A",
        setup_rate,
        "files/s",
        f"not a target, builds the collections that are migrated: the first {_job_note(setup[0])};"
        f" the second from the embedding cache in {setup[1].wall_s:.1f} s",
        jobs=[_slim(j.job) for j in setup],
    )
    plain_ok = plain.status == "completed" and plain.counts()["indexed"] == n and plain_model == model_b
    add(
        f"plain ingest of {files} into a collection on model B",
        plain_rate,
        "files/s",
        f"{_job_note(plain)}; {plain.wall_s:.1f} s submit → finished; collection's model {plain_model}"
        + ("" if plain_ok else "; NOT CLEAN"),
        job=_slim(plain.job),
        wall_s=plain.wall_s,
        server_s=plain.server_s,
    )
    quiet_ok = _migration_ok(quiet, infos[QUIET], n, model_b)
    add(
        f"migration A → B of the same {files} (nothing else running)",
        quiet.rate,
        "files/s",
        f"{quiet.note()}; POST …/migrate → the poll (every 20 ms) that saw it completed"
        + ("" if quiet_ok else "; NOT CLEAN"),
        status=quiet.status,
        wall_s=quiet.wall_s,
    )
    ratio = quiet.rate / plain_rate
    add(
        "migration files/s ÷ plain-ingest files/s (both model B, same files)",
        ratio,
        "x",
        f"{quiet.rate:.1f} / {plain_rate:.1f} files/s; no target set (above 1: a migration re-embeds faster"
        " than an ingest of the same files)",
        "none set",
    )
    add(
        "migration: contents embedded from their files",
        quiet.status.get("from_files"),
        "files",
        "every file is online and unchanged, so each is read (and hash-checked) again",
        f"= {n:,}",
        quiet.status.get("from_files") == n,
    )
    add(
        "migration: contents embedded from their thumbnails",
        quiet.status.get("from_thumbnails"),
        "files",
        "only for a file gone or changed since its ingest",
        "= 0",
        quiet.status.get("from_thumbnails") == 0,
    )
    busy_ok = _migration_ok(busy, infos[BUSY], n, model_b)
    add(
        f"migration A → B of the same {files} under back-to-back searches",
        busy.rate,
        "files/s",
        f"{busy.note()}; {len(during.times)} searches answered meanwhile"
        + ("" if busy_ok else "; NOT CLEAN"),
        status=busy.status,
        wall_s=busy.wall_s,
    )
    idle_p95 = idle.p(95) if idle.times else None
    add(
        "text search p50, idle (model A)",
        idle.p(50) if idle.times else None,
        "ms",
        f"distinct queries, limit 20, text embedding by the ML service included; {idle.note()}"
        + _search_flags(idle),
        samples_ms=[round(t * 1000, 2) for t in idle.times],
    )
    add(
        "text search p95, idle (model A)",
        idle_p95,
        "ms",
        f"after the switch (model B), idle: p50 {after.p(50):.1f}, p95 {after.p(95):.1f} ms over"
        f" {len(after.times)} queries" + _search_flags(after)
        if after.times
        else "after the switch: no answered query",
        after_ms=[round(t * 1000, 2) for t in after.times],
    )
    split = ", ".join(f"{v} by {k}" for k, v in during.models.items())
    add(
        "text search p50 during the migration",
        during.p(50) if during.times else None,
        "ms",
        f"one client, back to back, from the POST's answer to the migration's end; {during.note()};"
        f" answered {split}" + _search_flags(during),
        samples_ms=[round(t * 1000, 2) for t in during.times],
    )
    during_p95 = during.p(95) if during.times else None
    add("text search p95 during the migration", during_p95, "ms", during.note())
    p95_ratio = during_p95 / idle_p95 if during_p95 and idle_p95 else None
    add(
        "text search p95 during ÷ p95 idle",
        p95_ratio,
        "x",
        f"{during_p95 or 0:.1f} / {idle_p95 or 0:.1f} ms",
        f"<= {TARGET_P95_RATIO:.0f}x",
        None if p95_ratio is None else p95_ratio <= TARGET_P95_RATIO,
    )
    add(
        "failed searches during the migration",
        len(during.failures),
        "queries",
        "; ".join(during.failures[:3]) or f"of {len(during.times) + len(during.failures)}",
        "= 0",
        not during.failures and bool(during.times),
        failures=during.failures[:20],
    )
    add(
        "empty result pages during the migration",
        during.empty,
        "queries",
        f"of {len(during.times)} answered",
        "= 0",
        during.empty == 0 and bool(during.times),
    )
    for who in ("ml", "ingest"):
        peak = busy_rss.peaks.get(who)
        others = (
            f"quiet migration {quiet_rss.peaks[who] / MiB:,.0f} MiB, plain ingest {plain_rss.peaks[who] / MiB:,.0f} MiB"
            if who in quiet_rss.peaks and who in plain_rss.peaks
            else ""
        )
        add(
            f"peak RSS of the {who} service during the migration under searches",
            None if peak is None else peak / MiB,
            "MiB",
            f"psutil every 0.1 s, children included; {before[who] / MiB:,.0f} MiB just before it; {others}"
            + ("; the ML service's figure can carry over from its start-up (probe)" if who == "ml" else ""),
            peaks={
                "busy": busy_rss.peaks.get(who),
                "quiet": quiet_rss.peaks.get(who),
                "plain": plain_rss.peaks.get(who),
            },
        )
    if not (plain_ok and quiet_ok and busy_ok):
        report.errors.append("migrate: a run did not end clean (see its note)")


def _migration_ok(m: Migration, info: dict[str, Any], n: int, model: str) -> bool:
    s = m.status
    return (
        s.get("status") == "completed"
        and s.get("done") == n
        and not s.get("failed")
        and info.get("model_name") == model
        and info.get("points_count") == n
    )


def _rss(svc: ServiceProcess) -> int:
    proc = psutil.Process(svc.proc.pid)
    return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))


def _search_flags(s: Searches) -> str:
    flags = ""
    if s.cache_hits:
        flags += f"; {s.cache_hits} answered from the query cache (should be 0)"
    if s.empty:
        flags += f"; {s.empty} EMPTY pages"
    if s.failures:
        flags += f"; {len(s.failures)} FAILED"
    return flags


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]
