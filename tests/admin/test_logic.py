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


def test_cut_and_sort() -> None:
    hits = [
        {"id": "a", "score": 0.9, "payload": {"taken_ts": 300.0}},
        {"id": "b", "score": 0.2, "payload": {}},
        {"id": "c", "score": 0.5, "payload": {"taken_ts": 100.0}},
    ]
    assert [h["id"] for h in logic.cut_and_sort(hits, 0.3, "relevance")] == ["a", "c"]
    assert [h["id"] for h in logic.cut_and_sort(hits, -1.0, "date")] == ["c", "a", "b"]


def test_pick_original_largest_then_biggest_then_shallowest_then_alphabetical() -> None:
    copies = [
        {"path": "/b.jpg", "width": 100, "height": 100, "size": 10},
        {"path": "/a.jpg", "width": 100, "height": 100, "size": 10},
        {"path": "/c.jpg", "width": 50, "height": 50, "size": 99},
    ]
    assert logic.pick_original(copies) == 1
    copies[2]["width"] = 400
    assert logic.pick_original(copies) == 2
    assert logic.pick_original([]) == -1
    same = [{"path": "/p/copies/a.jpg"}, {"path": "/p/z.jpg"}]
    assert logic.pick_original(same) == 1


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
