"""Several models in one ML service (SHOEBOX_MODELS): each request names its model, or gets the first."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from shoebox.devtools import photos
from shoebox.launcher import ServiceProcess, start_service
from shoebox.ml.models.clip import TEST_MODEL_PREFIX, ClipModel
from shoebox.ml.models.onnx_testmodel import build_onnx_test_model

SAFE_BATCH = 8
TEXT = "a lighthouse at dusk"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two random-weight tiny models of different seeds: `tiny-a` (the default) and `tiny-b`."""
    base = tmp_path_factory.mktemp("hosted-models")
    return {
        "a": build_onnx_test_model("tiny", base / "tiny-a", seed=0),
        "b": build_onnx_test_model("tiny", base / "tiny-b", seed=1),
    }


def service_env(models: str, workdir: Path, **extra: str) -> dict[str, str]:
    return {
        "SHOEBOX_MODELS": models,
        "SHOEBOX_OFFLINE": "1",
        "SHOEBOX_DEVICE": "cpu",
        "SHOEBOX_API_KEY": "",
        "SHOEBOX_SAFE_CLIP_BATCH": str(SAFE_BATCH),
        "SHOEBOX_PROBE_CACHE_DIR": str(workdir / "probe"),
        "SHOEBOX_DECODE_WORKERS": "1",
        "SHOEBOX_INTRA_OP_THREADS": "1",
        "XDG_CACHE_HOME": str(workdir / "cache"),
        **extra,
    }


