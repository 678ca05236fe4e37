"""The report sections that need the run's fitted models: long-tail plots of their recommendations, a 2-D map
of a torch model's latent space coloured by item category, and example recommendations with explanations."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from genrec.report import plots

if TYPE_CHECKING:
    from genrec.report.html import Page, Run

#: users whose recommendations feed the long-tail plots (a seeded sample when the test set is larger)
LONG_TAIL_USERS = 2000
#: items placed on the latent map (the most popular ones when there are more)
MAP_ITEMS = 5000


@dataclass
class Models:
    """The run's loaded bundles, the users to recommend for and where they came from."""

    bundles: dict
    histories: object  # Histories
    targets: object  # csr targets of `histories` (None when the test split could not be rebuilt)
    popularity: np.ndarray
    source: str


def load_models(run: Run) -> Models | None:
    """Every bundle of the run that loads, and the test users' histories (the split rebuilt from config.yaml;
    failing that, the training users of the first bundle). None, with notes on `run`, when nothing loads."""
    from genrec.models.base import load_bundle

    bundles = {}
    for name in run.metrics["models"]:
        path = run.path / name / "model"
        if not (path / "model.json").is_file():
            run.notes.append(f"{name}: no bundle at {path}.")
            continue
        try:
            bundles[name] = load_bundle(path)
        except Exception as e:  # noqa: BLE001
            run.notes.append(f"{name}: bundle not loaded ({type(e).__name__}: {e}).")
    if not bundles:
        return None
    first = next(iter(bundles.values()))
    if first.histories is None:
        run.notes.append("The bundles hold no training histories (saved without train=...).")
        return None
    popularity = np.bincount(first.histories.matrix.indices, minlength=first.model.n_items_)
    try:
        holdout = _rebuild_test(run)
        return Models(bundles, holdout.histories, holdout.targets.tocsr(), popularity,
                      f"the {len(holdout)} test users of the split, rebuilt from config.yaml")
    except Exception as e:  # noqa: BLE001
        run.notes.append(f"The test split could not be rebuilt from config.yaml ({type(e).__name__}: {e}); "
                         "the training users' histories stand in for test users below.")
        return Models(bundles, first.histories, None, popularity, "training users (seen items excluded)")


def _rebuild_test(run: Run):
    from genrec.config import config_from_dict
    from genrec.experiment import clean, load_data, make_split

    if run.config is None:
        raise FileNotFoundError(f"{run.path}/config.yaml is missing")
    cfg = config_from_dict(run.config, source=str(run.path / "config.yaml"), base_dir=run.path)
    return make_split(clean(load_data(cfg), cfg), cfg).test


