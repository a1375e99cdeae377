"""Decoders fed mutated real files (`../shared/photos`): no crash, no hang, only ShoeboxError.

Each case is a real sample damaged one way (`bad_inputs.mutate`: bit flips, truncation,
inserted bytes, overwritten runs, shuffled or duplicated chunks), seeded so a failure names a
case that replays. Cases go to the decode entry points the services use — `decode_for_model`
then a thumbnail and a fingerprint of its picture (the ingest's prepare stage, the ML
service), `decode_full` then a thumbnail (the image routes), and `read_exif` (which must never
raise) — in worker processes, so a segfault or an abort is caught and counted, not the end of
pytest, and a case that runs past its time is a hang. Default: a few hundred cases; `long`:
many thousands. Skipped when the sample folder is missing; nothing is ever written there.

Run as a script, this file is the worker: it reads cases on stdin and answers one JSON line each.
"""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "photos"
MAX_PIXELS = 16_000_000  # a caller's limit: mutated headers may declare anything below it
CASE_TIMEOUT_S = 20.0  # a case decodes at most a few megapixels: seconds, even on a loaded machine
WORKERS = 2
DEFAULT_CASES = 300
LONG_CASES = 10_000

# Small real files of every kind the decoders read (paths under ../shared/photos).
SEEDS = (
    "exif/jpg/Canon_40D.jpg",
    "exif/jpg/Fujifilm_FinePix_E500.jpg",
    "exif/jpg/invalid/image01551.jpg",
    "exif/jpg/gps/DSCN0010.jpg",
    "immich/metadata/faces/portrait-orientation-6.jpg",
    "immich/formats/webp/denali.webp",
    "immich/formats/avif/8bit-sRGB.avif",
    "exif/heic/samplefilehub.heif",
    "raw/kodak_dc50.kdc",
    "raw/exiftool_DNG.dng",
    "raw/exiftool_Nikon.nef",
    "raw/exiv2_IMG_1361.dng",
)
# Real pictures re-encoded in memory into the formats the sample folder lacks.
DERIVED = ("png", "tiff", "gif", "bmp", "dng")

# ---------------------------------------------------------------- the worker (a subprocess)


def _worker() -> None:
    import warnings

    warnings.simplefilter("ignore")
    from shoebox import imaging
    from shoebox.imaging import fingerprint
    from shoebox.protocol import ErrorCode, ShoeboxError

    documented = {c.value for c in (ErrorCode.FILE_READ, ErrorCode.UNSUPPORTED_FORMAT, ErrorCode.DECODING_IMAGE,
                                    ErrorCode.DECODING_RAW, ErrorCode.IMAGE_TOO_LARGE)}  # fmt: skip
    stdin, stdout = sys.stdin.buffer, sys.stdout
    while header := stdin.read(8):
        name_len, data_len = struct.unpack(">II", header)
        name, data = stdin.read(name_len).decode(), stdin.read(data_len)
        steps = {}
        for step in ("decode_for_model", "decode_full", "read_exif"):
            try:
                if step == "decode_for_model":
                    decoded = imaging.decode_for_model(data, name, min_side=224, max_pixels=MAX_PIXELS)
                    imaging.make_thumbnail(decoded.image)
                    fingerprint.fingerprint(decoded.image)
                elif step == "decode_full":
                    imaging.make_thumbnail(imaging.decode_full(data, name, max_pixels=MAX_PIXELS))
                else:
                    exif = imaging.read_exif(data, name)
                    json.dumps(exif)
                steps[step] = "ok"
            except ShoeboxError as exc:
                code = exc.code.value
                steps[step] = code if code in documented and step != "read_exif" else f"undocumented {code}"
            except Exception as exc:  # the finding: anything but a ShoeboxError
                steps[step] = f"{type(exc).__name__}: {str(exc)[:200]}"
        stdout.write(json.dumps(steps) + "\n")
        stdout.flush()


# ---------------------------------------------------------------- the pool (in pytest)


@dataclass
class Case:
    seed_file: str
    mutation: str
    seed: int
    name: str
    data: bytes


class Sandbox:
    """Worker processes that decode cases; a worker that dies or overruns is counted and replaced."""

    def __init__(self, workers: int) -> None:
        self.env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        self.procs = [self._start() for _ in range(workers)]

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # LibRaw and libjpeg print their complaints there
            env=self.env,
        )

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()

    def run(self, cases: list[Case]) -> list[tuple[Case, str, dict]]:
        """(case, "ok" | "crash …" | "hang", the steps' results) for every case."""
        results: list[tuple[Case, str, dict]] = []
        pending = list(reversed(cases))
        busy: dict[int, tuple[Case, float]] = {}
        while pending or busy:
            for i, proc in enumerate(self.procs):
                if i not in busy and pending:
                    case = pending.pop()
                    name = case.name.encode()
                    try:
                        proc.stdin.write(struct.pack(">II", len(name), len(case.data)) + name + case.data)
                        proc.stdin.flush()
                    except BrokenPipeError:
                        pass  # it died: seen below as EOF
                    busy[i] = (case, time.monotonic())
            ready, _, _ = select.select([self.procs[i].stdout for i in busy], [], [], 0.5)
            for i in list(busy):
                proc, (case, started) = self.procs[i], busy[i]
                if proc.stdout in ready:
                    line = proc.stdout.readline()
                    if line:
                        results.append((case, "ok", json.loads(line)))
                    else:
                        code = proc.wait()
                        results.append((case, f"crash (exit {code})", {}))
                        self.procs[i] = self._start()
                    del busy[i]
                elif time.monotonic() - started > CASE_TIMEOUT_S:
                    proc.kill()
                    proc.wait()
                    results.append((case, "hang", {}))
                    self.procs[i] = self._start()
                    del busy[i]
        return results


