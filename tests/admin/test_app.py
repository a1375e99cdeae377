"""The admin UI driven by Streamlit's AppTest against live services (tiny random-weight model)."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("streamlit")

from streamlit.testing.v1 import AppTest  # noqa: E402

from shoebox.admin import APP_PATH  # noqa: E402
from shoebox.client import ShoeboxClient  # noqa: E402

TIMEOUT_S = 60


def _app(page: str) -> AppTest:
    at = AppTest.from_file(str(APP_PATH), default_timeout=TIMEOUT_S)
    at.run()
    assert not at.exception, at.exception
    at.sidebar.radio(key="page").set_value(page).run()
    assert not at.exception, at.exception
    return at


def _text(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("markdown", "caption", "error", "warning", "success", "info")
        for e in at.get(kind)
    ]
    parts += [e.body for e in at.get("error")]
    return "\n".join(str(p) for p in parts)


def _button(at: AppTest, label: str):
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r}: {[b.label for b in at.button]}"
    return found[0]


def _ingest_via_ui(at: AppTest, live, folder) -> None:
    """Pick root ▸ folder in the folder picker, start, and rerun until the job has finished."""
    picker = [s for s in at.selectbox if s.label == "Folder"][0]
    assert str(live.root.resolve()) in picker.options
    picker.set_value(str(live.root.resolve())).run()
    _button(at, "Open folder ▸").click().run()
    picker = [s for s in at.selectbox if s.label == "Folder"][0]
    target = str(folder.resolve())
    assert target in picker.options and str((live.root / "other").resolve()) in picker.options
    picker.set_value(target).run()
    _button(at, "Start ingest").click().run()
    assert not at.exception, at.exception
    assert at.session_state["job_id"]
    deadline = time.monotonic() + 90
    while at.session_state["job_status"] not in ("completed", "completed_with_errors", "failed", "cancelled"):
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.5)
        at.run()
        assert not at.exception, at.exception


def test_services_page_shows_test_model_banner(ui_env) -> None:
    at = _app("Services")
    errors = "\n".join(e.value for e in at.error)
    assert "TEST MODEL" in errors and "random-weight" in errors
    labels = {m.label: m.value for m in at.metric}
    assert labels["Device"] == "cpu"
    assert labels["Vector store"]
    assert "Safe CLIP batch" in labels and "Queue depth" in labels


def test_unreachable_service_is_a_message(monkeypatch, ui_env) -> None:
    monkeypatch.setenv("SHOEBOX_URL", "http://127.0.0.1:9")
    at = _app("Collections")
    assert not at.exception
    assert any("ERR_CONNECTION" in e.value for e in at.error)


def test_ingest_search_detail_and_duplicates(ui_env) -> None:
    live = ui_env
    at = _app("Ingest")
    _ingest_via_ui(at, live, live.trip)
    assert at.session_state["job_status"] == "completed"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["indexed"] == "6" and metrics["failed"] == "0"  # 7 files, 6 distinct contents
    assert "Finished: completed" in "\n".join(s.value for s in at.success)

    # Search: a text query shows a grid of thumbnails with scores.
    at.sidebar.radio(key="page").set_value("Search").run()
    at.text_input(key="search_query").input("a photo")
    at.button[0].click().run()  # the form's submit button
    assert not at.exception, at.exception
    images = at.image
    assert len(images) >= 6, _text(at)
    assert all(" · " in c for img in images for c in img.captions)  # filename · score

    # Filters: no PNG in the collection; only the copy's folder.
    at.multiselect(key="f_format").set_value(["png"])
    at.button[0].click().run()
    assert at.session_state["search_req"]["filters"] == {"format": ["png"]}
    assert len(at.image) == 0 and "0 result(s)" in _text(at)
    at.multiselect(key="f_format").set_value([])
    at.text_input(key="f_folder").input(str(live.copy.parent.resolve()))
    at.button[0].click().run()
    assert [c for img in at.image for c in img.captions][0].startswith("img_0000")
    at.text_input(key="f_folder").input("")
    at.button[0].click().run()
    assert len(at.image) >= 6

    # Details of the first hit: the larger rendition, its paths, near duplicates.
    [b for b in at.button if b.label == "Details"][0].click().run()
    assert not at.exception, at.exception
    assert at.session_state["detail"]
    assert "Photo details" in [h.value for h in at.subheader]
    assert "Paths" in _text(at) and str(live.trip.resolve()) in _text(at)

    # More like this: a similar search.
    _button(at, "Close").click().run()
    [b for b in at.button if b.label == "More like this"][0].click().run()
    assert at.session_state["search_req"]["kind"] == "similar"
    assert len(at.image) >= 1

    # Duplicates: the exact copy's group, its original marked.
    at.sidebar.radio(key="page").set_value("Duplicates").run()
    assert not at.exception, at.exception
    text = _text(at)
    assert "Exact copies (1 group(s))" in "\n".join(h.value for h in at.subheader), text
    assert str(live.copy.resolve()) in text
    # The original: same resolution and size, so the shallowest path (trip/img_0000.jpg, not copies/…).
    assert "**ORIGINAL** · 320×240" in text
    assert len(at.image) >= 2


def test_ingest_errors_are_grouped_by_code(ui_env) -> None:
    at = _app("Ingest")
    at.text_input(key="ingest_collection").input("withbad").run()
    _ingest_via_ui(at, ui_env, ui_env.bad)
    assert at.session_state["job_status"] == "completed_with_errors"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["indexed"] == "1" and metrics["failed"] == "1"
    labels = [e.label for e in at.expander]
    assert any(label.startswith("ERR_DECODING_IMAGE (1)") for label in labels), labels
    assert "corrupt.jpg" in "\n".join(t.value for t in at.text)


def test_collections_page_lists_selects_and_refuses_unconfirmed_delete(ui_env) -> None:
    at = _app("Collections")
    at.text_input(key="coll_new").input("scratch")
    [b for b in at.button if b.label == "Create"][0].click().run()
    assert not at.exception, at.exception
    with ShoeboxClient(ui_env.ingest.url) as api:
        assert "scratch" in api.collections()
    at.selectbox(key="coll_select").set_value("scratch").run()
    _button(at, "Use this collection").click().run()
    assert at.session_state["collection"] == "scratch"
    at.selectbox(key="coll_delete").set_value("scratch").run()
    at.text_input(key="coll_delete_confirm").input("wrong").run()
    _button(at, "Delete").click().run()
    assert any("does not match" in e.value for e in at.error)
    at.text_input(key="coll_delete_confirm").input("scratch").run()
    _button(at, "Delete").click().run()
    assert not at.exception, at.exception
    with ShoeboxClient(ui_env.ingest.url) as api:
        assert "scratch" not in api.collections()
