"""Switching a collection to another model with no downtime, through HTTP, on real services.

One ML service hosts two random-weight test models (A, the default, and B); the ingestion
service migrates a collection from A to B while searches and an ingest run, then rolls back.
The vectors mean nothing (random weights); what is checked is that every search answers, that
the switch is atomic, and that every file ends in the new collection exactly once.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from servers import FOLLOW, connect, run_cli, start_ingest, start_ml, write_photos
from shoebox.client import APIError
from shoebox.ingest.catalog import Catalog
from shoebox.store import point_id
from shoebox.store.edge import EdgeStore

LIB = "lib"


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from shoebox.ml.models.onnx_testmodel import build_onnx_test_model

    root = tmp_path_factory.mktemp("two-models")
    return build_onnx_test_model("tiny", root / "tiny-a", seed=0), build_onnx_test_model(
        "tiny", root / "tiny-b", seed=1
    )


@pytest.fixture(scope="module")
def ml_two(two_models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    a, b = two_models
    proc = start_ml(a, tmp_path_factory.mktemp("ml-two"), env={"SHOEBOX_MODELS": f"{a},{b}"})
    yield proc
    proc.stop()


def _ids(ml_two) -> tuple[str, str]:
    models = connect(ml_two.url).get("/api/v1/capabilities")["models"]
    return models[0]["model_id"], models[1]["model_id"]


def _contents_of(data: Path, collection: str) -> set[str]:
    catalog = Catalog(data / "catalog.sqlite3")
    try:
        return {sha for sha, _ in catalog.contents(collection)}
    finally:
        catalog.close()


def _store_points(data: Path, store_name: str) -> dict[str, str]:
    """id → model_name of every point of a store collection (service stopped)."""
    store = EdgeStore(data / "edge", background_index=False)
    try:
        out = {}
        for page in store.iter_points(store_name, page=256, payload=["model_name"]):
            out.update({r.id: r.payload.get("model_name") for r in page})
        return out
    finally:
        store.close()


def test_a_collection_switches_model_while_searches_and_an_ingest_go_on_then_rolls_back(ml_two, tmp_path):
    model_a, model_b = _ids(ml_two)
    root = tmp_path / "photos"
    write_photos(root / "first", 60, seed=100)
    data = tmp_path / "data"
    # Small batches, one in flight: the migration takes long enough to search and ingest during it.
    ingest = start_ingest(
        data,
        [ml_two.url],
        [root],
        env={"SHOEBOX_ML_INFERENCE_BATCH_SIZE": "2", "SHOEBOX_ML_MAX_INFLIGHT": "1"},
    )
    api = connect(ingest.url)
    try:
        assert api.ingest_and_follow(root / "first", LIB, **FOLLOW).status == "completed"
        assert api.collection_info(LIB)["model_name"] == model_a

        answers: list[tuple[int, str | None, str]] = []
        failures: list[str] = []
        stop = threading.Event()

        def search_all_along() -> None:
            with connect(ingest.url) as searcher:
                while not stop.is_set():
                    try:
                        body = searcher.search_text("a dog on a beach", limit=5, collection=LIB)
                        answers.append(
                            (
                                len(body["results"]),
                                body.get("model_name"),
                                body["results"][0]["payload"].get("model_name") if body["results"] else "",
                            )
                        )
                    except APIError as exc:
                        failures.append(f"{exc.code}: {exc}")
                    time.sleep(0.25)  # gaps: a migration sends its batches when searches pause

        searcher = threading.Thread(target=search_all_along)
        searcher.start()
        try:
            started = api.migrate(LIB, model_b)
            assert started["model"] == model_b and started["previous_model"] == model_a
            # An ingest during the migration: its files must reach the new collection too.
            write_photos(root / "during", 12, seed=500)
            job = api.ingest(root / "during", LIB)
            done = api.follow_migration(LIB, poll_s=0.05, timeout=120)
            assert api.follow(job["job_id"], **FOLLOW).status == "completed"
            time.sleep(0.3)
        finally:
            stop.set()
            searcher.join(30)

        assert done["status"] == "completed", done["message"]
        assert failures == [], failures[:5]
        assert answers and all(n == 5 for n, _, _ in answers), "every search answered a full page"
        # Each answer came from one model: the vectors' model and the hits' model agree.
        assert {(m, hit_model) for _, m, hit_model in answers} <= {(model_a, model_a), (model_b, model_b)}
        assert answers[-1][1] == model_b
        assert {m for _, m, _ in answers} == {model_a, model_b}, "searches ran before and after the switch"

        info = api.collection_info(LIB)
        assert info["model_name"] == model_b
        assert [(m["model_name"], m["state"]) for m in info["models"]] == [
            (model_b, "active"),
            (model_a, "retired"),
        ]
        assert (
            info["migration"]["status"] == "completed"
            and info["migration"]["done"] == info["migration"]["total"]
        )

        # Rollback is one call: only what changed since is embedded again.
        write_photos(root / "after", 3, seed=900)
        assert api.ingest_and_follow(root / "after", LIB, **FOLLOW).status == "completed"
        back = api.migrate(LIB, model_a)
        assert back["message"].startswith("rollback")
        assert api.follow_migration(LIB, poll_s=0.05, timeout=60)["status"] == "completed"
        assert api.collection_info(LIB)["model_name"] == model_a
        assert api.search_text("a cat", collection=LIB)["model_name"] == model_a
        with pytest.raises(APIError) as refused:
            api.drop_model(LIB, model_a)  # the one answering cannot be dropped
        assert refused.value.code == "ERR_NOT_FOUND"
    finally:
        ingest.stop()

    # Every file is in the answering collection exactly once, and the kept one caught up too.
    contents = _contents_of(data, LIB)
    assert len(contents) == 75
    catalog = Catalog(data / "catalog.sqlite3")
    try:
        rec = catalog.get_collection(LIB)
        kept = {g.model_name: g.store_name for g in catalog.generations(LIB)}
    finally:
        catalog.close()
    answering = _store_points(data, rec.store)
    assert set(answering) == {point_id(sha) for sha in contents}
    assert set(answering.values()) == {model_a}
    assert (
        len(_store_points(data, kept[model_b])) == 75
    )  # as it was at the rollback (it answered for "after")

    ingest = start_ingest(data, [ml_two.url], [root])
    try:
        api = connect(ingest.url)
        assert api.drop_model(LIB, model_b)["dropped"] == model_b
        assert [m["state"] for m in api.collection_info(LIB)["models"]] == ["active"]
    finally:
        ingest.stop()


def test_a_migration_killed_9_resumes_at_restart_and_stores_each_content_once(ml_two, tmp_path):
    _, model_b = _ids(ml_two)
    root = tmp_path / "photos"
    write_photos(root, 160, seed=2000, size=(640, 480))
    data = tmp_path / "data"
    slow = {"SHOEBOX_ML_INFERENCE_BATCH_SIZE": "1", "SHOEBOX_ML_MAX_INFLIGHT": "1"}
    first = start_ingest(data, [ml_two.url], [root], env=slow)
    api = connect(first.url)
    assert api.ingest_and_follow(root, LIB, **FOLLOW).status == "completed"
    api.migrate(LIB, model_b)
    deadline = time.monotonic() + 60
    while (status := api.migration(LIB))["done"] < 10 and status["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert status["status"] == "running", "the migration ended before the kill: the test proves nothing"
    first.kill9()
    assert api.collection_info  # the client object outlives its server; a new one talks to the restart

    second = start_ingest(data, [ml_two.url], [root], port=None)
    try:
        api = connect(second.url)
        done = api.follow_migration(LIB, poll_s=0.05, timeout=120)
        assert done["status"] == "completed", done["message"]
        assert api.collection_info(LIB)["model_name"] == model_b
        assert done["total"] == 160 and done["failed"] == 0
    finally:
        second.stop()
    rec_store = f"{LIB}~"
    catalog = Catalog(data / "catalog.sqlite3")
    try:
        store_name = catalog.get_collection(LIB).store
    finally:
        catalog.close()
    assert store_name.startswith(rec_store)
    points = _store_points(data, store_name)
    assert set(points) == {point_id(sha) for sha in _contents_of(data, LIB)}
    assert set(points.values()) == {model_b}


def test_migrating_to_a_model_no_service_hosts_is_refused_and_changes_nothing(ml_two, tmp_path):
    root = tmp_path / "photos"
    write_photos(root, 4, seed=7)
    ingest = start_ingest(tmp_path / "data", [ml_two.url], [root])
    try:
        api = connect(ingest.url)
        assert api.ingest_and_follow(root, LIB, **FOLLOW).status == "completed"
        before = api.collection_info(LIB)
        with pytest.raises(APIError) as refused:
            api.migrate(LIB, "ViT-H-14__laion2b-s32b-b79k")
        assert refused.value.code == "ERR_MODEL_NOT_FOUND" and refused.value.status == 404
        with pytest.raises(APIError) as same:
            api.migrate(LIB, before["model_name"])
        assert same.value.code == "ERR_CONFLICT"
        after = api.collection_info(LIB)
        assert after["model_name"] == before["model_name"] and after["models"] == before["models"]
        with pytest.raises(APIError) as none:
            api.cancel_migration(LIB)
        assert none.value.code == "ERR_NOT_FOUND"
    finally:
        ingest.stop()


def test_a_cancelled_migration_leaves_the_collection_as_it_was(ml_two, tmp_path):
    _, model_b = _ids(ml_two)
    root = tmp_path / "photos"
    write_photos(root, 80, seed=3000, size=(640, 480))
    slow = {"SHOEBOX_ML_INFERENCE_BATCH_SIZE": "1", "SHOEBOX_ML_MAX_INFLIGHT": "1"}
    ingest = start_ingest(tmp_path / "data", [ml_two.url], [root], env=slow)
    try:
        api = connect(ingest.url)
        assert api.ingest_and_follow(root, LIB, **FOLLOW).status == "completed"
        before = api.collection_info(LIB)
        api.migrate(LIB, model_b)
        cancelled = api.cancel_migration(LIB)
        assert cancelled["status"] == "cancelled"
        after = api.collection_info(LIB)
        assert after["model_name"] == before["model_name"]
        assert [m["state"] for m in after["models"]] == ["active"]
        assert len(api.search_text("sunset", collection=LIB, limit=3)["results"]) == 3
    finally:
        ingest.stop()
    shutil.rmtree(tmp_path / "data", ignore_errors=True)


def test_the_cli_creates_a_collection_with_a_model_migrates_it_and_drops_the_old_one(ml_two, tmp_path):
    model_a, model_b = _ids(ml_two)
    root = tmp_path / "photos"
    write_photos(root, 6, seed=40)
    ingest = start_ingest(tmp_path / "data", [ml_two.url], [root])
    try:
        created = run_cli(ingest.url, "collections", "create", "cli", "--model", model_b, "--json")
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["model_name"] == model_b
        assert connect(ingest.url).ingest_and_follow(root, "cli", **FOLLOW).status == "completed"
        assert connect(ingest.url).collection_info("cli")["model_name"] == model_b  # not the default A

        migrated = run_cli(ingest.url, "collections", "migrate", "cli", "--model", model_a, "--json")
        assert migrated.returncode == 0, migrated.stderr
        status = json.loads(migrated.stdout)
        assert status["status"] == "completed" and status["done"] == status["total"] == 6

        shown = run_cli(ingest.url, "collections", "migration", "cli")
        assert shown.returncode == 0 and "completed" in shown.stdout and model_a in shown.stdout

        dropped = run_cli(ingest.url, "collections", "drop-model", "cli", model_b)
        assert dropped.returncode == 0, dropped.stderr
        assert [m["state"] for m in connect(ingest.url).collection_info("cli")["models"]] == ["active"]

        unknown = run_cli(ingest.url, "collections", "migrate", "cli", "--model", "no-such-model")
        assert unknown.returncode != 0 and "ERR_MODEL_NOT_FOUND" in unknown.stderr + unknown.stdout
    finally:
        ingest.stop()
