"""A collection keeps the identity of the model it was built with: its jobs and its searches embed
with that model on an ML service hosting several, and are refused where no service hosts it."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import FOLLOW, ServiceProcess, ShoeboxClient, connect, start_ingest, start_ml, write_photos
from shoebox.client import APIError
from shoebox.ml.models.clip import ClipModel
from shoebox.ml.models.onnx_testmodel import build_onnx_test_model

PHOTOS = 3


@dataclass
class Hosted:
    """Model A (the default of `ml_ab`) and B, and the ML services: A and B, and B alone."""

    a: str
    b: str
    ml_ab: ServiceProcess
    ml_b: ServiceProcess


@pytest.fixture(scope="module")
def hosted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosted]:
    base = tmp_path_factory.mktemp("collection-models")
    model_a = build_onnx_test_model("tiny", base / "models" / "tiny-a", seed=0)
    model_b = build_onnx_test_model("tiny", base / "models" / "tiny-b", seed=1)
    ml_ab = start_ml(model_a, base / "ml-ab", env={"SHOEBOX_MODELS": f"{model_a},{model_b}"})
    try:
        ml_b = start_ml(model_b, base / "ml-b", env={"SHOEBOX_MODELS": str(model_b)})
    except BaseException:
        ml_ab.stop()
        raise
    yield Hosted(ClipModel(model_a).model_id, ClipModel(model_b).model_id, ml_ab, ml_b)
    ml_b.stop()
    ml_ab.stop()


@dataclass
class Built:
    """A library with `c1` (built with the default model, A) and `c2` (created for B), and a copy
    of it taken while no service ran (one process owns a data dir)."""

    data: Path
    copy: Path
    root: Path


@pytest.fixture(scope="module")
def built(hosted: Hosted, tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("collections-built")
    root = base / "photos"
    write_photos(root, PHOTOS)
    proc = start_ingest(base / "data", [hosted.ml_ab.url], [root])
    try:
        with connect(proc.url) as client:
            client.post("/api/v1/collections", json={"collection_name": "c2", "model": hosted.b})
            for name in ("c1", "c2"):
                job = client.ingest_and_follow(root, name, **FOLLOW)
                assert (job.status, job.indexed) == ("completed", PHOTOS), job
    finally:
        proc.stop()
    shutil.copytree(base / "data", base / "copy")
    return Built(base / "data", base / "copy", root)


def serve(data: Path, ml: ServiceProcess, root: Path) -> Iterator[ShoeboxClient]:
    proc = start_ingest(data, [ml.url], [root])
    try:
        with connect(proc.url) as client:
            yield client
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def on_ab(built: Built, hosted: Hosted) -> Iterator[ShoeboxClient]:
    """An ingestion service on the library, with the ML service hosting both models."""
    yield from serve(built.data, hosted.ml_ab, built.root)


@pytest.fixture(scope="module")
def on_b_only(built: Built, hosted: Hosted) -> Iterator[ShoeboxClient]:
    """An ingestion service on the copy of the library, with an ML service hosting only model B."""
    yield from serve(built.copy, hosted.ml_b, built.root)


def refused(call) -> APIError:
    with pytest.raises(APIError) as caught:
        call()
    return caught.value


# ------------------------------------------------------------------ the collection's own model


def test_a_collection_records_the_identity_of_the_default_model(on_ab: ShoeboxClient, hosted: Hosted) -> None:
    assert on_ab.collection_info("c1")["model_name"] == hosted.a


def test_a_text_search_embeds_with_the_collections_model(on_ab: ShoeboxClient, hosted: Hosted) -> None:
    answer = on_ab.search_text("a photo", collection="c1", limit=10)
    assert answer["model_name"] == hosted.a
    assert len(answer["results"]) == PHOTOS


def test_a_collection_created_for_another_hosted_model_records_it(
    on_ab: ShoeboxClient, hosted: Hosted
) -> None:
    assert on_ab.collection_info("c2")["model_name"] == hosted.b


def test_a_text_search_of_a_collection_of_another_model_embeds_with_it(
    on_ab: ShoeboxClient, hosted: Hosted
) -> None:
    answer = on_ab.search_text("a photo", collection="c2", limit=10)
    assert answer["model_name"] == hosted.b
    assert len(answer["results"]) == PHOTOS


@pytest.mark.parametrize("collection", ["c1", "c2"])
def test_a_photo_searched_in_its_collection_finds_itself_first(
    on_ab: ShoeboxClient, built: Built, collection: str
) -> None:
    # Stored and query vectors from the same model: the photo's own point scores (about) 1.
    photo = sorted(built.root.glob("*.jpg"))[1]
    answer = on_ab.search_image(photo.read_bytes(), photo.name, collection=collection, limit=2)
    best = answer["results"][0]
    assert best["filename"] == photo.name
    assert best["score"] == pytest.approx(1.0, abs=1e-3)


# ------------------------------------------------------------------ no service hosts it


def test_ingest_into_a_collection_whose_model_is_not_hosted_is_refused(
    on_b_only: ShoeboxClient, built: Built, hosted: Hosted
) -> None:
    error = refused(lambda: on_b_only.ingest(built.root, "c1"))
    assert (error.status, error.code) == (409, "ERR_MODEL_MISMATCH")
    assert hosted.a in error.message and hosted.b in error.message
    assert error.detail["ml_models"] == [hosted.b]


def test_a_search_of_a_collection_whose_model_is_not_hosted_is_refused(
    on_b_only: ShoeboxClient, hosted: Hosted
) -> None:
    error = refused(lambda: on_b_only.search_text("a photo", collection="c1"))
    assert (error.status, error.code) == (409, "ERR_MODEL_MISMATCH")
    assert hosted.b in error.message
    assert error.detail["ml_models"] == [hosted.b]


def test_a_collection_of_a_hosted_model_still_searches_where_another_is_missing(
    on_b_only: ShoeboxClient, hosted: Hosted
) -> None:
    answer = on_b_only.search_text("a photo", collection="c2", limit=10)
    assert answer["model_name"] == hosted.b
    assert len(answer["results"]) == PHOTOS


# ------------------------------------------------------------------ libraries of earlier versions


@pytest.fixture
def legacy(services, clients, hosted: Hosted, tmp_path: Path) -> tuple[ShoeboxClient, Path]:
    """A library whose collection row holds the bare model name, as versions before identities
    wrote it (edited in the catalog while no service runs), served again on models A and B."""
    root = tmp_path / "photos"
    write_photos(root, 2)
    data = tmp_path / "data"
    first = services("ingest", data, [hosted.ml_ab.url], [root])
    job = clients(first.url).ingest_and_follow(root, "old", **FOLLOW)
    assert (job.status, job.indexed) == ("completed", 2), job
    first.stop()
    db = sqlite3.connect(data / "catalog.sqlite3")
    with db:
        db.execute("UPDATE collections SET model_name = ? WHERE name = 'old'", (bare_name(hosted.a),))
    db.close()
    again = services("ingest", data, [hosted.ml_ab.url], [root])
    return clients(again.url), root


def bare_name(model_id: str) -> str:
    return model_id.rsplit("@", 1)[0]


def test_a_collection_recorded_by_bare_name_still_searches_with_that_model(
    legacy: tuple[ShoeboxClient, Path], hosted: Hosted
) -> None:
    client, _ = legacy
    assert client.collection_info("old")["model_name"] == bare_name(hosted.a)
    answer = client.search_text("a photo", collection="old", limit=10)
    assert answer["model_name"] == hosted.a
    assert len(answer["results"]) == 2


def test_the_next_ingest_upgrades_a_bare_name_to_the_models_identity(
    legacy: tuple[ShoeboxClient, Path], hosted: Hosted
) -> None:
    client, root = legacy
    write_photos(root / "new", 1, seed=50)
    job = client.ingest_and_follow(root, "old", **FOLLOW)
    assert (job.status, job.indexed, job.failed) == ("completed", 1, 0), job
    assert client.collection_info("old")["model_name"] == hosted.a


def test_an_ingest_with_nothing_new_upgrades_a_bare_name_to_the_models_identity(
    legacy: tuple[ShoeboxClient, Path], hosted: Hosted
) -> None:
    client, root = legacy
    job = client.ingest_and_follow(root, "old", **FOLLOW)
    assert (job.status, job.unchanged) == ("completed", 2), job
    assert client.collection_info("old")["model_name"] == hosted.a
