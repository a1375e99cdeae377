"""Folder traversal: deterministic order, supported files only, hidden and system files skipped, links guarded."""

from __future__ import annotations

import os
from pathlib import Path

from shoebox.ingest.scan import FolderScanner

EXTS = [".jpg", "png", ".dng"]


def _touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _names(scanner: FolderScanner, root: Path) -> list[str]:
    return [os.path.relpath(f.path, root) for f in scanner.scan(root)]


def test_scan_yields_supported_files_in_sorted_depth_first_order(tmp_path: Path) -> None:
    for rel in ["b/2.jpg", "b/1.PNG", "a/z/3.dng", "a/4.jpg", "5.jpg", "notes.txt", "b/raw.cr3"]:
        _touch(tmp_path / rel)
    scanner = FolderScanner(EXTS, [tmp_path], workers=4)
    expected = ["5.jpg", "a/4.jpg", "a/z/3.dng", "b/1.PNG", "b/2.jpg"]
    assert _names(scanner, tmp_path) == expected
    assert _names(scanner, tmp_path) == expected


def test_scan_reports_size_and_mtime_from_stat(tmp_path: Path) -> None:
    _touch(tmp_path / "a.jpg", b"12345")
    (found,) = list(FolderScanner(EXTS, [tmp_path]).scan(tmp_path))
    assert found.size == 5
    assert found.mtime_ns == os.stat(tmp_path / "a.jpg").st_mtime_ns


def test_hidden_and_system_entries_are_skipped(tmp_path: Path) -> None:
    for rel in [".hidden.jpg", ".git/x.jpg", "@eaDir/t.jpg", "Thumbs.db", "$RECYCLE.BIN/y.jpg", "ok.jpg"]:
        _touch(tmp_path / rel)
    assert _names(FolderScanner(EXTS, [tmp_path]), tmp_path) == ["ok.jpg"]


def test_symlink_loop_is_refused_and_reported(tmp_path: Path) -> None:
    _touch(tmp_path / "a" / "x.jpg")
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    refused: list[str] = []
    scanner = FolderScanner(EXTS, [tmp_path], on_refused=lambda p, why: refused.append(p))
    assert _names(scanner, tmp_path) == ["a/x.jpg"]
    assert refused == [str(tmp_path / "a" / "loop")]


def test_links_leaving_the_allowed_roots_are_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    _touch(outside / "secret.jpg")
    _touch(root / "own.jpg")
    os.symlink(outside, root / "dir-link")
    os.symlink(outside / "secret.jpg", root / "file-link.jpg")
    refused: list[str] = []
    scanner = FolderScanner(EXTS, [root], on_refused=lambda p, why: refused.append(p))
    assert _names(scanner, root) == ["own.jpg"]
    assert sorted(refused) == [str(root / "dir-link"), str(root / "file-link.jpg")]


def test_link_inside_the_roots_is_followed_under_its_own_path(tmp_path: Path) -> None:
    _touch(tmp_path / "a" / "x.jpg")
    os.symlink(tmp_path / "a" / "x.jpg", tmp_path / "y.jpg")
    assert _names(FolderScanner(EXTS, [tmp_path]), tmp_path) == ["y.jpg", "a/x.jpg"]


def test_broken_link_with_a_photo_name_is_reported_as_an_unreadable_file(tmp_path: Path) -> None:
    os.symlink(tmp_path / "gone.jpg", tmp_path / "broken.jpg")
    (found,) = list(FolderScanner(EXTS, [tmp_path]).scan(tmp_path))
    assert found.error is not None and "broken" in found.error


def test_fifo_named_like_a_photo_is_ignored(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    assert list(FolderScanner(EXTS, [tmp_path]).scan(tmp_path)) == []
