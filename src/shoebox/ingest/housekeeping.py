"""Housekeeping: what the ingestion service prunes so that its data dir does not grow for ever.

The policy (README, "Housekeeping"):

- **Job details.** A finished job keeps its row (status, counters, times) for ever; its logs and
  its list of failed files are kept for the newest `job_details_keep` finished jobs, and for no
  longer than `job_details_max_age_days`.
- **Thumbnails.** There is one per content (`thumbs/ab/<sha256>.jpg`). One whose content no
  collection holds a file of any more (a collection deleted, offline files pruned, files deleted
  from disk and re-ingested) is deleted. Only while no ingest job is queued or running, and
  never one written in the last `thumbnail_grace_s`: a job writes a thumbnail before the
  catalog knows its file.

It runs in the background at start-up, after every job, and after a collection is deleted or
pruned; runs asked for while one is going are folded into one more run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from shoebox.ingest.catalog import Catalog
from shoebox.ingest.config import IngestSettings

log = logging.getLogger(__name__)

THUMBNAIL_NAME = re.compile(r"^([0-9a-f]{64})\.jpg$")
PREFIX_DIR = re.compile(r"^[0-9a-f]{2}$")


class Housekeeping:
    def __init__(
        self, settings: IngestSettings, catalog: Catalog, thumbs_dir: Path, busy: Callable[[], bool]
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.thumbs_dir = thumbs_dir
        self.busy = busy
        self.last: dict[str, float] = {}
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self) -> dict[str, float]:
        """One pass, now, in the caller's thread: what it pruned."""
        jobs = self.catalog.prune_job_details(
            self.settings.job_details_keep, self.settings.job_details_max_age_days
        )
        thumbs = 0 if self.busy() else self.prune_thumbnails()
        if jobs or thumbs:
            log.info("housekeeping: details of %d jobs and %d orphaned thumbnails pruned", jobs, thumbs)
        self.last = {"jobs_pruned": jobs, "thumbnails_deleted": thumbs, "at": time.time()}
        return self.last

    def prune_thumbnails(self) -> int:
        """Delete the thumbnails whose content is in no collection, a prefix folder at a time."""
        deleted = 0
        now = time.time()
        try:
            folders = sorted(
                e.name for e in os.scandir(self.thumbs_dir) if e.is_dir() and PREFIX_DIR.match(e.name)
            )
        except OSError:
            return 0
        for prefix in folders:
            if self._stop.is_set() or self.busy():
                break
            held = self.catalog.contents_with_prefix(prefix)
            with contextlib.suppress(OSError), os.scandir(self.thumbs_dir / prefix) as entries:
                for entry in entries:
                    m = THUMBNAIL_NAME.match(entry.name)
                    stale_tmp = entry.name.endswith(".tmp")
                    if not (m and m.group(1) not in held) and not stale_tmp:
                        continue
                    try:
                        if now - entry.stat(follow_symlinks=False).st_mtime < self.settings.thumbnail_grace_s:
                            continue
                        os.unlink(entry.path)
                        deleted += 1
                    except OSError:
                        continue
        return deleted

    # ------------------------------------------------------------ in the background

    def request(self) -> None:
        """Ask for a pass in the background (folded into the one running, if any)."""
        with self._lock:
            self._wanted.set()
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="housekeeping", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._wanted.is_set() or self._stop.is_set():
                    self._thread = None
                    return
                self._wanted.clear()
            try:
                self.run()
            except Exception:  # housekeeping must never take the service down (the catalog may be closing)
                if not self._stop.is_set():
                    log.exception("housekeeping failed")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
