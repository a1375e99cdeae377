"""What the Qdrant Edge bindings do under threads and processes, measured (see edge.py's docstring).

These tests keep checking the facts `shoebox.store.edge` is designed around, so that an upgrade
of qdrant-edge-py that changes one of them fails here, with a message saying what to revisit:
- several threads may query and write one store at once, with correct answers;
- the engine calls hold the GIL while they work (query, query_batch, count, scroll, update):
  a search stops every other Python thread of the process for its duration;
- `optimize()` holds the GIL for the whole HNSW build (hence builds run in a child process);
- a second process cannot open a shard that is open, and gets a clear error, harmlessly;
- the data dir lock keeps a second service off a data dir that is in use.

How the GIL is observed: a "sleeper" thread sleeps 0.5 ms and counts its wake-ups, each of which
needs the GIL. While another thread is inside a call that releases the GIL, the sleeper keeps its
idle pace; while the call holds the GIL, it cannot wake at all. The sleeper hardly needs a CPU, so
the measure holds on a loaded 2-core machine; a NumPy product (which releases the GIL) of the same
cost is measured alongside as the control that proves the instrument sees a released GIL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

from shoebox.protocol import ShoeboxError
from shoebox.store import Range, Record, Where
from shoebox.store.edge import EdgeStore

PYTHON = sys.executable


def _ids(start: int, stop: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1)) for i in range(start, stop)]


def _unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _fill(store: EdgeStore, name: str, vectors: np.ndarray, start: int = 0, batch: int = 1000) -> list[str]:
    ids = _ids(start, start + len(vectors))
    for a in range(0, len(vectors), batch):
        store.write(
            name,
            [
                Record(id=ids[i], vector=vectors[i].tolist(), payload={"i": start + i})
                for i in range(a, min(len(vectors), a + batch))
            ],
        )
    return ids


# ---------------------------------------------------------------- (a) threads


def test_concurrent_queries_and_writes_from_several_threads_give_correct_answers(tmp_path: Path) -> None:
    """Three query threads, two writer threads and one reader (count/scroll/get) share one store:
    no call fails, every search finds its own point first, and every write is there afterwards."""
    dim, base_n = 64, 1000
    store = EdgeStore(tmp_path / "edge", background_index=False)
    try:
        store.ensure_collection("c", dim)
        base = _unit_vectors(base_n, dim, seed=1)
        base_ids = _fill(store, "c", base)
        writers, batches, per_batch = 2, 20, 25
        written = {w: _unit_vectors(batches * per_batch, dim, seed=100 + w) for w in range(writers)}
        errors: list[BaseException] = []
        checked = {"queries": 0, "reads": 0}
        writers_done = threading.Event()
        start = threading.Barrier(writers + 4)

        def guarded(fn: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    start.wait()
                    fn()
                except BaseException as exc:  # noqa: BLE001 - every failure is reported by the test
                    errors.append(exc)

            return run

        def write(w: int) -> None:
            first = base_n + w * batches * per_batch
            for b in range(batches):
                lo = b * per_batch
                ids = _ids(first + lo, first + lo + per_batch)
                store.write(
                    "c",
                    [
                        Record(id=pid, vector=written[w][lo + k].tolist(), payload={"w": w, "b": b})
                        for k, pid in enumerate(ids)
                    ],
                )

        def query(seed: int) -> None:
            rng = np.random.default_rng(seed)
            while not writers_done.is_set() or checked["queries"] < 30:
                i = int(rng.integers(base_n))
                hits = store.query("c", base[i].tolist(), limit=5)
                assert hits[0].id == base_ids[i], "a search did not find its own point first"
                assert hits[0].score == pytest.approx(1.0, abs=1e-4)
                assert len(hits) == 5
                checked["queries"] += 1

        def read() -> None:
            last = 0
            while not writers_done.is_set():
                now = store.count("c")
                assert base_n <= now <= base_n + writers * batches * per_batch
                assert now >= last, "the point count went down while only upserts ran"
                last = now
                records, _ = store.scroll("c", limit=50)
                assert len(records) == 50
                got = store.get("c", base_ids[:20], with_vectors=True)
                assert [r.id for r in got] == base_ids[:20]
                checked["reads"] += 1

        threads = [threading.Thread(target=guarded(lambda w=w: write(w))) for w in range(writers)]
        threads += [threading.Thread(target=guarded(lambda s=s: query(s))) for s in range(3)]
        threads.append(threading.Thread(target=guarded(read)))
        for t in threads:
            t.start()
        for t in threads[:writers]:
            t.join(30)
        writers_done.set()
        for t in threads[writers:]:
            t.join(30)
        assert not errors, errors
        assert checked["queries"] >= 30 and checked["reads"] >= 1

        assert store.count("c") == base_n + writers * batches * per_batch
        for w in range(writers):
            first = base_n + w * batches * per_batch
            ids = _ids(first, first + batches * per_batch)
            got = {r.id: r for r in store.get("c", ids, with_vectors=True)}
            assert set(got) == set(ids)
            for k, pid in enumerate(ids):
                assert got[pid].payload == {"w": w, "b": k // per_batch}
                assert got[pid].vector == pytest.approx(written[w][k].tolist(), abs=1e-6)
    finally:
        store.close()


# ---------------------------------------------------------------- the GIL instrument


class Sleeper:
    """A thread that sleeps 0.5 ms and counts its wake-ups; each wake-up needs the GIL."""

    def __init__(self) -> None:
        self.ticks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gil-sleeper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            time.sleep(0.0005)
            self.ticks += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class GilMeasure:
    idle_rate: float  # sleeper wake-ups per second while nothing else runs
    busy_rate: float  # ... while the operation runs in a loop
    call_s: float  # median duration of one call
    ticks_per_call: float  # median wake-ups counted across one call
    calls: int

    @property
    def ratio(self) -> float:
        return self.busy_rate / self.idle_rate

    @property
    def free_ticks_per_call(self) -> float:
        """The wake-ups one call would let through if it released the GIL."""
        return self.call_s * self.idle_rate

    def __str__(self) -> str:
        return (
            f"sleeper {self.idle_rate:.0f}/s idle, {self.busy_rate:.0f}/s busy (ratio {self.ratio:.2f}); "
            f"{self.calls} calls of {self.call_s * 1000:.1f} ms, {self.ticks_per_call:.1f} wake-ups per call "
            f"(a released GIL would let {self.free_ticks_per_call:.1f} through)"
        )


def measure_gil(op: Callable[[], object], seconds: float = 0.5) -> GilMeasure:
    """Run `op` in a loop on this thread for `seconds` while the sleeper counts."""
    op()  # warm up (first-call allocations, page faults of a fresh mmap)
    sleeper = Sleeper()
    try:
        t0, a = time.perf_counter(), sleeper.ticks
        time.sleep(0.25)
        idle = (sleeper.ticks - a) / (time.perf_counter() - t0)
        per_call: list[tuple[int, float]] = []
        t0, a = time.perf_counter(), sleeper.ticks
        while time.perf_counter() - t0 < seconds or len(per_call) < 5:
            c0, s0 = sleeper.ticks, time.perf_counter()
            op()
            per_call.append((sleeper.ticks - c0, time.perf_counter() - s0))
        busy = (sleeper.ticks - a) / (time.perf_counter() - t0)
    finally:
        sleeper.stop()
    return GilMeasure(
        idle_rate=idle,
        busy_rate=busy,
        call_s=float(np.median([d for _, d in per_call])),
        ticks_per_call=float(np.median([t for t, _ in per_call])),
        calls=len(per_call),
    )


def holds_the_gil(m: GilMeasure) -> bool:
    """A call that holds the GIL lets at most the one forced switch per call through."""
    return m.ticks_per_call <= max(1.5, 0.25 * m.free_ticks_per_call) and m.ratio < 0.35


def releases_the_gil(m: GilMeasure) -> bool:
    return m.ratio > 0.6 and m.ticks_per_call >= 0.5 * m.free_ticks_per_call


@pytest.fixture(scope="module")
def gil_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EdgeStore, np.ndarray]]:
    """4,000 unindexed 512-d points (brute-force search), the size of a small library."""
    store = EdgeStore(tmp_path_factory.mktemp("gil") / "edge", background_index=False)
    vectors = _unit_vectors(4000, 512, seed=7)
    store.ensure_collection("c", 512)
    _fill(store, "c", vectors)
    yield store, vectors
    store.close()


def test_the_instrument_sees_a_released_gil(gil_store: tuple[EdgeStore, np.ndarray]) -> None:
    """Control: NumPy's brute-force product of the same size releases the GIL, and the sleeper
    keeps its pace through it. Without this, a 'holds the GIL' verdict below could be the
    machine being too loaded to wake a thread."""
    _, vectors = gil_store
    queries = vectors[:64].T.copy()
    m = measure_gil(lambda: vectors @ queries)
    print(f"\nnumpy brute force: {m}")
    assert releases_the_gil(m), f"the control did not show a released GIL: {m}"


GIL_HOLDING_CALLS = ["query", "query_batch", "count", "scroll", "update"]


@pytest.mark.parametrize("call", GIL_HOLDING_CALLS)
def test_engine_calls_hold_the_gil_in_this_version(
    call: str, gil_store: tuple[EdgeStore, np.ndarray]
) -> None:
    """Measured on qdrant-edge-py 0.9.0: query, query_batch, count, scroll and update keep the GIL
    while the engine works (a pure-Python counter thread makes ~no progress meanwhile, unlike
    during the NumPy control). They are thread-safe, but a search does not run in parallel with
    other Python threads: each stops the event loop and the ingest stages for its duration
    (a few ms on 4,000 unindexed points; tens of ms on 20,000 with a filter). `retrieve` is not
    asserted: it was seen to let the sleeper through about half of the time of a 3,000-id call.

    If this fails because a call now releases the GIL, the engine got better: update edge.py's
    module docstring (searches would then run in parallel with the rest of the service)."""
    store, vectors = gil_store
    ids = _ids(0, 4000)
    queries = [v.tolist() for v in vectors[:64]]
    # The engine call itself: building 1,000 points is Python work that holds the GIL anyway.
    shard = store._collections["c"].shard
    rewrite = qe.UpdateOperation.upsert_points(
        [qe.Point(ids[i], vectors[i].tolist(), {"i": i}) for i in range(1000)]
    )
    ops: dict[str, Callable[[], object]] = {
        # One search at a time in a tight loop: many brute-force queries.
        "query": lambda: [store.query("c", q, limit=20) for q in queries[:16]],
        "query_batch": lambda: store.query_batch("c", queries, limit=20),
        "count": lambda: store.count("c", Where((Range("i", gte=0.0),))),
        "scroll": lambda: store.scroll("c", limit=4000, payload=False),
        "update": lambda: shard.update(rewrite),  # upserts of points already there: same data
    }
    m = measure_gil(ops[call])
    print(f"\n{call}: {m}")
    assert holds_the_gil(m), (
        f"{call} no longer holds the GIL ({m}): the bindings changed; revisit edge.py's docstring"
    )


def test_optimize_holds_the_gil_for_the_whole_build(tmp_path: Path) -> None:
    """`EdgeShard.optimize()` (the HNSW build) keeps the GIL from start to end: the sleeper makes
    ~no progress during a build of 2,000 points. This is why EdgeStore builds in a child process.

    If this fails because the sleeper kept its pace, the bindings now release the GIL during
    optimize: the child process of `build_index` could become a thread (keep the copy-and-swap)."""
    dim, n = 128, 2000
    config = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Dot),
        hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
    )
    shard = qe.EdgeShard.create(str(tmp_path / "shard"), config)
    try:
        vectors = _unit_vectors(n, dim, seed=3)
        shard.update(
            qe.UpdateOperation.upsert_points([qe.Point(i, vectors[i].tolist(), {}) for i in range(n)])
        )
        sleeper = Sleeper()
        try:
            t0, a = time.perf_counter(), sleeper.ticks
            time.sleep(0.25)
            idle_rate = (sleeper.ticks - a) / (time.perf_counter() - t0)
            t0, a = time.perf_counter(), sleeper.ticks
            shard.optimize()
            build_s = time.perf_counter() - t0
            during = sleeper.ticks - a
        finally:
            sleeper.stop()
        assert int(shard.info().indexed_vectors_count) == n, "optimize did not build the index"
    finally:
        shard.close()
    expected = idle_rate * build_s
    print(
        f"\noptimize of {n} x {dim}: {build_s:.2f} s; sleeper {during} wake-ups, {expected:.0f} at idle pace"
    )
    assert build_s > 0.05, "the build was too short to tell anything"
    # A held GIL lets through at most the forced switches around the call: a handful, not hundreds.
    assert during <= max(5, 0.05 * expected), (
        f"the sleeper woke {during} times during optimize ({expected:.0f} at idle pace): the bindings "
        "may release the GIL now; builds could run in a thread (see build_index.py)"
    )


# ---------------------------------------------------------------- (d) a second process


SECOND_OPEN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from shoebox.protocol import ShoeboxError
    from shoebox.store.edge import EdgeStore
    try:
        EdgeStore(Path(sys.argv[1])).close()
    except ShoeboxError as exc:
        print(exc.code.value, exc.message)
        sys.exit(3)
    print("opened")
    """
)


