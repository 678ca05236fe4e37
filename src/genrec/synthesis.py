"""Synthetic users from a trained generative recommender, how faithful and how private they are, and writing them
as a data set.

- `generate_users(model, n_users, length_from)`: histories sampled from Mult-VAE / RecVAE (a latent code from
  the prior), CFGAN (a condition vector through the generator) or a sequence model with `generate` (SASRec).
- `fidelity_report(synthetic, real_train, real_test)`: item-popularity and history-length distances, item
  co-occurrence agreement, train-on-synthetic / test-on-real utility with EASE, and nearest-neighbour Jaccard
  against the real training users (memorisation).
- `write_synthetic(interactions, path)`: a CSV `user,item,value,timestamp` that `genrec.data.loaders.load_table`
  reads back.
- `generate_command(...)`: the body of `genrec generate`.

Every draw is seeded: the same model, data and seed give the same users.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from genrec.data.interactions import DataError, Histories, IdMap, Interactions
from genrec.data.splits import Holdout, Split

SCORE_BATCH = 512


# generation ---------------------------------------------------------------------------------------------------
def generate_users(model, n_users: int, length_from: Interactions, seed: int = 0, temperature: float = 1.0,
                   condition: str = "popularity", seed_share: float = 0.5) -> Interactions:
    """`n_users` synthetic users sampled from a fitted generative `model`.

    Each user's length is drawn from the distinct-item counts of the users of `length_from` (the training data,
    whose item id map the result shares). Items are drawn without replacement from the model's distribution
    over items, sharpened (temperature < 1) or flattened (> 1) by `temperature`:
    - Mult-VAE / RecVAE: z ~ N(0, I) from the prior, decoder softmax (Gumbel top-L sampling); with
      `condition="partial"`, the decoder's logits at the posterior mean of a random `seed_share` of a random
      real training user's items instead (realistic, but derived from one real person, as CFGAN's "partial");
    - CFGAN: G's preference vector for a condition c_u, items drawn with probability proportional to its
      values. `condition="popularity"` (default): c_u is a random basket of round(seed_share * L) items drawn
      by item popularity, so no real user's history enters generation (only what G learned from them);
      `condition="partial"`: c_u is a random `seed_share` of a random real training user's items, which gives
      more realistic users but derives each synthetic user from one real person (see the report's
      memorisation figure before sharing such data);
    - sequence models with `generate(histories, n_steps, temperature, top_k, seed)` (SASRec): a start item
      from the training users' first items, then autoregressive sampling; repeats may occur.
    Result: Interactions with users `synthetic-0..`, values 1.0, timestamps = position in the draw (0, 1, ...).
    """
    if n_users < 1:
        raise ValueError(f"n_users must be at least 1, got {n_users}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if getattr(model, "n_items_", None) != length_from.n_items:
        raise ValueError(f"the model has {getattr(model, 'n_items_', None)} items, length_from has "
                         f"{length_from.n_items}: generate from the data the model was trained on")
    rng = np.random.default_rng(seed)
    real_lengths = np.diff(length_from.csr().indptr)
    real_lengths = real_lengths[real_lengths > 0]
    if not len(real_lengths):
        raise DataError(f"{length_from.source}: no user has any interaction to take lengths from")
    lengths = np.minimum(rng.choice(real_lengths, n_users), length_from.n_items)
    kind = model_kind(model)
    if kind == "sequence":
        item_lists = _sequence_users(model, lengths, length_from, rng, temperature)
    else:
        logits = _vae_logits if kind == "vae" else _cfgan_logits
        item_lists = _draw_without_replacement(
            lambda rows: logits(model, rows, lengths, length_from, rng, condition, seed_share) / temperature,
            lengths, rng)
    return _as_interactions(item_lists, length_from.item_ids, f"synthetic:{getattr(model, 'name', kind)}")


def model_kind(model) -> str:
    """'vae', 'cfgan' or 'sequence': which way `generate_users` samples from `model` (by duck typing)."""
    module = getattr(model, "module_", None)
    if callable(getattr(model, "generate", None)) and getattr(model, "needs_order", False):
        return "sequence"
    if module is not None and hasattr(module, "generator"):
        return "cfgan"
    if module is not None and (hasattr(module, "decode") or hasattr(module, "decoder")):
        if getattr(module, "variational", True) is False:
            raise ValueError(f"{type(model).__name__} is a denoising autoencoder: it has no prior to sample from")
        return "vae"
    raise ValueError(f"{type(model).__name__} is not a generative model genrec can sample users from "
                    "(Mult-VAE, RecVAE, CFGAN or a sequence model with generate())")


def _vae_logits(model, rows: np.ndarray, lengths, length_from, rng, condition, seed_share) -> np.ndarray:
    """(len(rows), n_items) decoder logits at z ~ N(0, I), or at the posterior mean of a partial real user."""
    if condition == "partial":
        return np.asarray(model.score(_partial_users(len(rows), length_from, rng, seed_share)), dtype=np.float64)
    if condition != "popularity":
        raise ValueError(f"condition must be 'popularity' (the prior, for a VAE) or 'partial', got {condition!r}")
    module = model.module_
    latent = getattr(module, "latent", None) or module.decoder.in_features
    z = torch.from_numpy(rng.standard_normal((len(rows), latent)).astype(np.float32))
    device = next(module.parameters()).device
    module.eval()
    with torch.no_grad():
        out = module.decode(z.to(device)) if hasattr(module, "decode") else module.decoder(z.to(device))
    return out.float().cpu().numpy()


def _cfgan_logits(model, rows: np.ndarray, lengths, length_from: Interactions, rng, condition: str,
                  seed_share: float) -> np.ndarray:
    """(len(rows), n_items) log of G's preference vector for each user's condition."""
    if condition == "popularity":
        popularity = length_from.item_popularity().astype(np.float64)
        sizes = np.maximum(np.round(seed_share * lengths[rows]).astype(np.int64), 1)
        keys = np.log(np.maximum(popularity, 1e-12))[None, :] + rng.gumbel(size=(len(rows), len(popularity)))
        order = np.argsort(-keys, axis=1)
        seeds = [order[i, : sizes[i]] for i in range(len(rows))]
        histories = Histories.from_lists(seeds, length_from.n_items)
    elif condition == "partial":
        histories = _partial_users(len(rows), length_from, rng, seed_share)
    else:
        raise ValueError(f"condition must be 'popularity' or 'partial', got {condition!r}")
    prefs = np.asarray(model.score(histories), dtype=np.float64)
    return np.log(np.clip(prefs, 1e-12, None))


def _partial_users(n: int, length_from: Interactions, rng: np.random.Generator, seed_share: float) -> Histories:
    """`n` histories, each a random `seed_share` (at least one item) of a random real user's items."""
    real = length_from.csr()
    donors = rng.choice(np.flatnonzero(np.diff(real.indptr) > 0), n)
    seeds = []
    for donor in donors:  # one small draw per synthetic user, not per interaction
        items = real.indices[real.indptr[donor] : real.indptr[donor + 1]]
        seeds.append(rng.choice(items, max(int(round(seed_share * len(items))), 1), replace=False))
    return Histories.from_lists(seeds, length_from.n_items)


