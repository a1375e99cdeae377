"""The ingestion catalog: jobs, per-file outcomes, logs, known files and the collections registry.

SQLite in WAL mode under the data dir, so it survives restarts (even `kill -9`: a committed
transaction is on disk). One connection guarded by a lock serves every thread; the pipeline
writes in batches (one transaction per batch of finished files) so that a re-ingest of tens of
thousands of unchanged files costs a handful of commits, not one per file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from shoebox.protocol import ErrorCode, FileError, Job, JobStatus, JobWarning, Outcome

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY,
    model_name TEXT,
    embedding_dim INTEGER,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    collection_name TEXT NOT NULL,
    directory_path TEXT NOT NULL,
    status TEXT NOT NULL,
    total_files INTEGER NOT NULL DEFAULT 0,
    scan_done INTEGER NOT NULL DEFAULT 0,
    indexed INTEGER NOT NULL DEFAULT 0,
    cached INTEGER NOT NULL DEFAULT 0,
    unchanged INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS job_files (
    job_id TEXT NOT NULL,
    path TEXT NOT NULL,
    outcome TEXT NOT NULL,
    code TEXT,
    message TEXT,
    PRIMARY KEY (job_id, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_logs_job ON job_logs (job_id, id);
CREATE TABLE IF NOT EXISTS known_files (
    collection TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (collection, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS known_files_sha ON known_files (collection, sha256);
-- Housekeeping asks which contents any collection still holds, a thumbnail folder at a time.
CREATE INDEX IF NOT EXISTS known_files_content ON known_files (sha256);
-- A collection's other embeddings: kept after a migration (for a one-call rollback) or being
-- built by one. The collection's own row names the one that answers (`store_name`).
CREATE TABLE IF NOT EXISTS generations (
    collection TEXT NOT NULL,
    store_name TEXT NOT NULL,
    model_name TEXT NOT NULL,
    embedding_dim INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (collection, store_name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS migrations (
    migration_id TEXT PRIMARY KEY,
    collection TEXT NOT NULL,
    model_name TEXT NOT NULL,
    store_name TEXT NOT NULL,
    embedding_dim INTEGER NOT NULL,
    status TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    from_files INTEGER NOT NULL DEFAULT 0,
    from_thumbnails INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    message TEXT,
    previous_model TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS migrations_collection ON migrations (collection, created_at);
"""
# Columns added after the first release: (table, column, declaration), added when missing.
MIGRATIONS = (
    ("jobs", "offline", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "offline_reason", "TEXT"),
    # Set while a known file is offline (vanished in bulk, kept in the index until a prune).
    ("known_files", "offline_since", "TEXT"),
    # The store collection that answers for the collection (NULL: the collection's own name).
    ("collections", "store_name", "TEXT"),
)

# A job's status answer stays small even when a whole disk failed.
MAX_ERRORS_SHOWN = 1000
MAX_LOGS_SHOWN = 500


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)  # one per known file of a scanned folder: kept small
class KnownFile:
    size: int
    mtime_ns: int
    sha256: str
    offline: bool = False


@dataclass(frozen=True)
class CollectionRecord:
    name: str
    model_name: str | None  # the model's identity (name@digest); a bare name in older libraries
    embedding_dim: int | None
    created_at: str
    store_name: str | None = None

    @property
    def store(self) -> str:
        """The store collection that answers for it (another one after a model migration)."""
        return self.store_name or self.name


@dataclass(frozen=True)
class Generation:
    """A store collection of the collection's files embedded by another model."""

    collection: str
    store_name: str
    model_name: str
    embedding_dim: int
    state: str  # "building" (a migration's shadow) or "retired" (kept for a rollback)
    created_at: str


@dataclass(frozen=True)
class MigrationRecord:
    migration_id: str
    collection: str
    model_name: str
    store_name: str
    embedding_dim: int
    status: str
    total: int
    done: int
    from_files: int
    from_thumbnails: int
    failed: int
    message: str | None
    previous_model: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


@dataclass(frozen=True)
class FileOutcome:
    """How one file ended in one job; `code`/`message` only for `failed`."""

    path: str
    outcome: Outcome
    code: str | None = None
    message: str | None = None


