"""Combined queries and duplicates in tiers, through HTTP and the CLI, against live services.

The tiny test model has random weights, so its rankings are meaningless: here only the plumbing
of combined queries is tested (terms reach the ranking, the cutoff cuts, the date sort orders and
pages); the formula itself is tested on vectors we control in tests/ingest/test_query.py. The
duplicate tiers do not depend on the model's quality except `near`/`bursts`' cosine, which for
the shots of one scene stays high even with random weights.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from servers import FOLLOW, ServiceProcess, ShoeboxClient, connect, run_cli, start_ingest

COLLECTION = "tiers"
BURST_START = datetime(2022, 6, 1, 12, 0, 0)


@dataclass
class Library:
    root: Path
    api: ShoeboxClient
    url: str
    ids: dict[str, str]  # file name → point id

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli(self.url, *args)

    def cli_json(self, *args: str) -> dict:
        result = self.cli(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def _write_library(root: Path) -> None:
    from shoebox.devtools import photos

    root.mkdir(parents=True)
    original = photos.synthetic_photo(640, 480, seed=11)
    exif = {"camera_make": "Canon", "camera_model": "Canon EOS R5", "taken_at": datetime(2022, 5, 1, 10)}
    photos.write_jpeg(root / "original.jpg", original, exif=exif, quality=92)
    # The same picture in other files: re-encoded, resized, metadata stripped, converted.
    photos.write_jpeg(root / "reencoded.jpg", original, exif=exif, quality=60)
    photos.write_jpeg(root / "resized.jpg", original.resize((320, 240), Image.Resampling.LANCZOS), exif=exif)
    photos.write_jpeg(root / "stripped.jpg", original, quality=92)
    photos.write_png(root / "converted.png", original)
    # Unrelated photos, dated one month apart, one without a date.
    for n, seed in enumerate(range(21, 26)):
        photos.write_jpeg(
            root / f"unrelated_{n}.jpg",
            photos.synthetic_photo(480, 360, seed=seed),
            exif={"camera_make": "NIKON", "camera_model": "D750", "taken_at": datetime(2020, 1 + n, 15, 9)},
        )
    photos.write_jpeg(root / "undated.jpg", photos.synthetic_photo(480, 360, seed=40))
    # A burst: three shots one second apart by one camera, the scene panning a little.
    scene = photos.synthetic_photo(960, 480, seed=31)
    for k in range(3):
        photos.write_jpeg(
            root / f"burst_{k}.jpg",
            scene.crop((k * 60, 0, k * 60 + 640, 480)),
            exif={
                "camera_make": "SONY",
                "camera_model": "ILCE-7M3",
                "taken_at": BURST_START + timedelta(seconds=k),
            },
        )


SAME_PICTURE = {"original.jpg", "reencoded.jpg", "resized.jpg", "stripped.jpg", "converted.png"}
BURST = {"burst_0.jpg", "burst_1.jpg", "burst_2.jpg"}


@pytest.fixture(scope="module")
def lib(ml_service: ServiceProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    base = tmp_path_factory.mktemp("query")
    root = base / "photos"
    _write_library(root)
    proc = start_ingest(base / "data", [ml_service.url], [root])
    api = connect(proc.url)
    try:
        job = api.ingest_and_follow(root, COLLECTION, **FOLLOW)
        assert job.status == "completed", job
        listing = api.images(per_page=100, collection=COLLECTION)
        ids = {hit["filename"]: hit["id"] for hit in listing["results"]}
        yield Library(root, api, proc.url, ids)
    finally:
        api.close()
        proc.stop()


def _names(lib: Library, groups: list[list[str]]) -> list[set[str]]:
    by_id = {v: k for k, v in lib.ids.items()}
    return [{by_id[i] for i in group} for group in groups]


# ---------------------------------------------------------------- duplicates in tiers


def test_copies_of_one_picture_land_in_same_picture_and_nothing_else_does(lib):
    body = lib.api.duplicates(collection=COLLECTION)
    assert _names(lib, body["same_picture"]) == [SAME_PICTURE]
    [group] = body["groups"]["same_picture"]
    assert group["max_distance"] <= body["thresholds"]["phash_distance"]
    assert {m["format"] for m in group["members"]} == {"jpg", "png"}
    assert all(m["width"] and m["height"] and m["size"] for m in group["members"])


def test_the_suggested_copy_follows_the_documented_rule(lib):
    [group] = lib.api.duplicates(collection=COLLECTION)["groups"]["same_picture"]
    # Full resolution beats the resize, JPEG beats the PNG conversion, metadata beats stripped,
    # and of the two full-size JPEGs with metadata the larger file (quality 92) wins.
    assert group["keep"] == lib.ids["original.jpg"]
    assert group["keep_path"].endswith("original.jpg")


def test_a_burst_of_three_shots_one_second_apart_lands_in_bursts(lib):
    body = lib.api.duplicates(collection=COLLECTION)
    assert _names(lib, body["bursts"]) == [BURST]
    [group] = body["groups"]["bursts"]
    assert group["seconds"] == 2.0
    assert {m["camera"] for m in group["members"]} == {"SONY ILCE-7M3"}
    assert group["keep"] in {m["id"] for m in group["members"]}
    # Its shots may look like other photos (random weights), but no near group repeats the burst.
    assert not any(names <= BURST for names in _names(lib, body["near"]))


def test_a_shorter_burst_window_breaks_the_burst(lib):
    body = lib.api.duplicates(collection=COLLECTION, burst_seconds=0.5)
    assert body["bursts"] == []
    assert body["thresholds"]["burst_seconds"] == 0.5


def test_a_zero_hash_distance_keeps_only_identical_pixels_together(lib):
    body = lib.api.duplicates(collection=COLLECTION, phash_distance=0)
    groups = _names(lib, body["same_picture"])
    assert all(names <= SAME_PICTURE for names in groups)
    assert {"original.jpg", "stripped.jpg", "converted.png"} <= set().union(*groups)


def test_bad_duplicate_thresholds_are_refused(lib):
    for params in ({"phash_distance": 40}, {"burst_seconds": -1}, {"burst_threshold": 0}):
        r = lib.api.request("GET", "/api/v1/duplicates", params={"collection_name": COLLECTION, **params})
        assert r.status_code == 422, params
        assert r.json()["error"]["code"] == "ERR_VALIDATION"


def test_cli_duplicates_prints_every_tier_and_json_gives_the_full_answer(lib):
    result = lib.cli("duplicates", "-c", COLLECTION)
    assert result.returncode == 0, result.stderr
    for title in ("exact duplicates", "the same picture", "bursts", "near-duplicates"):
        assert title in result.stdout
    assert "★" in result.stdout and "keep rule" in result.stdout
    answer = lib.cli_json("duplicates", "-c", COLLECTION, "--burst-seconds", "0.5")
    assert set(answer) >= {"exact", "same_picture", "near", "bursts", "groups", "thresholds", "keep_rule"}
    assert answer["bursts"] == []


# ---------------------------------------------------------------- combined queries


def _query(lib: Library, terms: list[dict], **kwargs) -> dict:
    return lib.api.search_query(terms, collection=COLLECTION, **kwargs)


def test_combined_query_mixes_texts_stored_images_and_uploads(lib):
    upload = (lib.root / "burst_1.jpg").read_bytes()
    answer = _query(
        lib,
        [
            {"text": "a beach"},
            {"text": "people", "weight": -0.5},
            {"image_id": lib.ids["undated.jpg"], "weight": 2},
            {"image_upload": 0, "weight": 1},
        ],
        uploads=[("query.jpg", upload)],
        limit=50,
    )
    assert len(answer["results"]) == len(lib.ids)
    scores = [h["score"] for h in answer["results"]]
    assert scores == sorted(scores, reverse=True)


def test_a_dominant_stored_image_term_ranks_that_image_first(lib):
    # Weight 50 on one image against a text of weight 1: the combined vector is almost that
    # image's own vector, whatever the (random) model makes of the text.
    answer = _query(lib, [{"text": "a dog"}, {"image_id": lib.ids["unrelated_3.jpg"], "weight": 50}], limit=1)
    assert answer["results"][0]["id"] == lib.ids["unrelated_3.jpg"]


def test_score_threshold_drops_the_hits_below_it(lib):
    everything = _query(lib, [{"text": "sunset"}], limit=50)["results"]
    cut = (everything[4]["score"] + everything[5]["score"]) / 2  # between two hits: no float tie
    above = _query(lib, [{"text": "sunset"}], limit=50, score_threshold=cut)["results"]
    assert [h["id"] for h in above] == [h["id"] for h in everything if h["score"] >= cut]
    assert 1 <= len(above) < len(everything)


def test_date_sort_orders_by_date_taken_undated_last_and_pages_stably(lib):
    for sort, newest_first in (("date_taken", False), ("-date_taken", True)):
        whole = _query(lib, [{"text": "a photo"}], limit=50, sort=sort)
        assert whole["total"] == len(lib.ids)
        dates = [h["payload"].get("taken_ts") for h in whole["results"]]
        known = [d for d in dates if d is not None]
        assert known == sorted(known, reverse=newest_first)
        assert all(d is None for d in dates[len(known) :]), "photos without a date come last"
        names = {h["filename"] for h in whole["results"][len(known) :]}
        assert names == {"undated.jpg", "stripped.jpg", "converted.png"}
        pages = [
            h["id"]
            for offset in range(0, len(lib.ids), 4)
            for h in _query(lib, [{"text": "a photo"}], limit=4, offset=offset, sort=sort)["results"]
        ]
        assert pages == [h["id"] for h in whole["results"]]


def test_date_sort_with_a_threshold_orders_only_the_hits_above_it(lib):
    everything = _query(lib, [{"text": "sunset"}], limit=50)["results"]
    cut = (everything[5]["score"] + everything[6]["score"]) / 2
    dated = _query(lib, [{"text": "sunset"}], limit=50, score_threshold=cut, sort="-date_taken")
    assert {h["id"] for h in dated["results"]} == {h["id"] for h in everything if h["score"] >= cut}
    assert dated["total"] == len(dated["results"])


def test_search_text_keeps_working_unchanged(lib):
    plain = lib.api.search_text("a photo", limit=5, collection=COLLECTION)["results"]
    combined = _query(lib, [{"text": "a photo"}], limit=5)["results"]
    assert [h["id"] for h in plain] == [h["id"] for h in combined]
    assert [h["score"] for h in plain] == pytest.approx([h["score"] for h in combined], abs=1e-5)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"terms": [{"text": "dog"}, {"text": "dog", "weight": -1}]}, "cancel"),
        ({"terms": [{"image_upload": 0}]}, "upload 0"),
        ({"terms": [{"text": "dog", "weight": 0}]}, "weight"),
        ({"terms": [{"image_id": "../../etc/passwd"}]}, "image id"),
        ({"terms": [{"text": "dog"}], "sort": "size"}, "sort"),
        ({"terms": [{"text": "dog"}], "unknown": 1}, "unknown"),
        ({"terms": []}, "terms"),
    ],
)
def test_bad_combined_queries_get_a_clear_validation_error(lib, body, message):
    r = lib.api.request("POST", "/api/v1/search/query", json={**body, "collection_name": COLLECTION})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "ERR_VALIDATION"
    assert message in error["message"]


def test_a_query_body_that_is_not_json_is_refused(lib):
    r = lib.api.request(
        "POST", "/api/v1/search/query", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    r = lib.api.request(
        "POST", "/api/v1/search/query", data={"query": "[1,"}, files={"files": ("a.jpg", b"x")}
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "ERR_VALIDATION"


def test_a_stored_image_term_of_an_unknown_image_is_not_found(lib):
    r = lib.api.request(
        "POST",
        "/api/v1/search/query",
        json={"terms": [{"image_id": "00000000-0000-4000-8000-000000000000"}], "collection_name": COLLECTION},
    )
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "ERR_NOT_FOUND"


def test_cli_short_form_and_options_make_one_combined_query(lib):
    answer = lib.cli_json(
        "search",
        "2:beach + sunset - people",
        "--not",
        "cars",
        "--like",
        str(lib.root / "burst_0.jpg"),
        "--like-id",
        f"0.5:{lib.ids['original.jpg']}",
        "-c",
        COLLECTION,
        "-n",
        "50",
    )
    assert len(answer["results"]) == len(lib.ids)


def test_cli_like_id_with_a_big_weight_finds_that_image_first(lib):
    answer = lib.cli_json(
        "search", "--like-id", f"50:{lib.ids['unrelated_1.jpg']}", "-c", COLLECTION, "-n", "1"
    )
    assert answer["results"][0]["id"] == lib.ids["unrelated_1.jpg"]


def test_cli_sorts_by_date_and_cuts_at_a_threshold(lib):
    answer = lib.cli_json("search", "a photo", "--sort", "-date", "-c", COLLECTION, "-n", "50")
    dates = [d for h in answer["results"] if (d := h["payload"].get("taken_ts")) is not None]
    assert dates == sorted(dates, reverse=True)
    assert answer["total"] == len(lib.ids)
    scores = sorted((h["score"] for h in answer["results"]), reverse=True)
    cut = (scores[2] + scores[3]) / 2
    strict = lib.cli_json("search", "a photo", "--threshold", f"{cut:.6f}", "-c", COLLECTION, "-n", "50")
    assert len(strict["results"]) == 3


def test_cli_reports_a_syntax_error_with_where_it_is(lib):
    result = lib.cli("search", "dog + - cat", "-c", COLLECTION)
    assert result.returncode == 2
    assert "two operators in a row" in result.stderr
    assert "^" in result.stderr