def _draw_without_replacement(logits_for, lengths: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Per user, lengths[u] distinct items drawn from softmax(logits) without replacement (Gumbel top-k),
    in draw order; users are processed SCORE_BATCH at a time."""
    out = []
    for start in range(0, len(lengths), SCORE_BATCH):
        rows = np.arange(start, min(start + SCORE_BATCH, len(lengths)))
        keys = logits_for(rows)
        keys = keys + rng.gumbel(size=keys.shape)
        k = int(lengths[rows].max())
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k] if k < keys.shape[1] else np.tile(
            np.arange(keys.shape[1]), (len(rows), 1))
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        out.extend(top[i, : lengths[r]] for i, r in enumerate(rows))
    return out


def _sequence_users(model, lengths: np.ndarray, length_from: Interactions, rng: np.random.Generator,
                    temperature: float) -> list[np.ndarray]:
    """Start items from the training users' first items, then `model.generate` for the rest."""
    h = length_from.histories()
    starts_at = h.seq_indptr[:-1][np.diff(h.seq_indptr) > 0]
    firsts = rng.choice(h.seq_items[starts_at], len(lengths))
    prompts = Histories.from_lists([[i] for i in firsts], length_from.n_items)
    n_steps = int(lengths.max()) - 1
    if n_steps < 1:
        return [np.array([i]) for i in firsts]
    generated = model.generate(prompts, n_steps=n_steps, temperature=temperature, top_k=None,
                               seed=int(rng.integers(2**31)))
    rows = _rows_of(generated, len(lengths))
    return [np.concatenate([[first], row[row >= 0]])[:length] for first, row, length in zip(firsts, rows, lengths)]


def _rows_of(generated, n_users: int) -> list[np.ndarray]:
    """A sequence model's output as one item array per user: Histories, a (n_users, n_steps) array or tensor
    (-1 pads), or a list of arrays."""
    if isinstance(generated, Histories):
        return [np.asarray(s) for s in generated.sequences()]
    if torch.is_tensor(generated):
        generated = generated.cpu().numpy()
    if isinstance(generated, np.ndarray) and generated.ndim == 2:
        return list(generated.astype(np.int64))
    rows = [np.asarray(r, np.int64) for r in generated]
    if len(rows) != n_users:
        raise ValueError(f"generate() returned {len(rows)} sequences for {n_users} prompts")
    return rows


def _as_interactions(item_lists: list[np.ndarray], item_ids: IdMap, source: str) -> Interactions:
    lengths = np.array([len(x) for x in item_lists], np.int64)
    users = np.repeat(np.arange(len(item_lists)), lengths)
    items = np.concatenate(item_lists).astype(np.int64) if len(item_lists) else np.zeros(0, np.int64)
    positions = np.arange(len(items)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    user_ids = IdMap(np.array([f"synthetic-{u}" for u in range(len(item_lists))], dtype=object), "user")
    return Interactions(users, items, None, positions, user_ids, item_ids, source=source)


# fidelity -----------------------------------------------------------------------------------------------------
def fidelity_report(synthetic: Interactions, real_train: Interactions, real_test: Holdout | Split | None,
                    k: int = 20, ease_l2: float = 500.0, top_pairs: int = 1000, memorisation_at: float = 0.8,
                    block: int = 512) -> dict[str, Any]:
    """How close `synthetic` users are to `real_train` users, how useful and how private (a JSON-able dict).

    - item_popularity_js: Jensen-Shannon distance (base 2, 0 = identical, 1 = disjoint) between the shares of
      users per item;
    - length_js: the same between history-length histograms on 20 bins at the real lengths' quantiles;
      length_wasserstein: earth mover's distance between the length samples, in items;
    - cooccurrence_pearson / cooccurrence_cosine: agreement of the co-occurrence counts (per user) on the union
      of each side's `top_pairs` most frequent item pairs;
    - utility: EASE(ease_l2) trained on synthetic users and on real_train, NDCG@k and Recall@k on the real
      test holdout (fold-in histories -> targets), and the ratio synthetic / real (None without real_test);
    - privacy: each synthetic user's highest Jaccard similarity to any real training user; memorised_share is
      the share at or above `memorisation_at`, with quantiles and a histogram of the nearest-neighbour Jaccard.
    """
    if synthetic.item_ids != real_train.item_ids:
        raise ValueError("synthetic and real_train must share one item id map (generate from real_train)")
    syn, real = synthetic.csr(binary=True), real_train.csr(binary=True)
    syn_len, real_len = _lengths(syn), _lengths(real)
    report: dict[str, Any] = {
        "n_synthetic_users": int(len(syn_len)),
        "n_real_users": int(len(real_len)),
        "item_popularity_js": distribution_distance(np.bincount(syn.indices, minlength=syn.shape[1]),
                                                    np.bincount(real.indices, minlength=real.shape[1])),
        **length_distances(syn_len, real_len),
        **cooccurrence_agreement(syn, real, top_pairs),
        "utility": None if real_test is None else train_on_synthetic_utility(synthetic, real_train, real_test,
                                                                             k, ease_l2),
    }
    nn = nearest_neighbour_jaccard(syn, real, block)
    report["privacy"] = {
        "memorisation_at": memorisation_at,
        "memorised_share": float(np.mean(nn >= memorisation_at)) if len(nn) else 0.0,
        "nn_jaccard_mean": float(nn.mean()) if len(nn) else 0.0,
        "nn_jaccard_quantiles": {f"p{q}": float(np.percentile(nn, q)) if len(nn) else 0.0
                                 for q in (50, 90, 99, 100)},
        "nn_jaccard_histogram": {"edges": np.linspace(0, 1, 11).round(2).tolist(),
                                 "counts": np.histogram(nn, bins=np.linspace(0, 1, 11))[0].tolist()},
    }
    return report


def _lengths(m: sp.csr_matrix) -> np.ndarray:
    n = np.diff(m.indptr)
    return n[n > 0]


def distribution_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two histograms of counts on the same bins."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.sum() <= 0 or b.sum() <= 0:
        raise ValueError("a histogram with no mass has no distribution to compare")
    return float(jensenshannon(a / a.sum(), b / b.sum(), base=2))


def length_distances(synthetic_lengths: np.ndarray, real_lengths: np.ndarray, n_bins: int = 20) -> dict:
    """length_js on `n_bins` bins cut at the real lengths' quantiles, length_wasserstein in items, and means."""
    edges = np.unique(np.quantile(real_lengths, np.linspace(0, 1, n_bins + 1)))
    edges = np.concatenate([[-np.inf], edges[1:-1], [np.inf]]) if len(edges) > 2 else np.array([-np.inf, np.inf])
    return {
        "length_js": distribution_distance(np.histogram(synthetic_lengths, edges)[0],
                                           np.histogram(real_lengths, edges)[0]),
        "length_wasserstein": float(wasserstein_distance(synthetic_lengths, real_lengths)),
        "length_mean_synthetic": float(np.mean(synthetic_lengths)),
        "length_mean_real": float(np.mean(real_lengths)),
    }


def cooccurrence_agreement(synthetic: sp.csr_matrix, real: sp.csr_matrix, top_pairs: int = 1000) -> dict:
    """Pearson correlation and cosine similarity of per-user co-occurrence counts on the union of both sides'
    `top_pairs` most frequent item pairs (i < j)."""
    counts = [sp.triu(m.T @ m, k=1).tocoo() for m in (synthetic, real)]
    n_items = real.shape[1]
    keys = np.unique(np.concatenate([_top_keys(c, n_items, top_pairs) for c in counts]))
    rows, cols = keys // n_items, keys % n_items
    values = [np.asarray(c.tocsr()[rows, cols]).ravel() / max(m.shape[0], 1) for c, m in zip(counts,
                                                                                            (synthetic, real))]
    a, b = values
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) if a.any() and b.any() else 0.0
    pearson = float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else 0.0
    return {"cooccurrence_pearson": pearson, "cooccurrence_cosine": cosine, "cooccurrence_pairs": int(len(keys))}


def _top_keys(c: sp.coo_matrix, n_items: int, top: int) -> np.ndarray:
    if c.nnz == 0:
        return np.zeros(0, np.int64)
    pick = np.argpartition(-c.data, min(top, c.nnz) - 1)[:top] if c.nnz > top else np.arange(c.nnz)
    return c.row[pick].astype(np.int64) * n_items + c.col[pick]


def train_on_synthetic_utility(synthetic: Interactions, real_train: Interactions, real_test: Holdout | Split,
                               k: int = 20, ease_l2: float = 500.0) -> dict[str, float]:
    """EASE trained on synthetic users vs on real training users, both tested on the same real holdout."""
    from genrec.evaluation.evaluate import evaluate
    from genrec.models.ease import EASE

    holdout = real_test.test if isinstance(real_test, Split) else real_test
    out: dict[str, float] = {"k": k, "ease_l2": ease_l2}
    for name, data in (("synthetic", synthetic), ("real", real_train)):
        results = evaluate(EASE(l2=ease_l2).fit(data), holdout, ks=(k,), metrics=("ndcg", "recall"), train=None)
        out[f"ndcg@{k}_{name}"] = float(results[f"ndcg@{k}"])
        out[f"recall@{k}_{name}"] = float(results[f"recall@{k}"])
    real_ndcg = out[f"ndcg@{k}_real"]
    out[f"ndcg@{k}_ratio"] = out[f"ndcg@{k}_synthetic"] / real_ndcg if real_ndcg > 0 else float("nan")
    return out


def nearest_neighbour_jaccard(synthetic: sp.csr_matrix, real: sp.csr_matrix, block: int = 512) -> np.ndarray:
    """(n synthetic users with items,) the highest Jaccard |s & r| / |s | r| over real users r, computed from
    sparse overlap products `block` synthetic users at a time (pairs with no overlap are never formed)."""
    s = _binary(synthetic)
    s = s[np.diff(s.indptr) > 0]
    r = _binary(real)
    s_len, r_len = np.diff(s.indptr), np.diff(r.indptr)
    r_t = r.T.tocsr()
    out = np.zeros(s.shape[0])
    for start in range(0, s.shape[0], block):
        overlap = (s[start : start + block] @ r_t).tocsr()
        rows = np.repeat(np.arange(overlap.shape[0]), np.diff(overlap.indptr))
        jaccard = overlap.data / (s_len[start + rows] + r_len[overlap.indices] - overlap.data)
        nonempty = np.flatnonzero(np.diff(overlap.indptr) > 0)
        if len(nonempty):
            out[start + nonempty] = np.maximum.reduceat(jaccard, overlap.indptr[nonempty])
    return out


def _binary(m: sp.csr_matrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float64, copy=True)
    m.eliminate_zeros()
    m.data[:] = 1.0
    return m


# writing and the command ----------------------------------------------------------------------------------------
def write_synthetic(interactions: Interactions, path: str | Path) -> Path:
    """Write `user,item,value,timestamp` (raw ids) as CSV (compressed when the name ends .gz, .bz2 or .xz);
    read it back with `load_table(path, value="value", timestamp="timestamp")`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    interactions.to_frame(raw_ids=True).to_csv(path, index=False)
    return path


def interactions_from_histories(histories: Histories, item_ids: IdMap, user_ids: IdMap | None = None,
                                source: str = "<histories>") -> Interactions:
    """The users of `histories` (e.g. a bundle's training users) as an Interactions table, values 1.0."""
    m = histories.matrix
    users = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    ids = user_ids if user_ids is not None else IdMap(np.arange(m.shape[0]), "user")
    return Interactions(users, m.indices, None, None, ids, item_ids, source=source)


def generate_command(model: str | Path, n_users: int, out: str | Path, report: str | Path | None = None,
                     test: str | Path | None = None, seed: int = 0, temperature: float = 1.0,
                     condition: str = "popularity", ease_l2: float = 500.0) -> dict[str, Any]:
    """`genrec generate`: sample `n_users` users from the bundle at `model` (saved with its training data),
    write them to `out`; with `report`, write the fidelity report as JSON. The train-on-synthetic utility
    needs real test users: `test` is a table (user,item columns; raw ids as in training) whose users are split
    80/20 into fold-in histories and targets (seeded); without it the report has utility: null."""
    from genrec.models.base import load_bundle

    bundle = load_bundle(model)
    if bundle.histories is None or bundle.item_ids is None:
        raise ValueError(f"{model}: the bundle has no training histories; save the model with train=... "
                         "(generation draws history lengths from them)")
    train = interactions_from_histories(bundle.histories, bundle.item_ids, bundle.user_ids, source=str(model))
    synthetic = generate_users(bundle.model, n_users, train, seed=seed, temperature=temperature,
                               condition=condition)
    write_synthetic(synthetic, out)
    summary: dict[str, Any] = {"out": str(out), "n_users": synthetic.n_users, "n_interactions": len(synthetic)}
    if report is not None:
        holdout = None if test is None else holdout_from_table(test, train, seed)
        fidelity = fidelity_report(synthetic, train, holdout, ease_l2=ease_l2)
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(json.dumps(fidelity, indent=2))
        summary["report"] = str(report)
        summary["fidelity"] = fidelity
    return summary


def holdout_from_table(path: str | Path, train: Interactions, seed: int = 0, target_share: float = 0.2) -> Holdout:
    """Real test users from a table file: rows on items unknown to `train` are dropped, and each user's events
    are split at random into fold-in history (1 - target_share) and targets (users with < 3 events skipped)."""
    from genrec.data.loaders import load_table
    from genrec.data.splits import split_random_holdout

    table = load_table(path)
    items = train.item_ids.index(table.item_ids.raw[table.items], missing="ignore")
    known = items >= 0
    if not known.any():
        raise DataError(f"{path}: none of its items is in the model's training data")
    data = Interactions(table.users[known], items[known], table.values[known], table.timestamps[known],
                        table.user_ids, train.item_ids, source=str(path))
    holdout = split_random_holdout(data, test_fraction=target_share, validation_fraction=0.0, seed=seed).test
    if not len(holdout):
        raise DataError(f"{path}: no user has 3 or more events on known items to split into history and targets")
    return holdout
