"""The admin UI driven by Streamlit's AppTest against live services (tiny random-weight model)."""

from __future__ import annotations

import math
import time

import pytest

pytest.importorskip("streamlit")

from streamlit.testing.v1 import AppTest  # noqa: E402

from shoebox.admin import APP_PATH  # noqa: E402
from shoebox.client import ShoeboxClient  # noqa: E402
from shoebox.ingest.language import SUGGESTED_MODELS  # noqa: E402

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


def _captions(at: AppTest) -> list[str]:
    return [c for img in at.image for c in img.captions]


def _names(at: AppTest) -> list[str]:
    """The file names of the hits shown, in order (captions are "filename · score")."""
    return [c.split(" · ")[0] for c in _captions(at)]


def _scores(at: AppTest) -> list[float]:
    return [float(c.split(" · ")[1]) for c in _captions(at)]


def _search(at: AppTest) -> None:
    _button(at, "Search").click().run()
    assert not at.exception, at.exception


def _groups(at: AppTest) -> list:
    """The bordered group containers of the Duplicates page, in order."""
    return [c for c in at.container if any(m.value.startswith("**Group ") for m in c.markdown)]


def _cards(group) -> list[tuple[str, str]]:
    """(the card's first line, its path) for each member card of a group container."""
    lines = [m.value for m in group.markdown if not m.value.startswith("**Group ")]
    paths = [c.value for c in group.caption if c.value.startswith("/")]
    assert len(lines) == len(paths), (lines, paths)
    return list(zip(lines, paths, strict=True))


def test_ingest_search_detail_and_duplicates(ui_env) -> None:
    live = ui_env
    at = _app("Ingest")
    _ingest_via_ui(at, live, live.trip)
    assert at.session_state["job_status"] == "completed"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["indexed"] == "7" and metrics["failed"] == "0"  # 8 files, 7 distinct contents
    assert "Finished: completed" in "\n".join(s.value for s in at.success)

    # Search: a text query shows a grid of thumbnails with scores, through the combined query.
    at.sidebar.radio(key="page").set_value("Search").run()
    assert "apply to the hits of this page only" not in _text(at)
    assert at.slider(key="search_min_score").value == -1.0 and "No minimum" in _text(at)
    at.text_input(key="search_query").input("a photo")
    _search(at)
    req = at.session_state["search_req"]
    assert req["kind"] == "query" and req["terms"] == [{"text": "a photo", "weight": 1.0}]
    assert len(at.image) == 7, _text(at)
    assert all(" · " in c for c in _captions(at))  # filename · score
    scores = _scores(at)
    assert scores == sorted(scores, reverse=True)

    # "Not like": a second text term of weight −1.
    at.text_input(key="search_not").input("a dog")
    _search(at)
    assert at.session_state["search_req"]["terms"][-1] == {"text": "a dog", "weight": -1.0}
    assert len(at.image) == 7
    at.text_input(key="search_not").input("")
    _search(at)

    # Minimum score: cut on the server, so fewer hits (on every page), all at or above it.
    cut = math.floor(scores[0] * 100) / 100  # at or below the best hit, above the worst
    assert cut > scores[-1], scores
    at.slider(key="search_min_score").set_value(cut).run()
    assert not at.exception, at.exception
    kept = _scores(at)
    assert 0 < len(kept) < len(scores) and all(s >= cut for s in kept), (cut, scores, kept)
    assert f"score ≥ {cut:.2f}" in _text(at)
    with ShoeboxClient(live.ingest.url) as api:
        direct = api.search_query([{"text": "a photo"}], limit=12, score_threshold=cut)
    assert len(direct["results"]) == len(kept)
    at.slider(key="search_min_score").set_value(-1.0).run()
    assert len(at.image) == 7

    # Sort by date taken, on the server: the dated photos in order, the undated after them.
    oldest = [p.name for p in live.dated]
    at.radio(key="search_sort").set_value("oldest first").run()
    assert not at.exception, at.exception
    assert _names(at)[: len(oldest)] == oldest, _names(at)
    assert "7 result(s) on this page of 7" in _text(at)
    assert _button(at, "Next page ▸").disabled  # the total says where the pages end
    at.radio(key="search_sort").set_value("newest first").run()
    assert _names(at)[: len(oldest)] == oldest[::-1], _names(at)
    at.radio(key="search_sort").set_value("relevance").run()

    # Filters: no PNG in the collection; only the copy's folder.
    at.multiselect(key="f_format").set_value(["png"])
    _search(at)
    assert at.session_state["search_req"]["filters"] == {"format": ["png"]}
    assert len(at.image) == 0 and "0 result(s)" in _text(at)
    at.multiselect(key="f_format").set_value([])
    at.text_input(key="f_folder").input(str(live.copy.parent.resolve()))
    _search(at)
    assert _captions(at)[0].startswith("img_0000")
    at.text_input(key="f_folder").input("")
    _search(at)
    assert len(at.image) == 7

    # Details of the first hit: the larger rendition, its paths, near duplicates.
    [b for b in at.button if b.label == "Details"][0].click().run()
    assert not at.exception, at.exception
    assert at.session_state["detail"]
    assert "Photo details" in [h.value for h in at.subheader]
    assert "Paths" in _text(at) and str(live.trip.resolve()) in _text(at)

    # More like this: a combined query on the stored image's vector.
    _button(at, "Close").click().run()
    [b for b in at.button if b.label == "More like this"][0].click().run()
    req = at.session_state["search_req"]
    assert req["kind"] == "similar" and list(req["terms"][0]) == ["image_id", "weight"]
    assert len(at.image) >= 1 and _scores(at)[0] == 1.0  # the photo itself leads

    # Duplicates: every tier from the real scan, in order, each group with its copy to keep.
    at.sidebar.radio(key="page").set_value("Duplicates").run()
    assert not at.exception, at.exception
    text = _text(at)
    heads = [h.value for h in at.subheader]
    tiers = [h.split(" (")[0] for h in heads]
    assert tiers == ["Exact copies", "Same picture", "Bursts", "Near duplicates"], heads
    assert "Exact copies (1 group(s))" in heads and "Same picture (1 group(s))" in heads, heads
    assert "fewest folders" in text  # the server's keep rule, not one of the page's own
    with ShoeboxClient(live.ingest.url) as api:
        answer = api.duplicates()
    groups = _groups(at)
    assert len(groups) == sum(len(answer["groups"][t]) for t in answer["groups"])
    # The exact copy: one content at two paths; the server keeps the shallower path.
    exact = _cards(groups[0])
    assert sorted(p for _, p in exact) == sorted(
        [str(live.copy.resolve()), str(live.trip.resolve() / "img_0000.jpg")]
    )
    kept = [p for line, p in exact if "KEEP" in line]
    assert kept == [answer["groups"]["exact"][0]["keep_path"]] == [str(live.trip.resolve() / "img_0000.jpg")]
    assert all("320×240" in line for line, _ in exact)
    # The same picture: the resized, re-encoded copy; the full-size original is the one to keep.
    same = dict((p, line) for line, p in _cards(groups[1]))
    original, small = str(live.trip.resolve() / "img_0004.jpg"), str(live.resized.resolve())
    assert set(same) == {original, small}, same
    assert "KEEP" in same[original] and "320×240" in same[original] and "JPG" in same[original]
    assert same[small].startswith("copy") and "160×120" in same[small]
    # The burst: one camera, a second apart; the sharper shot is kept.
    burst = {p: line for line, p in _cards(groups[2])}
    assert set(burst) == {str(p.resolve()) for p in live.burst}, burst
    assert "over 1 s" in groups[2].markdown[0].value
    [kept] = [p for p, line in burst.items() if "KEEP" in line]
    assert kept == answer["groups"]["bursts"][0]["keep_path"]
    assert "Canon EOS R5" in "\n".join(c.value for c in groups[2].caption)
    assert "Near duplicates (1 group(s))" in heads  # the random-weight model finds all alike
    assert len(at.image) >= 6

    # The thresholds go to the server: at distance 0 the resized copy is no longer the same
    # picture (its hash moved a few bits), so the pair falls to near duplicates; the captions
    # echo the server's thresholds.
    at.slider(key="dup_threshold").set_value(0.97)
    at.slider(key="dup_phash_distance").set_value(0)
    at.number_input(key="dup_burst_seconds").set_value(5.0)
    at.slider(key="dup_burst_threshold").set_value(0.96)
    _button(at, "Find duplicates").click().run()
    assert not at.exception, at.exception
    text = _text(at)
    for shown in ("at most 0 bits", "within 5 s", "cosine ≥ 0.96", "cosine ≥ 0.97"):
        assert shown in text, (shown, text)
    heads = [h.value for h in at.subheader]
    assert "Same picture (0 group(s))" in heads, heads
    near = [{p for _, p in _cards(g)} for g in _groups(at)[1:]]
    assert any({original, small} <= paths for paths in near), near


def test_search_in_another_language_shows_the_language_hint(ui_env) -> None:
    with ShoeboxClient(ui_env.ingest.url) as api:
        if "langhint" not in api.collections():
            api.create_collection("langhint")  # empty: the warning comes with the answer, hits or not
    at = AppTest.from_file(str(APP_PATH), default_timeout=TIMEOUT_S)
    at.session_state["collection"] = "langhint"
    at.run()
    at.sidebar.radio(key="page").set_value("Search").run()
    assert not at.exception, at.exception

    at.text_input(key="search_query").input("Hund am Strand")
    _search(at)
    [warning] = [w.value for w in at.warning]
    assert "W_QUERY_LANGUAGE" in warning and "German" in warning
    assert all(model in warning for model in SUGGESTED_MODELS)
    assert f"shoebox collections migrate langhint --model {SUGGESTED_MODELS[0]}" in warning

    at.text_input(key="search_query").input("猫")
    _search(at)
    assert ["W_QUERY_LANGUAGE" in w.value for w in at.warning] == [True]

    for english in ("dog on a beach", "Paris", "pizza margherita"):
        at.text_input(key="search_query").input(english)
        _search(at)
        assert [w.value for w in at.warning] == [], english
