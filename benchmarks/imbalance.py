"""LDA beside the baselines, faithfulness of explanations, and popularity debiasing: benchmarks/results/imbalance.md.

Parts (`--parts`, each rewrites only its own section of the results file):
- ml100k: LDA (users as documents, items as words) on ML-100K (ratings >= 4, strong generalisation: 150 held-out
  test users, 150 validation users, 80/20 fold-in) beside popularity, ItemKNN, EASE and Mult-VAE under one
  protocol (full ranking, history items excluded), hyperparameters chosen on the validation users; the
  data-imbalance view (metrics per user-activity and item-popularity bucket) for each; then faithfulness of
  explanations (`genrec.explain.deletion_check`) for Mult-VAE, EASE, ItemKNN, LDA and SASRec: removing the top-3
  explaining items must lower the top recommendation's score more than removing 3 random history items.
- gowalla: LDA beside popularity, ItemKNN and iALS on Gowalla (the LightGCN train/test files). Validation is a
  holdout carved from train (10% of each user's training events).
- debias: popularity debiasing by re-ranking (`genrec.evaluation.debias`) on Gowalla for iALS and ItemKNN
  (`--debias-bases`; LDA too if asked): λ chosen on the validation holdout by the rule stated at LAMS below,
  then the test trade-off. Runs on its own (fits its bases; no LDA unless asked).
- ease: EASE on Gowalla from a bundle fitted on the whole train file by another run (`--ease-bundle`): its test
  row, imbalance view and test trade-off curve (no λ chosen: the bundle has seen the validation events).

Run (heavy: hold the shared lock):

    flock /tmp/genrec-heavy.lock env OMP_NUM_THREADS=2 .venv/bin/python benchmarks/imbalance.py --parts ml100k

`--quick` runs small grids, and the debias part on ML-100K (a smoke test: pass `--out` elsewhere).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from genrec.data.loaders import load_lightgcn, load_movielens
from genrec.data.splits import split_fixed, split_random_holdout, split_strong_generalization
from genrec.evaluation.debias import choose_lambda, reranked_results, tradeoff_frame
from genrec.evaluation.evaluate import evaluate
from genrec.explain import deletion_check
from genrec.models import MODELS
from genrec.models.base import load_bundle

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
K = 20
N_HELDOUT = 150  # ML-100K: test and validation users each
PUBLISHED_GOWALLA = [  # He et al. 2020 (LightGCN), Table 3, same split: Recall@20, NDCG@20
    ("Mult-VAE", 0.1641, 0.1335), ("NGCF", 0.1570, 0.1327), ("LightGCN", 0.1830, 0.1554)]


def log(*args) -> None:
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


def available(name: str):
    """The registered model class `name` (every built-in model is registered by importing genrec.models)."""
    return MODELS.get(name)


def md_table(frame: pd.DataFrame, digits: int = 4) -> str:
    def cell(v):
        if isinstance(v, float | np.floating):
            return f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


# model selection --------------------------------------------------------------------------------------------
def grids(quick: bool, dataset: str) -> dict[str, list[dict]]:
    """Candidate hyperparameters per registered model name, searched on validation NDCG@20."""
    if dataset == "ml100k":
        lda = [{"n_topics": k, "doc_topic_prior": a, "topic_word_prior": b, "max_iter": 30, "batch_size": 64}
               for k in (10, 20, 40) for a in (None, 0.1) for b in (None, 0.01)]
        return {"popularity": [{}], "lda": lda[:2] if quick else lda,
                "itemknn": [{"k": k} for k in ((50,) if quick else (20, 50, 100, 200))],
                "ease": [{"l2": x} for x in ((200.0,) if quick else (50.0, 100.0, 200.0, 500.0, 1000.0))],
                "multvae": [{"epochs": 30 if quick else 200, "train_options": {"patience": 20, "progress": False}}]}
    # Gowalla: tiny grids. This run's heavy-lock budget was 30 minutes for all parts and the shared lock was
    # contended for most of the session, so LDA and ItemKNN get one configuration each (LDA: 2 online passes)
    lda = [{"n_topics": 50 if quick else 100, "max_iter": 2, "batch_size": 1024}]
    return {"popularity": [{}], "lda": lda, "itemknn": [{"k": 100}],
            "ials": [{"factors": 64, "iterations": 5 if quick else 10, "num_threads": 2}],
            "ease": [{"l2": 500.0}],
            "multvae": [{"epochs": 2 if quick else 50, "train_options": {"patience": 5, "progress": False}}]}


def tune(name: str, grid: list[dict], train, validation) -> tuple[object, dict, pd.DataFrame]:
    """Fit every configuration on `train`, keep the one with the best validation NDCG@20."""
    cls = available(name)
    rows, best = [], None
    for params in grid:
        start = time.perf_counter()
        model = cls(**params).fit(train, validation=validation if name == "multvae" else None)
        fit_s = time.perf_counter() - start
        ndcg = evaluate(model, validation, ks=(K,), metrics=("ndcg",), train=train)[f"ndcg@{K}"]
        log(f"  {name} {params}: validation ndcg@{K} {ndcg:.4f} (fit {fit_s:.0f} s)")
        rows.append({"model": name, "params": _short(params), f"val ndcg@{K}": ndcg, "fit s": fit_s})
        if best is None or ndcg > best[0]:
            best = (ndcg, model, params)
    return best[1], best[2], pd.DataFrame(rows)


def _short(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if k != "train_options") or "-"


def summary_row(name: str, params: dict, r) -> dict:
    return {"model": name, "params": _short(params), f"recall@{K}": r[f"recall@{K}"],
            f"ndcg@{K}": r[f"ndcg@{K}"], f"coverage@{K}": r[f"coverage@{K}"],
            f"tail_coverage@{K}": r[f"tail_coverage@{K}"], f"arp@{K}": r[f"arp@{K}"], "eval s": r.seconds}


def bucket_section(name: str, r) -> str:
    users = r.user_buckets[["bucket", "users", f"recall@{K}", f"ndcg@{K}"]]
    items = r.item_buckets[["bucket", "items", "users_with_targets", f"recall@{K}", f"ndcg@{K}", f"rec_share@{K}"]]
    return (f"**{name}** — by user activity (history length quartiles):\n\n{md_table(users)}\n\n"
            f"by item popularity (targets restricted to the bucket; rec_share = share of the top-{K} lists):\n\n"
            f"{md_table(items)}\n")


def compare(names: list[str], grid: dict, tune_train, validation, final_train, test, refit: tuple[str, ...] = ()):
    """Tune each model, refit those named in `refit` on `final_train` (the others keep the model fitted on
    `tune_train` and fold in the test users' full histories), evaluate on test. Returns (summary frame, tuning
    frame, {name: (model, inner model, Results, params)})."""
    rows, tuning, out = [], [], {}
    for name in names:
        if available(name) is None:
            log(f"{name}: not registered, skipped")
            continue
        log(f"{name}: tuning on validation")
        inner, params, table = tune(name, grid[name], tune_train, validation)
        tuning.append(table)
        model = inner
        if name in refit:
            log(f"{name}: refitting {params} on the full train file")
            model = available(name)(**params).fit(final_train)
        r = evaluate(model, test, ks=(K,), train=final_train)
        log(f"{name}: test ndcg@{K} {r[f'ndcg@{K}']:.4f} recall@{K} {r[f'recall@{K}']:.4f}")
        rows.append({**summary_row(name, params, r), "refitted": name in refit})
        out[name] = (model, inner, r, params)
    return pd.DataFrame(rows), pd.concat(tuning, ignore_index=True), out


# 1. LDA beside the baselines ----------------------------------------------------------------------------------
def movielens_part(quick: bool) -> tuple[list[str], object, dict]:
    data = load_movielens(DATA / "movielens-100k", min_rating=4)
    split = split_strong_generalization(data, n_heldout=N_HELDOUT, seed=0)
    log(f"ML-100K: {data}; {split}")
    names = ["popularity", "itemknn", "ease", "multvae", "lda"]
    frame, tuning, models = compare(names, grids(quick, "ml100k"), split.train, split.validation, split.train,
                                    split.test)
    frame = frame.drop(columns="refitted")
    lines = [f"### ML-100K (ratings >= 4: {len(data):,} events, {data.n_users} users, {data.n_items} items)\n",
             f"Strong generalisation, seed 0: {split}. Test, full ranking, history items excluded:\n",
             md_table(frame), "", _missing(names), "", "<details><summary>validation search</summary>\n",
             md_table(tuning), "\n</details>\n"]
    if "lda" in models:
        lines += ["LDA topics (the six with the largest share; top-5 titles; genres by lift against the "
                  "catalogue):\n", md_table(_topic_table(models["lda"][0], split.train)), ""]
    lines += ["#### Data-imbalance view (ML-100K test)\n"]
    lines += [bucket_section(name, m[2]) for name, m in models.items()]
    return lines, split, models


def _topic_table(model, train) -> pd.DataFrame:
    attrs = train.item_attributes
    topics = model.topics(top=5, item_attributes=attrs[["genres"]]).sort_values("share", ascending=False).head(6)
    titles = attrs["title"].to_numpy()
    return pd.DataFrame({
        "topic": topics["topic"], "share": topics["share"],
        "top items": ["; ".join(titles[i] for i in items) for items in topics["items"]],
        "genres (lift)": [", ".join(f"{v} ×{lift:.1f}" for v, lift in g) for g in topics["genres"]],
    })


def _missing(names: list[str]) -> str:
    missing = [n for n in names if available(n) is None]
    return f"Not registered when this ran (so not shown): {', '.join(missing)}." if missing else ""


CHEAP_TO_REFIT = ("popularity", "itemknn", "ials")


def load_gowalla():
    train, test = load_lightgcn(DATA / "lightgcn-gowalla")
    split = split_fixed(train, test, "lightgcn")
    inner = split_random_holdout(split.train, test_fraction=0.1, validation_fraction=0.0, seed=0)
    return train, test, split, inner


def gowalla_part(quick: bool) -> tuple[list[str], dict]:
    train, test, split, inner = load_gowalla()
    carved = (f"{len(inner.train):,} training events left, {len(inner.test):,} validation users with "
              f"{inner.test.targets.nnz:,} held-out events")
    log(f"Gowalla: {split}; validation carved from train: {carved}")
    names = ["popularity", "itemknn", "ials", "lda"]
    frame, tuning, models = compare(names, grids(quick, "gowalla"), inner.train, inner.test, split.train,
                                    split.test, refit=CHEAP_TO_REFIT)
    published = pd.DataFrame([{"model": n, f"recall@{K}": r, f"ndcg@{K}": d} for n, r, d in PUBLISHED_GOWALLA])
    lines = [f"### Gowalla (LightGCN split: {len(train):,} train, {len(test):,} test events, {train.n_users:,} "
             f"users, {train.n_items:,} items)\n",
             f"Validation: 10% of each user's training events (users with >= 3), seed 0: {carved}. Popularity, "
             "ItemKNN and iALS are refitted on the whole train file with the chosen configuration; LDA is not "
             "(to save heavy-lock time): the model fitted on the 90% folds in each test user's full training "
             "history, which can only handicap it. One configuration per model (the shared heavy-lock was "
             "contended all session; no Gowalla grid search was affordable), so validation only reports here. "
             "Test below; EASE (from a bundle fitted on the whole train file by another run) is in its own "
             "subsection further down.\n", md_table(frame), "",
             "Published on the same split (He et al. 2020, LightGCN, Table 3), for scale:\n",
             md_table(published), "", "<details><summary>validation search</summary>\n", md_table(tuning),
             "\n</details>\n", "#### Data-imbalance view (Gowalla test)\n"]
    lines += [bucket_section(name, m[2]) for name, m in models.items()]
    return lines, {"split": split, "inner": inner, "models": models}


# 2. faithfulness --------------------------------------------------------------------------------------------
def faithfulness_part(split, models: dict, quick: bool) -> list[str]:
    runs = [(name, models[name][0], method) for name, method in
            [("multvae", "leave_one_out"), ("multvae", "gradient"), ("ease", "leave_one_out"),
             ("itemknn", "leave_one_out"), ("lda", "leave_one_out"), ("lda", "topics")] if name in models]
    notes = [f"{n}: not registered when this ran" for n in ("multvae", "ease", "sasrec") if available(n) is None]
    sasrec = _sasrec(split, notes, epochs=3 if quick else 60)
    if sasrec is not None:
        runs += [("sasrec", sasrec, method) for method in ("leave_one_out", "attention")]
    rows = []
    for name, model, method in runs:
        start = time.perf_counter()
        frame = deletion_check(model, split.test.histories, top=3, n_random=10, method=method, seed=0)
        rows.append({"model": name, "method": method, "users": len(frame), "faithful": frame["faithful"].mean(),
                     "mean drop, top-3 removed": frame["drop_explained"].mean(),
                     "mean drop, 3 random removed": frame["drop_random"].mean(),
                     "seconds": time.perf_counter() - start})
        log(f"faithfulness {name} {method}: {rows[-1]['faithful']:.3f} of {len(frame)}")
    return ["Faithfulness on ML-100K test users with >= 6 history items. A user counts as faithful when removing "
            "the top-3 explaining history items lowers the score of the model's first recommendation more than "
            "removing 3 random history items does (mean over 10 draws). Target: >= 90% for Mult-VAE, EASE and "
            "SASRec. Drops are in each model's own score units. `leave_one_out` is exact re-scoring (the default "
            "for every model but those exposing `attention_weights`); `gradient` is gradient x input; `topics` "
            "splits LDA's p(i|u) over the history items' topic responsibilities; `attention` is SASRec's last-"
            "block attention of the final position (mean over heads), a view of what the model read rather than "
            "an attribution. SASRec: 60 epochs at most, early stopping on validation NDCG@10 (patience 5).\n",
            md_table(pd.DataFrame(rows)), "", *(f"- {n}" for n in notes), ""]


def _sasrec(split, notes: list[str], epochs: int):
    cls = available("sasrec")
    if cls is None:
        return None
    try:
        params = {"epochs": epochs, "seed": 0, "train_options": {"patience": 5, "progress": False}}
        return cls(**params).fit(split.train, validation=split.validation)
    except Exception as err:  # the SASRec file is being written by another engineer: report, do not crash
        notes.append(f"sasrec: training failed here ({type(err).__name__}: {err})")
        return None


# 3. debiasing ----------------------------------------------------------------------------------------------
# Fixed before this part's first Gowalla run (session 3). Session 2 chose the most validation tail coverage
# within 4% validation NDCG loss on a coarse grid (0.05 ... 1.5); validation then under-predicted the test loss
# by 1.5-7 points (iALS chose 1.5: -1.5% on validation, -8.5% on test). NDCG loss is measured against held-out
# targets and moves between holdouts; tail coverage depends only on the lists, so it transfers. Hence: the
# SMALLEST λ that reaches the tail target on validation with a margin (the least penalty, so the least accuracy
# risk), on a fine, roughly geometric grid, within a tighter validation NDCG budget.
LAMS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5)
TAIL_TARGET, NDCG_LOSS_TARGET = 0.30, 0.05  # the acceptance point, judged on test
VAL_TAIL_GAIN = 1.5 * TAIL_TARGET  # asked of validation: +45%, margin for the refit and the larger test user set
VAL_NDCG_BUDGET = 0.02  # at most 2% validation NDCG loss
DEBIAS_BASES = ("ials", "itemknn")
DEBIAS_INTRO = (
    "### Popularity debiasing on Gowalla (re-ranking: norm(score) - λ log(1 + n_i))\n",
    "Long tail = items outside the top 20% by training popularity; tail coverage = the share of them in at least "
    f"one evaluated user's top-{K}. Target: tail coverage +{TAIL_TARGET:.0%} relative for at most "
    f"{NDCG_LOSS_TARGET:.0%} relative NDCG@{K} loss, on test.\n",
    "**Choice rule (fixed before this part ran; validation only).** Validation = 10% of each user's training "
    "events carved from train.txt (seed 0), the base model fitted on the other 90%. Per base model, over "
    f"λ in {{{', '.join(map(str, LAMS))}}} with z-score normalisation: the *smallest* λ whose validation tail "
    f"coverage gain is >= +{VAL_TAIL_GAIN:.0%} (1.5x the target) while the validation NDCG@{K} loss is <= "
    f"{VAL_NDCG_BUDGET:.0%}; if no λ reaches that gain within the budget, the λ with the most validation tail "
    "coverage within it (such a choice is not expected to meet the target). Why: the session-2 rule (most tail "
    "within 4% validation loss, grid 0.05 ... 1.5) picked λ where validation under-predicted the test NDCG loss "
    "by 1.5-7 points; NDCG is measured against held-out targets, which differ between holdouts, while tail "
    "coverage depends only on the recommendation lists and moved by about 10% relative or less from validation "
    "to test there. So the rule asks validation for a tail margin and then takes the least penalty, instead of "
    "spending an NDCG budget validation cannot measure reliably. The test model is refitted on the whole train file "
    "with the same hyperparameters; its λ = 0 row is the reference of the test Δ columns.\n")


def debias_data(quick: bool):
    """(split, inner split): Gowalla, or for --quick an ML-100K random holdout of the same shape (smoke test)."""
    if not quick:
        _, _, split, inner = load_gowalla()
        return split, inner
    data = load_movielens(DATA / "movielens-100k", min_rating=4)
    split = split_random_holdout(data, test_fraction=0.2, validation_fraction=0.0, seed=0)
    inner = split_random_holdout(split.train, test_fraction=0.1, validation_fraction=0.0, seed=0)
    return split, inner


def debias_part(quick: bool, bases: tuple[str, ...] = DEBIAS_BASES) -> list[str]:
    split, inner = debias_data(quick)
    log(f"debias: {split}; validation {inner}")
    lams = [0.0, *(LAMS[::3] if quick else LAMS)]
    config = grids(quick, "gowalla")
    summary, sections = [], []
    for name in bases:
        params = config[name][0]
        start = time.perf_counter()
        inner_model = available(name)(**params).fit(inner.train)
        model = available(name)(**params).fit(split.train) if name in CHEAP_TO_REFIT else inner_model
        log(f"debias {name}: fitted ({time.perf_counter() - start:.0f} s); validation curve")
        normalizations = ("zscore", "log") if name == "lda" else ("zscore",)
        val = reranked_results(inner_model, inner.test, inner.train,
                               [(n, lam) for n in normalizations for lam in lams], ks=(K,))
        choices = [_choose(normalize, tradeoff_frame({lam: val[(normalize, lam)] for lam in lams}, K))
                   for normalize in normalizations]
        normalize, lam, reached, val_frame = max(choices, key=_preference)
        log(f"debias {name}: chose {normalize}, λ = {lam} (target reached on validation: {reached}); test curve")
        test = reranked_results(model, split.test, split.train, [(normalize, x) for x in lams], ks=(K,))
        test_frame = tradeoff_frame({x: test[(normalize, x)] for x in lams}, K)
        summary.append(_debias_row(name, params, normalize, lam, reached, val_frame, test_frame))
        meets = test_frame[(test_frame["ndcg_change"] >= -NDCG_LOSS_TARGET)
                           & (test_frame["tail_coverage_change"] >= TAIL_TARGET)]["lam"]
        sections += [f"#### {name} ({_short(params)}; {normalize} normalisation)\n",
                     "Validation trade-off (the model fitted on 90% of train; used for the choice):\n",
                     md_table(val_frame), "",
                     "Test trade-off over the same grid (refitted model; shown, NOT used to choose):\n",
                     md_table(test_frame), "",
                     f"λ of the grid meeting the target on test (shown, not used): "
                     f"{', '.join(map(str, meets)) or 'none'}.\n",
                     bucket_section(f"{name}, λ = {lam}, test", test[(normalize, lam)])]
        sections += [f"Validation, the other normalisation ({c[0]}), rule's λ = {c[1]}:\n\n{md_table(c[3])}\n"
                     for c in choices if c[0] != normalize]
        log(f"debias {name}: done ({time.perf_counter() - start:.0f} s)")
    carved = (f"{len(inner.train):,} training events left, {len(inner.test):,} validation users with "
              f"{inner.test.targets.nnz:,} held-out events")
    return [*DEBIAS_INTRO, f"Data: {split}; validation carved from train: {carved}.\n",
            "Chosen on validation, measured on test:\n", md_table(pd.DataFrame(summary)), "", *sections]


def _choose(normalize: str, frame: pd.DataFrame) -> tuple[str, float, bool, pd.DataFrame]:
    lam = choose_lambda(frame, max_ndcg_loss=VAL_NDCG_BUDGET, min_tail_gain=VAL_TAIL_GAIN)
    reached = bool(frame.loc[frame["lam"] == lam, "tail_coverage_change"].iloc[0] >= VAL_TAIL_GAIN)
    return normalize, lam, reached, frame


def _preference(choice) -> tuple:
    """Between normalisations: one whose λ reached the validation tail gain first (then the smaller validation
    NDCG loss), else the larger validation tail gain."""
    _, lam, reached, frame = choice
    row = frame.loc[frame["lam"] == lam].iloc[0]
    return (reached, row["ndcg_change"] if reached else row["tail_coverage_change"])


def _debias_row(name, params, normalize, lam, reached, val_frame, test_frame) -> dict:
    val, test, base = (val_frame.loc[val_frame["lam"] == lam].iloc[0], test_frame.loc[test_frame["lam"] == lam].iloc[0],
                       test_frame.iloc[0])
    tail, ndcg = f"tail_coverage@{K}", f"ndcg@{K}"
    return {"model": name, "params": _short(params), "normalisation": normalize, "λ": lam,
            f"val tail >= +{VAL_TAIL_GAIN:.0%}": reached, "val tail Δ": val["tail_coverage_change"],
            "val NDCG Δ": val["ndcg_change"], f"test {ndcg} (λ=0)": base[ndcg], f"test {ndcg}": test[ndcg],
            "test NDCG Δ": test["ndcg_change"], "test tail (λ=0)": base[tail], "test tail": test[tail],
            "test tail Δ": test["tail_coverage_change"],
            "meets target": bool(test["ndcg_change"] >= -NDCG_LOSS_TARGET
                                 and test["tail_coverage_change"] >= TAIL_TARGET)}


# 4. EASE on Gowalla from a bundle ----------------------------------------------------------------------------
def ease_part(bundle_path: Path, quick: bool) -> list[str]:
    """EASE fitted on the whole train file by another run: its test row, imbalance view and test trade-off.
    Its λ cannot be chosen on our validation holdout (the bundle has seen those events), so none is chosen."""
    _, _, split, _ = load_gowalla()
    log(f"EASE: loading {bundle_path}")
    bundle = load_bundle(bundle_path)
    if bundle.item_ids is not None and not np.array_equal(bundle.item_ids.raw, split.train.item_ids.raw):
        raise SystemExit(f"{bundle_path}: its item ids are not the order of this split's items")
    model = bundle.model
    lams = [0.0, *(LAMS[:3] if quick else LAMS)]
    log("EASE: test trade-off (one scoring pass)")
    results = reranked_results(model, split.test, split.train, [("zscore", lam) for lam in lams], ks=(K,))
    frame = tradeoff_frame({lam: results[("zscore", lam)] for lam in lams}, K)
    r = results[("zscore", 0.0)]
    ok = frame[(frame["ndcg_change"] >= -0.05) & (frame["tail_coverage_change"] >= 0.3)]
    return ["### EASE on Gowalla (bundle)\n",
            f"`{bundle_path}`: {model!r}, fitted on the whole train file by another run (bundle data: "
            f"{bundle.meta.get('data')}; extra: {bundle.meta.get('extra')}). Test, same protocol as above:\n",
            md_table(pd.DataFrame([summary_row("ease", model.get_params(), r)])), "",
            bucket_section("ease", r),
            "Popularity re-ranking of EASE on test (z-score normalisation). No λ is chosen here: the bundle was "
            "fitted on the events our validation holdout would hold out, so choosing on it would leak; the "
            "curve is shown for comparison only.\n", md_table(frame), "",
            (f"λ values meeting the target on test (shown, not chosen): {', '.join(map(str, ok['lam']))}."
             if len(ok) else "No λ of the grid meets the target on test."), ""]


# the report -------------------------------------------------------------------------------------------------
def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")) / 2**20
    import sklearn
    import torch

    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
            f"Python {platform.python_version()}, numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
            f"torch {torch.__version__}")


PARTS = ("ml100k", "gowalla", "debias", "ease")


def write_parts(out: Path, header: list[str], sections: dict[str, list[str]]) -> None:
    """Replace the sections of the parts that ran (between `<!-- part:NAME -->` markers) and keep the others,
    and a hand-written `summary` section (the same markers) if the file has one."""
    old = out.read_text() if out.exists() else ""
    kept = {}
    for part in ("summary", *PARTS):
        start, end = f"<!-- part:{part} -->", f"<!-- /part:{part} -->"
        if start in old and end in old:
            kept[part] = old[old.index(start) : old.index(end) + len(end)]
    for part, lines in sections.items():
        kept[part] = "\n".join([f"<!-- part:{part} -->", *lines, f"<!-- /part:{part} -->"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header + [kept[p] + "\n" for p in ("summary", *PARTS) if p in kept]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=["ml100k", "gowalla"],
                        help="ml100k: LDA and baselines + faithfulness; gowalla: LDA and baselines; debias: "
                             "popularity debiasing on Gowalla; ease: EASE on Gowalla from --ease-bundle")
    parser.add_argument("--quick", action="store_true",
                        help="small grids (debias: ML-100K instead of Gowalla): a smoke test")
    parser.add_argument("--debias-bases", nargs="+", default=list(DEBIAS_BASES),
                        choices=["ials", "itemknn", "lda"], help="base models of the debias part")
    parser.add_argument("--ease-bundle", type=Path, default=Path("/tmp/genrec-artifacts/gowalla-ease/model"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "imbalance.md")
    args = parser.parse_args()
    sections = {}
    for part in args.parts:
        start = time.perf_counter()
        if part == "ml100k":
            ml_lines, ml_split, ml_models = movielens_part(args.quick)
            lines = ml_lines + ["### Explanations\n"] + faithfulness_part(ml_split, ml_models, args.quick)
        elif part == "gowalla":
            lines, _ = gowalla_part(args.quick)
        elif part == "debias":
            lines = debias_part(args.quick, tuple(args.debias_bases))
        elif (args.ease_bundle / "model.json").exists():
            lines = ease_part(args.ease_bundle, args.quick)
        else:
            log(f"ease: no bundle at {args.ease_bundle}, skipped")
            continue
        minutes = (time.perf_counter() - start) / 60
        command = ("flock /tmp/genrec-heavy.lock env OMP_NUM_THREADS=2 .venv/bin/python benchmarks/imbalance.py "
                   + " ".join(sys.argv[1:]))
        sections[part] = [f"## {part}\n", f"Command: `{command.strip()}` (this part: {minutes:.1f} min, finished "
                          f"{time.strftime('%Y-%m-%d %H:%M')} UTC); machine: {machine()}\n", *lines]
        log(f"{part}: {minutes:.1f} min")
        write_parts(args.out, HEADER, sections)  # after every part: a later failure keeps the earlier ones
    log(f"wrote {args.out}")


HEADER = ["# LDA, explanation faithfulness and popularity debiasing\n",
          f"- Metrics at K = {K}, full ranking over every item, history items excluded; Recall is hits / "
          "|relevant| (LightGCN), NDCG binary gains; coverage = share of items in some top-K list; tail coverage "
          "= the same for items outside the top 20% by training popularity; ARP = average training popularity "
          "of recommended items. Hyperparameters chosen on validation only; test numbers are reported, never "
          "tuned on.\n"]


if __name__ == "__main__":
    main()
