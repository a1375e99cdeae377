"""Pieces both services' settings share."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "shoebox"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shoebox"


def split_list(value: object) -> object:
    """Env lists may be JSON (`["a","b"]`), comma- or os.pathsep-separated (`a,b` / `a:b` on POSIX)."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            import json

            return json.loads(text)
        parts = [p for chunk in text.split(",") for p in (chunk.split(os.pathsep) if "://" not in chunk else [chunk])]
        return [p.strip() for p in parts if p.strip()]
    return value
