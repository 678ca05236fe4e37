"""An experiment, step by step, as plain functions the CLI and notebooks share:

    cfg = load_config("configs/ml100k.yaml")
    split = make_split(clean(load_data(cfg), cfg), cfg)
    models = train_models(split, cfg, "runs/ml100k")
    table = compare(models, split, cfg, out_dir="runs/ml100k")

A run folder (`runs/<name>/`) ends up holding the resolved config (config.yaml), one bundle per model
(<model>/model, and the first model also at model/), each torch model's per-epoch history
(<model>/history.jsonl), metrics.json (every figure, bucket tables included), results.md, buckets.md and
report.html.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from genrec.config import Columns, ConfigError, DataConfig, ExperimentConfig, ModelSpec, config_from_dict
from genrec.data.interactions import Histories, IdMap, Interactions
from genrec.data.splits import Holdout, Split
from genrec.evaluation.evaluate import Results, evaluate
from genrec.evaluation.sampled import evaluate_sampled, scheme_label

if TYPE_CHECKING:
    from genrec.models.base import Recommender

Data = Interactions | tuple[Interactions, Interactions]
BASELINE = "popularity"


# data -----------------------------------------------------------------------------------------------------------
def load_data(cfg: ExperimentConfig) -> Data:
    """The configured data: one `Interactions`, or (train, test) for LightGCN files with a test file."""
    return load_dataset(cfg.data, cfg.seed)


def load_dataset(d: DataConfig, seed: int = 0) -> Data:
    """`load_data` for a data section alone (what `genrec datasets inspect` reads)."""
    if d.format == "synthetic":
        from genrec.data.synthetic import make_synthetic

        s = d.synthetic
        return make_synthetic(s.n_users, s.n_items, s.n_tastes, s.mean_history,
                              seed=seed if s.seed is None else s.seed, implicit=s.implicit)
    from genrec.data import loaders

    if not Path(d.path).exists():
        raise FileNotFoundError(f"{d.path}: no such file or folder (data.path)")
    if d.format == "movielens":
        return loaders.load_movielens(d.path)
    if d.format == "lightgcn":
        train, test = loaders.load_lightgcn(d.path, d.test_path)
        return train if test is None else (train, test)
    if d.format == "sequence":
        return loaders.load_sequences(d.path)
    c = d.columns or Columns()
    return loaders.load_table(d.path, user=c.user, item=c.item, value=c.value, timestamp=c.timestamp, sep=d.sep)


def clean(data: Data, cfg: ExperimentConfig) -> Data:
    """Apply the `clean` section in its documented order; fixed train/test pairs are used as given."""
    c = cfg.clean
    if c.is_noop:
        return data
    if isinstance(data, tuple):
        raise ConfigError("clean: fixed train/test files are used as published; remove the clean section")
    from genrec.data import clean as steps

    if c.min_value is not None:
        data = steps.filter_min_value(data, c.min_value, binarize=c.binarize)
    if c.dedup is not None:
        data = steps.deduplicate(data, keep=c.dedup)
    if c.k_core is not None or c.user_k is not None or c.item_k is not None:
        data = steps.k_core(data, k=c.k_core, user_k=c.user_k, item_k=c.item_k)
    if c.min_user > 1 or c.min_item > 1:
        data = steps.filter_min_counts(data, min_user=c.min_user, min_item=c.min_item)
    return data


def make_split(data: Data, cfg: ExperimentConfig) -> Split:
    """The configured evaluation protocol, seeded by the experiment's seed."""
    from genrec.data import splits

    s = cfg.split
    if s.protocol == "fixed":
        if not isinstance(data, tuple):
            raise ConfigError("split.protocol: fixed needs train and test files (data.format: lightgcn)")
        return splits.split_fixed(*data)
    if isinstance(data, tuple):
        raise ConfigError(f"split.protocol: {s.protocol} needs one table, the data are a fixed train/test pair "
                          "(use protocol: fixed)")
    if s.protocol == "strong_generalization":
        return splits.split_strong_generalization(data, s.n_heldout, s.fold_in, seed=cfg.seed,
                                                  validation=s.validation)
    if s.protocol == "leave_one_out":
        return splits.split_leave_one_out(data, validation=s.validation, min_length=s.min_length)
    if s.protocol == "temporal":
        return splits.split_temporal(data, s.test_fraction, s.validation_fraction)
    return splits.split_random_holdout(data, s.test_fraction, s.validation_fraction, seed=cfg.seed)


