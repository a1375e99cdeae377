"""GET /api/v1/folders: the folder picker's listing, in-process, on a stand-in context."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shoebox.http import install_error_handlers
from shoebox.ingest.routes import folders


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "2021" / "june").mkdir(parents=True)
    (root / "2022").mkdir()
    (root / ".hidden").mkdir()
    (root / "file.jpg").write_bytes(b"x")
    outside = tmp_path / "secret"
    (outside / "inner").mkdir(parents=True)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "inside_link").symlink_to(root / "2022", target_is_directory=True)
    return root


@pytest.fixture
def client(tree: Path) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.state.ctx = SimpleNamespace(settings=SimpleNamespace(ingest_roots=[tree]))
    app.include_router(folders.router)
    return TestClient(app)


def test_roots_without_path(client: TestClient, tree: Path) -> None:
    body = client.get("/api/v1/folders").json()
    assert body["roots"] == [str(tree.resolve())]
    assert body["path"] is None
    assert body["folders"] == [{"name": "photos", "path": str(tree.resolve())}]


def test_subfolders_skip_hidden_files_and_escaping_links(client: TestClient, tree: Path) -> None:
    body = client.get("/api/v1/folders", params={"path": str(tree)}).json()
    assert body["path"] == str(tree.resolve())
    assert [f["name"] for f in body["folders"]] == ["2021", "2022", "inside_link"]
    nested = client.get("/api/v1/folders", params={"path": body["folders"][0]["path"]}).json()
    assert [f["name"] for f in nested["folders"]] == ["june"]


@pytest.mark.parametrize("rel", ["..", "escape", "2021/../../secret"])
def test_escape_is_forbidden(client: TestClient, tree: Path, rel: str) -> None:
    response = client.get("/api/v1/folders", params={"path": str(tree / rel)})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "ERR_PATH_NOT_ALLOWED"


def test_missing_folder_is_not_found(client: TestClient, tree: Path) -> None:
    response = client.get("/api/v1/folders", params={"path": str(tree / "nope")})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ERR_PATH_NOT_FOUND"


def test_listing_is_capped(client: TestClient, tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folders, "MAX_FOLDERS", 1)
    body = client.get("/api/v1/folders", params={"path": str(tree)}).json()
    assert len(body["folders"]) == 1 and body["truncated"] is True
