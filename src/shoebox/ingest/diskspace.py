"""A full data disk, seen before it breaks anything.

The embedded store (Qdrant Edge) writes into preallocated files through mmap: on a disk with no
space left, such a write is not an error the code can catch but a SIGBUS that kills the service.
So the store stage checks the free space before each write and stops the job with
`ERR_DISK_FULL` while a margin (`SHOEBOX_MIN_FREE_MB`) is left; the catalog (SQLite) and the
files Shoebox writes itself report ENOSPC as errors, which `is_disk_full` recognises.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

from shoebox.protocol import ErrorCode, ShoeboxError

MIB = 2**20


def ensure_room(data_dir: Path, min_free_mb: int) -> None:
    """Raise `ERR_DISK_FULL` when the disk of `data_dir` has less than `min_free_mb` MiB free."""
    free = shutil.disk_usage(data_dir).free
    if free < min_free_mb * MIB:
        raise ShoeboxError(ErrorCode.DISK_FULL, disk_full_message(data_dir, free, min_free_mb))


def disk_full_message(data_dir: Path, free: int | None = None, min_free_mb: int | None = None) -> str:
    have = f"{free / MIB:.0f} MiB free" if free is not None else "no space left"
    floor = f", below SHOEBOX_MIN_FREE_MB={min_free_mb}" if min_free_mb is not None else ""
    return f"data disk full: {have} on {data_dir}{floor}; free some space, then ingest again"


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT from a file write, or SQLite's 'database or disk is full'."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return False