# training ---------------------------------------------------------------------------------------------------------
def build_model(spec: ModelSpec, seed: int = 0, progress: bool = True) -> Recommender:
    """The model of a config entry; the experiment's seed and progress setting fill in unless given."""
    from genrec.models import get_model_class

    cls = get_model_class(spec.model)
    params = dict(spec.params)
    names = cls.param_names()
    if "seed" in names and "seed" not in params:
        params["seed"] = seed
    if "train_options" in names and not progress:
        params["train_options"] = {"progress": False, **(params.get("train_options") or {})}
    return cls.from_config(params)


def train_models(split: Split, cfg: ExperimentConfig, out_dir: str | Path, progress: bool = True
                 ) -> dict[str, Recommender]:
    """Fit every configured model on split.train (validation for early stopping) and write its bundle to
    out_dir/<name>/model, with the training data's id maps and histories; the first model also to
    out_dir/model. Fit time lands in `model.fit_seconds_`, torch histories in out_dir/<name>/history.jsonl."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(cfg.to_yaml())
    models: dict[str, Recommender] = {}
    bar = tqdm(cfg.models.items(), desc="training", unit="model", disable=not progress, leave=False)
    for name, spec in bar:
        bar.set_postfix_str(name)
        model = build_model(spec, cfg.seed, progress)
        start = time.perf_counter()
        model.fit(split.train, validation=split.validation)
        model.fit_seconds_ = time.perf_counter() - start
        bundle = model.save(out_dir / name / "model", train=split.train,
                            extra={"name": name, "experiment": cfg.name, "protocol": split.protocol,
                                   "fit_seconds": model.fit_seconds_})
        history = getattr(model, "history_", None)
        if history:
            (out_dir / name / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
        if not models:
            _link_bundle(bundle, out_dir / "model")
        models[name] = model
    return models


def _link_bundle(src: Path, dest: Path) -> None:
    """dest becomes a copy of bundle src made of hard links (no second copy of large weights on disk)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    shutil.copymode(src, tmp)
    for f in src.iterdir():
        try:
            os.link(f, tmp / f.name)
        except OSError:
            shutil.copy2(f, tmp / f.name)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


# evaluation -------------------------------------------------------------------------------------------------------
def evaluate_models(models: dict[str, Recommender], split: Split, cfg: ExperimentConfig,
                    progress: bool = True, train_popularity: bool = True) -> dict[str, Results]:
    """Full-ranking evaluation of every model on split.test under the configured cut-offs and metrics (and
    sampled metrics, with labelled keys, when the config asks for them).
    Item popularity (novelty, buckets) is counted in split.train, or with train_popularity=False (when the
    training table's items are not the model's) in the test histories."""
    e = cfg.evaluation
    results = {}
    for name, model in tqdm(models.items(), desc="evaluating", unit="model", disable=not progress, leave=False):
        results[name] = evaluate(model, split.test, ks=tuple(e.ks), metrics=tuple(e.metrics),
                                 train=split.train if train_popularity else None,
                                 n_user_buckets=e.user_buckets, item_bucket_shares=tuple(e.item_shares))
        if e.sampled is not None:  # labelled extra keys, e.g. uni100:ndcg@20, beside the full-ranking ones
            sampled = evaluate_sampled(model, split.test, e.sampled.negatives, e.sampled.sampling, ks=tuple(e.ks),
                                       metrics=tuple(e.sampled.metrics),
                                       train=split.train if train_popularity else None, seed=cfg.seed)
            results[name].summary.update(sampled.summary)
            results[name].per_user.update(sampled.per_user)
            results[name].seconds += sampled.seconds
    return results