class Catalog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL: a process crash loses nothing committed; only an OS crash may lose the last commits.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        for table, column, decl in MIGRATIONS:
            have = {r["name"] for r in self._conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself fails (disk full, I/O error): never leave the shared
                # connection inside an open transaction that the next caller would extend.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _conn_rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Plain tuples (no Row objects): for queries of one row per file of a library."""
        with self._lock:
            cursor = self._conn.execute(sql, tuple(params))
            cursor.row_factory = None
            return cursor.fetchall()

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    # ------------------------------------------------------------ meta

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------ collections

    def get_collection(self, name: str) -> CollectionRecord | None:
        rows = self._query("SELECT * FROM collections WHERE name = ?", (name,))
        return CollectionRecord(**dict(rows[0])) if rows else None

    def list_collections(self) -> list[CollectionRecord]:
        return [CollectionRecord(**dict(r)) for r in self._query("SELECT * FROM collections ORDER BY name")]

    def add_collection(
        self, name: str, model_name: str | None = None, embedding_dim: int | None = None
    ) -> bool:
        """Register a collection; False when it already exists."""
        with self._tx() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO collections (name, model_name, embedding_dim, created_at) VALUES (?, ?, ?, ?)",
                (name, model_name, embedding_dim, utc_now()),
            )
            return cur.rowcount == 1

    def set_collection_model(self, name: str, model_name: str, embedding_dim: int) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO collections (name, model_name, embedding_dim, created_at) VALUES (?, ?, ?, ?)",
                (name, model_name, embedding_dim, utc_now()),
            )
            c.execute(
                "UPDATE collections SET model_name = ?, embedding_dim = ? WHERE name = ?",
                (model_name, embedding_dim, name),
            )

    def delete_collection(self, name: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM collections WHERE name = ?", (name,))
            c.execute("DELETE FROM known_files WHERE collection = ?", (name,))
            c.execute("DELETE FROM generations WHERE collection = ?", (name,))

    # ------------------------------------------------------------ generations and migrations

    def generations(self, collection: str) -> list[Generation]:
        rows = self._query("SELECT * FROM generations WHERE collection = ? ORDER BY created_at", (collection,))
        return [Generation(**dict(r)) for r in rows]

    def add_generation(self, g: Generation) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?, ?)",
                (g.collection, g.store_name, g.model_name, g.embedding_dim, g.state, g.created_at),
            )

    def drop_generation(self, collection: str, store_name: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM generations WHERE collection = ? AND store_name = ?", (collection, store_name))

    def switch_generation(self, collection: str, store_name: str, model_name: str, embedding_dim: int) -> None:
        """In one transaction: `store_name` answers for the collection from now on, with its model,
        and the store collection that answered until now is kept as a retired generation."""
        with self._tx() as c:
            row = c.execute("SELECT * FROM collections WHERE name = ?", (collection,)).fetchone()
            if row is None:
                raise KeyError(collection)
            old = CollectionRecord(**dict(row))
            if old.model_name and old.embedding_dim:
                c.execute(
                    "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, 'retired', ?)",
                    (collection, old.store, old.model_name, old.embedding_dim, utc_now()),
                )
            c.execute("DELETE FROM generations WHERE collection = ? AND store_name = ?", (collection, store_name))
            c.execute(
                "UPDATE collections SET store_name = ?, model_name = ?, embedding_dim = ? WHERE name = ?",
                (None if store_name == collection else store_name, model_name, embedding_dim, collection),
            )

    def create_migration(self, m: MigrationRecord) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO migrations (migration_id, collection, model_name, store_name, embedding_dim,"
                " status, message, previous_model, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    m.migration_id,
                    m.collection,
                    m.model_name,
                    m.store_name,
                    m.embedding_dim,
                    m.status,
                    m.message,
                    m.previous_model,
                    m.created_at,
                ),
            )

    def update_migration(self, migration_id: str, **fields: Any) -> None:
        allowed = {"status", "total", "done", "from_files", "from_thumbnails", "failed", "message", "started_at", "finished_at"}
        if not fields or not set(fields) <= allowed:
            raise ValueError(f"cannot set {sorted(set(fields) - allowed)} of a migration")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as c:
            c.execute(f"UPDATE migrations SET {sets} WHERE migration_id = ?", (*fields.values(), migration_id))

    def get_migration(self, migration_id: str) -> MigrationRecord | None:
        rows = self._query("SELECT * FROM migrations WHERE migration_id = ?", (migration_id,))
        return MigrationRecord(**dict(rows[0])) if rows else None

    def latest_migration(self, collection: str) -> MigrationRecord | None:
        rows = self._query(
            "SELECT * FROM migrations WHERE collection = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (collection,),
        )
        return MigrationRecord(**dict(rows[0])) if rows else None

    def unfinished_migrations(self) -> list[MigrationRecord]:
        rows = self._query("SELECT * FROM migrations WHERE status IN ('queued', 'running') ORDER BY created_at")
        return [MigrationRecord(**dict(r)) for r in rows]

    def contents(self, collection: str) -> Iterator[tuple[str, list[str]]]:
        """Each distinct content of the collection with its known paths (online ones first), in
        content order, a page at a time: the files a migration embeds again."""
        last = ""
        while True:
            rows = self._query(
                "SELECT sha256, path, offline_since FROM known_files WHERE collection = ? AND sha256 IN"
                " (SELECT DISTINCT sha256 FROM known_files WHERE collection = ? AND sha256 > ?"
                "  ORDER BY sha256 LIMIT 512) ORDER BY sha256, offline_since IS NOT NULL, path",
                (collection, collection, last),
            )
            if not rows:
                return
            paths: dict[str, list[str]] = {}
            for r in rows:
                paths.setdefault(r["sha256"], []).append(r["path"])
            yield from paths.items()
            last = rows[-1]["sha256"]

    # ------------------------------------------------------------ known files

    def known_files_under(self, collection: str, folder: str, *, with_sha: bool = True) -> dict[str, KnownFile]:
        """Every known file of `collection` below `folder`, loaded in one query (change detection).

        Without `with_sha` the hashes stay in the catalog (`sha256` is ""): a re-scan of a big
        library then holds some 40 % less, and asks `known_file` for the few that changed.
        """
        prefix = folder.rstrip("/") + "/"
        # A range scan on the primary key instead of LIKE, so `_`/`%` in folder names mean nothing.
        sha = "sha256" if with_sha else "''"
        rows = self._conn_rows(
            f"SELECT path, size, mtime_ns, {sha}, offline_since IS NOT NULL"
            " FROM known_files WHERE collection = ? AND path >= ? AND path < ?",
            (collection, prefix, prefix[:-1] + "0"),
        )
        return {r[0]: KnownFile(r[1], r[2], r[3], bool(r[4])) for r in rows}

    def offline_files(self, collection: str, folder: str | None = None) -> dict[str, str]:
        """path → sha256 of the files of `collection` (below `folder`) that are offline."""
        sql = "SELECT path, sha256 FROM known_files WHERE collection = ? AND offline_since IS NOT NULL"
        params: list[Any] = [collection]
        if folder:
            prefix = folder.rstrip("/") + "/"
            sql += " AND path >= ? AND path < ?"
            params += [prefix, prefix[:-1] + "0"]
        return {r["path"]: r["sha256"] for r in self._query(sql, params)}

    def offline_count(self, collection: str) -> int:
        return self._query(
            "SELECT COUNT(*) AS n FROM known_files WHERE collection = ? AND offline_since IS NOT NULL",
            (collection,),
        )[0]["n"]

    def mark_offline(self, job_id: str, collection: str, paths: list[str], reason: str) -> None:
        """Keep these known files (and their points) but flag them offline; count them in the job."""
        if not paths:
            return
        now = utc_now()
        with self._tx() as c:
            c.executemany(
                "UPDATE known_files SET offline_since = COALESCE(offline_since, ?) WHERE collection = ? AND path = ?",
                [(now, collection, p) for p in paths],
            )
            c.execute(
                "UPDATE jobs SET offline = offline + ?, offline_reason = ? WHERE job_id = ?",
                (len(paths), reason, job_id),
            )

    def forget_files(self, collection: str, paths: list[str]) -> None:
        with self._tx() as c:
            c.executemany(
                "DELETE FROM known_files WHERE collection = ? AND path = ?", [(collection, p) for p in paths]
            )

    def paths_of_sha(self, collection: str, sha256: str) -> list[str]:
        rows = self._query(
            "SELECT path FROM known_files WHERE collection = ? AND sha256 = ? ORDER BY path",
            (collection, sha256),
        )
        return [r["path"] for r in rows]

    def known_file(self, collection: str, path: str) -> KnownFile | None:
        rows = self._query(
            "SELECT size, mtime_ns, sha256, offline_since FROM known_files WHERE collection = ? AND path = ?",
            (collection, path),
        )
        return KnownFile(rows[0][0], rows[0][1], rows[0][2], rows[0][3] is not None) if rows else None

    def contents_with_prefix(self, prefix: str) -> set[str]:
        """The contents (sha256) starting with `prefix` that any collection still holds a file of."""
        rows = self._query(
            "SELECT DISTINCT sha256 FROM known_files WHERE sha256 >= ? AND sha256 < ?",
            (prefix, prefix + "g"),  # hex digits sort below 'g'
        )
        return {r[0] for r in rows}

    def known_count(self, collection: str) -> int:
        return self._query("SELECT COUNT(*) AS n FROM known_files WHERE collection = ?", (collection,))[0][
            "n"
        ]

    # ------------------------------------------------------------ jobs

    def create_job(self, job_id: str, collection: str, directory: str) -> None:
        with self._tx() as c:
            seq = c.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            c.execute(
                "INSERT INTO jobs (job_id, collection_name, directory_path, status, created_at, seq)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, collection, directory, JobStatus.PENDING.value, utc_now(), seq),
            )

    def set_job_status(self, job_id: str, status: JobStatus) -> None:
        with self._tx() as c:
            if status == JobStatus.RUNNING:
                c.execute(
                    "UPDATE jobs SET status = ?, started_at = COALESCE(started_at, ?) WHERE job_id = ?",
                    (status.value, utc_now(), job_id),
                )
            elif status.finished:
                c.execute(
                    "UPDATE jobs SET status = ?, finished_at = ? WHERE job_id = ?",
                    (status.value, utc_now(), job_id),
                )
                # Successful outcomes only matter to resume a job, and the counters keep them: a library
                # re-ingested daily would otherwise grow this table by its size every day.
                c.execute("DELETE FROM job_files WHERE job_id = ? AND outcome != 'failed'", (job_id,))
            else:
                c.execute("UPDATE jobs SET status = ? WHERE job_id = ?", (status.value, job_id))

    def set_total(self, job_id: str, total: int, scan_done: bool) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE jobs SET total_files = ?, scan_done = ? WHERE job_id = ?",
                (total, int(scan_done), job_id),
            )

    def job_status(self, job_id: str) -> JobStatus | None:
        rows = self._query("SELECT status FROM jobs WHERE job_id = ?", (job_id,))
        return JobStatus(rows[0]["status"]) if rows else None

    def unfinished_jobs(self) -> list[tuple[str, str, str]]:
        """(job_id, collection, directory) of jobs a stopped service left pending or running, oldest first."""
        rows = self._query(
            "SELECT job_id, collection_name, directory_path FROM jobs WHERE status IN (?, ?) ORDER BY seq",
            (JobStatus.PENDING.value, JobStatus.RUNNING.value),
        )
        return [(r["job_id"], r["collection_name"], r["directory_path"]) for r in rows]

    def done_paths(self, job_id: str) -> set[str]:
        return {r["path"] for r in self._query("SELECT path FROM job_files WHERE job_id = ?", (job_id,))}

    def record(
        self,
        job_id: str,
        collection: str,
        outcomes: list[FileOutcome],
        known: list[tuple[str, int, int, str]] = (),  # type: ignore[assignment]
        forget: list[str] = (),  # type: ignore[assignment]
        online: list[str] = (),  # type: ignore[assignment]
    ) -> None:
        """Write finished files, their counters and the known-files rows in ONE transaction.

        Counters and outcomes can therefore never disagree, whatever moment the process dies at.
        `known` rows are (path, size, mtime_ns, sha256) and are online; `forget` drops paths
        from known files; `online` clears the offline flag of files found again unchanged.
        """
        if not outcomes and not known and not forget and not online:
            return
        counts = dict.fromkeys(Outcome, 0)
        with self._tx() as c:
            for o in outcomes:
                cur = c.execute(
                    "INSERT OR IGNORE INTO job_files (job_id, path, outcome, code, message) VALUES (?, ?, ?, ?, ?)",
                    (job_id, o.path, Outcome(o.outcome).value, o.code, o.message),
                )
                counts[Outcome(o.outcome)] += cur.rowcount
            if known:
                c.executemany(
                    "INSERT OR REPLACE INTO known_files (collection, path, size, mtime_ns, sha256)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(collection, *k) for k in known],
                )
            if forget:
                c.executemany(
                    "DELETE FROM known_files WHERE collection = ? AND path = ?",
                    [(collection, p) for p in forget],
                )
            if online:
                c.executemany(
                    "UPDATE known_files SET offline_since = NULL WHERE collection = ? AND path = ?",
                    [(collection, p) for p in online],
                )
            if any(counts.values()):
                c.execute(
                    "UPDATE jobs SET indexed = indexed + ?, cached = cached + ?, unchanged = unchanged + ?,"
                    " failed = failed + ? WHERE job_id = ?",
                    (
                        counts[Outcome.INDEXED],
                        counts[Outcome.CACHED],
                        counts[Outcome.UNCHANGED],
                        counts[Outcome.FAILED],
                        job_id,
                    ),
                )

    def prune_job_details(self, keep: int, max_age_days: float) -> int:
        """Drop the logs and failed-file lists of finished jobs beyond the newest `keep`, or
        finished more than `max_age_days` ago; their rows and counters stay. Returns the jobs pruned."""
        cutoff = datetime.fromtimestamp(time.time() - max_age_days * 86400, timezone.utc).isoformat(
            timespec="milliseconds"
        )
        finished = [s.value for s in JobStatus if s.finished]
        marks = ",".join("?" * len(finished))
        rows = self._query(
            "SELECT job_id, finished_at,"
            " EXISTS (SELECT 1 FROM job_logs l WHERE l.job_id = jobs.job_id)"
            " OR EXISTS (SELECT 1 FROM job_files f WHERE f.job_id = jobs.job_id) AS has_details"
            f" FROM jobs WHERE status IN ({marks}) ORDER BY seq DESC",
            finished,
        )
        old = [
            r["job_id"]
            for i, r in enumerate(rows)
            if r["has_details"] and (i >= keep or (r["finished_at"] or "") < cutoff)
        ]
        for i in range(0, len(old), 500):
            chunk = old[i : i + 500]
            qs = ",".join("?" * len(chunk))
            with self._tx() as c:
                c.execute(f"DELETE FROM job_logs WHERE job_id IN ({qs})", chunk)
                c.execute(f"DELETE FROM job_files WHERE job_id IN ({qs})", chunk)
        return len(old)

    def log(self, job_id: str, line: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.gmtime())
        with self._tx() as c:
            c.execute("INSERT INTO job_logs (job_id, line) VALUES (?, ?)", (job_id, f"{stamp} {line}"))

    def get_job(self, job_id: str, *, details: bool = True) -> Job | None:
        rows = self._query("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return self._job_from_row(rows[0], details) if rows else None

    def list_jobs(self, limit: int = 200) -> list[Job]:
        rows = self._query("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        return [self._job_from_row(r, False) for r in rows]

    def _job_from_row(self, row: sqlite3.Row, details: bool) -> Job:
        done = row["indexed"] + row["cached"] + row["unchanged"] + row["failed"]
        total = max(row["total_files"], done)
        errors: list[FileError] = []
        logs: list[str] = []
        if details:
            errors = [
                FileError(file=r["path"], code=r["code"], message=r["message"] or "")
                for r in self._query(
                    "SELECT path, code, message FROM job_files WHERE job_id = ? AND outcome = 'failed'"
                    " ORDER BY path LIMIT ?",
                    (row["job_id"], MAX_ERRORS_SHOWN),
                )
            ]
            logs = [
                r["line"]
                for r in reversed(
                    self._query(
                        "SELECT line FROM job_logs WHERE job_id = ? ORDER BY id DESC LIMIT ?",
                        (row["job_id"], MAX_LOGS_SHOWN),
                    )
                )
            ]
        warnings = []
        if row["offline"]:
            warnings.append(
                JobWarning(
                    code=ErrorCode.FILES_OFFLINE,
                    count=row["offline"],
                    message=f"{row['offline']} known files were not found ({row['offline_reason']}); "
                    "they stay in the index, marked offline, until they come back or are pruned "
                    "(POST /api/v1/collections/{name}/prune, `shoebox prune`)",
                )
            )
        return Job(
            job_id=row["job_id"],
            collection_name=row["collection_name"],
            directory_path=row["directory_path"],
            status=JobStatus(row["status"]),
            progress=(done / total) if total else (1.0 if JobStatus(row["status"]).finished else 0.0),
            total_files=total,
            processed_files=done,
            indexed=row["indexed"],
            cached=row["cached"],
            unchanged=row["unchanged"],
            failed=row["failed"],
            offline=row["offline"],
            errors=errors,
            warnings=warnings,
            logs=logs,
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )
