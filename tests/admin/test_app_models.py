"""The Collections page's model switch, driven by AppTest against live services hosting two
random-weight test models: migrate, follow, and drop the old model's embeddings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("streamlit")

from streamlit.testing.v1 import AppTest  # noqa: E402

from servers import FOLLOW, ServiceProcess, connect, start_ingest, start_ml, write_photos  # noqa: E402
from shoebox.admin import APP_PATH  # noqa: E402

COLLECTION = "switch"


@pytest.fixture(scope="module")
def two_model_services(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServiceProcess, ServiceProcess, Path]]:
    from shoebox.ml.models.onnx_testmodel import build_onnx_test_model

    base = tmp_path_factory.mktemp("admin-models")
    a = build_onnx_test_model("tiny", base / "tiny-a", seed=0)
    b = build_onnx_test_model("tiny", base / "tiny-b", seed=1)
    root = base / "photos"
    write_photos(root, 5, seed=70)
    ml = start_ml(a, base / "ml", env={"SHOEBOX_MODELS": f"{a},{b}"})
    try:
        ingest = start_ingest(base / "data", [ml.url], [root])
    except BaseException:
        ml.stop()
        raise
    assert connect(ingest.url).ingest_and_follow(root, COLLECTION, **FOLLOW).status == "completed"
    yield ml, ingest, root
    ingest.stop()
    ml.stop()


def test_a_collection_is_switched_to_another_model_from_the_collections_page(two_model_services, monkeypatch):
    ml, ingest, _ = two_model_services
    for var, value in {
        "SHOEBOX_URL": ingest.url,
        "SHOEBOX_API_KEY": "",
        "SHOEBOX_ML_URL": ml.url,
        "SHOEBOX_ML_API_KEY": "",
    }.items():
        monkeypatch.setenv(var, value)
    model_a, model_b = (m["model_id"] for m in connect(ml.url).get("/api/v1/capabilities")["models"])
    at = AppTest.from_file(str(APP_PATH), default_timeout=60)
    at.run()
    at.sidebar.radio(key="page").set_value("Collections").run()
    assert not at.exception, at.exception
    at.selectbox(key="coll_model_of").set_value(COLLECTION).run()
    assert any(model_a in m.value for m in at.markdown)
    assert at.selectbox(key="coll_migrate_to").options == [model_b]
    at.selectbox(key="coll_migrate_to").set_value(model_b)
    at.button(key="coll_migrate_go").click().run()
    assert not at.exception, at.exception

    api = connect(ingest.url)
    assert api.follow_migration(COLLECTION, poll_s=0.1, timeout=60)["status"] == "completed"
    deadline = time.monotonic() + 30
    while not any(model_b in m.value for m in at.markdown):
        assert time.monotonic() < deadline, "the page never showed the new model"
        at.run()
    assert any(f"retired: {model_a}" in c.value for c in at.caption)

    at.button(key=f"coll_drop_{model_a}").click().run()
    assert not at.exception, at.exception
    assert [m["state"] for m in api.collection_info(COLLECTION)["models"]] == ["active"]
