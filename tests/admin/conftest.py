"""Live services for the admin UI tests: an ML service on the tiny random-weight model and an
ingestion service allowed to read one generated photo folder, shared by the module's tests."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers import ServiceProcess, start_ingest, start_ml, write_photos  # noqa: E402
from shoebox.devtools import photos as photos_mod  # noqa: E402


@dataclass
class Live:
    ml: ServiceProcess
    ingest: ServiceProcess
    root: Path  # the allowed ingest root
    trip: Path  # root/trip: the folder the tests ingest (6 photos and an exact copy)
    bad: Path  # root/bad: one good photo, one corrupt
    copy: Path  # an exact copy of trip/img_0000.jpg, below trip


@pytest.fixture(scope="session")
def live(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("admin")
    root = base / "photos"
    trip = root / "trip"
    photos = write_photos(trip, 6, seed=100)
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
    yield Live(ml=ml, ingest=ingest, root=root, trip=trip, bad=root / "bad", copy=copy)
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
