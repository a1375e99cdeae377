"""Job admission: the allow-list of folders is checked on real paths, collection names are safe."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoebox.ingest.jobs import resolve_ingest_dir, validate_collection_name
from shoebox.protocol import ErrorCode, ShoeboxError


def _code(directory: str, roots: list[Path]) -> ErrorCode:
    with pytest.raises(ShoeboxError) as info:
        resolve_ingest_dir(directory, roots)
    return info.value.code


def test_folder_inside_a_root_resolves_to_its_real_path(tmp_path: Path) -> None:
    (tmp_path / "root" / "a").mkdir(parents=True)
    assert resolve_ingest_dir(str(tmp_path / "root" / "a" / ".." / "a"), [tmp_path / "root"]) == str(
        (tmp_path / "root" / "a").resolve()
    )


def test_dot_dot_out_of_a_root_is_not_allowed(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "other").mkdir()
    assert _code(str(tmp_path / "root" / ".." / "other"), [tmp_path / "root"]) == ErrorCode.PATH_NOT_ALLOWED


def test_symlink_out_of_a_root_is_not_allowed(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path / "other")
    assert _code(str(tmp_path / "root" / "link"), [tmp_path / "root"]) == ErrorCode.PATH_NOT_ALLOWED


def test_sibling_with_a_common_prefix_is_not_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos-private").mkdir()
    assert _code(str(tmp_path / "photos-private"), [tmp_path / "photos"]) == ErrorCode.PATH_NOT_ALLOWED


def test_no_roots_configured_allows_nothing(tmp_path: Path) -> None:
    assert _code(str(tmp_path), []) == ErrorCode.PATH_NOT_ALLOWED


def test_missing_folder_inside_a_root_is_not_found(tmp_path: Path) -> None:
    assert _code(str(tmp_path / "missing"), [tmp_path]) == ErrorCode.PATH_NOT_FOUND


@pytest.mark.parametrize("name", ["", "../x", "a/b", "x" * 65, "-lead", "sp ace"])
def test_unsafe_collection_names_are_refused(name: str) -> None:
    with pytest.raises(ShoeboxError) as info:
        validate_collection_name(name)
    assert info.value.code == ErrorCode.VALIDATION
