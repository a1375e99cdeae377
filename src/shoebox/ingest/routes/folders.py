"""Folders: the allowed ingest roots and their subfolders, for a folder picker (the admin UI).

A client never sees the filesystem itself: it asks here, and only ever about folders inside
the allowed roots (SHOEBOX_INGEST_ROOTS). A path is resolved (links and `..`) before the
check, and a subfolder whose real path leads outside the roots (a symlink) is not listed.
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from shoebox.ingest.context import ServiceContext, get_ctx
from shoebox.ingest.jobs import resolve_ingest_dir
from shoebox.ingest.scan import is_within

router = APIRouter(prefix="/api/v1/folders", tags=["folders"])

MAX_FOLDERS = 500


class Folder(BaseModel):
    name: str
    path: str


class FolderListing(BaseModel):
    roots: list[str]
    path: str | None
    folders: list[Folder]
    truncated: bool = False


def _subfolders(real: str, allowed: list[str]) -> tuple[list[Folder], bool]:
    found: list[Folder] = []
    try:
        with os.scandir(real) as entries:
            names = sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name.lower())
    except OSError:
        return [], False
    for entry in names:
        try:
            if not entry.is_dir(follow_symlinks=True):
                continue
        except OSError:
            continue
        path = os.path.join(real, entry.name)
        if entry.is_symlink() and not is_within(os.path.realpath(path), allowed):
            continue
        if len(found) >= MAX_FOLDERS:
            return found, True
        found.append(Folder(name=entry.name, path=path))
    return found, False


@router.get("", response_model=FolderListing)
def list_folders(path: str | None = None, ctx: ServiceContext = Depends(get_ctx)) -> FolderListing:
    """No path: the allowed roots. A path inside a root: its immediate, non-hidden subfolders."""
    roots = [os.path.realpath(r) for r in ctx.settings.ingest_roots]
    if not path:
        return FolderListing(
            roots=roots,
            path=None,
            folders=[Folder(name=os.path.basename(r) or r, path=r) for r in roots],
        )
    real = resolve_ingest_dir(path, ctx.settings.ingest_roots)  # ERR_PATH_NOT_ALLOWED / _NOT_FOUND
    folders, truncated = _subfolders(real, roots)
    return FolderListing(roots=roots, path=real, folders=folders, truncated=truncated)
