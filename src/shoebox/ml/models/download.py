"""Finding a model folder: a local one, the cache, or a download from the Hugging Face hub."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from shoebox.ml.config import MLSettings, looks_like_a_path
from shoebox.ml.models.identity import HUB_MARKER, HUB_METADATA, IDENTITY_FILE
from shoebox.ml.models.tokenizer import TEST_MODEL_MARKER
from shoebox.protocol import ErrorCode, ShoeboxError

log = logging.getLogger(__name__)

REQUIRED_FILES = (
    "config.json",
    "visual/model.onnx",
    "visual/preprocess_cfg.json",
    "textual/model.onnx",
    "textual/tokenizer.json",
    "textual/tokenizer_config.json",
)
# Immich's repositories also hold ARM NN and RKNN builds; only the ONNX files are ours to fetch.
DOWNLOAD_PATTERNS = [
    "config.json",
    "visual/model.onnx",
    "visual/model.onnx_data",
    "visual/model_fp16.onnx",
    "visual/preprocess_cfg.json",
    "textual/model.onnx",
    "textual/model.onnx_data",
    "textual/*.json",
    "textual/*.txt",
]


class ModelUnavailableError(ShoeboxError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.ML_UNAVAILABLE, message)


def missing_files(model_dir: Path) -> list[str]:
    return [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]


def is_complete(model_dir: Path) -> bool:
    return model_dir.is_dir() and not missing_files(model_dir)


def require_model_files(model_dir: Path) -> None:
    """Raise one ModelUnavailableError naming every required file `model_dir` lacks."""
    if not model_dir.is_dir():
        raise ModelUnavailableError(f"model folder {model_dir} does not exist")
    missing = missing_files(model_dir)
    if missing:
        raise ModelUnavailableError(f"model folder {model_dir} is missing {', '.join(missing)}")


def _how_to_get_a_model(settings: MLSettings | None, name: str) -> str:
    return (
        f"set SHOEBOX_MODEL_DIR to a model folder, allow the download of {name}, "
        "or run `shoebox model make-test --out DIR` for a random-weight test model"
    )


def resolve_model_dir(settings: MLSettings, entry: str | None = None) -> Path:
    """The model folder to load for one SHOEBOX_MODELS entry (default: the first): a folder as
    given, else the cached copy of a catalogue name, else a fresh download."""
    entry = entry if entry is not None else settings.model_entries()[0]
    if looks_like_a_path(entry) or (settings.model_dir is not None and entry == str(settings.model_dir)):
        model_dir = Path(entry).expanduser()
        if not is_complete(model_dir):
            missing = ", ".join(missing_files(model_dir)) if model_dir.is_dir() else "the folder itself"
            named = "SHOEBOX_MODEL_DIR=" if entry == str(settings.model_dir) else ""
            raise ModelUnavailableError(f"{named}{model_dir} is not a model folder (missing {missing})")
        return model_dir

    cached = Path(settings.model_cache_dir).expanduser() / entry
    if is_complete(cached):
        return cached
    if settings.offline:
        raise ModelUnavailableError(
            f"model {entry} is not in {cached.parent} and SHOEBOX_OFFLINE is set: "
            + _how_to_get_a_model(settings, entry)
        )
    return fetch_model(entry, cached, settings)


def fetch_model(
    name: str, target: Path, settings: MLSettings, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Catalogue model `name` into `target`: from SHOEBOX_MODEL_SOURCE when set, else the hub."""
    if settings.model_source is not None:
        return copy_model(Path(settings.model_source).expanduser() / name, target, progress)
    return download_model(name, target, settings.model_repo_prefix, settings)


def copy_model(source: Path, target: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """Copy a model folder from a local mirror: the download's file set, through a temporary
    folder renamed into place at the end, so an interrupted copy never looks like a model."""
    if not is_complete(source):
        missing = ", ".join(missing_files(source)) if source.is_dir() else "the folder itself"
        raise ModelUnavailableError(f"{source} is not a model folder (missing {missing})")
    files = sorted(
        {p for pattern in DOWNLOAD_PATTERNS for p in source.glob(pattern) if p.is_file()}
        | {p for p in source.glob("*.json") if p.is_file() and p.name != IDENTITY_FILE}
        # huggingface_hub's record of the commit: a copy of a hub download is still that download.
        | {p for p in (source / HUB_METADATA).rglob("*.metadata") if p.is_file()}
        # A random-weight model stays labelled as one wherever it is copied.
        | {p for p in [source / TEST_MODEL_MARKER] if p.is_file()}
    )
    total = sum(p.stat().st_size for p in files)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    done = 0
    for path in files:
        out = partial / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        with path.open("rb") as src, out.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
    return target


def download_model(name: str, target: Path, repo_prefix: str = "immich-app", settings: MLSettings | None = None) -> Path:
    """Download catalogue model `name` from the hub into `target`, with a progress bar."""
    repo_id = f"{repo_prefix}/{name}"
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import enable_progress_bars
    except ImportError as exc:
        raise ModelUnavailableError(
            f"model {name} is not cached and huggingface_hub is missing (install shoebox[ml]): "
            + _how_to_get_a_model(settings, name)
        ) from exc

    log.info("downloading model %s from the Hugging Face hub into %s", repo_id, target)
    enable_progress_bars()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        snapshot_download(repo_id=repo_id, local_dir=str(target), allow_patterns=DOWNLOAD_PATTERNS)
    except Exception as exc:  # offline, DNS, HTTP errors, a missing repository: all mean no model
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ModelUnavailableError(
            f"could not download model {repo_id} ({type(exc).__name__}: {reason}): "
            + _how_to_get_a_model(settings, name)
        ) from exc
    # The commit huggingface_hub recorded beside the files names the model (ml.models.identity).
    (target / HUB_MARKER).write_text(json.dumps({"repo_id": repo_id}))
    if not is_complete(target):
        raise ModelUnavailableError(
            f"download of {repo_id} lacks {', '.join(missing_files(target))}: "
            + _how_to_get_a_model(settings, name)
        )
    return target
