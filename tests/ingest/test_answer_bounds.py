"""Answers of the ingestion service are bounded: the duplicates scan lists at most max_groups
groups per tier and says when it left some out."""

from __future__ import annotations

from shoebox.ingest import duplicates
from shoebox.ingest.duplicates import Group, TierGroups


def scan_with(exact: int, near: int) -> duplicates.Duplicates:
    group = Group(members=[], keep="k", keep_path="/p")
    return duplicates.empty().model_copy(
        update={
            "exact": [[f"e{i}"] for i in range(exact)],
            "near": [[f"n{i}", f"m{i}"] for i in range(near)],
            "groups": TierGroups(exact=[group] * exact, near=[group] * near),
        }
    )


def test_a_tier_over_max_groups_is_cut_to_its_first_groups_and_flagged() -> None:
    capped = scan_with(exact=5, near=2).capped(3)
    assert capped.truncated
    assert capped.exact == [["e0"], ["e1"], ["e2"]]
    assert len(capped.groups.exact) == 3
    assert capped.near == [["n0", "m0"], ["n1", "m1"]]
    assert capped.total_groups == {"exact": 5, "same_picture": 0, "near": 2, "bursts": 0}


def test_an_answer_within_max_groups_is_whole_and_not_flagged() -> None:
    capped = scan_with(exact=3, near=3).capped(3)
    assert not capped.truncated
    assert len(capped.exact) == len(capped.near) == 3
