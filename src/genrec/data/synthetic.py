"""A built-in synthetic data set with the structure real logs have: tastes, a long tail, sessions and drift.

`make_synthetic` draws a generative story, vectorised over all events (no Python loop per interaction):

- Tastes. `n_tastes` taste groups sit on a ring (0 → 1 → ... → n_tastes-1 → 0). Every item has a taste profile:
  `item_purity` of its mass on one dominant taste, the rest a sparse Dirichlet draw. Every user is a sparse
  mixture over tastes, θ_u ~ Dirichlet(`user_concentration`).
- Popularity. Items get Zipf weights w_i ∝ rank_i^-`zipf_exponent` (ranks a random permutation). An event of
  taste z picks item i with probability ∝ profile_i[z] · w_i, so choice combines taste affinity and popularity;
  a share `popularity_share` of events ignores taste and picks ∝ w_i alone. With the defaults the top 20% of
  items take ~66% of events (0.66 for seeds 0-2).
- Histories. Lengths are `min_history` + log-normal (mean `mean_history` in all, sigma `history_sigma`), capped
  at n_items // 4. A user never repeats an item: draws are made with replacement, then only the first
  occurrence of each item is kept (draws are oversampled so the target length is met).
- Order. A history is a run of sessions (geometric, mean `session_length` events); one session has one taste.
  Tastes drift along the ring: a session at fraction s of the history takes taste z+1 instead of the user's
  drawn taste z with probability `drift` · s. So the next item shares the taste of the previous one, and late
  items lean to the taste after the early ones: a sequence model has order to learn.
- Time. Integer seconds since `EPOCH` (2020-01-01 UTC): a user's first event falls uniformly in `span_days`,
  sessions are ~2 days apart, events in a session ~4 minutes apart; strictly increasing along each user's history.
- Values. Ratings 1-5 (default) from a user's affinity to the item at that time (θ_u after drift · profile_i),
  an item quality and noise: mean ≈ 3.6, higher for items of the user's tastes, so a rating threshold (e.g. ≥ 4
  as "liked") keeps the signal. `implicit=True` writes 1.0 everywhere instead.
- Attributes. `item_attributes` (row i = item i): `category` (its dominant taste's category 85% of the time),
  `price_band` (low/mid/high, taste-dependent), `tags` (1-3 `|`-joined tags, mostly from its taste's tags),
  `title` ("Item 17 (drama)"). `user_attributes` (row u = user u): `age_band`, `region`, each the dominant
  taste's preferred value 40% of the time, else uniform (a weak correlation).

`describe(data)` summarises any `Interactions` for `genrec datasets inspect`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from genrec.data.interactions import IdMap, Interactions

EPOCH = 1_577_836_800  # 2020-01-01T00:00:00Z, seconds
CATEGORIES = ("drama", "comedy", "action", "thriller", "romance", "documentary", "sci-fi", "animation",
              "horror", "fantasy", "crime", "music", "family", "history", "sport", "western")
TAGS = ("classic", "new", "award-winning", "cult", "family-friendly", "dark", "funny", "slow", "fast-paced",
        "visual", "twisty", "feel-good", "epic", "indie", "true-story", "quirky", "violent", "romantic",
        "musical", "space", "nature", "political", "retro", "sequel")
PRICE_BANDS = ("low", "mid", "high")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
REGIONS = ("north", "south", "east", "west", "central")
SESSION_GAP_S = 2 * 86_400  # mean seconds between sessions
EVENT_GAP_S = 240  # mean seconds between events in a session


def make_synthetic(
    n_users: int = 2000,
    n_items: int = 1500,
    n_tastes: int = 12,
    mean_history: float = 40.0,
    seed: int = 0,
    *,
    min_history: int = 5,
    history_sigma: float = 1.0,
    user_concentration: float = 0.05,
    item_purity: float = 0.95,
    zipf_exponent: float = 1.2,
    popularity_share: float = 0.02,
    session_length: float = 4.0,
    drift: float = 0.6,
    implicit: bool = False,
    span_days: float = 730.0,
) -> Interactions:
    """A synthetic interaction log (see the module docstring for the story), deterministic given `seed`.

    Returns `Interactions` with raw ids 0..n-1, events ordered by user then time, ratings 1-5 (or 1.0 when
    `implicit`), integer-second timestamps and item/user attribute frames. Default size runs in well under 1 s.
    """
    _check_args(n_users, n_items, n_tastes, mean_history, min_history, session_length, drift, popularity_share)
    r_items, r_users, r_events, r_time, r_values, r_attrs = (np.random.default_rng(s)
                                                             for s in np.random.SeedSequence(seed).spawn(6))
    dominant, profile = _item_tastes(r_items, n_items, n_tastes, item_purity)
    weight = np.arange(1, n_items + 1, dtype=np.float64)[r_items.permutation(n_items)] ** -zipf_exponent
    theta = r_users.dirichlet(np.full(n_tastes, user_concentration), size=n_users)
    lengths = _history_lengths(r_users, n_users, n_items, mean_history, min_history, history_sigma)
    cdf = _choice_cdf(profile, weight)
    users, items, session, frac = _histories(r_events, theta, lengths, cdf, min_history, session_length, drift,
                                             popularity_share, n_items)
    timestamps = _timestamps(r_time, users, session, n_users, span_days)
    if implicit:
        values = np.ones(len(users), np.float32)
    else:
        values = _ratings(r_values, theta, profile, users, items, frac, drift)
    return Interactions(
        users, items, values, timestamps,
        IdMap(np.arange(n_users), "user"), IdMap(np.arange(n_items), "item"),
        item_attributes=_item_attributes(r_attrs, dominant, n_tastes),
        user_attributes=_user_attributes(r_attrs, theta.argmax(1), n_tastes),
        source=f"synthetic(seed={seed})",
    )


def _check_args(n_users, n_items, n_tastes, mean_history, min_history, session_length, drift, popularity_share):
    if n_users < 1 or n_items < 1 or n_tastes < 1:
        raise ValueError(f"n_users, n_items and n_tastes must be >= 1, got {n_users}, {n_items}, {n_tastes}")
    if not 1 <= min_history <= n_items // 4:
        raise ValueError(f"min_history must be in 1..n_items // 4 = {n_items // 4}, got {min_history}")
    if mean_history < min_history:
        raise ValueError(f"mean_history ({mean_history}) must be at least min_history ({min_history})")
    if session_length < 1:
        raise ValueError(f"session_length must be >= 1 event, got {session_length}")
    if not (0 <= drift <= 1 and 0 <= popularity_share < 1):
        raise ValueError(f"drift must be in [0, 1] and popularity_share in [0, 1), got {drift}, {popularity_share}")


def _item_tastes(rng: np.random.Generator, n_items: int, n_tastes: int, purity: float):
    """dominant: (n_items,) taste index, balanced; profile: (n_items, n_tastes) rows summing to 1."""
    dominant = rng.permutation(np.arange(n_items) % n_tastes)
    profile = (1 - purity) * rng.dirichlet(np.full(n_tastes, 0.2), size=n_items)
    profile[np.arange(n_items), dominant] += purity
    return dominant, profile


def _history_lengths(rng, n_users, n_items, mean_history, min_history, sigma) -> np.ndarray:
    """(n_users,) target lengths: min_history + log-normal with the remaining mean, capped at n_items // 4."""
    extra = mean_history - min_history
    if extra <= 0:
        return np.full(n_users, min_history, np.int64)
    tail = rng.lognormal(np.log(extra) - sigma**2 / 2, sigma, size=n_users)
    return np.minimum(min_history + np.round(tail).astype(np.int64), max(n_items // 4, min_history))


def _choice_cdf(profile: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(n_tastes + 1, n_items) cumulative choice distributions: row z ∝ profile[:, z] · weight; the last row
    ∝ weight alone. Row z is offset by z so that one searchsorted over the flat array samples any row."""
    p = np.vstack([profile.T * weight, weight])
    cdf = np.cumsum(p / p.sum(1, keepdims=True), axis=1)
    cdf[:, -1] = 1.0
    return cdf + np.arange(len(cdf))[:, None]


def _histories(rng, theta, lengths, cdf, min_history, session_length, drift, popularity_share, n_items):
    """Sample every user's history; redraw with more oversampling the users whose distinct items fell short
    of their target length (three rounds at most, then only those under min_history).

    Returns users, items, session (a global session id per event) and frac (position / target length), all
    (n_events,), ordered by user then position."""
    todo, factor, parts = np.arange(len(lengths)), 1.5, []
    for round_ in range(8):
        part = _sample_events(rng, todo, theta, lengths, cdf, factor, session_length, drift, popularity_share,
                              n_items)
        need = lengths[todo] if round_ < 3 else min_history  # after 3 rounds, a long history may fall short
        short = np.bincount(part[0], minlength=len(lengths))[todo] < need
        keep = ~np.isin(part[0], todo[short])
        parts.append(tuple(a[keep] for a in part))
        todo, factor = todo[short], factor * 2
        if len(todo) == 0:
            break
    else:
        raise ValueError(f"could not draw {min_history} distinct items for {len(todo)} users; lower min_history")
    users, items, session, frac = (np.concatenate(a) for a in zip(*parts, strict=True))
    order = np.argsort(users, kind="stable")
    return users[order], items[order], session[order], frac[order]


def _sample_events(rng, todo, theta, lengths, cdf, factor, session_length, drift, popularity_share, n_items):
    """Draw ceil(factor · length) + 10 events for each user in `todo`, keep each item's first occurrence, and
    cut at the target length. Sessions get a taste from θ_u, shifted one step along the ring w.p. drift · s."""
    n_tastes = theta.shape[1]
    n_draw = np.ceil(lengths[todo] * factor).astype(np.int64) + 10
    user = np.repeat(todo, n_draw)
    pos = np.arange(len(user)) - np.repeat(np.cumsum(n_draw) - n_draw, n_draw)
    frac = np.minimum(1.0, pos / lengths[user])
    new_session = (pos == 0) | (rng.random(len(user)) < 1.0 / session_length)
    session = np.cumsum(new_session) - 1
    s_user = user[new_session]
    taste = (np.cumsum(theta[s_user], axis=1) < rng.random(len(s_user))[:, None]).sum(1)
    taste = np.minimum(taste, n_tastes - 1)  # guards against a cumsum ending just below 1.0
    taste = (taste + (rng.random(len(s_user)) < drift * frac[new_session])) % n_tastes
    row = np.where(rng.random(len(user)) < popularity_share, n_tastes, taste[session])
    item = np.searchsorted(cdf.ravel(), row + rng.random(len(user)), side="right") - row * n_items
    item = np.minimum(item, n_items - 1)
    first = np.zeros(len(user), bool)
    first[np.unique(user * n_items + item, return_index=True)[1]] = True
    rank = np.cumsum(first) - first
    rank = rank - np.repeat(rank[np.cumsum(n_draw) - n_draw], n_draw)
    keep = first & (rank < lengths[user])
    return user[keep], item[keep], session[keep], frac[keep]


def _timestamps(rng, users, session, n_users, span_days) -> np.ndarray:
    """Integer seconds since EPOCH, strictly increasing along each user's events: a uniform start within
    span_days, exponential gaps between sessions (mean 2 days) and within them (mean 4 minutes)."""
    start = EPOCH + rng.integers(0, int(span_days * 86_400), size=n_users)
    first = np.r_[True, users[1:] != users[:-1]]
    new_session = first | np.r_[True, session[1:] != session[:-1]]
    gap = np.where(new_session, rng.exponential(SESSION_GAP_S, len(users)), rng.exponential(EVENT_GAP_S, len(users)))
    gap = np.where(first, 0, 1 + gap.astype(np.int64))
    elapsed = np.cumsum(gap)
    first_idx = np.flatnonzero(first)
    offset = elapsed[first_idx][np.cumsum(first) - 1]
    return start[users] + elapsed - offset


def _ratings(rng, theta, profile, users, items, frac, drift) -> np.ndarray:
    """Ratings 1-5: 3.6 + 0.9 · standardised log affinity + item quality (sd 0.4) + noise (sd 0.6), rounded.

    Affinity is θ_u after drift (the taste mixture at that point in the history) · the item's taste profile."""
    now = theta[users] * (1 - drift * frac[:, None]) + np.roll(theta, 1, axis=1)[users] * (drift * frac[:, None])
    affinity = np.log((now * profile[items]).sum(1) + 1e-6)
    z = (affinity - affinity.mean()) / max(affinity.std(), 1e-9)
    quality = rng.normal(0.0, 0.4, size=profile.shape[0])
    raw = 3.6 + 0.9 * z + quality[items] + rng.normal(0.0, 0.6, size=len(users))
    return np.clip(np.round(raw), 1, 5).astype(np.float32)


def _item_attributes(rng, dominant: np.ndarray, n_tastes: int) -> pd.DataFrame:
    """category, price_band, tags, title for every item (row i = item i), correlated with the dominant taste."""
    n_items, n_cat = len(dominant), min(n_tastes, len(CATEGORIES))
    cat = np.where(rng.random(n_items) < 0.85, dominant % n_cat, rng.integers(0, n_cat, n_items))
    price_pref = rng.dirichlet(np.ones(len(PRICE_BANDS)), size=n_tastes)  # (n_tastes, 3) per-taste price mix
    price = (np.cumsum(price_pref[dominant], axis=1) < rng.random(n_items)[:, None]).sum(1)
    price = np.minimum(price, len(PRICE_BANDS) - 1)
    taste_tags = np.stack([rng.choice(len(TAGS), 3, replace=False) for _ in range(n_tastes)])  # (n_tastes, 3)
    own = taste_tags[dominant, rng.integers(0, 3, (3, n_items))].T  # (n_items, 3) from the item's taste
    tags = np.where(rng.random((n_items, 3)) < 0.8, own, rng.integers(0, len(TAGS), (n_items, 3)))
    n_tags = rng.integers(1, 4, n_items)
    names = np.asarray(TAGS, dtype=object)
    tag_text = ["|".join(dict.fromkeys(names[t[:k]])) for t, k in zip(tags, n_tags, strict=True)]  # per item
    category = np.asarray(CATEGORIES, dtype=object)[cat]
    return pd.DataFrame({
        "category": category,
        "price_band": np.asarray(PRICE_BANDS, dtype=object)[price],
        "tags": tag_text,
        "title": [f"Item {i} ({c})" for i, c in enumerate(category)],
    })


def _user_attributes(rng, dominant: np.ndarray, n_tastes: int) -> pd.DataFrame:
    """age_band and region per user (row u = user u): the dominant taste's preferred value w.p. 0.4, else
    uniform; a weak signal for content-aware models."""
    n = len(dominant)
    columns = {}
    for name, values in (("age_band", AGE_BANDS), ("region", REGIONS)):
        preferred = rng.integers(0, len(values), n_tastes)
        pick = np.where(rng.random(n) < 0.4, preferred[dominant], rng.integers(0, len(values), n))
        columns[name] = np.asarray(values, dtype=object)[pick]
    return pd.DataFrame(columns)


def describe(data: Interactions) -> dict:
    """Summary statistics of any `Interactions`: sizes, density, the popularity long tail and history lengths.

    top20_share: share of events on the 20% of items with the most events. History lengths count events."""
    per_item = np.bincount(data.items, minlength=data.n_items)
    per_user = np.bincount(data.users, minlength=data.n_users)
    n_top = max(1, int(round(0.2 * data.n_items)))
    n_events = len(data)
    return {
        "users": data.n_users,
        "items": data.n_items,
        "interactions": n_events,
        "density": n_events / max(data.n_users * data.n_items, 1),
        "top20_share": float(np.sort(per_item)[::-1][:n_top].sum() / max(n_events, 1)),
        "median_history": float(np.median(per_user)) if data.n_users else 0.0,
        "mean_history": float(per_user.mean()) if data.n_users else 0.0,
        "min_history": int(per_user.min()) if data.n_users else 0,
        "max_history": int(per_user.max()) if data.n_users else 0,
        "items_without_events": int((per_item == 0).sum()),
        "values": _value_range(data.values),
        "timestamps": data.has_timestamps,
    }


def _value_range(values: np.ndarray) -> str:
    """'implicit (1.0)' when every value is 1.0, else 'min..max' (e.g. '1..5')."""
    if len(values) == 0:
        return "none"
    lo, hi = float(values.min()), float(values.max())
    return "implicit (1.0)" if lo == hi == 1.0 else f"{lo:g}..{hi:g}"