def _sample(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.arange(n) if n <= size else np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def long_tail_section(page: Page, run: Run, models: Models | None) -> None:
    page.heading("Long tail", 3)
    if models is None:
        page.note("No model bundle could be loaded, so there are no recommendations to plot.")
        return
    k = run.ks[-1]
    rows = _sample(models.histories.n_users, LONG_TAIL_USERS)
    histories = models.histories[rows]
    counts = {}
    for name, bundle in models.bundles.items():
        items = bundle.model.recommend(histories, k=k).items
        counts[name] = np.bincount(items[items >= 0], minlength=len(models.popularity))
    page.add(f"<p>Top-{k} recommendations of {len(rows)} users ({html.escape(models.source)}"
             f"{', a sample drawn with seed 0' if len(rows) < models.histories.n_users else ''}); items ranked by "
             "the number of training users who have them. Head: the 20% most popular items, mid: the next 30%, "
             "tail: the remaining 50%.</p>")
    page.figure(plots.long_tail(models.popularity, counts), f"{run.slug}-long-tail",
                "recommendation frequency against item popularity rank, and head/mid/tail shares")
    group = plots.popularity_groups(models.popularity)
    shares = {name: plots.group_shares(c, group) for name, c in counts.items()}
    frame = pd.DataFrame(shares, index=list(plots.GROUP_NAMES)).T.reset_index(names="model")
    frame["items recommended"] = [int((c > 0).sum()) for c in counts.values()]
    page.table(frame)


def item_categories(attributes: pd.DataFrame | None) -> tuple[np.ndarray | None, str]:
    """Each item's category (the `category` column, or the first of '|'-joined `genres`) and its name."""
    if attributes is None:
        return None, ""
    if "category" in attributes.columns:
        return attributes["category"].astype(str).to_numpy(), "category"
    if "genres" in attributes.columns:
        first = attributes["genres"].fillna("").astype(str).str.split("|").str[0].replace("", "(none)")
        return first.to_numpy(), "first listed genre"
    return None, ""


def item_vectors(model, items: np.ndarray) -> tuple[np.ndarray, str]:
    """(len(items), d): the encoder's posterior mean for one-item histories where the network has `encode`,
    else the rows of its last linear layer onto the items (the decoder's item vectors)."""
    import scipy.sparse as sp
    import torch

    from genrec.training.data import sparse_rows

    module = getattr(model, "module_", None)
    if module is None:
        raise TypeError(f"{type(model).__name__} has no torch network")
    with torch.no_grad():
        if hasattr(module, "encode"):
            one_item = sp.csr_matrix((np.ones(len(items), np.float32), (np.arange(len(items)), items)),
                                     shape=(len(items), model.n_items_))
            out = [module.encode(sparse_rows(one_item[s:s + 1024]))
                   for s in range(0, len(items), 1024)]
            return torch.cat([o[0] if isinstance(o, tuple) else o for o in out]).cpu().numpy(), \
                "encoder mean of one-item histories"
        linear = [m for m in module.modules() if isinstance(m, torch.nn.Linear) and m.out_features == model.n_items_]
        if not linear:
            raise TypeError(f"{type(model).__name__}'s network has no encoder and no item output layer")
        return linear[-1].weight.detach().cpu().numpy()[items], "decoder item vectors"


def latent_section(page: Page, run: Run, models: Models | None) -> None:
    page.heading("Latent space", 3)
    torch_models = {n: b for n, b in (models.bundles.items() if models else []) if hasattr(b.model, "module_")}
    if not torch_models:
        page.note("No torch model in this run, so there is no latent space to map.")
        return
    name = next((n for n, b in torch_models.items() if "vae" in b.model.name), next(iter(torch_models)))
    bundle = torch_models[name]
    items = np.sort(np.argsort(-models.popularity, kind="stable")[:MAP_ITEMS])
    vectors, how = item_vectors(bundle.model, items)
    from sklearn.decomposition import PCA

    coords = PCA(n_components=2, random_state=0).fit_transform(vectors)
    labels, what = item_categories(bundle.item_attributes)
    if labels is None:
        page.note("The items have no category or genres attribute; the map is coloured by popularity group.")
        labels, what = np.array(plots.GROUP_NAMES)[plots.popularity_groups(models.popularity)], "popularity group"
    subset = f", the {len(items)} most popular items" if len(items) < len(models.popularity) else ""
    page.add(f"<p>{html.escape(name)}: {how}{subset}, projected to two dimensions by PCA and coloured by "
             f"{what}.</p>")
    page.figure(plots.latent_map(coords, labels[items], f"{name}: items in latent space (PCA)"),
                f"{run.slug}-latent", f"2-D map of {name}'s latent space coloured by {what}")


def describe(item: int, bundle) -> str:
    """An item's title (or raw id) and category, from the bundle's item map and attributes."""
    ids, attrs = bundle.item_ids, bundle.item_attributes
    text = str(ids.raw[item]) if ids is not None else str(item)
    if attrs is not None and item < len(attrs):
        row = attrs.iloc[item]
        if "title" in row and pd.notna(row["title"]):
            text = str(row["title"])
        if "category" in row and pd.notna(row["category"]) and str(row["category"]) not in text:
            text += f" ({row['category']})"
    return text


def examples_section(page: Page, run: Run, models: Models | None, n_users: int = 3, k: int = 5) -> None:
    page.heading("Example recommendations", 3)
    if models is None:
        page.note("No model bundle could be loaded, so there are no examples to show.")
        return
    key = f"ndcg@{run.ks[-1]}"
    ranked = sorted(models.bundles, key=lambda n: -run.metrics["models"][n]["summary"].get(key, 0.0))
    name = next((n for n in ranked if models.bundles[n].model.name != "popularity"), ranked[0])
    bundle, h = models.bundles[name], models.histories
    ok = h.lengths() >= 5
    if models.targets is not None:
        ok &= np.diff(models.targets.indptr) > 0
    rows = np.flatnonzero(ok) if ok.any() else np.arange(h.n_users)
    rows = rows[_sample(len(rows), n_users)]
    recs = bundle.model.recommend(h[rows], k=k)
    try:
        from genrec.explain import explain_many
    except ImportError:
        explain_many = None
        page.note("genrec.explain is not available: recommendations are shown without explanations.")
    hit_note = " A ✓ marks a held-out target item." if models.targets is not None else ""
    page.add(f"<p>{html.escape(name)} (the best {key} here), top {k} for {len(rows)} users "
             f"({html.escape(models.source)}), each with the history items that contributed most.{hit_note}</p>")
    for j, row in enumerate(rows):
        items = recs.items[j][recs.items[j] >= 0]
        why = explain_many(bundle.model, h[np.full(len(items), row)], items, top=3) if explain_many else None
        history = h.sequence(row)
        page.add(f"<h4>user {html.escape(str(h.user_ids[row] if h.user_ids is not None else row))}: "
                 f"{len(np.unique(history))} history items</h4><ol class=\"examples\">")
        for i, item in enumerate(items):
            hit = models.targets is not None and models.targets[row, item] > 0
            mark = ' <span class="hit">✓</span>' if hit else ""
            because = ""
            if why is not None:
                parts = [f"{describe(c, bundle)} ({w:+.3g})" for c, w in why[i].contributions if w > 0]
                because = f"<br><small>because of: {html.escape('; '.join(parts) or 'no single history item')} " \
                          f"[{html.escape(why[i].method)}]</small>"
            page.add(f"<li>{html.escape(describe(int(item), bundle))} "
                     f"<small>score {recs.scores[j][i]:.3g}</small>{mark}{because}</li>")
        page.add("</ol>")
