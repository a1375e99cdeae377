"""Folder traversal: threads over `os.scandir`, yielding supported files in a deterministic order.

Directories are listed in parallel (listing is I/O-bound: on network or spinning disks most of
the time is waiting), but files come out in sorted depth-first order, so two scans of the same
tree always yield the same sequence. Hidden and system entries are skipped; a symlink that
leaves the allowed roots, or that loops back into a folder already being walked, is refused
and reported through `on_refused`.
"""

from __future__ import annotations

import errno
import os
import stat as statmod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Folders and files that operating systems, NAS boxes and cameras litter photo trees with.
SYSTEM_NAMES = frozenset(
    {
        "thumbs.db",
        "desktop.ini",
        "@eadir",
        "#recycle",
        "$recycle.bin",
        "system volume information",
        "lost+found",
        "__macosx",
    }
)


@dataclass(frozen=True)
class ScannedFile:
    path: str  # absolute path as found in the tree (links not resolved), the file's identity
    size: int
    mtime_ns: int
    error: str | None = None  # set when the entry is a file name we accept but cannot stat (dangling link)


def normalize_extensions(exts: Iterable[str]) -> frozenset[str]:
    return frozenset(("." + e.lower().lstrip(".")) for e in exts if e)


def is_within(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


class OutsideRoots(Exception):
    """The file's real path (links resolved) is not inside the allowed roots (any more)."""


OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def open_within_roots(path: str, roots: Iterable[str] | None) -> tuple[int, os.stat_result]:
    """A read-only descriptor of the regular file at `path`, and its stat, as it is *now*.

    A scanned path may have been swapped for a symlink (or its folder for a link) since the
    scan: the real path is resolved and checked against `roots` (real paths; None = no check),
    then opened with O_NOFOLLOW, so a last component turned into a link in between fails
    (ELOOP) instead of being followed, and O_NONBLOCK, so a FIFO swapped in cannot hang the
    open. Where /proc tells which file the descriptor really is, that is checked too: a parent
    folder swapped between the check and the open is caught. Raises `OutsideRoots` or `OSError`.
    """
    real = os.path.realpath(path)
    allowed = None if roots is None else list(roots)
    if allowed is not None and not is_within(real, allowed):
        raise OutsideRoots(f"{path} leads outside the allowed roots (-> {real})")
    fd = os.open(real, OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not statmod.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if allowed is not None:
            try:
                opened = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                opened = real  # no /proc (macOS): the O_NOFOLLOW open on the checked path stands
            if not is_within(opened, allowed):
                raise OutsideRoots(f"{path} leads outside the allowed roots (-> {opened})")
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def _utf8(path: str) -> bool:
    """False for a name made of bytes that are not UTF-8 (Python hands those over as lone surrogates)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _skip(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


@dataclass
class _Pending:
    path: str
    future: Future[_Listing] | None = None


@dataclass
class _Listing:
    files: list[ScannedFile]
    subdirs: list[tuple[str, str]]  # (path as found, resolved real path)


class FolderScanner:
    def __init__(
        self,
        extensions: Iterable[str],
        allowed_roots: Iterable[Path],
        *,
        workers: int = 8,
        prefetch: int | None = None,
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self.extensions = normalize_extensions(extensions)
        self.allowed_roots = [os.path.realpath(r) for r in allowed_roots]
        self.workers = max(1, workers)
        self.on_refused = on_refused or (lambda path, reason: None)
        # Folder listings started ahead of the walk, at most (the scan's memory does not grow with the tree).
        self.prefetch = max(1, prefetch if prefetch is not None else 4 * self.workers)
        self.peak_prefetched = 0
        self._inflight = 0
        # Set when a folder could not be listed: absent files may then just be unreadable, not deleted.
        self.incomplete = False

    def _list(self, directory: str) -> _Listing:
        files: list[ScannedFile] = []
        subdirs: list[tuple[str, str]] = []
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            self.incomplete = True
            self.on_refused(directory, f"cannot list folder: {exc.strerror or exc}")
            return _Listing(files, subdirs)
        for entry in entries:
            if _skip(entry.name):
                continue
            if not _utf8(entry.path):
                # Catalog, payloads and the HTTP API all carry paths as UTF-8 text.
                if os.path.splitext(entry.name)[1].lower() in self.extensions:
                    shown = os.fsencode(entry.path).decode("utf-8", "backslashreplace")
                    files.append(ScannedFile(shown, 0, 0, error="the file name is not valid UTF-8: rename it"))
                elif entry.is_dir(follow_symlinks=False):
                    shown = os.fsencode(entry.path).decode("utf-8", "backslashreplace")
                    self.on_refused(shown, "the folder name is not valid UTF-8: rename it")
                continue
            try:
                is_link = entry.is_symlink()
                if is_link:
                    real = os.path.realpath(entry.path)
                    if not os.path.exists(real):
                        if os.path.splitext(entry.name)[1].lower() in self.extensions:
                            files.append(ScannedFile(entry.path, 0, 0, error="broken symbolic link"))
                        continue
                    if not is_within(real, self.allowed_roots):
                        self.on_refused(entry.path, f"symbolic link leaves the allowed roots (-> {real})")
                        continue
                if entry.is_dir(follow_symlinks=True):
                    subdirs.append((entry.path, os.path.realpath(entry.path)))
                    continue
                if os.path.splitext(entry.name)[1].lower() not in self.extensions:
                    continue
                st = entry.stat(follow_symlinks=True)
                if not statmod.S_ISREG(st.st_mode):
                    continue  # FIFOs, sockets, devices named like photos would block or lie
                files.append(ScannedFile(entry.path, st.st_size, st.st_mtime_ns))
            except OSError as exc:
                if os.path.splitext(entry.name)[1].lower() in self.extensions:
                    files.append(ScannedFile(entry.path, 0, 0, error=f"cannot stat: {exc.strerror or exc}"))
        return _Listing(files, subdirs)

    def scan(self, root: str | Path, should_stop: Callable[[], bool] | None = None) -> Iterator[ScannedFile]:
        """Supported files under `root`, sorted depth-first.

        Listings are prefetched in parallel, but only the next `prefetch` folders in walk order:
        a tree of a million folders never holds a million listings in memory, only the paths of
        the folders still to walk.
        """
        root_s = os.path.abspath(str(root))
        visited = {os.path.realpath(root_s)}
        with ThreadPoolExecutor(self.workers, thread_name_prefix="scan") as pool:
            stack: list[_Pending] = [_Pending(root_s)]  # the next folder to walk is the last
            try:
                while stack:
                    if should_stop and should_stop():
                        return
                    self._prefetch(pool, stack)
                    pending = stack.pop()
                    assert pending.future is not None
                    listing = pending.future.result()
                    self._inflight -= 1
                    yield from listing.files
                    # Real folders claim their place before links to them, so a link never hides a folder.
                    accepted: set[str] = set()
                    for path, real in sorted(listing.subdirs, key=lambda d: d[0] != d[1]):
                        # A link back into a folder being walked would loop for ever (or count files twice).
                        if real in visited:
                            self.on_refused(path, f"symbolic link loop or folder already scanned (-> {real})")
                            continue
                        visited.add(real)
                        accepted.add(path)
                    stack.extend(_Pending(p) for p, _ in reversed(listing.subdirs) if p in accepted)
            finally:
                for pending in stack:
                    if pending.future is not None:
                        pending.future.cancel()
                self._inflight = 0

    def _prefetch(self, pool: ThreadPoolExecutor, stack: list[_Pending]) -> None:
        """Start listing the next folders in walk order, up to `prefetch` listings held at once."""
        for pending in reversed(stack):
            if self._inflight >= self.prefetch:
                break
            if pending.future is None:
                pending.future = pool.submit(self._list, pending.path)
                self._inflight += 1
                self.peak_prefetched = max(self.peak_prefetched, self._inflight)
