"""Start the ML and ingestion services as real processes on loopback, and talk to them.

Shared by the end-to-end tests of every area: each service runs exactly as a user runs it
(`python -m shoebox.ml|ingest`) through `shoebox.launcher`, with its data under a test folder,
and the tests talk to it through the one client of its API, `shoebox.client.ShoeboxClient`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from shoebox.client import FINISHED, ShoeboxClient
from shoebox.launcher import ServiceProcess, free_port, start_service

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
REQUEST_TIMEOUT_S = 60.0  # one request; a loaded CI machine can take long on an image or a scan
# How the tests follow a job (`ShoeboxClient.follow(job_id, **FOLLOW)`): its end is seen within a
# tenth of a second, and a job that never ends fails the test after 90 s instead of hanging it.
POLL_S = 0.1
FOLLOW: dict[str, float] = {"poll_s": POLL_S, "timeout": 90.0}


def start_ml(
    model_dir: Path,
    workdir: Path,
    *,
    port: int | None = None,
    api_key: str | None = None,
    safe_clip_batch: int = 8,
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> ServiceProcess:
    """An ML service on the given (test) model; the batch probe is skipped for speed."""
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = {
        "SHOEBOX_MODEL_DIR": str(model_dir),
        "SHOEBOX_OFFLINE": "1",
        "SHOEBOX_DEVICE": "cpu",
        "SHOEBOX_SAFE_CLIP_BATCH": str(safe_clip_batch),
        "SHOEBOX_PROBE_CACHE_DIR": str(workdir / "probe"),
        "SHOEBOX_DECODE_WORKERS": "2",
        "SHOEBOX_INTRA_OP_THREADS": "1",
        "SHOEBOX_API_KEY": api_key or "",
        **(env or {}),
    }
    proc = start_service("ml", port=port, env=full_env, log_path=workdir / f"ml-{time.time_ns()}.log")
    if wait:
        proc.wait_healthy(timeout=90, require="model_loaded")
    return proc


def start_ingest(
    data_dir: Path,
    ml_urls: Iterable[str],
    roots: Iterable[Path],
    *,
    port: int | None = None,
    api_key: str | None = None,
    ml_api_key: str | None = None,
    env: dict[str, str] | None = None,
    wait: bool = True,
    log_dir: Path | None = None,
) -> ServiceProcess:
    """An ingestion service with embedded Qdrant and its catalog under `data_dir` (its log there too,
    unless `log_dir` says where: a test that fills the data disk keeps the log off it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {
        "SHOEBOX_DATA_DIR": str(data_dir),
        "SHOEBOX_ML_URLS": ",".join(ml_urls),
        "SHOEBOX_INGEST_ROOTS": ",".join(str(r) for r in roots),
        "SHOEBOX_API_KEY": api_key or "",
        "SHOEBOX_ML_API_KEY": ml_api_key or "",
        "SHOEBOX_HASH_WORKERS": "2",
        "SHOEBOX_PREPARE_WORKERS": "2",
        "SHOEBOX_SCAN_WORKERS": "4",
        **(env or {}),
    }
    proc = start_service(
        "ingest", port=port, env=full_env, log_path=(log_dir or data_dir) / f"ingest-{time.time_ns()}.log"
    )
    if wait:
        proc.wait_healthy(timeout=60)
    return proc


def connect(url: str, api_key: str | None = None) -> ShoeboxClient:
    """The shared client (`shoebox.client`) on a test service; the caller closes it."""
    return ShoeboxClient(url, api_key, timeout=REQUEST_TIMEOUT_S)


# ---------------------------------------------------------------- generated photo folders


@dataclass
class Library:
    """A generated photo folder and what ingesting it must give."""

    root: Path
    good: list[Path] = field(default_factory=list)  # distinct contents that must be indexed
    copies: list[Path] = field(default_factory=list)  # same bytes as a file in `good`
    bad: dict[str, str] = field(default_factory=dict)  # file name → expected error code

    @property
    def total(self) -> int:
        return len(self.good) + len(self.copies) + len(self.bad)


def run_cli(url: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`shoebox ARGS` as a user runs it, against the ingestion service at `url`, with none of this
    process's SHOEBOX_ settings and a wide terminal (no path in a table is folded)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOEBOX_")}
    return subprocess.run(
        [sys.executable, "-m", "shoebox.cli", *args],
        env={**env, "SHOEBOX_URL": url, "COLUMNS": "220"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_photos(
    folder: Path, count: int, *, seed: int = 0, size: tuple[int, int] = (320, 240)
) -> list[Path]:
    """`count` distinct JPEGs (different seeds, so different bytes)."""
    from shoebox.devtools import photos

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:04d}.jpg"
        photos.write_jpeg(path, photos.synthetic_photo(size[0], size[1], seed=seed + i))
        paths.append(path)
    return paths


def build_library(root: Path) -> Library:
    """Every format and every kind of bad file the ingest must tell apart."""
    import numpy as np

    from shoebox.devtools import photos

    lib = Library(root)
    (root / "jpeg").mkdir(parents=True)
    (root / "other" / "deeper").mkdir(parents=True)
    (root / "raw").mkdir()
    (root / "copies").mkdir()
    (root / "bad").mkdir()

    exif_photo = root / "jpeg" / "with_exif.jpg"
    photos.write_jpeg(
        exif_photo,
        photos.synthetic_photo(400, 300, seed=1),
        exif={"camera_make": "Canon", "camera_model": "EOS R5", "taken_at": "2021:06:01 10:20:30"},
    )
    plain = root / "jpeg" / "plain.JPG"
    photos.write_jpeg(plain, photos.synthetic_photo(300, 400, seed=2))
    png = root / "other" / "graphic.png"
    photos.write_png(png, photos.synthetic_photo(256, 256, seed=3))
    heic = root / "other" / "deeper" / "phone.heic"
    photos.write_heic(heic, photos.synthetic_photo(320, 240, seed=4))
    rgb = np.asarray(photos.synthetic_photo(320, 240, seed=5))
    dng_preview = root / "raw" / "with_preview.dng"
    photos.write_dng(dng_preview, rgb, preview=True)
    dng_bare = root / "raw" / "without_preview.dng"
    photos.write_dng(dng_bare, np.asarray(photos.synthetic_photo(320, 240, seed=6)), preview=False)
    lib.good = [exif_photo, plain, png, heic, dng_preview, dng_bare]

    copy = root / "copies" / "same_as_plain.jpg"
    shutil.copyfile(plain, copy)
    lib.copies = [copy]

    photos.write_corrupt_jpeg(root / "bad" / "corrupt.jpg")
    photos.write_truncated(root / "bad" / "truncated.jpg", plain.read_bytes(), keep=0.3)
    photos.write_oversized_png(root / "bad" / "bomb.png")
    photos.write_stripped_dng(root / "bad" / "stripped.dng", rgb, preview=False)
    photos.write_zero_byte(root / "bad" / "empty.jpg")
    photos.write_text_as_jpg(root / "bad" / "text.jpg")
    (root / "bad" / "broken_link.jpg").symlink_to(root / "bad" / "does_not_exist.jpg")
    lib.bad = {
        "corrupt.jpg": "ERR_DECODING_IMAGE",
        "truncated.jpg": "ERR_DECODING_IMAGE",
        "empty.jpg": "ERR_FILE_READ",
        "text.jpg": "ERR_UNSUPPORTED_FORMAT",  # content sniffed: not an image at all
        "broken_link.jpg": "ERR_FILE_READ",
        "bomb.png": "ERR_IMAGE_TOO_LARGE",
        "stripped.dng": "ERR_DECODING_RAW",
    }
    if not AS_ROOT:
        # Root reads any file whatever its mode, so this case only means something for a normal user.
        unreadable = root / "bad" / "no_permission.jpg"
        photos.write_jpeg(unreadable, photos.synthetic_photo(64, 64, seed=7))
        unreadable.chmod(0)
        lib.bad["no_permission.jpg"] = "ERR_FILE_READ"

    (root / "notes.txt").write_text("not a photo: never counted")
    (root / ".hidden.jpg").write_bytes(plain.read_bytes())
    return lib


__all__ = [
    "AS_ROOT",
    "FINISHED",
    "FOLLOW",
    "POLL_S",
    "REQUEST_TIMEOUT_S",
    "Library",
    "ServiceProcess",
    "ShoeboxClient",
    "build_library",
    "connect",
    "free_port",
    "start_ingest",
    "start_ml",
    "write_photos",
]
