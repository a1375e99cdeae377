"""The admin pages' pure helpers (no Streamlit, no services)."""

from __future__ import annotations

from datetime import date, datetime, timezone

from shoebox.admin import logic
from shoebox.protocol import Job


def test_build_filters_leaves_out_empty_fields() -> None:
    assert logic.build_filters() == {}
    assert logic.build_filters(
        taken_after=date(2021, 1, 1),
        taken_before=date(2021, 12, 31),
        camera_make="Canon, Nikon ",
        formats=[".JPG", "dng"],
        folder=" /photos/trip ",
        has_gps="no",
    ) == {
        "taken_after": "2021-01-01",
        "taken_before": "2021-12-31",
        "camera_make": ["Canon", "Nikon"],
        "format": ["jpg", "dng"],
        "folder": "/photos/trip",
        "has_gps": False,
    }


def test_query_terms_text_upload_and_not_like() -> None:
    assert logic.query_terms() == []
    assert logic.query_terms(" beach ") == [{"text": "beach", "weight": 1.0}]
    assert logic.query_terms("beach", "people", upload=True) == [
        {"text": "beach", "weight": 1.0},
        {"image_upload": 0, "weight": 1.0},
        {"text": "people", "weight": -1.0},
    ]
    assert logic.query_terms("", " ", upload=True) == [{"image_upload": 0, "weight": 1.0}]


def test_score_threshold_is_off_at_the_sliders_lowest_value() -> None:
    assert logic.score_threshold(logic.SCORE_OFF) is None
    assert logic.score_threshold(-0.99) == -0.99
    assert logic.score_threshold(0.3) == 0.3


def test_sorts_name_the_api_values() -> None:
    assert list(logic.SORTS.values()) == ["relevance", "date_taken", "-date_taken"]


def test_has_next_page() -> None:
    assert logic.has_next_page(12, 12, 0, None)  # a full page: there may be more
    assert not logic.has_next_page(5, 12, 0, None)
    assert logic.has_next_page(12, 12, 12, 25)  # the total says where the candidates end
    assert not logic.has_next_page(12, 12, 12, 24)
    assert not logic.has_next_page(1, 12, 24, 25)


def test_duplicate_tiers_and_group_notes() -> None:
    assert [key for key, _, _ in logic.TIERS] == ["exact", "same_picture", "bursts", "near"]
    used = {"threshold": 0.95, "phash_distance": 6, "burst_seconds": 2.0, "burst_threshold": 0.9}
    captions = [what.format(**used) for _, _, what in logic.TIERS]
    assert "6 bits" in captions[1] and "within 2 s" in captions[2] and "0.95" in captions[3]
    member = {"id": "x", "path": "/a.jpg"}
    assert logic.group_note("exact", {"members": [member, member]}) == "2 paths"
    assert (
        logic.group_note("bursts", {"members": [member] * 3, "min_score": 0.9312, "seconds": 1.5})
        == "3 photos · lowest cosine 0.931 · over 1.5 s"
    )
    assert logic.group_note("same_picture", {"members": [member] * 2, "max_distance": 4}) == (
        "2 photos · hash distance ≤ 4 bits"
    )
    assert logic.resolution({"width": 320, "height": 240}) == "320×240"
    assert logic.resolution({}) == "?×?"


def test_map_url_and_rate() -> None:
    assert logic.map_url(None) is None
    assert "mlat=48.858400&mlon=2.294500" in logic.map_url({"lat": 48.8584, "lon": 2.2945})
    job = Job(
        job_id="j",
        collection_name="c",
        directory_path="/p",
        status="running",
        total_files=30,
        processed_files=10,
        created_at="2026-01-01T00:00:00Z",
        started_at="2026-01-01T00:00:00Z",
    )
    rate, eta = logic.job_rate(job, now=datetime(2026, 1, 1, 0, 0, 5, tzinfo=timezone.utc))
    assert rate == 2.0 and eta == 10.0
    assert logic.human_seconds(75) == "1 min 15 s"
    assert logic.human_size(2048) == "2.0 KB"


def test_admin_talks_only_through_the_client() -> None:
    """No module of the admin app imports the services' internals."""
    import ast
    from pathlib import Path

    import shoebox.admin

    for path in Path(shoebox.admin.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith(("shoebox.ingest", "shoebox.store", "shoebox.ml")), (path, name)


def test_search_warning_names_the_models_and_how_to_switch():
    warning = {
        "code": "W_QUERY_LANGUAGE",
        "message": "The query looks French",
        "suggested_models": ["nllb-clip-large-siglip__v1", "nllb-clip-base-siglip__v1"],
    }
    text = logic.search_warning(warning, "photos")
    assert text.startswith("**W_QUERY_LANGUAGE** — The query looks French")
    assert "`nllb-clip-base-siglip__v1`" in text
    assert "`shoebox collections migrate photos --model nllb-clip-large-siglip__v1`" in text
    assert "migrate" not in logic.search_warning({"code": "W_OTHER", "message": "m"}, "photos")
