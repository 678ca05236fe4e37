"""Interactions, IdMap and Histories: validation with useful messages, latest-value semantics, time order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from genrec.data.interactions import DataError, Histories, IdMap, Interactions


def table(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


# IdMap -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [[30, 10, 20], ["b", "a", "c"], np.array([7, 3, 5], dtype=np.int64)])
def test_id_map_round_trip(raw, tmp_path):
    ids = IdMap(raw, "item")
    assert len(ids) == 3
    np.testing.assert_array_equal(ids.index(raw), [0, 1, 2])
    assert ids.raw[ids.index(raw[::-1])].tolist() == list(raw[::-1])
    ids.save(tmp_path / "items.parquet")
    loaded = IdMap.load(tmp_path / "items.parquet")
    assert loaded == ids and loaded.name == "item"
    assert loaded.index(raw).tolist() == [0, 1, 2]


def test_id_map_from_values_uses_first_appearance():
    ids, codes = IdMap.from_values(np.array(["x", "y", "x", "z"]), "user")
    assert ids.raw.tolist() == ["x", "y", "z"] and codes.tolist() == [0, 1, 0, 2]
    assert codes.dtype == np.int32


def test_id_map_lookups_across_int_and_str():
    assert IdMap(["1", "2"]).index([2]).tolist() == [1]  # an int asked of a string map
    assert IdMap([1, 2]).index(np.array(["2"], dtype=object)).tolist() == [1]  # a string asked of an int map


def test_id_map_unknown_and_duplicate_ids_are_named():
    ids = IdMap(["a", "b"], "user")
    with pytest.raises(KeyError, match="unknown user id 'zz'"):
        ids.index(["a", "zz"])
    assert ids.index(["a", "zz"], missing="ignore").tolist() == [0, -1]
    with pytest.raises(DataError, match="'a' appears more than once"):
        IdMap(["a", "b", "a"], "user")


# from_frame validation ---------------------------------------------------------------------------------------
def test_from_frame_maps_raw_ids_and_keeps_columns():
    data = Interactions.from_frame(table(u=["b", "a", "b"], i=[5, 6, 6], r=[4.0, 3.0, 1.5], t=[30, 10, 20]),
                                   "u", "i", "r", "t")
    assert data.user_ids.raw.tolist() == ["b", "a"] and data.item_ids.raw.tolist() == [5, 6]
    assert data.users.tolist() == [0, 1, 0] and data.items.tolist() == [0, 1, 1]
    assert data.values.tolist() == [4.0, 3.0, 1.5] and data.timestamps.tolist() == [30, 10, 20]
    assert data.has_timestamps
    bare = Interactions.from_frame(table(user=[1, 2], item=[1, 1]))
    assert bare.values.tolist() == [1.0, 1.0] and not bare.has_timestamps


def test_missing_column_is_named():
    with pytest.raises(DataError, match=r"ratings.csv: missing column 'rating' \(columns: user, item\)"):
        Interactions.from_frame(table(user=[1], item=[1]), value="rating", source="ratings.csv")


def test_nan_value_names_the_row():
    frame = table(user=[1, 2, 3], item=[1, 1, 1], rating=[4.0, np.nan, 5.0])
    with pytest.raises(DataError, match="ratings.csv: 'rating' is not a number at row 1"):
        Interactions.from_frame(frame, value="rating", source="ratings.csv")
    frame = table(user=[1, 2], item=[1, 1], rating=["4", "five"])
    with pytest.raises(DataError, match="at row 1: 'five'"):
        Interactions.from_frame(frame, value="rating")
    with pytest.raises(DataError, match="infinite at row 0"):
        Interactions.from_frame(table(user=[1], item=[1], rating=[np.inf]), value="rating")


def test_missing_id_and_bad_timestamp_name_the_row():
    with pytest.raises(DataError, match="empty item id at row 2"):
        Interactions.from_frame(table(user=[1, 2, 3], item=[1.0, 2.0, np.nan]))
    with pytest.raises(DataError, match="'ts' is not a number at row 1: 'soon'"):
        Interactions.from_frame(table(user=[1, 2], item=[1, 1], ts=["5", "soon"]), timestamp="ts")
    with pytest.raises(DataError, match="'ts' is missing at row 0"):
        Interactions.from_frame(table(user=[1, 2], item=[1, 1], ts=[pd.NaT, pd.Timestamp(0)]), timestamp="ts")
    with pytest.raises(DataError, match="no interactions"):
        Interactions.from_frame(table(user=[], item=[]))


def test_unknown_id_with_a_given_map_is_named():
    items = IdMap(["x", "y"], "item")
    data = Interactions.from_frame(table(user=[1, 2], item=["y", "x"]), item_ids=items)
    assert data.item_ids is items and data.items.tolist() == [1, 0]
    with pytest.raises(DataError, match="test.txt: unknown item id 'q' at row 1"):
        Interactions.from_frame(table(user=[1, 2], item=["x", "q"]), item_ids=items, source="test.txt")


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_datetime_timestamps_become_epoch_seconds_whatever_the_resolution(unit):
    stamps = pd.Series(pd.to_datetime(["1970-01-01 00:00:10", "2020-01-01 00:00:00"])).astype(f"datetime64[{unit}]")
    data = Interactions.from_frame(table(user=[1, 2], item=[1, 1], ts=stamps), timestamp="ts")
    assert data.timestamps.tolist() == [10, 1577836800]
    aware = stamps.dt.tz_localize("Europe/Paris")  # 2020-01-01 00:00 in Paris is 23:00 UTC the day before
    data = Interactions.from_frame(table(user=[1, 2], item=[1, 1], ts=aware), timestamp="ts")
    assert data.timestamps.tolist()[1] == 1577836800 - 3600


def test_constructor_checks_lengths_and_ranges():
    users, items = IdMap([0, 1]), IdMap([0, 1, 2])
    with pytest.raises(DataError, match="column 'items' has 1 rows, users has 2"):
        Interactions([0, 1], [0], None, None, users, items)
    with pytest.raises(DataError, match="item index out of range"):
        Interactions([0, 1], [0, 3], None, None, users, items)
    with pytest.raises(DataError, match="user index out of range"):
        Interactions([0, 2], [0, 1], None, None, users, items)


# views -------------------------------------------------------------------------------------------------------
@pytest.fixture
def repeats() -> Interactions:
    """User a rates item x three times (5 at t=30, 2 at t=10, 4 at t=30 after it in the file) and y once."""
    return Interactions.from_frame(
        table(user=["a", "a", "a", "a", "b"], item=["x", "x", "y", "x", "y"], r=[5.0, 2.0, 1.0, 4.0, 3.0],
              t=[30, 10, 20, 30, 5]),
        value="r", timestamp="t",
    )


def test_csr_keeps_the_latest_value_for_repeated_pairs(repeats):
    m = repeats.csr()
    assert m.dtype == np.float32 and m.shape == (2, 2)
    # the latest event by time is at t=30; between the two at t=30, the later row in the file wins
    assert m.toarray().tolist() == [[4.0, 1.0], [0.0, 3.0]]
    assert repeats.csr(binary=True).toarray().tolist() == [[1.0, 1.0], [0.0, 1.0]]
    assert repeats.csr().toarray().tolist() == [[4.0, 1.0], [0.0, 3.0]], "binary=True must not touch the cache"


def test_item_popularity_counts_distinct_users(repeats):
    assert repeats.item_popularity().tolist() == [1, 2]


def test_histories_are_in_time_order_with_stable_ties(repeats):
    h = repeats.histories()
    x, y = repeats.item_ids.index(["x", "y"])
    assert h.sequence(0).tolist() == [x, y, x, x]  # t = 10, 20, 30, 30 (file order within the tie)
    assert h.sequence(1).tolist() == [y]
    assert h.lengths().tolist() == [2, 1]
    assert h.user_ids.tolist() == ["a", "b"]
    assert [s.tolist() for s in repeats.histories([1]).sequences()] == [[y]]


def test_histories_without_timestamps_keep_file_order():
    data = Interactions.from_frame(table(user=[1, 1, 1], item=["c", "a", "b"]))
    assert data.histories().sequence(0).tolist() == data.item_ids.index(["c", "a", "b"]).tolist()


def test_histories_from_lists():
    h = Histories.from_lists([[2, 0, 2], [], [1]], n_items=3, user_ids=["p", "q", "r"], values=[[1, 2, 3], [], [5]])
    assert h.n_users == 3 and h.n_items == 3 and h.has_order
    assert [s.tolist() for s in h.sequences()] == [[2, 0, 2], [], [1]]
    assert h.matrix.toarray().tolist() == [[2.0, 0.0, 3.0], [0.0, 0.0, 0.0], [0.0, 5.0, 0.0]]  # repeat: last value
    assert h.binary().toarray().tolist() == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert h.user_ids.tolist() == ["p", "q", "r"]
    assert Histories.from_lists([], n_items=4).matrix.shape == (0, 4)
    with pytest.raises(DataError, match="out of range 0..2"):
        Histories.from_lists([[0, 3]], n_items=3)


def test_histories_without_sequences_fall_back_to_the_csr_row():
    h = Histories(sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 0]], dtype=np.float32)))
    assert not h.has_order and [s.tolist() for s in h.sequences()] == [[1, 2], [0]]


@pytest.mark.parametrize(
    "rows, expected",
    [
        (slice(1, 3), [1, 2]),
        (slice(None, None, -1), [3, 2, 1, 0]),
        ([3, 0], [3, 0]),
        (np.array([2, 2]), [2, 2]),
        ([-1], [3]),
        (np.array([True, False, True, False]), [0, 2]),
        ([], []),
    ],
)
def test_histories_slicing_keeps_sequences(rows, expected):
    lists = [[4, 1, 4], [0], [], [3, 2]]
    h = Histories.from_lists(lists, n_items=5, user_ids=np.array(["a", "b", "c", "d"]))
    part = h[rows]
    assert part.n_users == len(expected) and part.n_items == 5
    assert [s.tolist() for s in part.sequences()] == [lists[u] for u in expected]
    assert (part.matrix != h.matrix[expected]).nnz == 0
    assert part.user_ids.tolist() == ["abcd"[u] for u in expected]


def test_select_keeps_the_id_maps(repeats):
    part = repeats.select(repeats.users == 1)
    assert len(part) == 1 and part.user_ids is repeats.user_ids and part.item_ids is repeats.item_ids
    assert part.n_users == 2  # indices stay valid: the map is not shrunk


def test_compact_drops_unused_ids_and_attributes_follow():
    users, items = IdMap(["u0", "u1", "u2"], "user"), IdMap(["i0", "i1", "i2", "i3"], "item")
    attrs = pd.DataFrame({"genre": ["g0", "g1", "g2", "g3"]})
    data = Interactions([2, 0, 2], [3, 1, 1], [1.0, 2.0, 3.0], [5, 6, 7], users, items, item_attributes=attrs)
    small = data.compact()
    assert small.user_ids.raw.tolist() == ["u0", "u2"] and small.item_ids.raw.tolist() == ["i1", "i3"]
    assert small.to_frame().values.tolist() == data.to_frame().values.tolist()  # same events, same raw ids
    assert small.item_attributes["genre"].tolist() == ["g1", "g3"]
    assert small.user_ids.name == "user" and small.item_ids.name == "item"


def test_fingerprint_is_stable_and_sensitive():
    def build(values=(4.0, 3.0, 5.0)):
        return Interactions.from_frame(table(user=["a", "b", "a"], item=[1, 2, 2], v=list(values), t=[1, 2, 3]),
                                       value="v", timestamp="t")

    a = build()
    assert a.fingerprint() == build().fingerprint() == a.select(np.ones(3, bool)).fingerprint()
    # bundles record it: it must not change between runs or releases without notice
    assert a.fingerprint() == "daa80d199024dadd"
    assert build(values=(4.0, 3.0, 4.5)).fingerprint() != a.fingerprint()
    assert a.select(np.array([True, True, False])).fingerprint() != a.fingerprint()


def test_attributes_are_aligned_to_the_id_maps():
    # attribute rows in another order than the ids appear, one id without attributes, one extra row
    items = pd.DataFrame({"title": ["Y", "X", "unused"], "year": [2001, 1999, 1990]}, index=["y", "x", "w"])
    users = pd.DataFrame({"age": [40, 20]}, index=[2, 1])
    data = Interactions.from_frame(table(user=[1, 2, 1], item=["x", "y", "z"]), item_attributes=items,
                                   user_attributes=users)
    assert data.item_ids.raw.tolist() == ["x", "y", "z"]
    assert data.item_attributes["title"].tolist()[:2] == ["X", "Y"]
    assert pd.isna(data.item_attributes["title"].iloc[2])
    assert data.item_attributes["year"].tolist()[:2] == [1999, 2001]
    assert data.user_attributes["age"].tolist() == [20, 40]
    assert len(data.item_attributes) == data.n_items


def test_attributes_with_int_index_align_to_string_ids():
    # raw ids read as strings, attributes keyed by the same ids as ints: still aligned
    items = pd.DataFrame({"title": ["One", "Two"]}, index=[1, 2])
    data = Interactions.from_frame(table(user=["u", "u"], item=["2", "1"]), item_attributes=items)
    assert data.item_attributes["title"].tolist() == ["Two", "One"]
