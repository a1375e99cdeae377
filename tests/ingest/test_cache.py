"""The embedding cache: keyed by content and model, size-limited, clearable."""

from __future__ import annotations

from pathlib import Path

from shoebox.ingest.cache import EmbeddingCache


def test_cached_vector_comes_back_only_for_the_same_model(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, size_limit=10 * 1024**2)
    cache.put("a" * 64, "model-1", [0.5, 0.25], {"width": 3})
    vector, meta = cache.get("a" * 64, "model-1")  # type: ignore[misc]
    assert vector == [0.5, 0.25] and meta == {"width": 3}
    assert cache.get("a" * 64, "model-2") is None


def test_clear_reports_how_many_entries_it_removed(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, size_limit=10 * 1024**2)
    for i in range(3):
        cache.put(f"{i:064x}", "m", [1.0], {})
    assert cache.clear() == 3
    assert len(cache) == 0


def test_cache_stays_under_its_size_limit_by_culling(tmp_path: Path) -> None:
    limit = 256 * 1024
    cache = EmbeddingCache(tmp_path, size_limit=limit)
    for i in range(400):
        cache.put(f"{i:064x}", "m", [0.0] * 512, {})  # ~2 KiB each: 800 KiB written in all
    assert cache._cache.volume() <= limit * 1.5
    assert cache.get(f"{399:064x}", "m") is not None


def test_a_pickled_entry_is_never_unpickled_and_reads_as_a_miss(tmp_path):
    """CVE-2025-69872: diskcache unpickles what its files hold; ours refuses (a tampered cache)."""
    import diskcache

    cache = EmbeddingCache(tmp_path / "c", 10**7)
    key = cache._key("ab" * 32, "m@1")
    cache.close()

    class Boom:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path({!r}).write_text('ran')".format(str(tmp_path / "pwned")),))

    with diskcache.Cache(str(tmp_path / "c")) as plain:  # what an attacker with write access could store
        plain.set(key, Boom())
    cache = EmbeddingCache(tmp_path / "c", 10**7)
    assert cache.get("ab" * 32, "m@1") is None
    assert not (tmp_path / "pwned").exists()
    cache.put("ab" * 32, "m@1", [0.5, 0.25], {"width": 3, "taken_at": "2020-01-01T00:00:00"})
    assert cache.get("ab" * 32, "m@1") == ([0.5, 0.25], {"width": 3, "taken_at": "2020-01-01T00:00:00"})
    cache.close()