def results_table(results: dict[str, Results], models: dict[str, Recommender] | None = None) -> pd.DataFrame:
    """One row per model (index: its name in the config): every summary figure, fit and evaluation seconds."""
    rows = {}
    for name, r in results.items():
        row = dict(r.summary)
        model = (models or {}).get(name)
        row["fit_s"] = float(getattr(model, "fit_seconds_", np.nan))
        row["eval_s"] = r.seconds
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table


def headline(table: pd.DataFrame, cfg: ExperimentConfig, models: dict[str, Recommender] | None = None
             ) -> pd.DataFrame:
    """The columns worth printing: recall and NDCG at each K, sampled metrics at the largest K (when configured),
    coverage, fit time, and NDCG vs popularity."""
    ks = cfg.evaluation.ks
    cols = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg") if f"{m}@{k}" in table]
    cols += [c for c in table.columns if ":" in c and c.endswith(f"@{max(ks)}")]  # sampled, e.g. uni100:hr@20
    cols += [c for c in (f"coverage@{max(ks)}", "fit_s") if c in table]
    out = table[cols].copy()
    if "fit_s" in out:
        out["fit_s"] = [f"{v:.1f}" if v == v else "" for v in out["fit_s"]]
    key = f"ndcg@{max(ks)}"
    base = [n for n in table.index if n == BASELINE or (models and getattr(models.get(n), "name", "") == BASELINE)]
    if key in table and base and table.loc[base[0], key] > 0:
        rel = table[key] / table.loc[base[0], key] - 1
        out[f"{key} vs popularity"] = [f"{v:+.0%}" for v in rel]
    return out


def bucket_tables(results: dict[str, Results]) -> dict[str, pd.DataFrame]:
    """The data-imbalance view of every model: 'users' (by history length) and 'items' (by popularity)."""
    tables = {}
    for kind, attr in (("users", "user_buckets"), ("items", "item_buckets")):
        frames = [getattr(r, attr).assign(model=name) for name, r in results.items() if len(getattr(r, attr))]
        if frames:
            t = pd.concat(frames, ignore_index=True)
            tables[kind] = t[["model"] + [c for c in t.columns if c != "model"]]
    return tables


