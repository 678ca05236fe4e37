"""The built-in synthetic data set: the structure it promises (long tail, tastes, order, ratings, attributes),
determinism, speed, and enough signal that a simple collaborative model beats popularity by a wide margin."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.data.interactions import IdMap, Interactions
from genrec.data.splits import split_strong_generalization
from genrec.data.synthetic import CATEGORIES, PRICE_BANDS, TAGS, describe, make_synthetic
from genrec.evaluation.evaluate import evaluate, evaluate_topk
from genrec.models import Popularity
from genrec.models.base import top_k


@pytest.fixture(scope="module")
def data() -> Interactions:
    return make_synthetic()


def _user_starts(data: Interactions) -> np.ndarray:
    """Indices where a new user's events begin (the table is ordered by user as produced)."""
    return np.flatnonzero(np.r_[True, data.users[1:] != data.users[:-1]])


def _consecutive_pairs(data: Interactions) -> np.ndarray:
    """(n_events,) bool: event j and event j-1 belong to the same user."""
    return np.r_[False, data.users[1:] == data.users[:-1]]


def test_default_data_has_the_requested_sizes_ratings_and_timestamps(data):
    assert (data.n_users, data.n_items) == (2000, 1500)
    assert set(np.unique(data.values)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert data.has_timestamps
    assert 30 <= len(data) / data.n_users <= 50  # mean_history=40


def test_same_seed_gives_identical_frames_and_another_seed_does_not():
    a, b, c = make_synthetic(seed=3), make_synthetic(seed=3), make_synthetic(seed=4)
    pd.testing.assert_frame_equal(a.to_frame(), b.to_frame())
    pd.testing.assert_frame_equal(a.item_attributes, b.item_attributes)
    pd.testing.assert_frame_equal(a.user_attributes, b.user_attributes)
    assert a.fingerprint() != c.fingerprint()
    assert not a.item_attributes.equals(c.item_attributes)


def test_default_size_is_generated_in_under_two_seconds():
    start = time.perf_counter()
    make_synthetic(seed=11)
    assert time.perf_counter() - start < 2.0


def test_item_popularity_is_long_tailed(data):
    """Documented: the top 20% of items take roughly 60-80% of events (about 0.66 with the defaults)."""
    share = describe(data)["top20_share"]
    assert 0.60 <= share <= 0.80


def test_history_lengths_are_long_tailed_above_a_minimum(data):
    lengths = np.bincount(data.users, minlength=data.n_users)
    assert lengths.min() >= 5
    assert np.median(lengths) < lengths.mean()  # right-skewed
    assert lengths.max() >= 4 * np.median(lengths)


def test_users_never_repeat_an_item(data):
    keys = data.users.astype(np.int64) * data.n_items + data.items
    assert len(np.unique(keys)) == len(data)


def test_timestamps_increase_along_each_users_events_as_produced(data):
    assert np.all(np.diff(data.users) >= 0)
    same_user = _consecutive_pairs(data)
    assert np.all(np.diff(data.timestamps)[same_user[1:]] > 0)
    assert data.timestamps.min() >= 1_577_836_800  # seconds since 2020-01-01, integers
    assert data.timestamps.dtype == np.int64


def test_item_attributes_are_aligned_complete_and_follow_the_vocabularies(data):
    attrs = data.item_attributes
    assert list(attrs.columns) == ["category", "price_band", "tags", "title"]
    assert len(attrs) == data.n_items and not attrs.isna().any().any()
    assert set(attrs["category"]) <= set(CATEGORIES)
    assert set(attrs["price_band"]) == set(PRICE_BANDS)
    tags = attrs["tags"].str.split("|")
    assert tags.map(len).between(1, 3).all()
    assert set(tags.explode()) <= set(TAGS)
    assert attrs["title"].iloc[17] == f"Item 17 ({attrs['category'].iloc[17]})"


def test_user_attributes_are_aligned_and_complete(data):
    attrs = data.user_attributes
    assert {"age_band", "region"} <= set(attrs.columns)
    assert len(attrs) == data.n_users and not attrs.isna().any().any()


def test_next_item_shares_the_previous_items_category_more_often_than_chance(data):
    """Sessions keep one taste, so order carries signal: compare with each user's events shuffled."""
    category = data.item_attributes["category"].to_numpy()[data.items]
    pairs = _consecutive_pairs(data)
    in_order = (category[1:] == category[:-1])[pairs[1:]].mean()
    rng = np.random.default_rng(0)
    shuffled = category[np.lexsort((rng.random(len(data)), data.users))]
    by_chance = (shuffled[1:] == shuffled[:-1])[pairs[1:]].mean()
    assert in_order > 1.5 * by_chance


def test_tastes_drift_to_the_next_category_on_the_ring():
    """Late events lean to the category after the user's early favourite (categories follow the taste ring)."""
    data = make_synthetic(drift=1.0, seed=1)
    cat_index = {c: k for k, c in enumerate(CATEGORIES)}
    category = data.item_attributes["category"].map(cat_index).to_numpy()[data.items]
    starts = np.r_[_user_starts(data), len(data)]
    early_share, late_share = [], []
    for s, e in zip(starts[:-1], starts[1:], strict=True):
        if e - s < 20:
            continue
        quarter = (e - s) // 4
        early, late = category[s : s + quarter], category[e - quarter : e]
        following = (np.bincount(early).argmax() + 1) % 12
        early_share.append((early == following).mean())
        late_share.append((late == following).mean())
    assert np.mean(late_share) > np.mean(early_share) + 0.1


def test_ratings_are_higher_for_items_of_the_users_favourite_category(data):
    frame = pd.DataFrame({"user": data.users, "rating": data.values,
                          "category": data.item_attributes["category"].to_numpy()[data.items]})
    favourite = frame.groupby("user")["category"].agg(lambda c: c.value_counts().index[0])
    in_taste = frame["category"].to_numpy() == favourite.to_numpy()[frame["user"].to_numpy()]
    assert frame["rating"][in_taste].mean() > frame["rating"][~in_taste].mean() + 0.3


def test_implicit_writes_one_everywhere_and_keeps_the_events():
    implicit, rated = make_synthetic(n_users=100, implicit=True), make_synthetic(n_users=100)
    assert np.all(implicit.values == 1.0)
    np.testing.assert_array_equal(implicit.items, rated.items)


@settings(max_examples=15, deadline=None)
@given(n_users=st.integers(1, 60), n_items=st.integers(20, 200), n_tastes=st.integers(1, 20),
       mean_history=st.floats(5.0, 30.0), seed=st.integers(0, 10_000))
def test_small_data_sets_keep_every_invariant(n_users, n_items, n_tastes, mean_history, seed):
    data = make_synthetic(n_users, n_items, n_tastes, mean_history, seed)
    assert data.n_users == n_users and data.n_items == n_items
    assert np.bincount(data.users, minlength=n_users).min() >= 5
    assert np.all(np.diff(data.timestamps)[_consecutive_pairs(data)[1:]] > 0)
    assert len(data.item_attributes) == n_items and not data.item_attributes.isna().any().any()
    assert len(data.user_attributes) == n_users


def test_rejects_arguments_that_cannot_make_a_data_set():
    with pytest.raises(ValueError, match="min_history"):
        make_synthetic(n_items=10, min_history=5)
    with pytest.raises(ValueError, match="mean_history"):
        make_synthetic(mean_history=2.0)
    with pytest.raises(ValueError, match="drift"):
        make_synthetic(drift=1.5)


def test_describe_counts_a_hand_checkable_table():
    # items 0 and 1 take 4 of 5 events; 10 items, so the top 20% is those two
    data = Interactions(np.array([0, 0, 0, 1, 1]), np.array([0, 1, 2, 0, 1]), None, None,
                        IdMap(np.arange(2)), IdMap(np.arange(10)))
    stats = describe(data)
    assert stats["users"] == 2 and stats["items"] == 10 and stats["interactions"] == 5
    assert stats["density"] == pytest.approx(5 / 20)
    assert stats["top20_share"] == pytest.approx(4 / 5)
    assert stats["median_history"] == 2.5 and stats["min_history"] == 2 and stats["max_history"] == 3
    assert stats["values"] == "implicit (1.0)" and stats["timestamps"] is False


def _item_cosine_top20(train: Interactions, histories) -> np.ndarray:
    """Item-item cosine (X^T X over binary training data, normalised, zero diagonal); scores = history @ S."""
    x = train.csr(binary=True)
    co = (x.T @ x).toarray().astype(np.float64)
    norm = np.sqrt(np.diag(co))
    norm[norm == 0] = 1.0
    sim = co / norm[:, None] / norm[None, :]
    np.fill_diagonal(sim, 0.0)
    h = histories.binary()
    scores = np.asarray(h @ sim)
    scores[h.nonzero()] = -np.inf
    return top_k(scores, 20)[0]


def test_item_cosine_beats_popularity_by_a_wide_margin(data):
    split = split_strong_generalization(data, n_heldout=200, seed=0)
    popularity = evaluate(Popularity().fit(split.train), split.test, ks=(20,), train=split.train)["ndcg@20"]
    topk = _item_cosine_top20(split.train, split.test.histories)
    cosine = evaluate_topk(topk, split.test, ks=(20,), popularity=split.train.item_popularity(),
                           n_pop_users=split.train.n_users)["ndcg@20"]
    assert cosine >= 1.5 * popularity, (cosine, popularity)
