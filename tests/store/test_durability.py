"""kill -9 of a process writing to the embedded store: nothing acknowledged is ever lost.

A helper process (written into the test's folder and run with this interpreter) opens an
EdgeStore, upserts batches in a loop and prints each batch number once `write` has returned,
i.e. once the store acknowledged it. The test reads those acknowledgements, kills the helper
with SIGKILL at a varying moment, reopens the store itself and checks: the shard opens, every
acknowledged point is there with its payload and vector, and what is there is whole batches
(the WAL replays an upsert entirely or not at all), none of them twice.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from shoebox.store.edge import EdgeStore

DIM = 64
BATCH = 50

HELPER = textwrap.dedent(
    """
    import sys
    import time
    import uuid
    from pathlib import Path

    import numpy as np

    from shoebox.store import Record
    from shoebox.store.edge import EdgeStore, IndexParams

    DIM, BATCH = {dim}, {batch}


    def vector(i):
        v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
        return (v / np.linalg.norm(v)).tolist()


    def main(root, build_after):
        store = EdgeStore(
            Path(root), params=IndexParams(threshold=BATCH), background_index=build_after > 0
        )
        store.ensure_collection("c", DIM)
        have = store.count("c")
        if have % BATCH:
            print("torn", have, flush=True)
            return 5
        b = have // BATCH
        print("ready", b, flush=True)
        while True:
            ids = range(b * BATCH, (b + 1) * BATCH)
            store.write(
                "c",
                [
                    Record(id=str(uuid.UUID(int=i + 1)), vector=vector(i), payload={{"i": i, "batch": b}})
                    for i in ids
                ],
            )
            print("ack", b, flush=True)
            b += 1
            if b == build_after:
                store.after_writes("c")
                while store._child is None:
                    time.sleep(0.005)
                print("building", store._child.pid, flush=True)


    sys.exit(main(sys.argv[1], int(sys.argv[2])))
    """
).format(dim=DIM, batch=BATCH)


def vector(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def pid_of(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


class Helper:
    """The writing process and the lines it printed."""

    def __init__(self, script: Path, root: Path, build_after: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(root), str(build_after)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.acked: list[int] = []
        self.first_batch: int | None = None
        self.build_pid: int | None = None

    def read_until(self, *, acks: int, building: bool = False, timeout: float = 30.0) -> None:
        """Read lines until `acks` acknowledgements (and the build line, when asked) came."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while len(self.acked) < acks or (building and self.build_pid is None):
            assert time.monotonic() < deadline, "the helper is too slow"
            line = self.proc.stdout.readline()
            if not line:
                stderr = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"the helper ended early ({self.proc.wait()}): {stderr[-2000:]}")
            word, value = line.split()
            if word == "ready":
                self.first_batch = int(value)
            elif word == "ack":
                self.acked.append(int(value))
            elif word == "building":
                self.build_pid = int(value)
            else:
                raise AssertionError(f"the helper said {line!r}")

    def kill9(self) -> None:
        """SIGKILL, then read what the helper printed before dying: acknowledged too."""
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL
        assert self.proc.stdout is not None
        for line in self.proc.stdout.read().splitlines(keepends=True):
            words = line.split()
            # A line the kill cut short (no newline yet) is no acknowledgement.
            if line.endswith("\n") and len(words) == 2 and words[0] == "ack":
                self.acked.append(int(words[1]))
            elif line.strip():
                assert not line.endswith("\n") or words[0] == "building", f"the helper said {line!r}"
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def helper_script(tmp_path: Path) -> Path:
    script = tmp_path / "writer.py"
    script.write_text(HELPER)
    return script


@pytest.fixture
def spawned() -> Iterator[list[Helper]]:
    helpers: list[Helper] = []
    yield helpers
    for h in helpers:  # a failed test leaves no writer behind
        if h.proc.poll() is None:
            h.proc.kill()
            h.proc.wait(10)