def compare(models: dict[str, Recommender], split: Split, cfg: ExperimentConfig,
            out_dir: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Evaluate every model under one protocol; one row per model, columns metric@k. With out_dir, also
    writes metrics.json, results.md and buckets.md (the per-bucket tables) there."""
    results = evaluate_models(models, split, cfg, progress)
    table = results_table(results, models)
    if out_dir is not None:
        write_results(out_dir, cfg, split, results, table, models)
    return table


def write_results(out_dir, cfg: ExperimentConfig, split: Split, results: dict[str, Results],
                  table: pd.DataFrame, models: dict[str, Recommender] | None = None) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sampled = cfg.evaluation.sampled
    metrics = {"experiment": cfg.name, "protocol": split.protocol, "models": {},
               **({"sampled": sampled.model_dump()} if sampled is not None else {})}
    for name, r in results.items():
        metrics["models"][name] = {
            "model": getattr((models or {}).get(name), "name", None), "n_users": r.n_users,
            "fit_seconds": None if np.isnan(table.loc[name, "fit_s"]) else float(table.loc[name, "fit_s"]),
            "eval_seconds": r.seconds, "summary": r.summary}
        if cfg.evaluation.buckets:
            metrics["models"][name].update(user_buckets=r.user_buckets.to_dict("records"),
                                           item_buckets=r.item_buckets.to_dict("records"))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    title = f"# {cfg.name}: {split.protocol}, {len(split.test)} test users\n\n"
    if sampled is not None:
        label = scheme_label(sampled.negatives, sampled.sampling)
        title += (f"Columns `{label}:...` are sampled metrics: each user's targets ranked among {sampled.negatives} "
                  f"{sampled.sampling} negatives, not among all items.\n\n")
    (out_dir / "results.md").write_text(title + markdown_table(headline(table, cfg, models)) + "\n\n## All figures\n\n"
                                        + markdown_table(table) + "\n")
    if cfg.evaluation.buckets:
        parts = [f"## {kind}\n\n{markdown_table(t, index=False)}\n" for kind, t in bucket_tables(results).items()]
        (out_dir / "buckets.md").write_text(f"# {cfg.name}: metrics per bucket\n\n" + "\n".join(parts))


def markdown_table(frame: pd.DataFrame, index: bool = True, digits: int = 4) -> str:
    """A GitHub Markdown table; floats to `digits` decimals."""
    frame = frame.reset_index() if index else frame
    def cell(v) -> str:
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def align_holdout(holdout: Holdout, items: IdMap, model_items: IdMap) -> tuple[Holdout, int]:
    """The holdout in the model's item index space: history items the model does not know are dropped, as are
    targets it cannot rank (counted and returned, so callers can warn)."""
    if items == model_items:
        return holdout, 0
    to_model = model_items.index(items.raw, missing="ignore")
    h = holdout.histories
    lists = [to_model[s][to_model[s] >= 0] for s in h.sequences()]
    hist = Histories.from_lists(lists, len(model_items), h.user_ids)
    t = holdout.targets.tocoo()
    col = to_model[t.col]
    keep = col >= 0
    targets = sp.csr_matrix((t.data[keep], (t.row[keep], col[keep])), shape=(len(holdout), len(model_items)))
    return Holdout(hist, targets, holdout.users, holdout.protocol), int((~keep).sum())


# reports ----------------------------------------------------------------------------------------------------------
def write_report(run_dir: str | Path) -> Path:
    """run_dir/report.html: tables, plots, buckets and examples (see genrec.report.html)."""
    from genrec.report.html import write_report as full_report

    return Path(full_report(run_dir))


# the whole job ----------------------------------------------------------------------------------------------------
def run_experiment(cfg: ExperimentConfig, out_dir: str | Path, progress: bool = True
                   ) -> tuple[Split, dict[str, Recommender], pd.DataFrame]:
    """load → clean → split → train → compare, writing the run folder; returns (split, models, table)."""
    split = make_split(clean(load_data(cfg), cfg), cfg)
    models = train_models(split, cfg, out_dir, progress)
    return split, models, compare(models, split, cfg, out_dir, progress)


#: the demo's experiment (configs/synthetic.yaml says the same); models not registered are left out
DEMO = {
    "name": "demo",
    "seed": 0,
    "data": {"format": "synthetic", "synthetic": {"n_users": 2000, "n_items": 1500}},
    "clean": {"min_value": 4, "binarize": True},
    "split": {"protocol": "strong_generalization", "n_heldout": 0.1, "fold_in": 0.8},
    "models": {
        "popularity": {"model": "popularity"},
        "itemknn": {"model": "itemknn"},
        "ease": {"model": "ease"},
        "ials": {"model": "ials"},
        "multvae": {"model": "multvae", "params": {"epochs": 50}},
        "recvae": {"model": "recvae", "params": {"epochs": 20}},
    },
    "evaluation": {"ks": [10, 20]},
}


def demo_config(n_users: int = 2000, n_items: int = 1500, epochs: int | None = None, seed: int = 0
                ) -> ExperimentConfig:
    """The demo experiment at a given size; `epochs` replaces the epoch budget of every model that has one."""
    from genrec.models import MODELS, get_model_class

    raw = json.loads(json.dumps(DEMO))
    raw["seed"] = seed
    raw["data"]["synthetic"].update(n_users=n_users, n_items=n_items)
    get_model_class("popularity")  # registers the built-in models
    raw["models"] = {k: v for k, v in raw["models"].items() if v["model"] in MODELS}
    if epochs is not None:
        for spec in raw["models"].values():
            if "epochs" in get_model_class(spec["model"]).param_names():
                spec.setdefault("params", {})["epochs"] = epochs
    return config_from_dict(raw, source="<demo>")


def example_users(holdout: Holdout, n: int = 3, seed: int = 0) -> np.ndarray:
    """n rows of the holdout with at least 5 history items and some target, drawn with `seed`."""
    ok = (holdout.histories.lengths() >= 5) & (np.diff(holdout.targets.indptr) > 0)
    rows = np.flatnonzero(ok) if ok.any() else np.arange(len(holdout))
    return np.sort(np.random.default_rng(seed).choice(rows, size=min(n, len(rows)), replace=False))


def explain_recommendations(model: Recommender, histories: Histories, row: int, items: np.ndarray,
                            top: int = 3) -> tuple[list[list[tuple[int, float]]], str]:
    """For each of `items` recommended to the user in `row`: the history items behind it, [(item index,
    weight)] with positive weight, largest first, and the explanation method (see genrec.explain)."""
    from genrec.explain import explain_many

    items = np.asarray(items, dtype=np.int64)
    found = explain_many(model, histories[np.full(len(items), row)], items, top=top)
    why = [[(int(i), float(w)) for i, w in e.contributions if w > 0] for e in found]
    return why, f"genrec.explain, {found[0].method}" if found else "genrec.explain"


def describe_item(item: int, items: IdMap, attributes: pd.DataFrame | None) -> str:
    """'Item 17 (drama) · mid' from the title and price band, or the raw id."""
    if attributes is None or item >= len(attributes):
        return str(items.raw[item])
    a = attributes.iloc[item]
    text = str(a["title"]) if "title" in a and pd.notna(a["title"]) else str(items.raw[item])
    if "category" in a and str(a["category"]) not in text:
        text += f" ({a['category']})"
    return text + (f" · {a['price_band']}" if "price_band" in a else "")


def format_examples(model_name: str, model: Recommender, split: Split, n_users: int = 3, k: int = 5,
                    seed: int = 0) -> str:
    """Top-k recommendations for n held-out users, each with its history's main categories and the history
    items that explain it: plain text for the terminal and examples.md."""
    holdout, train = split.test, split.train
    attrs, ids = train.item_attributes, train.item_ids
    rows = example_users(holdout, n_users, seed)
    recs = model.recommend(holdout.histories[rows], k=k)
    lines, method = [f"Recommendations of {model_name} for {len(rows)} held-out users:"], ""
    for j, row in enumerate(rows):
        hist = holdout.histories.sequence(row)
        head = f"\nuser {holdout.histories.user_ids[row]}: {len(np.unique(hist))} items in the history"
        if attrs is not None and "category" in attrs:
            cats = attrs["category"].iloc[hist].value_counts().head(3)
            head += ", mostly " + ", ".join(f"{c} ({n})" for c, n in cats.items())
        lines.append(head)
        shown = recs.items[j] >= 0
        reasons, method = explain_recommendations(model, holdout.histories, row, recs.items[j][shown])
        for rank, (item, score, why) in enumerate(zip(recs.items[j][shown], recs.scores[j][shown], reasons), 1):
            because = "; ".join(describe_item(i, ids, attrs) for i, _ in why) or "popular overall"
            lines.append(f"  {rank}. {describe_item(int(item), ids, attrs)}  [score {score:.3g}]")
            lines.append(f"       because of: {because}")
    lines.append(f"\n(explanations: {method})" if method else "")
    return "\n".join(lines)
