"""Payload building: paths, folders for prefix filters, EXIF normalisation."""

from __future__ import annotations

from shoebox.ingest.metadata import build_payload, content_meta, folders_of, with_paths


def test_folders_lists_every_ancestor() -> None:
    assert folders_of("/a/b/c.jpg") == ["/a/b", "/a", "/"]


def test_payload_of_two_paths_lists_both_and_all_their_folders() -> None:
    meta = content_meta({"make": "Canon", "gps_lat": 48.8, "gps_lon": 2.35}, 4000, 3000, "ab/ab.jpg")
    payload = build_payload("s" * 64, ["/p/y/b.JPG", "/p/x/a.jpg"], 10, 1.5, meta, "M")
    assert payload["paths"] == ["/p/x/a.jpg", "/p/y/b.JPG"]
    assert payload["path"] == "/p/x/a.jpg" and payload["filename"] == "a.jpg"
    assert payload["folders"] == ["/", "/p", "/p/x", "/p/y"]
    assert payload["format"] == "jpg"
    assert payload["camera_make"] == "Canon"
    assert payload["has_gps"] is True and payload["gps"] == {"lat": 48.8, "lon": 2.35}


def test_photo_without_gps_has_no_gps_field() -> None:
    payload = build_payload("s" * 64, ["/p/a.png"], 1, 0.0, content_meta({}, 1, 1, None), "M")
    assert payload["has_gps"] is False and "gps" not in payload
    assert payload["taken_ts"] is None


def test_with_paths_replaces_the_path_fields() -> None:
    payload = build_payload("s" * 64, ["/p/a.jpg", "/q/b.jpg"], 1, 0.0, content_meta({}, 1, 1, None), "M")
    moved = with_paths(payload, ["/q/b.jpg"])
    assert moved["paths"] == ["/q/b.jpg"] and moved["folders"] == ["/", "/q"] and moved["filename"] == "b.jpg"
