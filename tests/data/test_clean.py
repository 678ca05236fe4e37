"""Cleaning steps: hand-checkable cases, and k_core against slow references on random data."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.data.clean import deduplicate, filter_min_counts, filter_min_value, k_core
from genrec.data.interactions import Interactions


def table(rows: list[tuple], attributes: bool = False) -> Interactions:
    """rows: (user, item[, value[, timestamp]]) with raw ids."""
    frame = pd.DataFrame([r + (1.0, -1)[len(r) - 2:] for r in rows], columns=["user", "item", "value", "ts"])
    items = None
    if attributes:
        ids = sorted(frame["item"].unique())
        items = pd.DataFrame({"name": [f"item {i}" for i in ids]}, index=ids)
    return Interactions.from_frame(frame, value="value", timestamp="ts", item_attributes=items)


def pairs(data: Interactions) -> list[tuple]:
    frame = data.to_frame()
    return list(zip(frame["user"], frame["item"]))


# filter_min_value -----------------------------------------------------------------------------------------
def test_filter_min_value_keeps_ratings_at_or_above_and_compacts():
    data = table([("a", "x", 5.0), ("a", "y", 3.0), ("b", "y", 4.0), ("c", "z", 1.0)], attributes=True)
    kept = filter_min_value(data, 4)
    assert pairs(kept) == [("a", "x"), ("b", "y")]
    assert list(kept.values) == [5.0, 4.0]
    assert list(kept.user_ids.raw) == ["a", "b"] and list(kept.item_ids.raw) == ["x", "y"]
    assert list(kept.item_attributes["name"]) == ["item x", "item y"]
    assert len(data) == 4  # the input is untouched


def test_filter_min_value_binarize_sets_values_to_one():
    data = table([("a", "x", 5.0), ("a", "y", 3.0)])
    assert list(filter_min_value(data, 3, binarize=True).values) == [1.0, 1.0]


# deduplicate ------------------------------------------------------------------------------------------------
def test_deduplicate_keeps_latest_by_timestamp_then_file_order():
    data = table([("a", "x", 1.0, 30), ("a", "x", 2.0, 10), ("b", "x", 3.0, 5), ("a", "x", 4.0, 30),
                  ("b", "y", 5.0, 1)])
    last = deduplicate(data)
    assert list(last.values) == [3.0, 4.0, 5.0]  # (a, x): timestamp 30 twice, the later row wins
    first = deduplicate(data, keep="first")
    assert list(first.values) == [2.0, 3.0, 5.0]
    assert last.user_ids is data.user_ids and last.item_ids is data.item_ids


def test_deduplicate_rejects_unknown_keep():
    with pytest.raises(ValueError, match="keep"):
        deduplicate(table([("a", "x")]), keep="middle")


# k_core and filter_min_counts ------------------------------------------------------------------------------
def test_k_core_iterates_until_every_count_holds():
    # user c has 1 item -> removed; then item z has only user b -> removed; then b has 1 item -> removed
    data = table([("a", "x"), ("a", "y"), ("b", "y"), ("b", "z"), ("c", "x"), ("d", "x"), ("d", "y")])
    core = k_core(data, 2)
    assert sorted(pairs(core)) == [("a", "x"), ("a", "y"), ("d", "x"), ("d", "y")]
    assert list(core.user_ids.raw) == ["a", "d"] and list(core.item_ids.raw) == ["x", "y"]


def test_filter_min_counts_is_a_single_pass():
    data = table([("a", "x"), ("a", "y"), ("b", "y"), ("b", "z"), ("c", "x"), ("d", "x"), ("d", "y")])
    once = filter_min_counts(data, min_user=2, min_item=2)
    # c goes; z (one user) goes; b keeps its one remaining row because counts are not recomputed
    assert sorted(pairs(once)) == [("a", "x"), ("a", "y"), ("b", "y"), ("d", "x"), ("d", "y")]


def test_k_core_counts_distinct_items_and_keeps_repeats():
    data = table([("a", "x", 1.0, 1), ("a", "x", 1.0, 2), ("a", "y", 1.0, 3), ("b", "x", 1.0, 4)])
    assert len(k_core(data, user_k=2, item_k=1)) == 3  # a's two events on x count once, both are kept
    assert len(k_core(table([("a", "x"), ("a", "x")]), user_k=2, item_k=1)) == 0


def test_k_core_separate_thresholds_and_argument_check():
    data = table([("a", "x"), ("a", "y"), ("b", "x")])
    assert sorted(pairs(k_core(data, user_k=1, item_k=2))) == [("a", "x"), ("b", "x")]
    with pytest.raises(ValueError):
        k_core(data)


def slow_k_core(edges: set, user_k: int, item_k: int) -> set:
    """Remove one under-threshold user or item at a time until none is left (the textbook procedure)."""
    edges = set(edges)
    while True:
        users = {u for u, _ in edges}
        items = {i for _, i in edges}
        low_user = next((u for u in users if sum(1 for e in edges if e[0] == u) < user_k), None)
        low_item = next((i for i in items if sum(1 for e in edges if e[1] == i) < item_k), None)
        if low_user is None and low_item is None:
            return edges
        edges = {e for e in edges if e[0] != low_user and e[1] != low_item}


def brute_force_k_core(edges: set, user_k: int, item_k: int) -> set:
    """The largest edge set induced by any user and item subsets that meets both thresholds (2^(U+I) tries)."""
    users, items = sorted({u for u, _ in edges}), sorted({i for _, i in edges})
    best: set = set()
    for nu in range(len(users) + 1):
        for us in itertools.combinations(users, nu):
            for ni in range(len(items) + 1):
                for its in itertools.combinations(items, ni):
                    sub = {e for e in edges if e[0] in us and e[1] in its}
                    ok = all(sum(1 for e in sub if e[0] == u) >= user_k for u in us) and all(
                        sum(1 for e in sub if e[1] == i) >= item_k for i in its)
                    if ok and len(sub) > len(best):
                        best = sub
    return best


def random_table(draw_edges: list[tuple[int, int]]) -> Interactions:
    return table([(u, i, 1.0, t) for t, (u, i) in enumerate(draw_edges)])


@settings(max_examples=40, deadline=None)
@given(edges=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=20),
       user_k=st.integers(1, 3), item_k=st.integers(1, 3))
def test_k_core_is_the_maximal_subset_brute_force(edges, user_k, item_k):
    core = k_core(random_table(edges), user_k=user_k, item_k=item_k)
    assert set(pairs(core)) == brute_force_k_core(set(edges), user_k, item_k)


@settings(max_examples=60, deadline=None)
@given(edges=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=1, max_size=80),
       user_k=st.integers(1, 5), item_k=st.integers(1, 5))
def test_k_core_property_and_agreement_with_slow_reference(edges, user_k, item_k):
    data = random_table(edges)
    core = k_core(data, user_k=user_k, item_k=item_k)
    distinct = set(pairs(core))
    assert distinct == slow_k_core(set(edges), user_k, item_k)
    # the k-core property, on the compacted maps: no empty or under-threshold user or item remains
    user_counts = np.bincount([core.user_ids.index(u)[0] for u, _ in distinct], minlength=core.n_users)
    item_counts = np.bincount([core.item_ids.index(i)[0] for _, i in distinct], minlength=core.n_items)
    assert (user_counts >= user_k).all() and (item_counts >= item_k).all()
    # every event of a surviving pair is kept
    assert len(core) == sum(1 for e in edges if e in distinct)
