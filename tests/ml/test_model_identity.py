"""A model's identity (`shoebox.ml.models.identity`): named by its content, hashed once per change."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from shoebox.ml.models import identity
from shoebox.ml.models.clip import TEST_MODEL_PREFIX, ClipModel
from shoebox.ml.models.identity import IDENTITY_FILE, model_identity
from shoebox.ml.models.onnx_testmodel import build_onnx_test_model

HUB_REPO = "immich-app/ViT-B-32__openai"
HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Two random-weight tiny models (seeds 0 and 1), built once; tests work on copies."""
    base = tmp_path_factory.mktemp("identity-models")
    return {seed: build_onnx_test_model("tiny", base / f"seed-{seed}", seed=seed) for seed in (0, 1)}


def copy_model(source: Path, target: Path) -> Path:
    """A fresh copy (new mtimes, no identity cache carried along), as a user's `cp -r` makes."""
    return Path(
        shutil.copytree(
            source, target, copy_function=shutil.copyfile, ignore=shutil.ignore_patterns(IDENTITY_FILE)
        )
    )


@pytest.fixture
def model(built: dict[int, Path], tmp_path: Path) -> Path:
    return copy_model(built[0], tmp_path / "tiny")


@pytest.fixture
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "shoebox" / "identity"


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders `_hash_files` hashed during the test (it still hashes)."""
    calls: list[Path] = []
    real = identity._hash_files

    def counting(model_dir: Path, files: list[Path]) -> str:
        calls.append(model_dir)
        return real(model_dir, files)

    monkeypatch.setattr(identity, "_hash_files", counting)
    return calls


def forbid_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(model_dir: Path, files: list[Path]) -> str:
        raise AssertionError(f"{model_dir} was hashed again")

    monkeypatch.setattr(identity, "_hash_files", fail)


def test_two_models_in_folders_of_the_same_name_get_one_name_and_different_ids(
    built: dict[int, Path], tmp_path: Path
) -> None:
    first = ClipModel(copy_model(built[0], tmp_path / "a" / "tiny"))
    second = ClipModel(copy_model(built[1], tmp_path / "b" / "tiny"))
    assert first.model_name == second.model_name == f"{TEST_MODEL_PREFIX}tiny"
    assert first.model_id != second.model_id
    for clip in (first, second):
        name, short = clip.model_id.rsplit("@", 1)
        assert name == clip.model_name
        assert len(short) == 16 and int(short, 16) >= 0


def test_the_identity_digest_is_the_sha256_of_the_content(model: Path) -> None:
    found = model_identity(model, "tiny")
    assert found.digest.startswith("sha256:") and len(found.digest) == len("sha256:") + 64
    assert found.id == "tiny@" + found.digest.removeprefix("sha256:")[:16]


def test_a_model_copied_to_another_folder_keeps_its_digest(model: Path, tmp_path: Path) -> None:
    moved = copy_model(model, tmp_path / "elsewhere" / "renamed-export")
    assert model_identity(moved, "x").digest == model_identity(model, "x").digest
    assert ClipModel(moved).model_id.split("@")[1] == ClipModel(model).model_id.split("@")[1]


def test_the_digest_is_hashed_once_then_read_from_beside_the_model(
    model: Path, hash_calls: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = model_identity(model, "tiny")
    assert hash_calls == [model]
    cached = json.loads((model / IDENTITY_FILE).read_text())
    assert cached["digest"] == first.digest

    forbid_hashing(monkeypatch)
    assert model_identity(model, "tiny") == first


def test_a_changed_weight_file_changes_the_digest(model: Path) -> None:
    before = model_identity(model, "tiny")
    with (model / "visual" / "model.onnx").open("ab") as f:
        f.write(b"\0")
    after = model_identity(model, "tiny")
    assert after.digest != before.digest
    assert json.loads((model / IDENTITY_FILE).read_text())["digest"] == after.digest


def test_a_touched_weight_file_is_hashed_again_to_the_same_digest(
    model: Path, hash_calls: list[Path]
) -> None:
    before = model_identity(model, "tiny")
    weights = model / "textual" / "model.onnx"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert model_identity(model, "tiny") == before
    assert hash_calls == [model, model]


def test_a_read_only_model_folder_caches_its_identity_under_the_user_cache(
    model: Path, user_cache: Path, hash_calls: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root, whom a 0o555 folder does not stop: a folder where the cache file would go
    # makes the write beside the model fail the way a read-only mount does.
    (model / IDENTITY_FILE).mkdir()
    first = model_identity(model, "tiny")
    [cached] = list(user_cache.glob("*.json"))
    assert json.loads(cached.read_text())["digest"] == first.digest

    forbid_hashing(monkeypatch)
    assert model_identity(model, "tiny") == first
    assert hash_calls == [model]


def hub_download(model: Path, commit: str = HUB_COMMIT) -> Path:
    """What `download_model` leaves: huggingface_hub's per-file metadata and Shoebox's marker."""
    meta = model / ".cache" / "huggingface" / "download"
    meta.mkdir(parents=True)
    (meta / "config.json.metadata").write_text(f"{commit}\nsome-etag\n1700000000.0\n")
    (model / ".shoebox-hub.json").write_text(json.dumps({"repo_id": HUB_REPO}))
    return model


def test_a_hub_download_is_named_by_its_repository_and_commit_without_hashing(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub_download(model)
    forbid_hashing(monkeypatch)
    clip = ClipModel(model)
    assert clip.identity.digest == f"hub:{HUB_REPO}@{HUB_COMMIT}"
    assert clip.model_id == f"{clip.model_name}@{HUB_COMMIT[:16]}"


def test_a_hub_marker_without_the_hub_metadata_falls_back_to_the_content_digest(model: Path) -> None:
    by_content = model_identity(model, "tiny").digest
    (model / ".shoebox-hub.json").write_text(json.dumps({"repo_id": HUB_REPO}))
    assert model_identity(model, "tiny").digest == by_content


@pytest.mark.parametrize(
    "extra",
    ["README.md", "LICENSE", ".DS_Store", "visual/.notes.json", ".git/config.json", "rknpu/model.rknn"],
)
def test_files_that_are_not_model_content_leave_the_identity_alone(model: Path, extra: str) -> None:
    before = model_identity(model, "tiny")
    path = model / extra
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"anything": "at all"}')
    assert model_identity(model, "tiny") == before
