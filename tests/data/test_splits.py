"""Evaluation splits: determinism, no leakage, and where every input event ends up.

The invariant each split keeps, as tested here ("pairs" are (raw user, item) events; a holdout's history
events are its time-ordered sequences, its target events the non-zeros of its target matrix):

- strong generalisation: users fall in exactly one of train / validation / test; train holds every event of
  the training users; each held-out user's events are split into a history of ceil(fold_in * n) events and
  targets (the rest). Without repeated pairs: train + histories + targets = the input, exactly.
- fixed: train is the given table; the holdout holds every user with a test row, history = train row,
  targets = test row.
- leave-one-out: for users with >= min_length events, by (time, file position): the last event is the test
  target, the one before it the validation target, the rest train; shorter users stay in train.
  len(train) + test targets + validation targets = len(input), exactly (repeats included).
- temporal: one global cut per holdout; train is a time prefix of the input; for each holdout user history =
  their events up to the cut, targets = their events after it (up to the next cut); users with events on
  only one side of a cut are left out of that holdout.
- random holdout: users with >= 3 events get a random share of their events as test and validation targets;
  without repeated pairs, train + test targets + validation targets = the input, exactly; the test history is
  everything but the test targets, the validation history the training events.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.data.interactions import DataError, IdMap, Interactions
from genrec.data.splits import (
    Holdout,
    split_fixed,
    split_leave_one_out,
    split_random_holdout,
    split_strong_generalization,
    split_temporal,
)
from tests.conftest import block_interactions

PROPERTY = settings(max_examples=50, deadline=None)


# helpers -----------------------------------------------------------------------------------------------------
@st.composite
def tables(draw, repeats: bool | None = None, min_users: int = 3) -> Interactions:
    """Small random Interactions: string user ids ('u0', ...), item ids 0, 10, 20, ...; repeated (user, item)
    pairs only when `repeats` (None: drawn); timestamps with many ties or almost none."""
    if repeats is None:
        repeats = draw(st.booleans())
    n_users = draw(st.integers(min_users, 12))
    n_items = draw(st.integers(2, 15))
    n = draw(st.integers(1, 80))
    ties = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if repeats:
        users, items = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    else:
        pairs = rng.choice(n_users * n_items, size=min(n, n_users * n_items), replace=False)
        users, items = pairs // n_items, pairs % n_items
    stamps = rng.integers(0, 8 if ties else 10**9, len(users))
    return Interactions(users, items, rng.integers(1, 6, len(users)), stamps,
                        IdMap([f"u{u}" for u in range(n_users)], "user"), IdMap(np.arange(n_items) * 10, "item"))


def has_repeats(data: Interactions) -> bool:
    return len(set(zip(data.users.tolist(), data.items.tolist()))) < len(data)


def pairs(data: Interactions) -> Counter:
    return Counter(zip(data.user_ids.raw[data.users].tolist(), data.items.tolist()))


def history_pairs(h: Holdout) -> Counter:
    return Counter((u, int(i)) for r, u in enumerate(h.histories.user_ids.tolist()) for i in h.histories.sequence(r))


def target_pairs(h: Holdout) -> Counter:
    t = h.targets.tocoo()
    return Counter(zip(h.histories.user_ids[t.row].tolist(), t.col.tolist()))


def assert_consistent(h: Holdout, data: Interactions) -> None:
    """Raw user ids line up with `users`; targets are binary; histories and targets share the item columns."""
    assert h.histories.user_ids.tolist() == data.user_ids.raw[h.users].tolist()
    assert h.targets.shape == (len(h), data.n_items) and (h.targets.data == 1).all()


def assert_no_leakage(h: Holdout) -> None:
    """No target is in the same user's history."""
    assert h.histories.binary().multiply(h.targets).nnz == 0


def event_times(data: Interactions) -> dict[tuple[str, int], int]:
    """Timestamp of each (raw user, item) pair; only meaningful without repeats."""
    return dict(zip(zip(data.user_ids.raw[data.users].tolist(), data.items.tolist()), data.timestamps.tolist()))


def frame(rows: list[tuple], columns=("user", "item", "ts")) -> Interactions:
    return Interactions.from_frame(pd.DataFrame(rows, columns=list(columns)), timestamp="ts")


