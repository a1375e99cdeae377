"""The ML service's endpoints over HTTP (API.md, ML section), on the real tiny ONNX model."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from shoebox.devtools import photos
from shoebox.launcher import ServiceProcess

GOOD = {
    "photo.jpg": (640, 480),
    "portrait.png": (300, 500),
    "web.webp": (400, 300),
    "phone.heic": (512, 384),
    "camera_preview.dng": (800, 600),
    "camera_nopreview.dng": (640, 480),
}
BAD = {
    "stripped.dng": {"ERR_DECODING_RAW"},
    "corrupt.jpg": {"ERR_DECODING_IMAGE"},
    "truncated.jpg": {"ERR_DECODING_IMAGE"},
    "empty.jpg": {"ERR_FILE_READ"},
    "notes.jpg": {"ERR_DECODING_IMAGE", "ERR_UNSUPPORTED_FORMAT"},
    "bomb.png": {"ERR_IMAGE_TOO_LARGE"},
    "huge_upload.jpg": {"ERR_IMAGE_TOO_LARGE"},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, ml_limits: dict[str, int]) -> dict[str, Path]:
    """Good photos of every family plus every kind of bad file, generated for this run."""
    folder = tmp_path_factory.mktemp("ml-api-photos")
    out = {name: folder / name for name in [*GOOD, *BAD]}
    photos.write_jpeg(out["photo.jpg"], photos.synthetic_photo(640, 480, seed=1))
    photos.write_png(out["portrait.png"], photos.synthetic_photo(300, 500, seed=2))
    photos.write_webp(out["web.webp"], photos.synthetic_photo(400, 300, seed=6))
    photos.write_heic(out["phone.heic"], photos.synthetic_photo(512, 384, seed=3))
    photos.write_dng(out["camera_preview.dng"], photos.synthetic_photo(800, 600, seed=4), preview=True)
    photos.write_dng(out["camera_nopreview.dng"], photos.synthetic_photo(640, 480, seed=5), preview=False)
    photos.write_stripped_dng(out["stripped.dng"], photos.synthetic_photo(640, 480, seed=9), preview=False)
    photos.write_corrupt_jpeg(out["corrupt.jpg"])
    photos.write_truncated(out["truncated.jpg"], out["photo.jpg"].read_bytes())
    photos.write_zero_byte(out["empty.jpg"])
    photos.write_text_as_jpg(out["notes.jpg"])
    photos.write_oversized_png(out["bomb.png"])
    out["huge_upload.jpg"].write_bytes(out["photo.jpg"].read_bytes() + b"\0" * ml_limits["max_upload_bytes"])
    return out


def multipart(paths: list[Path], ids: list[str] | None = None) -> dict:
    request: dict = {
        "files": [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
    }
    if ids is not None:
        request["data"] = {"unique_ids": json.dumps(ids)}
    return request


def post_multipart(
    service: ServiceProcess, paths: list[Path], ids: list[str] | None = None
) -> httpx.Response:
    return httpx.post(
        service.url + "/api/v1/batch_embed_and_caption_multipart", **multipart(paths, ids), timeout=60
    )


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def assert_unit_vector(vector: list[float], dim: int) -> None:
    assert len(vector) == dim
    assert np.linalg.norm(np.asarray(vector)) == pytest.approx(1.0, abs=1e-4)


@pytest.fixture(scope="module")
def capabilities(ml_service: ServiceProcess) -> dict:
    return httpx.get(ml_service.url + "/api/v1/capabilities").json()


# ------------------------------------------------------------------ service description


def test_health_reports_the_model_loaded(ml_service: ServiceProcess) -> None:
    body = httpx.get(ml_service.url + "/health").json()
    assert body["status"] == "ok"
    assert body["model_loaded"] is True


def test_capabilities_describe_the_model_and_the_measured_batch(capabilities: dict) -> None:
    assert capabilities["safe_clip_batch"] >= 1
    assert capabilities["safe_clip_batch"] <= capabilities["max_batch"]
    assert capabilities["model_name"].startswith("TEST-RANDOM-WEIGHTS:")
    assert capabilities["test_model"] is True
    assert capabilities["embedding_dim"] > 0
    assert capabilities["device"] == "cpu"
    assert capabilities["dtype"] == "fp32"
    assert capabilities["captioning"] is False
    assert capabilities["max_queue"] >= 1
    assert capabilities["throughput_img_s"] > 0
    assert {"jpg", "png", "heic"} <= set(capabilities["image_formats"])
    assert "dng" in capabilities["raw_formats"]


def test_openapi_docs_are_served(ml_service: ServiceProcess) -> None:
    assert httpx.get(ml_service.url + "/docs").status_code == 200
    paths = httpx.get(ml_service.url + "/openapi.json").json()["paths"]
    assert "/api/v1/batch_embed_and_caption_multipart" in paths


# ------------------------------------------------------------------ text


def test_text_embedding_is_a_unit_vector_of_the_model_dimension(
    ml_service: ServiceProcess, capabilities: dict
) -> None:
    body = httpx.post(ml_service.url + "/api/v1/embed_text", json={"text": "a dog on a beach"}).json()
    assert_unit_vector(body["embedding"], capabilities["embedding_dim"])
    assert body["model_name"] == capabilities["model_name"]
    assert body["embedding_dim"] == capabilities["embedding_dim"]


def test_several_texts_embed_in_one_request_in_order(ml_service: ServiceProcess, capabilities: dict) -> None:
    texts = ["a red car", "mountains at dawn", "a red car"]
    body = httpx.post(ml_service.url + "/api/v1/embed_text", json={"texts": texts}).json()
    vectors = body["embeddings"]
    assert len(vectors) == 3
    for vector in vectors:
        assert_unit_vector(vector, capabilities["embedding_dim"])
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)
    assert not np.allclose(vectors[0], vectors[1])


@pytest.mark.parametrize(
    "body", [{}, {"texts": []}, {"text": ""}, {"text": "   "}, {"text": "a", "texts": ["b"]}]
)
def test_missing_or_empty_text_is_a_validation_error(ml_service: ServiceProcess, body: dict) -> None:
    response = httpx.post(ml_service.url + "/api/v1/embed_text", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "ERR_VALIDATION"


# ------------------------------------------------------------------ image batches


def test_mixed_batch_answers_200_with_an_error_code_per_bad_file(
    ml_service: ServiceProcess, files: dict[str, Path], capabilities: dict
) -> None:
    names = [*GOOD, *BAD]
    response = post_multipart(ml_service, [files[n] for n in names], ids=[f"id-{n}" for n in names])
    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == capabilities["model_name"]
    assert body["device_used"] == "cpu"
    by_name = {item["filename"]: item for item in body["results"]}
    assert [item["unique_id"] for item in body["results"]] == [f"id-{n}" for n in names]
    for name, (width, height) in GOOD.items():
        item = by_name[name]
        assert item["error"] is None, (name, item["error"])
        assert_unit_vector(item["embedding"], capabilities["embedding_dim"])
        assert (item["width"], item["height"]) == (width, height)
        assert item["caption"] is None
    for name, codes in BAD.items():
        item = by_name[name]
        assert item["embedding"] is None
        assert item["error"]["code"] in codes, (name, item["error"])
        assert item["error"]["message"]


def test_base64_and_multipart_give_the_same_embeddings(
    ml_service: ServiceProcess, files: dict[str, Path]
) -> None:
    names = list(GOOD)
    via_multipart = post_multipart(ml_service, [files[n] for n in names]).json()["results"]
    images = [{"unique_id": n, "image_base64": b64(files[n]), "filename": n} for n in names]
    response = httpx.post(
        ml_service.url + "/api/v1/batch_embed_and_caption", json={"images": images}, timeout=60
    )
    assert response.status_code == 200
    via_base64 = response.json()["results"]
    for a, b in zip(via_multipart, via_base64, strict=True):
        assert (a["width"], a["height"]) == (b["width"], b["height"])
        np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-5)


def test_invalid_base64_fails_only_its_item(ml_service: ServiceProcess, files: dict[str, Path]) -> None:
    images = [
        {"unique_id": "good", "image_base64": b64(files["photo.jpg"]), "filename": "photo.jpg"},
        {"unique_id": "bad", "image_base64": "not base64 at all!", "filename": "x.jpg"},
    ]
    response = httpx.post(ml_service.url + "/api/v1/batch_embed_and_caption", json={"images": images})
    assert response.status_code == 200
    good, bad = response.json()["results"]
    assert good["error"] is None and good["embedding"]
    assert bad["embedding"] is None
    assert bad["error"]["code"] == "ERR_DECODING_IMAGE"


def test_unique_ids_default_to_positions(ml_service: ServiceProcess, files: dict[str, Path]) -> None:
    results = post_multipart(ml_service, [files["photo.jpg"], files["portrait.png"]]).json()["results"]
    assert [r["unique_id"] for r in results] == ["0", "1"]


def test_unique_ids_of_another_length_than_the_files_are_refused(
    ml_service: ServiceProcess, files: dict[str, Path]
) -> None:
    response = post_multipart(ml_service, [files["photo.jpg"], files["portrait.png"]], ids=["only-one"])
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "ERR_VALIDATION"


def test_too_many_files_in_one_request_are_refused_with_413(
    ml_service: ServiceProcess, files: dict[str, Path], ml_limits: dict[str, int]
) -> None:
    response = post_multipart(ml_service, [files["empty.jpg"]] * (ml_limits["max_batch_files"] + 1))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "ERR_VALIDATION"
    assert str(ml_limits["max_batch_files"]) in response.json()["error"]["message"]


def test_a_multipart_request_without_files_is_a_validation_error(ml_service: ServiceProcess) -> None:
    response = httpx.post(
        ml_service.url + "/api/v1/batch_embed_and_caption_multipart", data={"unique_ids": "[]"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "ERR_VALIDATION"


# ------------------------------------------------------------------ single image


def test_embed_returns_the_same_vector_as_the_batch(
    ml_service: ServiceProcess, files: dict[str, Path]
) -> None:
    body = httpx.post(
        ml_service.url + "/api/v1/embed",
        json={"image_base64": b64(files["phone.heic"]), "filename": "phone.heic"},
    ).json()
    batch = post_multipart(ml_service, [files["phone.heic"]]).json()["results"][0]
    np.testing.assert_allclose(body["embedding"], batch["embedding"], atol=1e-5)
    assert body["model_name"].startswith("TEST-RANDOM-WEIGHTS:")


def test_embed_of_a_bad_image_is_an_error_of_the_request(
    ml_service: ServiceProcess, files: dict[str, Path]
) -> None:
    response = httpx.post(
        ml_service.url + "/api/v1/embed",
        json={"image_base64": b64(files["corrupt.jpg"]), "filename": "corrupt.jpg"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "ERR_DECODING_IMAGE"
