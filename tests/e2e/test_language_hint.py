"""The language hint through HTTP and the CLI, against live services on the tiny test model.

The tiny OpenCLIP test model is English-only (the ML service says so: `multilingual` false), so
a query clearly in another language gets a W_QUERY_LANGUAGE warning in the answer; a tiny M-CLIP
test model (an XLM-R text tower) is multilingual by the ML service's word, although its name says
nothing of it, and never does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import (
    FOLLOW,
    ServiceProcess,
    ShoeboxClient,
    connect,
    run_cli,
    start_ingest,
    start_ml,
    write_photos,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ingest"))

from language_queries import ENGLISH  # noqa: E402

from shoebox.ingest.language import SUGGESTED_MODELS  # noqa: E402

COLLECTION = "hint"
FOREIGN = [("chien sur la plage", "fr"), ("Hund am Strand", "de"), ("浜辺の犬", "ja")]


@dataclass
class Library:
    api: ShoeboxClient
    url: str

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli(self.url, *args)


def _library(ml: ServiceProcess, base: Path) -> Iterator[Library]:
    root = base / "photos"
    write_photos(root / "beach", 3, seed=300)
    proc = start_ingest(base / "data", [ml.url], [root])
    api = connect(proc.url)
    try:
        job = api.ingest_and_follow(root / "beach", COLLECTION, **FOLLOW)
        assert job.status == "completed", job
        yield Library(api, proc.url)
    finally:
        api.close()
        proc.stop()


@pytest.fixture(scope="module")
def lib(ml_service: ServiceProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    yield from _library(ml_service, tmp_path_factory.mktemp("langhint"))


@pytest.fixture(scope="module")
def multilingual_lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    from shoebox.ml.models.onnx_testmodel import build_onnx_test_model

    base = tmp_path_factory.mktemp("langhint-multilingual")
    model = build_onnx_test_model("tiny", base / "tiny-mclip", family="mclip", fp16=False)
    ml = start_ml(model, base / "ml")
    try:
        yield from _library(ml, base)
    finally:
        ml.stop()


@pytest.mark.parametrize(("query", "lang"), FOREIGN)
def test_text_search_in_another_language_carries_the_warning(lib, query, lang):
    answer = lib.api.search_text(query, limit=3, collection=COLLECTION)
    assert len(answer["results"]) == 3  # the search still answers
    [warning] = answer["warnings"]
    assert warning["code"] == "W_QUERY_LANGUAGE"
    assert warning["language"] in ({"ja", "zh"} if lang == "ja" else {lang})
    assert 0 < warning["confidence"] <= 1
    assert warning["suggested_models"] == list(SUGGESTED_MODELS)
    assert warning["text"] == query
    model = answer["model_name"].split("@")[0]  # the model's id: name@digest
    assert f"the model {model} understands English only" in warning["message"]
    assert SUGGESTED_MODELS[0] in warning["message"]


def test_english_text_searches_never_carry_the_warning(lib):
    warned = {}
    for query in ENGLISH:
        answer = lib.api.search_text(query, limit=1, collection=COLLECTION)
        if answer["warnings"]:
            warned[query] = answer["warnings"]
    assert warned == {}


def test_combined_query_warns_once_per_language_of_its_texts(lib):
    terms = [
        {"text": "Hund am Strand"},
        {"text": "chien sur la plage", "weight": -1},
        {"text": "Kinder spielen im Schnee"},
        {"text": "sunset"},
    ]
    answer = lib.api.search_query(terms, limit=3, collection=COLLECTION)
    assert len(answer["results"]) == 3
    assert [(w["language"], w["text"]) for w in answer["warnings"]] == [
        ("de", "Hund am Strand"),
        ("fr", "chien sur la plage"),
    ]


def test_combined_query_in_english_or_by_image_only_has_no_warning(lib):
    terms = [{"text": "dog on a beach"}, {"text": "people", "weight": -1}]
    assert lib.api.search_query(terms, collection=COLLECTION)["warnings"] == []
    hit = lib.api.search_text("a photo", limit=1, collection=COLLECTION)["results"][0]
    answer = lib.api.search_query([{"image_id": hit["id"]}], limit=1, collection=COLLECTION)
    assert answer["warnings"] == []


def test_cli_search_prints_the_warning_with_the_model_to_switch_to(lib):
    result = lib.cli("search", "chien sur la plage", "-c", COLLECTION)
    assert result.returncode == 0, result.stderr
    assert "W_QUERY_LANGUAGE" in result.stderr and "French" in result.stderr
    assert f"shoebox collections migrate {COLLECTION} --model {SUGGESTED_MODELS[0]}" in result.stderr
    assert "W_QUERY_LANGUAGE" not in result.stdout  # the table stays clean


def test_cli_search_json_includes_the_warning(lib):
    result = lib.cli("search", "Hund am Strand", "-c", COLLECTION, "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert [w["language"] for w in answer["warnings"]] == ["de"]


def test_cli_search_in_english_prints_no_warning(lib):
    result = lib.cli("search", "Eiffel Tower at night", "-c", COLLECTION)
    assert result.returncode == 0, result.stderr
    assert "W_QUERY_LANGUAGE" not in result.stderr


def test_a_multilingual_model_never_gets_the_warning(multilingual_lib):
    api = multilingual_lib.api
    for query, _ in FOREIGN:
        answer = api.search_text(query, limit=1, collection=COLLECTION)
        assert "tiny-mclip" in answer["model_name"]
        assert answer["warnings"] == []
    terms = [{"text": q} for q, _ in FOREIGN]
    assert api.search_query(terms, limit=1, collection=COLLECTION)["warnings"] == []