def check_store(root: Path, acked_batches: set[int]) -> int:
    """Reopen the store and check it against what was acknowledged; return the batches found."""
    store = EdgeStore(root, background_index=False)
    try:
        count = store.count("c")
        ids: list[str] = []
        start: str | None = None
        while True:
            records, start = store.scroll("c", limit=1000, start=start, payload=False)
            ids += [r.id for r in records]
            if start is None:
                break
        assert len(ids) == len(set(ids)) == count, "the count disagrees with the points listed"
        assert count % BATCH == 0, f"{count} points: a batch was applied in part"
        batches = count // BATCH
        # Batches are written in order, so what survived is a prefix: every acked one and maybe
        # a few written after the last acknowledgement the test read, never a gap.
        assert set(ids) == {pid_of(i) for i in range(batches * BATCH)}
        assert acked_batches <= set(range(batches)), "an acknowledged batch was lost"
        acked_ids = [pid_of(i) for b in sorted(acked_batches) for i in range(b * BATCH, (b + 1) * BATCH)]
        got = {r.id: r for r in store.get("c", acked_ids, with_vectors=True)}
        assert len(got) == len(acked_ids)
        for b in acked_batches:
            for i in range(b * BATCH, (b + 1) * BATCH):
                rec = got[pid_of(i)]
                assert rec.payload == {"i": i, "batch": b}
                assert rec.vector == pytest.approx(vector(i).tolist(), abs=1e-6)
        return batches
    finally:
        store.close()


def test_kill_9_during_upserts_loses_no_acknowledged_write(
    helper_script: Path, tmp_path: Path, spawned: list[Helper]
) -> None:
    """Three writers in turn on one store, each killed -9 mid-stream after a different number
    of acknowledged batches (and a random delay of up to 30 ms): after each kill the store opens,
    holds every acknowledged point intact and only whole batches; the next writer resumes on it."""
    root = tmp_path / "edge"
    rng = random.Random(20240611)
    acked: set[int] = set()
    found = 0
    for round_, acks in enumerate([3, 17, 40]):
        helper = Helper(helper_script, root)
        spawned.append(helper)
        helper.read_until(acks=acks)
        # The writer runs on meanwhile: the kill lands at a different point of a later write.
        time.sleep(rng.uniform(0, 0.03))
        helper.kill9()
        assert helper.first_batch == found, "the writer did not resume after the last whole batch"
        acked |= set(helper.acked)
        found = check_store(root, acked)
        print(
            f"\nround {round_}: killed {acks}+ acks in ({len(helper.acked)} in all); "
            f"{found} batches on disk, {len(acked)} acked so far"
        )
        assert found >= max(acked) + 1


def _status_becomes(proc: psutil.Process, status: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.status() == status:
            return True
        time.sleep(0.005)  # a signal's delivery is not synchronous; no event tells
    return False


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def orphans() -> Iterator[list[psutil.Process]]:
    procs: list[psutil.Process] = []
    yield procs
    for proc in procs:  # a build child that survived a failed test
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def test_kill_9_during_a_background_build_loses_nothing_and_leaves_no_build_behind(
    helper_script: Path, tmp_path: Path, spawned: list[Helper], orphans: list[psutil.Process]
) -> None:
    """A writer that started an index build (its child optimising a copy of the shard) and kept
    writing is killed -9: the build process dies with it (no orphan keeps writing into the
    copy), the store reopens from the live shard with every acknowledged point (including those
    written during the build), and the unfinished copy is removed at open."""
    root = tmp_path / "edge"
    helper = Helper(helper_script, root, build_after=40)  # 2,000 points, then a build
    spawned.append(helper)
    helper.read_until(acks=40, building=True)
    helper.read_until(acks=45)  # written while the child builds: in the journal, not the copy
    assert helper.build_pid is not None
    build = psutil.Process(helper.build_pid)
    # Stopped, the build cannot end on its own before the check below: only a kill ends it.
    build.suspend()
    orphans.append(build)
    assert _status_becomes(build, psutil.STATUS_STOPPED, timeout=5.0), "the build was over already"
    assert (root / "c" / "v2").is_dir()
    helper.kill9()

    assert _gone(helper.build_pid, timeout=5.0), "the build child outlived the killed writer"
    batches = check_store(root, set(helper.acked))
    assert batches >= 45
    assert sorted(p.name for p in (root / "c").iterdir()) == ["CURRENT", "v1"]
    assert (root / "c" / "CURRENT").read_text() == "v1"
    print(f"\nkilled during the build: {batches} batches on disk, {len(helper.acked)} acked")
