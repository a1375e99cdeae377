"""A model's stable identity: what a collection records, and what the caches key on.

A folder name says nothing about what is in it: two exports in folders of the same name would
pass the "never mix embedding spaces" guard and share cache entries. So a model is named by
its content:

- downloaded from the hub: the repository and the commit it was downloaded at
  (`hub:<repo>@<commit>`), which huggingface_hub records beside the files it writes;
- anything else (a local folder, a test model): the SHA-256 of its configuration and weight
  files, paths included (`sha256:<hex>`).

The identity string is `<readable name>@<first 16 hex digits of the digest>`. Hashing a
ViT-B/32 export (~600 MB) takes a few seconds, so the digest is cached beside the model
(`.shoebox-identity.json`, keyed by each file's path, size and mtime) or, when the folder is
read-only, under the user's cache folder; a changed file changes the key and is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from shoebox.settings_common import default_cache_dir

log = logging.getLogger(__name__)

IDENTITY_FILE = ".shoebox-identity.json"
# Written by `download` after a hub download: the repository the files came from.
HUB_MARKER = ".shoebox-hub.json"
# What decides a model's outputs: configs, tokenizers and weights. Anything else in the folder
# (a README, a licence, ARM NN or RKNN builds we never load) leaves the identity alone.
_CONTENT_SUFFIXES = (".json", ".onnx", ".onnx_data", ".txt", ".model")
# huggingface_hub's `local_dir` downloads keep, per file, a metadata file whose first line is
# the commit the file was downloaded at.
HUB_METADATA = Path(".cache") / "huggingface" / "download"
_SHORT = 16


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    digest: str  # "sha256:<hex>" or "hub:<repo>@<commit>"

    @property
    def id(self) -> str:
        return f"{self.name}@{self._short()}"

    def _short(self) -> str:
        if self.digest.startswith("hub:"):
            return self.digest.rsplit("@", 1)[-1][:_SHORT]
        return self.digest.split(":", 1)[-1][:_SHORT]


def content_files(model_dir: Path) -> list[Path]:
    """The files whose bytes make the model, sorted by their path inside the folder."""
    found = []
    for root, dirs, files in os.walk(model_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.endswith(_CONTENT_SUFFIXES) and not name.startswith("."):
                found.append(Path(root) / name)
    return sorted(found, key=lambda p: p.relative_to(model_dir).as_posix())


def _stat_key(model_dir: Path, files: list[Path]) -> list[list[object]]:
    key: list[list[object]] = []
    for path in files:
        st = path.stat()
        key.append([path.relative_to(model_dir).as_posix(), st.st_size, st.st_mtime_ns])
    return key


def _hash_files(model_dir: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(model_dir).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


def _hub_revision(model_dir: Path) -> str | None:
    """`hub:<repo>@<commit>` when the folder is an untouched hub download, else None."""
    marker = model_dir / HUB_MARKER
    meta = model_dir / HUB_METADATA / "config.json.metadata"
    if not marker.is_file() or not meta.is_file():
        return None
    try:
        repo = json.loads(marker.read_text())["repo_id"]
        commit = meta.read_text().splitlines()[0].strip()
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return f"hub:{repo}@{commit}" if commit else None


def _cache_files(model_dir: Path) -> list[Path]:
    beside = model_dir / IDENTITY_FILE
    elsewhere = default_cache_dir() / "identity" / (
        hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:32] + ".json"
    )
    return [beside, elsewhere]


def _read_cached(model_dir: Path, key: list[list[object]]) -> str | None:
    for path in _cache_files(model_dir):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("files") == key and isinstance(data.get("digest"), str):
            return data["digest"]
    return None


def _write_cached(model_dir: Path, key: list[list[object]], digest: str) -> None:
    body = json.dumps({"digest": digest, "files": key}, indent=1)
    for path in _cache_files(model_dir):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(body)
            tmp.replace(path)
            return
        except OSError:  # a read-only model folder: the user's cache folder holds it instead
            continue
    log.warning("could not cache the identity of %s: it will be hashed again at the next start", model_dir)


def model_identity(model_dir: Path, name: str) -> ModelIdentity:
    """The identity of the model in `model_dir`, shown as `name` (hashing at most once per change)."""
    model_dir = Path(model_dir)
    revision = _hub_revision(model_dir)
    if revision is not None:
        return ModelIdentity(name, revision)
    files = content_files(model_dir)
    key = _stat_key(model_dir, files)
    digest = _read_cached(model_dir, key)
    if digest is None:
        digest = _hash_files(model_dir, files)
        _write_cached(model_dir, key, digest)
    return ModelIdentity(name, digest)