@pytest.fixture(scope="module")
def service(
    model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("ml-two-models")
    env = service_env(f"{model_dirs['a']},{model_dirs['b']}", workdir)
    proc = start_service("ml", env=env, log_path=workdir / "ml.log")
    try:
        proc.wait_healthy(60, require="model_loaded")
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def capabilities(service: ServiceProcess) -> dict:
    return httpx.get(service.url + "/api/v1/capabilities").json()


@pytest.fixture(scope="module")
def ids(capabilities: dict) -> dict[str, str]:
    """The hosted models' ids by short name ("a", "b")."""
    return {m["model_name"].rsplit("-", 1)[-1]: m["model_id"] for m in capabilities["models"]}


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("two-models-photo") / "photo.jpg"
    photos.write_jpeg(path, photos.synthetic_photo(320, 240, seed=3))
    return path


def embed_text(service: ServiceProcess, **body: object) -> httpx.Response:
    return httpx.post(service.url + "/api/v1/embed_text", json={"text": TEXT, **body}, timeout=30)


def post_multipart(
    service: ServiceProcess, photo: Path, *, params: dict | None = None, data: dict | None = None
) -> httpx.Response:
    return httpx.post(
        service.url + "/api/v1/batch_embed_and_caption_multipart",
        params=params,
        data=data,
        files=[("files", (photo.name, photo.read_bytes(), "image/jpeg"))],
        timeout=30,
    )


def post_base64(service: ServiceProcess, photo: Path, **body: object) -> httpx.Response:
    image = {
        "unique_id": "1",
        "image_base64": base64.b64encode(photo.read_bytes()).decode(),
        "filename": photo.name,
    }
    return httpx.post(
        service.url + "/api/v1/batch_embed_and_caption", json={"images": [image], **body}, timeout=30
    )


def post_single(service: ServiceProcess, photo: Path, **body: object) -> httpx.Response:
    payload = {"image_base64": base64.b64encode(photo.read_bytes()).decode(), "filename": photo.name, **body}
    return httpx.post(service.url + "/api/v1/embed", json=payload, timeout=30)


def assert_unit_vector(vector: list[float], dim: int) -> None:
    assert len(vector) == dim
    assert np.linalg.norm(np.asarray(vector)) == pytest.approx(1.0, abs=1e-4)


# ------------------------------------------------------------------ capabilities


def test_capabilities_list_every_hosted_model_in_order(
    capabilities: dict, model_dirs: dict[str, Path]
) -> None:
    models = capabilities["models"]
    assert [m["model_name"] for m in models] == [f"{TEST_MODEL_PREFIX}tiny-a", f"{TEST_MODEL_PREFIX}tiny-b"]
    assert [m["model_id"] for m in models] == [ClipModel(model_dirs[k]).model_id for k in ("a", "b")]
    assert [m["default"] for m in models] == [True, False]


def test_each_hosted_model_has_its_own_safe_batch_and_description(capabilities: dict) -> None:
    for model in capabilities["models"]:
        assert model["safe_clip_batch"] == SAFE_BATCH
        assert model["embedding_dim"] > 0
        assert model["device"] == "cpu"
        assert model["test_model"] is True


def test_top_level_capabilities_describe_the_default_model(capabilities: dict) -> None:
    default = capabilities["models"][0]
    assert capabilities["model_name"] == default["model_name"]
    assert capabilities["model_id"] == default["model_id"]
    assert capabilities["embedding_dim"] == default["embedding_dim"]
    assert capabilities["safe_clip_batch"] == default["safe_clip_batch"]


# ------------------------------------------------------------------ text


def test_each_model_embeds_a_text_into_its_own_space(
    service: ServiceProcess, capabilities: dict, ids: dict[str, str]
) -> None:
    answers = {key: embed_text(service, model=model_id).json() for key, model_id in ids.items()}
    for key, model in zip(ids, capabilities["models"], strict=True):
        assert answers[key]["model_id"] == model["model_id"]
        assert_unit_vector(answers[key]["embedding"], model["embedding_dim"])
    assert not np.allclose(answers["a"]["embedding"], answers["b"]["embedding"], atol=1e-3)


def test_a_hosted_model_embeds_as_that_model_alone_does(
    service: ServiceProcess, model_dirs: dict[str, Path], ids: dict[str, str]
) -> None:
    alone = ClipModel(model_dirs["b"], device="cpu", intra_op_threads=1)
    alone.load()
    hosted = embed_text(service, model=ids["b"]).json()["embedding"]
    np.testing.assert_allclose(hosted, alone.embed_texts([TEXT])[0], atol=1e-5)


def test_a_request_naming_no_model_gets_the_default(service: ServiceProcess, ids: dict[str, str]) -> None:
    unnamed = embed_text(service).json()
    assert unnamed["model_id"] == ids["a"]
    np.testing.assert_allclose(
        unnamed["embedding"], embed_text(service, model=ids["a"]).json()["embedding"], atol=1e-6
    )


@pytest.mark.parametrize("name", [f"{TEST_MODEL_PREFIX}tiny-b", "tiny-b"])
def test_a_model_can_be_named_by_its_readable_name(
    service: ServiceProcess, ids: dict[str, str], name: str
) -> None:
    by_name = embed_text(service, model=name).json()
    assert by_name["model_id"] == ids["b"]
    np.testing.assert_allclose(
        by_name["embedding"], embed_text(service, model=ids["b"]).json()["embedding"], atol=1e-6
    )


@pytest.mark.parametrize(
    "request_with",
    ["embed_text", "batch_base64", "single_image", "multipart_query", "multipart_form"],
)
def test_an_unknown_model_is_not_found_naming_the_hosted_ids(
    service: ServiceProcess, photo: Path, ids: dict[str, str], request_with: str
) -> None:
    unknown = "ViT-B-32__openai@0000000000000000"
    response = {
        "embed_text": lambda: embed_text(service, model=unknown),
        "batch_base64": lambda: post_base64(service, photo, model=unknown),
        "single_image": lambda: post_single(service, photo, model=unknown),
        "multipart_query": lambda: post_multipart(service, photo, params={"model": unknown}),
        "multipart_form": lambda: post_multipart(service, photo, data={"model": unknown}),
    }[request_with]()
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "ERR_MODEL_NOT_FOUND"
    assert unknown in error["message"]
    assert ids["a"] in error["message"] and ids["b"] in error["message"]
    assert error["hosted"] == [ids["a"], ids["b"]]


# ------------------------------------------------------------------ images


@pytest.fixture(scope="module")
def image_vectors(service: ServiceProcess, photo: Path, ids: dict[str, str]) -> dict[str, list[float]]:
    """The photo's embedding by each model, from the one-image endpoint."""
    answers = {key: post_single(service, photo, model=model_id).json() for key, model_id in ids.items()}
    assert {key: a["model_id"] for key, a in answers.items()} == ids
    return {key: a["embedding"] for key, a in answers.items()}


def test_the_models_embed_one_image_differently(
    image_vectors: dict[str, list[float]], capabilities: dict
) -> None:
    for vector in image_vectors.values():
        assert_unit_vector(vector, capabilities["embedding_dim"])
    assert not np.allclose(image_vectors["a"], image_vectors["b"], atol=1e-3)


@pytest.mark.parametrize("named_by", ["query", "form"])
def test_multipart_embeds_with_the_model_it_names(
    service: ServiceProcess,
    photo: Path,
    ids: dict[str, str],
    image_vectors: dict[str, list[float]],
    named_by: str,
) -> None:
    if named_by == "query":
        response = post_multipart(service, photo, params={"model": ids["b"]})
    else:
        response = post_multipart(service, photo, data={"model": ids["b"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_id"] == ids["b"]
    [item] = body["results"]
    np.testing.assert_allclose(item["embedding"], image_vectors["b"], atol=1e-5)


def test_base64_batch_embeds_with_the_model_it_names(
    service: ServiceProcess, photo: Path, ids: dict[str, str], image_vectors: dict[str, list[float]]
) -> None:
    body = post_base64(service, photo, model=ids["b"]).json()
    assert body["model_id"] == ids["b"]
    np.testing.assert_allclose(body["results"][0]["embedding"], image_vectors["b"], atol=1e-5)


def test_multipart_naming_no_model_embeds_with_the_default(
    service: ServiceProcess, photo: Path, ids: dict[str, str], image_vectors: dict[str, list[float]]
) -> None:
    body = post_multipart(service, photo).json()
    assert body["model_id"] == ids["a"]
    np.testing.assert_allclose(body["results"][0]["embedding"], image_vectors["a"], atol=1e-5)


# ------------------------------------------------------------------ start-up


def run_service(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SHOEBOX_")}
    return subprocess.run(
        [sys.executable, "-m", "shoebox.ml", "--port", "1"],
        env={**clean, **env, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("entry", ["empty-folder", "missing-folder"])
def test_a_models_entry_that_is_not_a_model_folder_stops_the_service_with_one_line(
    model_dirs: dict[str, Path], tmp_path: Path, entry: str
) -> None:
    not_a_model = tmp_path / entry
    if entry == "empty-folder":
        not_a_model.mkdir()
    result = run_service(service_env(f"{model_dirs['a']},{not_a_model}", tmp_path))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(not_a_model) in lines[0] and "is not a model folder" in lines[0]


def test_a_catalogue_name_absent_offline_stops_the_service_with_one_line(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    result = run_service(service_env(f"{model_dirs['a']},ViT-B-32__openai", tmp_path))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "ViT-B-32__openai" in lines[0] and "SHOEBOX_OFFLINE" in lines[0]


def test_one_model_listed_twice_stops_the_service_with_one_line(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    link = tmp_path / "same-model"
    link.symlink_to(model_dirs["a"])  # another path to the same folder: one identity twice
    result = run_service(service_env(f"{model_dirs['a']},{link}", tmp_path))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "twice" in lines[0]
