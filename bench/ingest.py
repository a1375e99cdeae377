"""Ingest section: both services over HTTP, embedded Qdrant, a fresh data dir for every case."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.corpus import DNG_SHAPES, Corpus
from bench.report import Report, Row
from bench.services import JobRun, RssSampler, Workspace, run_ingest_job, running, start_ingest, start_ml
from shoebox.launcher import ServiceProcess
from shoebox.protocol import Job

MiB = 1024**2
RAW_TRANSPORTS = ("rendition", "original")  # SHOEBOX_RAW_TRANSPORT of the ingestion service
PREPARE_STEPS = ("read", "sha256", "decode", "rendition", "thumbnail", "exif")


@dataclass
class BarePrepare:
    """What the ingestion service does to one 12 MP JPEG before sending it, in one thread, no service."""

    s_per_image: float
    files: int
    steps_ms: dict[str, float]  # mean per image


@dataclass
class Case:
    job: JobRun
    peaks: dict[str, int]  # service → peak RSS in bytes


class _Laps:
    """A stopwatch: each call adds the time since the previous one to `totals[step]`."""

    def __init__(self, totals: dict[str, float]) -> None:
        self.totals, self.last = totals, time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.totals[step] += now - self.last
        self.last = now


def measure_bare_prepare(
    corpus: Corpus, quick: bool, input_size: int, log: Callable[[str], None]
) -> BarePrepare:
    """The ingest's per-file work before sending, timed step by step over a sample of the JPEG corpus,
    as `shoebox.ingest.stages` does it: read, SHA-256 of the bytes read, decode_for_model, rendition
    (shortest side to the model's input, JPEG), thumbnail (from the rendition when it is big enough),
    EXIF. Only the thumbnail's write to disk is left out."""
    from shoebox import imaging
    from shoebox.ingest.stages import rendition

    files = sorted(corpus.jpeg12mp_folder(quick).rglob("*.jpg"))
    n = min(len(files), 25 if quick else 100)
    sample = files[:: max(1, len(files) // n)][:n]
    totals = dict.fromkeys(PREPARE_STEPS, 0.0)
    thumb_side = imaging.THUMBNAIL_SIZE  # the ingestion service's default thumbnail_size

    def prepare(path: Path, into: dict[str, float]) -> None:
        lap = _Laps(into)
        data = path.read_bytes()
        lap("read")
        hashlib.sha256(data).hexdigest()
        lap("sha256")
        decoded = imaging.decode_for_model(
            data, path.name, min_side=max(input_size, thumb_side), max_pixels=imaging.DEFAULT_MAX_PIXELS
        )
        lap("decode")
        small, _ = rendition(decoded.image, input_size)
        lap("rendition")
        imaging.make_thumbnail(small if max(small.size) >= thumb_side else decoded.image, thumb_side)
        lap("thumbnail")
        imaging.read_exif(data, path.name)
        lap("exif")

    prepare(sample[0], dict.fromkeys(PREPARE_STEPS, 0.0))  # warm-up: first decode loads the codecs
    for path in sample:
        prepare(path, totals)
    bare = BarePrepare(
        s_per_image=sum(totals.values()) / n,
        files=n,
        steps_ms={k: v / n * 1000 for k, v in totals.items()},
    )
    log(f"ingest: bare decode-to-rendition {bare.s_per_image * 1000:.1f} ms/img over {n} files, 1 thread")
    return bare


def prepare_note(bare: BarePrepare) -> str:
    steps = ", ".join(f"{k} {v:.1f}" for k, v in bare.steps_ms.items())
    return f"ms per image over {bare.files} files of the JPEG corpus, 1 thread: {steps}"


def _fresh(ws: Workspace, name: str) -> Path:
    path = ws.root / "data" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _ingest_case(
    ws: Workspace, ml: ServiceProcess, folder: Path, name: str, env: dict[str, str] | None = None
) -> Case:
    """One job on a freshly started ingestion service and data dir, with both services' peak RSS."""
    ingest, _ = start_ingest(ws, ml, _fresh(ws, name), f"ingest-{name}", env=env)
    with running(ingest), RssSampler({"ml": ml.proc.pid, "ingest": ingest.proc.pid}) as rss:
        job = run_ingest_job(ingest, folder, "bench")
    return Case(job, dict(rss.peaks))


def _rss_rows(report: Report, peaks: dict[str, int], during: str) -> None:
    for who in ("ingest", "ml"):
        peak = peaks.get(who)
        report.add(
            Row(
                "ingest",
                f"peak RSS of the {who} service during {during}",
                None if peak is None else peak / MiB,
                "MiB",
                note="psutil every 0.1 s, children included",
            )
        )


def _rss_note(peaks: dict[str, int]) -> str:
    return (
        "peak RSS "
        + " / ".join(f"{who} {peaks[who] / MiB:,.0f}" for who in ("ingest", "ml") if who in peaks)
        + " MiB"
    )


def _job_note(run: JobRun) -> str:
    c = run.counts()
    note = f"{c['indexed']} indexed, {c['cached']} cached, {c['unchanged']} unchanged, {c['failed']} failed"
    if run.server_s is not None:
        note += f"; service's own created→finished {run.server_s:.2f} s"
    if run.status != "completed":
        note += f"; status {run.status}"
    if run.error_summary():
        note += f"; errors {run.error_summary()}"
    return note


def _clean(run: JobRun, expected: int, field: str) -> bool:
    c = run.counts()
    return run.status == "completed" and c[field] == expected and c["failed"] == 0


def _count(folder: Path, pattern: str) -> int:
    return sum(1 for _ in folder.rglob(pattern))


def _dng_rows(
    report: Report, ws: Workspace, corpus: Corpus, ml: ServiceProcess, log: Callable[[str], None]
) -> None:
    """The roadmap's benchmark, 25 camera RAW files end to end, for every preview shape, both transports."""
    peaks: dict[str, dict[str, int]] = {t: {} for t in RAW_TRANSPORTS}
    for shape in DNG_SHAPES:
        folder = corpus.dng(shape.name)
        n = _count(folder, "*.dng")
        for transport in RAW_TRANSPORTS:
            label = f"{n} x 12 MP DNG, {shape.label}, {transport}"
            try:
                if not n:
                    raise RuntimeError(f"no DNGs in {folder}")
                case = _ingest_case(
                    ws, ml, folder, f"{folder.name}-{transport}", {"SHOEBOX_RAW_TRANSPORT": transport}
                )
            except Exception as exc:  # noqa: BLE001 - report and go on with the next case
                report.errors.append(f"ingest {label}: {exc!r}")
                log(f"ingest: {label} FAILED: {exc!r}")
                continue
            job = case.job
            for who, peak in case.peaks.items():
                peaks[transport][who] = max(peaks[transport].get(who, 0), peak)
            note = f"{_job_note(job)}; {n / job.wall_s:.1f} files/s; {_rss_note(case.peaks)}"
            if shape.name == "jpeg":
                note += "; roadmap: 110.78 s, then 64.71 s on GPU"
            extra = {
                "job": _slim(job.job),
                "shape": shape.name,
                "raw_transport": transport,
                "rss": case.peaks,
            }
            met = job.wall_s <= 2.5 and _clean(job, n, "indexed")
            report.add(Row("ingest", label, job.wall_s, "s", None, "<= 2.5 s", met, note, extra))
            log(f"ingest: {label} {job.wall_s:.2f} s ({_job_note(job)})")
    for transport in RAW_TRANSPORTS:
        _rss_rows(report, peaks[transport], f"the DNG rows, {transport}")


def run(
    report: Report,
    ws: Workspace,
    corpus: Corpus,
    ml: ServiceProcess,
    quick: bool,
    log: Callable[[str], None],
) -> None:
    _dng_rows(report, ws, corpus, ml, log)

    # Bulk JPEGs: end-to-end img/s against the pipeline limit (and the bare encoder), with peak memory.
    folder = corpus.jpeg12mp_folder(quick)
    n = _count(folder, "*.jpg")
    label = f"{n:,} x 12 MP JPEG end to end"
    try:
        case = _ingest_case(ws, ml, folder, "jpeg12mp")
        job = case.job
        report.add(
            Row(
                "ingest",
                label,
                job.counts()["indexed"] / job.wall_s,
                "img/s",
                target=">= 0.95 of limit",
                note=_job_note(job) + f"; {job.wall_s:.1f} s",
                extra={"job": _slim(job.job)},
                vs="image",
                min_ratio=0.95,
                min_ratio_vs="pipeline",
                clean=_clean(job, n, "indexed"),
            )
        )
        _rss_rows(report, case.peaks, "the JPEG run")
        log(f"ingest: {label} {job.counts()['indexed'] / job.wall_s:.1f} img/s")
    except Exception as exc:  # noqa: BLE001
        report.errors.append(f"ingest {label}: {exc!r}")
        log(f"ingest: {label} FAILED: {exc!r}")

    # Re-ingest of an unchanged folder: the first pass only builds state (tiny model, to keep the
    # run short); the second pass is the one timed, and must not read or embed anything.
    folder = corpus.small_folder(quick)
    n = _count(folder, "*.jpg")
    try:
        tiny, _ = start_ml(ws, corpus.tiny, "ml-tiny")
        with running(tiny):
            ingest, _ = start_ingest(ws, tiny, _fresh(ws, "small"), "ingest-small")
            with running(ingest):
                first = run_ingest_job(ingest, folder, "bench", poll_s=0.1)
                again = run_ingest_job(ingest, folder, "bench")
        report.add(
            Row(
                "ingest",
                f"first ingest of {n:,} small JPEGs (TINY model, setup only)",
                first.wall_s,
                "s",
                note=_job_note(first) + f"; {n / first.wall_s:.0f} files/s; not a target, builds the state",
            )
        )
        report.add(
            Row(
                "ingest",
                f"re-ingest of the unchanged {n:,}-file folder",
                again.wall_s,
                "s",
                None,
                "<= 10 s",
                again.wall_s <= 10 and _clean(again, n, "unchanged"),
                _job_note(again) + f"; {n / again.wall_s:,.0f} files/s",
                {"job": _slim(again.job)},
            )
        )
        log(f"ingest: re-ingest of {n} files {again.wall_s:.2f} s ({_job_note(again)})")
    except Exception as exc:  # noqa: BLE001
        report.errors.append(f"ingest re-ingest of {n} files: {exc!r}")
        log(f"ingest: re-ingest FAILED: {exc!r}")


def _slim(job: Job) -> dict:
    """The job without its long lists, for the JSON."""
    slim = job.model_dump(mode="json", exclude={"logs", "errors"})
    slim["errors_first"] = [e.model_dump(mode="json") for e in job.errors[:5]]
    return slim