def test_a_second_process_opening_the_store_gets_a_clear_error_and_harms_nothing(tmp_path: Path) -> None:
    """While one process has the store open, another one opening it fails with a ShoeboxError
    saying it is open elsewhere; the first process's points and searches are untouched, and so
    is an index build it had under way (the second process must not clean up its build dir)."""
    root = tmp_path / "edge"
    store = EdgeStore(root, background_index=False)
    try:
        store.ensure_collection("c", 16)
        vectors = _unit_vectors(50, 16, seed=5)
        ids = _fill(store, "c", vectors)
        in_progress = root / "c" / "v2"  # what an index build of the first process looks like
        in_progress.mkdir()
        (in_progress / "marker").write_text("a build of the first process")

        second = subprocess.run(
            [PYTHON, "-c", SECOND_OPEN, str(root)], capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 3, second.stdout + second.stderr
        assert second.stdout.startswith("ERR_VECTOR_DB"), second.stdout
        assert "open in another process" in second.stdout

        assert (in_progress / "marker").is_file(), "the second process removed the first one's build dir"
        assert store.count("c") == 50
        assert store.query("c", vectors[7].tolist(), limit=1)[0].id == ids[7]
        store.write("c", [Record(id=ids[0], vector=vectors[0].tolist(), payload={"again": True})])
        assert store.get("c", [ids[0]])[0].payload == {"again": True}
    finally:
        store.close()
    again = EdgeStore(root, background_index=False)  # and once the first one is closed, it opens
    try:
        assert again.count("c") == 50
        assert not (root / "c" / "v2").exists()  # now a leftover, removed at open
    finally:
        again.close()


# ---------------------------------------------------------------- (e) the data dir lock

HOLD_DATA_DIR = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from shoebox.ingest.config import IngestSettings
    from shoebox.ingest.context import ServiceContext
    ctx = ServiceContext.open(IngestSettings(data_dir=Path(sys.argv[1]), store="edge"))
    print("open", flush=True)
    sys.stdin.readline()
    ctx.close()
    print("closed", flush=True)
    """
)


def test_a_second_service_context_on_a_data_dir_in_use_raises_data_dir_in_use(tmp_path: Path) -> None:
    """Two `ServiceContext.open` on one data dir, in two processes: the second raises DataDirInUse
    (ERR_CONFLICT) naming the holder, before touching the catalog or the store; once the first
    closes, the data dir opens again."""
    from shoebox.ingest.config import IngestSettings
    from shoebox.ingest.context import DataDirInUse, ServiceContext

    data = tmp_path / "data"
    holder = subprocess.Popen(
        [PYTHON, "-c", HOLD_DATA_DIR, str(data)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "SHOEBOX_OFFLINE": "1"},
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "open"
        settings = IngestSettings(data_dir=data, store="edge")
        with pytest.raises(DataDirInUse) as raised:
            ServiceContext.open(settings)
        assert raised.value.code.value == "ERR_CONFLICT"
        assert f"pid {holder.pid}" in raised.value.message
        assert isinstance(raised.value, ShoeboxError)

        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "closed"
        assert holder.wait(30) == 0
        ctx = ServiceContext.open(settings)
        ctx.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