def _seed_files() -> dict[str, bytes]:
    import io

    import numpy as np
    from PIL import Image

    from shoebox.devtools import photos

    files = {path: (SAMPLES / path).read_bytes() for path in SEEDS if (SAMPLES / path).is_file()}
    with Image.open(SAMPLES / "astronaut.jpg") as opened:
        real = opened.convert("RGB").resize((160, 160))
    for fmt in DERIVED:
        buffer = io.BytesIO()
        if fmt == "dng":
            files["astronaut.dng"] = photos._dng_bytes(
                np.asarray(real), preview="jpeg", preview_long_side=128, preview_image=None, make="Shoebox",
                model="Fuzz", taken_at="2020:01:01 10:00:00", orientation=6, lossless_jpeg=False,
            )  # fmt: skip
            continue
        real.save(buffer, format=fmt.upper())
        files[f"astronaut.{fmt}"] = buffer.getvalue()
    return files


def _case(i: int, seeds: dict[str, bytes]) -> Case:
    """Case number `i`: the seed files in turn, each mutation in turn, `i` seeding where it lands."""
    import numpy as np

    from shoebox.devtools.bad_inputs import MUTATIONS, mutate

    names = sorted(seeds)
    source = names[i % len(names)]
    mutation = MUTATIONS[(i // len(names)) % len(MUTATIONS)]
    data = mutate(seeds[source], mutation, np.random.default_rng(i))
    return Case(source, mutation, i, os.path.basename(source), data)


# Cases that once misbehaved, replayed by the default run: (case number, seed file, what it was).
FINDINGS = (
    (
        766,
        "astronaut.dng",
        "LibRaw saw a monochrome sensor: its 1-channel demosaic made Pillow raise TypeError",
    ),
    (2619, "astronaut.dng", "the same, another mutation"),
    (7855, "astronaut.dng", "a TIFF tag with a count of 0 made check_raw_structure raise IndexError"),
)


def _fuzz(numbers: list[int]) -> tuple[list[tuple[Case, str, dict]], float]:
    seeds = _seed_files()
    cases = [_case(i, seeds) for i in numbers]
    sandbox = Sandbox(WORKERS)
    started = time.monotonic()
    try:
        results = sandbox.run(cases)
    finally:
        sandbox.close()
    return results, time.monotonic() - started


def _summary(results: list[tuple[Case, str, dict]], seconds: float) -> str:
    outcomes = Counter(
        step_result if step_result == "ok" or step_result.startswith("ERR_") else "other"
        for _, status, steps in results
        if status == "ok"
        for step_result in steps.values()
    )
    crashes = sum(1 for _, s, _ in results if s.startswith("crash"))
    hangs = sum(1 for _, s, _ in results if s == "hang")
    return f"{len(results)} cases in {seconds:.1f} s: crashes {crashes}, hangs {hangs}, step results {dict(outcomes)}"


def _findings(results: list[tuple[Case, str, dict]]) -> list[str]:
    found = []
    for case, status, steps in results:
        bad = {
            k: v for k, v in steps.items() if not (v == "ok" or (v.startswith("ERR_") and k != "read_exif"))
        }
        if status != "ok" or bad:
            found.append(f"{case.seed_file} {case.mutation} seed={case.seed}: {status} {bad}")
    return found


pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"no sample photos at {SAMPLES}")


def test_mutated_real_files_never_crash_hang_or_raise_anything_but_shoebox_errors() -> None:
    results, seconds = _fuzz(list(range(DEFAULT_CASES)))
    print("\n" + _summary(results, seconds))
    assert len(results) == DEFAULT_CASES
    findings = _findings(results)
    assert not findings, f"{len(findings)} cases misbehaved:\n" + "\n".join(findings[:50])


def test_past_findings_now_decode_or_fail_with_a_shoebox_error() -> None:
    results, _ = _fuzz([number for number, _, _ in FINDINGS])
    assert [case.seed_file for case, _, _ in results] == [seed_file for _, seed_file, _ in FINDINGS]
    assert not _findings(results)


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_thousands_of_mutated_real_files_never_crash_hang_or_raise_anything_but_shoebox_errors() -> None:
    results, seconds = _fuzz(list(range(LONG_CASES)))
    print("\n" + _summary(results, seconds))
    findings = _findings(results)
    assert not findings, f"{len(findings)} cases misbehaved:\n" + "\n".join(findings[:50])


if __name__ == "__main__":
    _worker()