# strong generalisation ---------------------------------------------------------------------------------------
@PROPERTY
@given(tables(), st.data())
def test_strong_generalization_partitions_users_and_events(data, choose):
    k = choose.draw(st.integers(1, (data.n_users - 1) // 2))
    split = split_strong_generalization(data, n_heldout=k, seed=choose.draw(st.integers(0, 100)))
    test, val = split.test, split.validation
    train_users, test_users = set(split.train.user_ids.raw), set(test.histories.user_ids)
    val_users = set(val.histories.user_ids)
    assert len(test_users) == len(val_users) == k
    assert not (train_users & test_users or train_users & val_users or test_users & val_users)
    assert train_users | test_users | val_users == set(data.user_ids.raw)
    # train keeps every event of its users, values and timestamps included
    raw = data.user_ids.raw[data.users]
    mine = np.isin(raw, list(train_users))
    expect = sorted(zip(raw[mine], data.items[mine], data.values[mine], data.timestamps[mine]))
    t = split.train
    assert sorted(zip(t.user_ids.raw[t.users], t.items, t.values, t.timestamps)) == expect
    # held-out users keep only events on items some training user has (Liang et al.'s preprocessing)
    known = np.bincount(t.items, minlength=data.n_items) > 0
    kept = np.isin(raw, list(train_users)) | known[data.items]
    for h in (test, val):
        assert_consistent(h, data)
        n_events = np.bincount(data.users[kept], minlength=data.n_users)[h.users]
        assert [len(s) for s in h.histories.sequences()] == [math.ceil(0.8 * n) for n in n_events]
        held_out = set(h.histories.user_ids)
        assert set(history_pairs(h)) | set(target_pairs(h)) == {
            p for p in pairs(data) if p[0] in held_out and known[p[1]]}
    if not has_repeats(data):
        assert pairs(split.train) + history_pairs(test) + history_pairs(val) + target_pairs(test) + target_pairs(
            val) == pairs(data.select(kept))
        assert_no_leakage(test)
        assert_no_leakage(val)


def test_strong_generalization_fold_in_share_is_80_percent():
    data = block_interactions(n_users=400, n_items=400)  # about 40 events per user
    split = split_strong_generalization(data, n_heldout=0.25, seed=0)
    for h in (split.test, split.validation):
        assert len(h) == 100
        n_hist = sum(len(s) for s in h.histories.sequences())
        share = n_hist / (n_hist + h.targets.nnz)
        assert 0.8 <= share <= 0.83, share  # ceil(0.8 n) per user: a little over 80 %


def test_strong_generalization_is_deterministic_given_a_seed():
    data = block_interactions()
    a, b = (split_strong_generalization(data, n_heldout=20, seed=7) for _ in range(2))
    c = split_strong_generalization(data, n_heldout=20, seed=8)
    assert a.train.fingerprint() == b.train.fingerprint()
    for x, y in ((a.test, b.test), (a.validation, b.validation)):
        assert x.users.tolist() == y.users.tolist()
        assert (x.targets != y.targets).nnz == 0
        assert [s.tolist() for s in x.histories.sequences()] == [s.tolist() for s in y.histories.sequences()]
    assert a.test.users.tolist() != c.test.users.tolist()
    assert a.train.fingerprint() != c.train.fingerprint()


def test_strong_generalization_share_of_users_and_errors():
    data = block_interactions()  # 120 users
    split = split_strong_generalization(data, n_heldout=0.1, validation=False)
    assert split.validation is None and len(split.test) == 12 and split.train.n_users == 108
    with pytest.raises(DataError, match="n_heldout"):
        split_strong_generalization(data, n_heldout=60)  # 60 test + 60 validation leaves no training user


# fixed train/test files --------------------------------------------------------------------------------------
def fixed_pair():
    users, items = IdMap(["a", "b", "c"], "user"), IdMap([0, 1, 2, 3, 4], "item")
    train = Interactions([0, 0, 1, 2], [0, 1, 2, 3], None, None, users, items)
    test = Interactions([0, 2, 2], [2, 0, 4], None, None, users, items)
    return train, test


def test_fixed_split_holds_users_with_test_rows():
    train, test = fixed_pair()
    split = split_fixed(train, test)
    h = split.test
    assert split.train is train and split.validation is None
    assert_consistent(h, train)
    assert h.histories.user_ids.tolist() == ["a", "c"]  # b has no test row
    assert [s.tolist() for s in h.histories.sequences()] == [[0, 1], [3]]
    assert h.targets.toarray().tolist() == [[0, 0, 1, 0, 0], [1, 0, 0, 0, 1]]
    assert_no_leakage(h)


def test_holdout_subset_takes_indices_or_a_mask():
    h = split_fixed(*fixed_pair()).test
    for rows in ([1], np.array([False, True])):
        part = h.subset(rows)
        assert part.histories.user_ids.tolist() == ["c"] and part.users.tolist() == [2]
        assert [s.tolist() for s in part.histories.sequences()] == [[3]]
        assert part.targets.toarray().tolist() == [[1, 0, 0, 0, 1]]


def test_fixed_split_accepts_a_test_user_map_that_is_a_prefix():
    train, _ = fixed_pair()
    test = Interactions([1], [4], None, None, IdMap(["a", "b"], "user"), train.item_ids)
    h = split_fixed(train, test).test
    assert h.histories.user_ids.tolist() == ["b"] and h.targets.toarray().tolist() == [[0, 0, 0, 0, 1]]


def test_fixed_split_rejects_user_maps_that_do_not_line_up():
    train, _ = fixed_pair()
    test = Interactions([0], [4], None, None, IdMap(["b"], "user"), train.item_ids)  # 'b' would land on 'a'
    with pytest.raises(DataError, match="user id map"):
        split_fixed(train, test)
    test = Interactions([0], [4], None, None, train.user_ids, IdMap([4, 3, 2, 1, 0], "item"))
    with pytest.raises(DataError, match="item id map"):
        split_fixed(train, test)


@PROPERTY
@given(tables(), st.integers(0, 2**32 - 1))
def test_fixed_split_invariants(data, seed):
    is_test = np.random.default_rng(seed).random(len(data)) < 0.3
    train, test = data.select(~is_test), data.select(is_test)
    h = split_fixed(train, test).test
    assert_consistent(h, train)
    assert set(h.histories.user_ids) == set(data.user_ids.raw[test.users])
    assert history_pairs(h) == Counter({p: c for p, c in pairs(train).items() if p[0] in set(h.histories.user_ids)})
    assert set(target_pairs(h)) == set(pairs(test))


# leave-one-out ---------------------------------------------------------------------------------------------
def test_leave_one_out_keeps_last_item_for_test():
    data = frame([
        ("a", "i10", 3), ("a", "i11", 1), ("a", "i13", 4), ("a", "i12", 2),  # file order is not time order
        ("b", "i20", 5), ("b", "i21", 5), ("b", "i22", 5),  # a tie: the later row counts as later
        ("c", "i30", 1), ("c", "i31", 2),  # too short: stays in training
    ])
    split = split_leave_one_out(data)
    item = lambda raw: int(data.item_ids.index([raw])[0])
    test, val = split.test, split.validation
    assert test.histories.user_ids.tolist() == ["a", "b"] == val.histories.user_ids.tolist()
    assert [sorted(test.targets[r].indices) for r in range(2)] == [[item("i13")], [item("i22")]]
    assert [sorted(val.targets[r].indices) for r in range(2)] == [[item("i10")], [item("i21")]]
    assert test.histories.sequence(0).tolist() == [item("i11"), item("i12"), item("i10")]
    assert val.histories.sequence(0).tolist() == [item("i11"), item("i12")]
    assert test.histories.sequence(1).tolist() == [item("i20"), item("i21")]
    train = split.train.to_frame()
    assert sorted(train.item) == ["i11", "i12", "i20", "i30", "i31"]


def test_leave_one_out_without_validation_trains_on_all_but_the_last():
    data = frame([("a", 1, 1), ("a", 2, 2), ("a", 3, 3)])
    split = split_leave_one_out(data, validation=False)
    assert split.validation is None
    assert sorted(split.train.to_frame().item) == [1, 2]
    assert split.test.histories.sequence(0).tolist() == data.item_ids.index([1, 2]).tolist()


@PROPERTY
@given(tables(min_users=1), st.integers(1, 5))
def test_leave_one_out_invariants(data, min_length):
    split = split_leave_one_out(data, min_length=min_length)
    test, val = split.test, split.validation
    counts = np.bincount(data.users, minlength=data.n_users)
    assert test.users.tolist() == np.flatnonzero(counts >= min_length).tolist() == val.users.tolist()
    assert len(split.train) + test.targets.nnz + val.targets.nnz == len(data)
    pos = np.arange(len(data))
    for r, u in enumerate(test.users):
        mine = np.flatnonzero(data.users == u)
        by_time = data.items[mine[np.lexsort((pos[mine], data.timestamps[mine]))]].tolist()
        assert test.targets[r].indices.tolist() == [by_time[-1]]
        if len(by_time) >= 2:
            assert val.targets[r].indices.tolist() == [by_time[-2]]
        assert test.histories.sequence(r).tolist() == by_time[:-1]
        assert val.histories.sequence(r).tolist() == by_time[:-2]
    for h in (test, val):
        assert_consistent(h, data)
        if not has_repeats(data):
            assert_no_leakage(h)
    assert split.train.n_users == data.n_users and split.train.item_ids is data.item_ids


# temporal ------------------------------------------------------------------------------------------------------
def test_temporal_split_cuts_by_share_of_events():
    rng = np.random.default_rng(0)
    n = 100
    users, items = rng.integers(0, 10, n), rng.permutation(n)  # distinct items: no repeated pairs
    data = Interactions(users, items, None, rng.permutation(n) * 60, IdMap(np.arange(10)), IdMap(np.arange(n)))
    split = split_temporal(data, test_fraction=0.2, validation_fraction=0.1)
    assert len(split.train) == 70
    times = event_times(data)
    train_max = split.train.timestamps.max()
    test_times = [times[p] for p in target_pairs(split.test)]
    val_times = [times[p] for p in target_pairs(split.validation)]
    assert sorted(test_times) == sorted(data.timestamps)[80:]  # every user here has a history before the cut
    assert sorted(val_times) == sorted(data.timestamps)[70:80]
    assert min(test_times) > max(val_times) > train_max


def test_temporal_split_needs_timestamps():
    data = Interactions([0, 1], [0, 1], None, None, IdMap([0, 1]), IdMap([0, 1]), source="log.csv")
    with pytest.raises(DataError, match="log.csv: a temporal split needs timestamps"):
        split_temporal(data)


@PROPERTY
@given(tables(repeats=False), st.sampled_from([0.1, 0.2, 0.5]), st.sampled_from([0.0, 0.1, 0.2]))
def test_temporal_split_invariants(data, test_fraction, validation_fraction):
    split = split_temporal(data, test_fraction=test_fraction, validation_fraction=validation_fraction)
    times = event_times(data)
    raw = data.user_ids.raw[data.users]
    train_max = split.train.timestamps.max() if len(split.train) else -1
    # train is a time prefix: everything left out of it is later than all of it
    left_out = Counter(pairs(data)) - pairs(split.train)
    assert all(times[p] > train_max for p in left_out)
    holdouts = [h for h in (split.validation, split.test) if h is not None and len(h)]
    ends = [max(times[p] for p in target_pairs(h)) for h in holdouts]
    for h, end in zip(holdouts, ends):
        assert_consistent(h, data)
        assert_no_leakage(h)
        hist_t = [times[p] for p in history_pairs(h)]
        targ_t = [times[p] for p in target_pairs(h)]
        assert max(hist_t) < min(targ_t), "every target is later than every history event"
        for u in set(h.histories.user_ids):  # each holdout user: history + targets = all events up to `end`
            mine = {(u, int(i)) for i in data.items[(raw == u) & (data.timestamps <= end)]}
            assert {p for p in history_pairs(h) | target_pairs(h) if p[0] == u} == mine
        for u in set(data.user_ids.raw) - set(h.histories.user_ids):  # left out: events on one side only
            t = data.timestamps[(raw == u) & (data.timestamps <= end)]
            assert (t < min(targ_t)).all() or (t > max(hist_t)).all()
    if split.validation is not None and len(split.validation) and len(split.test):
        assert max(times[p] for p in target_pairs(split.validation)) < min(
            times[p] for p in target_pairs(split.test))


# random holdout ------------------------------------------------------------------------------------------------
@PROPERTY
@given(tables(), st.integers(0, 100))
def test_random_holdout_invariants(data, seed):
    split = split_random_holdout(data, seed=seed)
    test, val = split.test, split.validation
    counts = np.bincount(data.users, minlength=data.n_users)
    eligible = set(data.user_ids.raw[counts >= 3])
    for h in (test, val):
        assert_consistent(h, data)
        assert set(h.histories.user_ids) <= eligible
        assert (np.diff(h.targets.indptr) > 0).all(), "users without targets are left out"
    short = {p: c for p, c in pairs(data).items() if p[0] not in eligible}
    assert short == {p: c for p, c in pairs(split.train).items() if p[0] not in eligible}
    if not has_repeats(data):
        assert pairs(split.train) + target_pairs(test) + target_pairs(val) == pairs(data)
        assert_no_leakage(test)
        assert_no_leakage(val)
        train_pairs = pairs(split.train)
        for r, u in enumerate(val.histories.user_ids):
            assert Counter((u, int(i)) for i in val.histories.sequence(r)) == Counter(
                {p: c for p, c in train_pairs.items() if p[0] == u})
        everything_but_test = pairs(data) - target_pairs(test)
        for r, u in enumerate(test.histories.user_ids):
            assert Counter((u, int(i)) for i in test.histories.sequence(r)) == Counter(
                {p: c for p, c in everything_but_test.items() if p[0] == u})


def test_random_holdout_shares_and_determinism():
    data = block_interactions(n_users=300)
    a, b = split_random_holdout(data, seed=1), split_random_holdout(data, seed=1)
    c = split_random_holdout(data, seed=2)
    assert a.train.fingerprint() == b.train.fingerprint() != c.train.fingerprint()
    assert (a.test.targets != b.test.targets).nnz == 0
    assert 0.17 < a.test.targets.nnz / len(data) < 0.23
    assert 0.08 < a.validation.targets.nnz / len(data) < 0.12
