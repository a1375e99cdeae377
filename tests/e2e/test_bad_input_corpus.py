"""One ingest of the whole bad-input corpus (shoebox.devtools.bad_inputs) plus good photos,
through the real services: every file ends as its case says, the job completes, both services
stay up, and every good file is indexed and found by a search with its own picture.

The same job also reads a folder that changes under it: the test pauses the job's ML service
(SIGSTOP) while the scan is still handing on the folder's first part, rewrites, deletes and
adds files (and swaps one for a named pipe), then lets it go.

As root, the ingest service runs without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (dropped
at interpreter start by a `sitecustomize` this test writes): root's power to read any file is
gone, as for the normal user a real install runs as, so the mode-000 cases mean something.
"""

from __future__ import annotations

import io
import os
import signal
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from servers import AS_ROOT, ServiceProcess, ShoeboxClient, connect, start_ingest, start_ml, write_photos
from shoebox.devtools import bad_inputs
from shoebox.devtools.bad_inputs import FAILED, INDEXED, SKIPPED, Expect
from shoebox.protocol import Job

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "photos"
MANY_FILES = 5_000
MANY_FILES_LONG = 100_000
COLLECTION = "badinput"
# Small queues and one small batch in flight: the paused ML service stalls the scan within the
# changing folder's first part (a few dozen files), far before its last files.
STALLABLE = {
    "SHOEBOX_QUEUE_SIZE": "8",
    "SHOEBOX_ML_INFERENCE_BATCH_SIZE": "8",
    "SHOEBOX_ML_MAX_INFLIGHT": "1",
}

# Clears CAP_DAC_OVERRIDE (1) and CAP_DAC_READ_SEARCH (2) from every capability set of the
# process before anything else runs (still one thread: every later thread inherits it).
_DROP_DAC_CAPS = textwrap.dedent(
    """
    import ctypes

    _libc = ctypes.CDLL(None, use_errno=True)

    class _Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class _Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    _header, _data = _Header(0x20080522, 0), (_Data * 2)()
    if _libc.capget(ctypes.byref(_header), _data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    for _set in ("effective", "permitted", "inheritable"):
        setattr(_data[0], _set, getattr(_data[0], _set) & ~0b110)
    if _libc.capset(ctypes.byref(_header), _data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    for _cap in (1, 2):
        _libc.prctl(24, _cap, 0, 0, 0)  # PR_CAPBSET_DROP: no child gets them back either
    """
)


@dataclass
class Run:
    corpus: bad_inputs.Corpus
    changing: bad_inputs.ChangingFolder
    good: list[Path]
    job: Job
    api: ShoeboxClient
    ml: ServiceProcess
    ingest: ServiceProcess
    unprivileged: bool
    stored: dict[str, dict]  # path → payload (with "id") of every point
    errors: dict[str, str]  # path → error code


def _expected(run: Run) -> list[tuple[str, Path, Expect]]:
    rows = [(case.kind, path, expect) for case, path, expect in run.corpus.files()]
    rows += [("changing-folder", path, expect) for path, expect in run.changing.expected().items()]
    rows += [("good-photo", path, bad_inputs.OK) for path in run.good]
    return rows


