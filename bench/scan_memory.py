"""The scan's memory per million files: walk a generated tree of empty photo files and measure.

    python -m bench.scan_memory --files 200000 [--per-folder 200] [--dir /tmp/x]

Two figures, both extrapolated linearly to a million files:
- **first scan**: `FolderScanner.scan` alone (a new folder: the catalog knows nothing of it);
- **re-scan**: the scan plus what the scan stage loads for change detection (`known_files_under`,
  every known file of the folder, from a real catalog), as when a library is ingested again.

Memory is Python's own allocations (tracemalloc peak), which is what grows with the library.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

from shoebox.ingest.catalog import Catalog
from shoebox.ingest.scan import FolderScanner


def build_tree(root: Path, files: int, per_folder: int) -> list[str]:
    paths = []
    folders = max(1, files // per_folder)
    for d in range(folders):
        folder = root / f"{d // 100:03d}" / f"{d % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_folder):
            path = folder / f"IMG_{i:05d}.jpg"
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            paths.append(str(path))
    return paths


def measure(label: str, body) -> tuple[int, float]:
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    n = body()
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{label}: {n} files in {elapsed:.1f} s, peak {peak / 2**20:.1f} MiB "
          f"→ {peak / n * 1e6 / 2**20:.0f} MiB per million files")
    return peak, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--per-folder", type=int, default=200)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="scan-memory-", dir=args.dir))
    try:
        root = base / "photos"
        t0 = time.perf_counter()
        paths = build_tree(root, args.files, args.per_folder)
        print(f"tree: {len(paths)} empty files in {len(paths) // args.per_folder} folders "
              f"({time.perf_counter() - t0:.1f} s to create)")
        scanner = FolderScanner([".jpg"], [root], workers=args.workers)

        def first_scan() -> int:
            return sum(1 for _ in scanner.scan(root))

        measure("first scan", first_scan)
        print(f"  folder listings held at once: at most {scanner.peak_prefetched}")

        catalog = Catalog(base / "catalog.sqlite3")
        with catalog._tx() as c:  # a library ingested before: every file known
            c.executemany(
                "INSERT INTO known_files (collection, path, size, mtime_ns, sha256) VALUES ('lib', ?, 0, 0, ?)",
                ((p, f"{i:064x}") for i, p in enumerate(paths)),
            )
        del paths

        def rescan() -> int:
            known = catalog.known_files_under("lib", str(root), with_sha=False)
            n = 0
            for f in scanner.scan(root):
                known.pop(f.path, None)
                n += 1
            return n

        measure("re-scan (with the known files of the folder)", rescan)
        catalog.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
