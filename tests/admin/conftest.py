"""Live services for the admin UI tests: an ML service on the tiny random-weight model and an
ingestion service allowed to read one generated photo folder, shared by the module's tests."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers import ServiceProcess, start_ingest, start_ml, write_photos  # noqa: E402
from shoebox.devtools import photos as photos_mod  # noqa: E402


@dataclass
class Live:
    ml: ServiceProcess
    ingest: ServiceProcess
    root: Path  # the allowed ingest root
    trip: Path  # root/trip: the folder the tests ingest (6 photos, an exact copy, a resized copy)
    bad: Path  # root/bad: one good photo, one corrupt
    copy: Path  # an exact copy of trip/img_0000.jpg, below trip
    resized: Path  # trip/img_0004.jpg at half size, re-encoded: the same picture, other bytes
    dated: list[Path]  # the trip photos with an EXIF date, oldest first (the others have none)
    burst: list[Path]  # trip/img_0003.jpg and img_0005.jpg: one camera, one second apart


# EXIF of four trip photos: dates in an order unlike their names' (so a date sort shows), and
# two shots by one camera a second apart: a burst (the random-weight model finds every synthetic
# photo alike, cosine > 0.95, so they are near-duplicates as well).
CAMERA = {"camera_make": "Canon", "camera_model": "EOS R5"}
EXIF = {
    1: {"taken_at": "2021:06:01 10:20:30"},
    2: {"taken_at": "2019:03:10 08:00:00"},
    3: {"taken_at": "2020:12:25 18:30:00", **CAMERA},
    5: {"taken_at": "2020:12:25 18:30:01", **CAMERA},
}


@pytest.fixture(scope="session")
def live(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("admin")
    root = base / "photos"
    trip = root / "trip"
    photos = write_photos(trip, 6, seed=100)
    for i, exif in EXIF.items():  # the same pictures, now with a date taken (and a camera)
        photos_mod.write_jpeg(photos[i], photos_mod.synthetic_photo(320, 240, seed=100 + i), exif=exif)
    dated = [photos[i] for i in sorted(EXIF, key=lambda i: EXIF[i]["taken_at"])]
    (trip / "resized").mkdir()
    resized = trip / "resized" / "img_0004_small.jpg"
    with Image.open(photos[4]) as img:
        half = img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS)
    photos_mod.write_jpeg(resized, half, quality=70)
    (trip / "copies").mkdir()
    copy = trip / "copies" / "img_0000_copy.jpg"
    shutil.copyfile(photos[0], copy)
    (root / "other").mkdir()
    (root / "bad").mkdir()
    photos_mod.write_corrupt_jpeg(root / "bad" / "corrupt.jpg")
    photos_mod.write_jpeg(root / "bad" / "fine.jpg", photos_mod.synthetic_photo(200, 150, seed=999))
    ml = start_ml(tiny_model_dir, base / "ml")
    try:
        ingest = start_ingest(base / "data", [ml.url], [root])
    except BaseException:
        ml.stop()
        raise
    yield Live(
        ml=ml,
        ingest=ingest,
        root=root,
        trip=trip,
        bad=root / "bad",
        copy=copy,
        resized=resized,
        dated=dated,
        burst=[photos[3], photos[5]],
    )
    ingest.stop()
    ml.stop()


@pytest.fixture
def ui_env(live: Live, monkeypatch: pytest.MonkeyPatch) -> Live:
    """The env the app reads (SHOEBOX_URL…), pointing at the live services."""
    monkeypatch.setenv("SHOEBOX_URL", live.ingest.url)
    monkeypatch.setenv("SHOEBOX_API_KEY", "")
    monkeypatch.setenv("SHOEBOX_ML_URL", live.ml.url)
    monkeypatch.setenv("SHOEBOX_ML_API_KEY", "")
    return live