def _unprivileged_env(tmp: Path) -> dict[str, str]:
    if not AS_ROOT:
        return {}
    site = tmp / "no-dac-caps"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_DROP_DAC_CAPS)
    return {"PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}


def _wait_for_scan(api: ShoeboxClient, job_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.job(job_id)
        if any("scanning" in line for line in job.logs) or job.status.finished:
            return
        time.sleep(0.01)
    raise TimeoutError("the job never started scanning")


def _all_points(api: ShoeboxClient) -> dict[str, dict]:
    stored: dict[str, dict] = {}
    page = 1
    while True:
        results = api.images(page=page, per_page=500, collection=COLLECTION)["results"]
        for hit in results:
            for path in hit["payload"]["paths"]:
                stored[path] = {**hit["payload"], "id": hit["id"]}
        if len(results) < 500:
            return stored
        page += 1


@pytest.fixture(scope="module")
def run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("bad-input")
    root = tmp / "photos"
    changing = bad_inputs.write_changing_folder(root / "00_changing")
    corpus = bad_inputs.write_corpus(
        root / "corpus",
        outside=tmp / "outside",
        many_files=MANY_FILES,
        samples=SAMPLES if SAMPLES.is_dir() else None,
    )
    good = write_photos(root / "good", 8, size=(320, 240))
    ml = start_ml(tiny_model_dir, tmp / "ml")
    ingest = start_ingest(tmp / "data", [ml.url], [root], env={**STALLABLE, **_unprivileged_env(tmp)})
    api = connect(ingest.url)
    try:
        job_id = api.ingest(root, COLLECTION)["job_id"]
        _wait_for_scan(api, job_id)
        ml.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(1.5)  # the pipeline fills up behind the paused ML service; the scan waits
            changing.mutate()
        finally:
            ml.proc.send_signal(signal.SIGCONT)
        job = api.follow(job_id, poll_s=0.2, timeout=300)
        yield Run(
            corpus, changing, good, job, api, ml, ingest, unprivileged=AS_ROOT,
            stored=_all_points(api), errors={e.file: e.code.value for e in job.errors},
        )  # fmt: skip
    finally:
        api.close()
        ingest.stop()
        ml.stop()
        for path in (corpus.root / "special" / "sealed", corpus.root / "special" / "no_permission.jpg"):
            path.chmod(0o700)  # so that pytest can clean up


def _outcome(run: Run, path: Path) -> tuple[str, str | None]:
    key = bad_inputs.shown_path(path)
    if key in run.errors:
        return FAILED, run.errors[key]
    if key in run.stored:
        return INDEXED, None
    return SKIPPED, None


def test_every_case_ends_with_its_expected_outcome_and_code(run: Run) -> None:
    rows, wrong = [], []
    for kind, path, expect in _expected(run):
        got = _outcome(run, path)
        want = (expect.outcome, expect.code)
        if kind in ("unreadable-file", "unlistable-folder") and not run.unprivileged and AS_ROOT:
            want = got  # root reads anything: nothing to check (never the case here, see the module doc)
        ok = got == want
        rows.append((kind, path, want, got, ok))
        if not ok:
            wrong.append(rows[-1])
    table = "\n".join(
        f"{'ok ' if ok else 'BAD'} {kind:28} {str(path.relative_to(run.corpus.root.parent))!r:60.60} "
        f"want {want[0]} {want[1] or ''}  got {got[0]} {got[1] or ''}"
        for kind, path, want, got, ok in rows
        if kind not in ("many-tiny-files", "changing-folder") or not ok
    )
    print(f"\n{len(rows)} files, {len({r[0] for r in rows})} kinds, {len(wrong)} wrong\n{table}")
    assert not wrong, f"{len(wrong)} files ended wrong:\n" + "\n".join(
        f"{kind} {path}: want {want} got {got}" for kind, path, want, got, _ in wrong
    )


def test_the_job_completes_with_errors_and_accounts_for_every_file(run: Run) -> None:
    job = run.job
    counted = [p for _, p, e in _expected(run) if e.outcome != SKIPPED]
    assert job.status == "completed_with_errors", job.logs
    assert job.total_files == job.processed_files == len(counted)
    assert job.failed == sum(1 for _, _, e in _expected(run) if e.outcome == FAILED)


def test_both_services_stay_up_and_healthy(run: Run) -> None:
    assert run.ml.proc.poll() is None and run.ingest.proc.poll() is None
    assert run.api.health() is not None
    assert run.ml.wait_healthy(timeout=5, require="model_loaded")["status"] == "ok"
    assert run.api.search_text("a photo", limit=5, collection=COLLECTION)["results"]


def test_every_good_file_is_found_by_a_search_with_its_own_picture(run: Run) -> None:
    good = [p for kind, p, e in _expected(run) if e.outcome == INDEXED and not kind.startswith("many")]
    many = [p for kind, p, e in _expected(run) if kind.startswith("many")]
    good += many[:: max(1, len(many) // 10)]
    missed = []
    for path in good:
        hits = run.api.search_image(path.read_bytes(), "query" + path.suffix, limit=20, collection=COLLECTION)
        if not any(str(path) in hit["payload"]["paths"] for hit in hits["results"]):
            missed.append(path)
    assert not missed, f"{len(missed)} of {len(good)} good files not found by their own picture: {missed}"


def test_every_orientation_is_stored_upright_with_its_upright_size_and_thumbnail(run: Run) -> None:
    checked = 0
    for case, path, expect in run.corpus.files():
        if expect.size is None:
            continue
        payload = run.stored[str(path)]
        assert (payload["width"], payload["height"]) == expect.size, case.kind
        if expect.upright is not None:
            thumb = Image.open(io.BytesIO(run.api.thumbnail(payload["id"]))).convert("RGB")
            assert thumb.width > thumb.height, case.kind
            want = np.asarray(expect.upright.resize(thumb.size), dtype=np.float32)
            assert np.abs(np.asarray(thumb, dtype=np.float32) - want).mean() < 12, case.kind
        checked += 1
    assert checked == 11


def test_the_rewritten_file_is_indexed_with_its_new_bytes(run: Run) -> None:
    import hashlib

    path, data = next(iter(run.changing.rewritten_to.items()))
    assert run.stored[str(path)]["sha256"] == hashlib.sha256(data).hexdigest()


def test_refused_links_and_unlistable_folders_are_logged(run: Run) -> None:
    logs = "\n".join(run.job.logs)
    assert "symbolic link leaves the allowed roots" in logs
    assert "symbolic link loop" in logs
    if run.unprivileged or not AS_ROOT:
        assert "cannot list folder" in logs


@pytest.mark.long
@pytest.mark.timeout(7200)
def test_100k_tiny_files_in_one_folder_are_all_indexed_and_the_services_stay_up(
    services, clients, ml_service, photo_root: Path, tmp_path: Path
) -> None:
    bad_inputs.write_many_tiny_files(photo_root / "many", MANY_FILES_LONG)
    proc = services("ingest", tmp_path / "data", [ml_service.url], [photo_root])
    api = clients(proc.url)
    started = time.monotonic()
    job = api.ingest_and_follow(photo_root, "many", poll_s=1.0, timeout=6000)
    print(f"\n{MANY_FILES_LONG:,} tiny files ingested in {time.monotonic() - started:.0f} s")
    assert job.status == "completed", job.logs
    assert job.total_files == job.indexed == MANY_FILES_LONG
    assert api.collection_info("many")["points_count"] == MANY_FILES_LONG
    assert api.health() is not None
    assert ml_service.wait_healthy(timeout=5)["status"] == "ok"
