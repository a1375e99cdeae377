"""Search, browse and duplicates through HTTP against live services (tiny model), on each store
backend: Qdrant Edge (the default), and qdrant-client's local mode, which drives the server
backend's code (`shoebox.store.server`) call for call, since no Qdrant server runs here."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from servers import FOLLOW, REQUEST_TIMEOUT_S, ServiceProcess, ShoeboxClient, connect, start_ingest

MAIN = "library"


@dataclass
class SearchLibrary:
    root: Path
    data: Path
    api: ShoeboxClient
    ids: dict[str, str]  # file name (of the point's first path) → point id

    def post(self, path: str, **kwargs) -> httpx.Response:
        """The raw answer, for the tests of status codes and headers."""
        return self.api.request("POST", path, **kwargs)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.api.request("GET", path, **kwargs)

    def names(self, filters: dict | None = None, limit: int = 50) -> set[str]:
        answer = self.api.search_text("a photo", limit=limit, filters=filters, collection=MAIN)
        return {hit["filename"] for hit in answer["results"]}


def _write_library(root: Path) -> None:
    """Seven distinct contents whose metadata differ one field at a time, plus an exact copy."""
    from shoebox.devtools import photos

    def photo(seed: int) -> Image.Image:
        return photos.synthetic_photo(320, 240, seed=seed)

    for folder in ("2019", "2020", "2021/raw", "2021/phone", "other", "copies"):
        (root / folder).mkdir(parents=True)
    photos.write_jpeg(
        root / "2019" / "beach.jpg",
        photo(1),
        exif={"camera_make": "Canon", "camera_model": "Canon EOS 5D", "taken_at": datetime(2019, 7, 1, 12),
              "gps_lat": 43.3, "gps_lon": 5.4},
    )
    photos.write_jpeg(
        root / "2019" / "city.jpg",
        photo(2),
        exif={"camera_make": "NIKON CORPORATION", "camera_model": "NIKON D750",
              "taken_at": datetime(2019, 12, 20, 18), "gps_lat": 48.85, "gps_lon": 2.35},
    )
    photos.write_png(root / "2020" / "cat.png", photo(3))
    photos.write_dng(root / "2021" / "raw" / "forest.dng", np.asarray(photo(4)), preview=True,
                     make="SONY", model="ILCE-7M3", taken_at=datetime(2021, 6, 1, 8))
    photos.write_heic(
        root / "2021" / "phone" / "lake.heic",
        photo(5),
        exif={"camera_make": "Apple", "camera_model": "iPhone 12", "taken_at": datetime(2021, 7, 1, 10),
              "gps_lat": 61.0, "gps_lon": 25.0},
    )
    photos.write_jpeg(
        root / "other" / "mountain.jpg",
        photo(6),
        exif={"camera_make": "Canon", "camera_model": "Canon EOS R5", "taken_at": datetime(2021, 9, 1, 15)},
    )
    shutil.copyfile(root / "2019" / "beach.jpg", root / "copies" / "beach.jpg")
    with Image.open(root / "2019" / "city.jpg") as city:
        photos.write_jpeg(root / "copies" / "city_small.jpg", city.resize((240, 180)), quality=80)


@pytest.fixture(scope="module", params=["edge", "local"])
def lib(
    request: pytest.FixtureRequest, ml_service: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SearchLibrary]:
    base = tmp_path_factory.mktemp("search")
    root = base / "photos"
    _write_library(root / "library")
    proc = start_ingest(base / "data", [ml_service.url], [root], env={"SHOEBOX_STORE": request.param})
    api = connect(proc.url)
    try:
        job = api.ingest_and_follow(root / "library", MAIN, **FOLLOW)
        assert job.status == "completed", job
        expected_backend = {"edge": "qdrant-edge", "local": "qdrant-local"}[request.param]
        health = api.health(timeout=REQUEST_TIMEOUT_S)
        assert health is not None and health["vector_db"] == expected_backend
        listing = api.images(per_page=100, collection=MAIN)
        ids = {hit["filename"]: hit["id"] for hit in listing["results"]}
        yield SearchLibrary(root, base / "data", api, ids)
    finally:
        api.close()
        proc.stop()


ALL = {"beach.jpg", "city.jpg", "cat.png", "forest.dng", "lake.heic", "mountain.jpg", "city_small.jpg"}


def test_the_library_holds_one_point_per_content(lib):
    assert set(lib.ids) == ALL


def test_text_search_answers_hits_in_the_contract_shape(lib):
    hits = lib.api.search_text("a beach", limit=3, collection=MAIN)["results"]
    assert len(hits) == 3
    for hit in hits:
        assert set(hit) >= {"id", "score", "filename", "path", "thumbnail_url", "payload"}
        assert hit["thumbnail_url"] == f"/api/v1/images/{hit['id']}/thumbnail"
        assert Path(hit["path"]).name == hit["filename"]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_text_search_pages_follow_each_other_without_overlap(lib):
    def page(offset: int, limit: int) -> list[str]:
        answer = lib.api.search_text("mountains", limit=limit, offset=offset, collection=MAIN)
        return [h["id"] for h in answer["results"]]

    whole = page(0, 7)
    assert page(0, 3) + page(3, 3) + page(6, 3) == whole
    assert len(set(whole)) == 7


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"taken_after": "2021-06-15"}, {"lake.heic", "mountain.jpg"}),
        ({"taken_before": "2019-12-31"}, {"beach.jpg", "city.jpg"}),
        ({"taken_after": "2019-07-02", "taken_before": "2021-07-01"}, {"city.jpg", "forest.dng", "lake.heic"}),
    ],
    ids=["after", "before", "range"],
)
def test_date_taken_filter(lib, filters, expected):
    assert lib.names(filters) == expected


def test_camera_make_filter_ignores_case(lib):
    assert lib.names({"camera_make": "canon"}) == {"beach.jpg", "mountain.jpg"}


def test_camera_model_filter(lib):
    assert lib.names({"camera_model": ["NIKON D750", "iPhone 12"]}) == {"city.jpg", "lake.heic"}


@pytest.mark.parametrize(
    ("formats", "expected"),
    [
        ("jpg", {"beach.jpg", "city.jpg", "mountain.jpg", "city_small.jpg"}),
        ("heic", {"lake.heic"}),
        ("dng", {"forest.dng"}),
        (["png", "dng"], {"cat.png", "forest.dng"}),
    ],
)
def test_format_filter(lib, formats, expected):
    assert lib.names({"format": formats}) == expected


def test_folder_filter_takes_every_depth_below_the_folder(lib):
    assert lib.names({"folder": str(lib.root / "library" / "2021")}) == {"forest.dng", "lake.heic"}


def test_folder_filter_matches_a_content_by_any_of_its_paths(lib):
    # beach.jpg's point lists 2019/beach.jpg first, but a copy lives in copies/ too.
    assert lib.names({"folder": str(lib.root / "library" / "copies") + "/"}) == {"beach.jpg", "city_small.jpg"}


def test_has_gps_filter(lib):
    assert lib.names({"has_gps": True}) == {"beach.jpg", "city.jpg", "lake.heic"}
    assert lib.names({"has_gps": False}) == ALL - {"beach.jpg", "city.jpg", "lake.heic"}


def test_gps_bounding_box_filter(lib):
    france = {"min_lat": 40.0, "min_lon": 0.0, "max_lat": 50.0, "max_lon": 10.0}
    assert lib.names({"gps_bbox": france}) == {"beach.jpg", "city.jpg"}
    finland = {"min_lat": 60.0, "min_lon": 20.0, "max_lat": 70.0, "max_lon": 30.0}
    assert lib.names({"gps_bbox": finland}) == {"lake.heic"}


def test_filters_combine(lib):
    assert lib.names({"camera_make": "Canon", "has_gps": True, "format": "jpg"}) == {"beach.jpg"}


def test_unknown_filter_is_a_validation_error(lib):
    r = lib.post("/api/v1/search/text", json={"query": "x", "filters": {"iso_min": 100}})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "ERR_VALIDATION"


def test_blank_query_is_a_validation_error(lib):
    r = lib.post("/api/v1/search/text", json={"query": "   ", "collection_name": MAIN})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "ERR_VALIDATION"


def test_search_in_a_missing_collection_is_not_found(lib):
    r = lib.post("/api/v1/search/text", json={"query": "x", "collection_name": "nope"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "ERR_NOT_FOUND"


def test_repeated_text_query_is_answered_from_the_query_cache(lib):
    body = {"query": "a quiet lake in winter", "collection_name": MAIN}
    before = lib.api.query_cache()
    first = lib.post("/api/v1/search/text", json=body)
    second = lib.post("/api/v1/search/text", json=body)
    after = lib.api.query_cache()
    assert first.headers["x-query-embedding-cache"] == "miss"
    assert second.headers["x-query-embedding-cache"] == "hit"
    assert after["hits"] == before["hits"] + 1 and after["misses"] == before["misses"] + 1
    assert first.json()["results"] == second.json()["results"]


def test_search_by_uploaded_jpeg_finds_the_same_photo_first(lib):
    data = (lib.root / "library" / "other" / "mountain.jpg").read_bytes()
    top = lib.api.search_image(data, "query.jpg", collection=MAIN)["results"][0]
    assert top["id"] == lib.ids["mountain.jpg"]
    assert top["score"] > 0.999


def test_search_by_uploaded_raw_finds_the_same_raw_first(lib):
    data = (lib.root / "library" / "2021" / "raw" / "forest.dng").read_bytes()
    hits = lib.api.search_image(data, "query.dng", limit=2, collection=MAIN)["results"]
    assert len(hits) == 2
    assert hits[0]["id"] == lib.ids["forest.dng"]


def test_search_by_image_takes_filters_and_paging(lib):
    data = (lib.root / "library" / "other" / "mountain.jpg").read_bytes()
    answer = lib.api.search_image(
        data, "query.jpg", filters={"format": ["png", "heic"]}, limit=1, offset=1, collection=MAIN
    )
    [hit] = answer["results"]
    assert hit["filename"] in {"cat.png", "lake.heic"}


def test_search_by_image_with_malformed_filters_is_a_validation_error(lib):
    r = lib.post("/api/v1/search/image", files={"file": ("q.jpg", b"x")}, data={"filters": "{not json"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "ERR_VALIDATION"


def test_search_by_undecodable_upload_answers_its_error_code(lib):
    r = lib.post("/api/v1/search/image", files={"file": ("x.jpg", b"not a photo at all")},
                 data={"collection_name": MAIN})
    assert r.status_code in (415, 422)
    assert r.json()["error"]["code"] in {"ERR_DECODING_IMAGE", "ERR_UNSUPPORTED_FORMAT"}


def test_similar_uses_the_stored_vector_and_excludes_the_image_itself(lib):
    beach = lib.ids["beach.jpg"]
    ids = [h["id"] for h in lib.api.similar(beach, limit=50, collection=MAIN)["results"]]
    assert beach not in ids
    assert set(ids) == set(lib.ids.values()) - {beach}


def test_similar_of_an_unknown_id_is_not_found(lib):
    r = lib.get("/api/v1/images/00000000-0000-0000-0000-000000000000/similar", params={"collection_name": MAIN})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "ERR_NOT_FOUND"


def test_listing_pages_are_stable_and_cover_every_image_once(lib):
    def page(n: int) -> dict:
        return lib.api.images(page=n, per_page=3, collection=MAIN)

    pages = [page(n) for n in (1, 2, 3)]
    ids = [h["id"] for p in pages for h in p["results"]]
    assert [p["total"] for p in pages] == [7, 7, 7]
    assert sorted(ids) == sorted(lib.ids.values())
    assert [h["id"] for h in page(1)["results"]] == ids[:3]
    assert all("score" not in h for h in pages[0]["results"])


def test_info_has_all_metadata_and_every_path(lib):
    info = lib.api.image_info(lib.ids["beach.jpg"])
    library = lib.root / "library"
    assert info["paths"] == [str(library / "2019" / "beach.jpg"), str(library / "copies" / "beach.jpg")]
    assert info["camera_make"] == "Canon"
    assert info["taken_at"].startswith("2019-07-01")
    assert info["gps"] == pytest.approx({"lat": 43.3, "lon": 5.4}, abs=1e-3)
    assert info["width"] == 320 and info["height"] == 240
    assert info["missing_paths"] == []


def test_thumbnail_is_a_small_jpeg(lib):
    r = lib.get(f"/api/v1/images/{lib.ids['forest.dng']}/thumbnail")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(r.content)) as thumb:
        assert thumb.format == "JPEG"
        assert max(thumb.size) <= 256


def test_thumbnail_is_remade_from_the_original_when_its_file_is_gone(lib):
    image_id = lib.ids["mountain.jpg"]
    relative = lib.api.image_info(image_id)["thumbnail"]
    (lib.data / "thumbs" / relative).unlink()
    with Image.open(io.BytesIO(lib.api.thumbnail(image_id))) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) <= 256


def test_image_of_a_browser_format_is_the_original_file(lib):
    content, content_type = lib.api.image(lib.ids["cat.png"])
    assert content_type == "image/png"
    assert content == (lib.root / "library" / "2020" / "cat.png").read_bytes()


@pytest.mark.parametrize("name", ["forest.dng", "lake.heic"])
def test_image_of_raw_and_heic_is_a_jpeg_rendition(lib, name):
    r = lib.get(f"/api/v1/images/{lib.ids[name]}/image")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(r.content)) as rendition:
        assert rendition.format == "JPEG"
        assert rendition.size[0] >= 160


def test_image_of_an_unknown_id_is_refused(lib):
    r = lib.get("/api/v1/images/3f1e1b9c-1111-5222-8333-444455556666/image")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "ERR_NOT_FOUND"


@pytest.mark.parametrize("image_id", ["..%2F..%2Fetc%2Fpasswd", "not-an-id", "%2Fetc%2Fpasswd"])
def test_image_with_a_malformed_id_is_refused_with_a_code(lib, image_id):
    r = lib.get(f"/api/v1/images/{image_id}/image")
    assert r.status_code in (404, 422)
    assert r.json()["error"]["code"] in {"ERR_VALIDATION", "ERR_NOT_FOUND"}


def test_image_whose_files_are_gone_is_not_served(lib):
    folder = lib.root / "gone"
    folder.mkdir()
    from shoebox.devtools import photos

    photo = photos.write_jpeg(folder / "temporary.jpg", photos.synthetic_photo(128, 96, seed=99))
    assert lib.api.ingest_and_follow(folder, "gone", **FOLLOW).status == "completed"
    [hit] = lib.api.images(collection="gone")["results"]
    photo.unlink()
    r = lib.get(f"/api/v1/images/{hit['id']}/image")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "ERR_PATH_NOT_FOUND"


def test_duplicates_report_one_content_under_two_paths(lib):
    body = lib.api.duplicates(collection=MAIN)
    assert body["exact"] == [[lib.ids["beach.jpg"]]]
    [group] = body["groups"]["exact"]
    assert sorted(Path(m["path"]).parent.name for m in group["members"]) == ["2019", "copies"]
    assert group["keep"] == lib.ids["beach.jpg"]


def test_duplicates_put_a_resized_reencoded_copy_with_its_original_as_the_same_picture(lib):
    body = lib.api.duplicates(collection=MAIN)
    pair = {lib.ids["city.jpg"], lib.ids["city_small.jpg"]}
    assert [set(g) for g in body["same_picture"]] == [pair]
    [group] = body["groups"]["same_picture"]
    assert group["keep"] == lib.ids["city.jpg"], "the larger original is the copy to keep"
    # A pair in a tier above is never repeated as a near-duplicate.
    assert not any(pair <= set(g) for g in body["near"])


def test_duplicates_threshold_outside_the_unit_interval_is_refused(lib):
    r = lib.get("/api/v1/duplicates", params={"collection_name": MAIN, "threshold": 1.5})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "ERR_VALIDATION"
