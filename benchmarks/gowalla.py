"""Classical baselines on the LightGCN Gowalla split (issue 2): popularity, ItemKNN, EASE, iALS, BPR.

Protocol: the NGCF/LightGCN files as given (train.txt / test.txt, 29,858 users, 40,981 items), full ranking over
every item except the user's training items, Recall@20 = hits / |test items| and NDCG@20 (LightGCN definitions).
Hyperparameters are chosen on a validation holdout carved out of train.txt only (a random 10% of each user's
training items, seed 0), by Recall@20; the chosen model is then refitted on the whole train.txt and scored once
on test.txt. Every fit runs in a fresh process, so "peak memory" is that process's peak RSS (data, fit and
everything before it); "fit s" is the wall-clock time of `fit` alone.

    OMP_NUM_THREADS=2 flock /tmp/genrec-heavy.lock .venv/bin/python benchmarks/gowalla.py --models itemknn

writes benchmarks/results/gowalla.md. Every finished fit (validation or test) is kept, as JSON in a comment at the
end of that file, and reused by later runs: one model per invocation, an interrupted run loses only the fit in
progress, and the file always shows every model run so far. `--fresh` drops a model's kept fits first;
`--validation-only` fits the grid and stops before the test fit; `--other-seeds` also validates ROBUSTNESS_GRIDS on
other holdout draws (reported beside the choice, never used for it). The final
EASE model is saved as a bundle (`--save-ease`) for other benchmarks to reuse.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lightgcn-gowalla"
RESULTS = Path(__file__).resolve().parent / "results" / "gowalla.md"
K = 20

SAVE_EASE = Path("/tmp/genrec-artifacts/gowalla-ease/model")
STORE = re.compile(r"<!-- gowalla-runs\n(.*?)\n-->", re.S)

# the validation grids: small on purpose (one EASE fit takes minutes on 2 cores; the heavy-lock time is rationed)
GRIDS: dict[str, list[dict]] = {
    "popularity": [{}],
    "itemknn": [{"k": k, "shrink": s} for k, s in ((50, 10.0), (200, 10.0), (200, 50.0), (500, 100.0), (500, 300.0))]
    # TF-IDF multiplies every dot product by about idf^2 ~ 50, so its shrink is scaled up by as much; alpha > 0.5
    # is Aiolli's asymmetric cosine. Picked after a look at a 40% user sample of train.txt (see the results notes).
    + [{"k": 200, "shrink": 2000.0, "feature_weighting": "tfidf", "alpha": a} for a in (0.5, 0.7, 0.85, 1.0)]
    + [{"k": 200, "shrink": 5000.0, "feature_weighting": "tfidf", "alpha": 0.85},
       {"k": 100, "shrink": 0.0, "prediction": "average_bias"}],  # BARS's ItemKNN: cosine, 100, no shrink
    "ease": [{"l2": l2} for l2 in (25.0, 35.0, 50.0, 70.0, 100.0, 200.0, 500.0)],
    "ials": [{"factors": f, "regularization": r, "alpha": a, "iterations": 15, "num_threads": 2}
             for f, r, a in ((128, 0.01, 40.0), (128, 1.0, 10.0), (256, 1.0, 10.0))],
    "bpr": [{"factors": f, "learning_rate": lr, "iterations": 100} for f, lr in ((128, 0.01), (128, 0.05))],
}
# How much the choice depends on which 10% is held out: the same validation fits on other holdout seeds. They are
# reported beside the choice and never change it (the protocol is seed 0's holdout, as NGCF/LightGCN's one split).
ROBUSTNESS_SEEDS = (1, 2)
ROBUSTNESS_GRIDS: dict[str, list[dict]] = {"ease": [{"l2": l2} for l2 in (35.0, 50.0, 70.0, 100.0)]}
NAMES = {"popularity": "Popularity", "itemknn": "ItemKNN", "ease": "EASE", "ials": "iALS", "bpr": "BPR"}
# (Recall@20, NDCG@20, source) published on this split
PUBLISHED = {
    "itemknn": (0.1570, 0.1214, "BARS open benchmark (reczoo/BARS, ItemKNN_gowalla_x0, the same LightGCN files): "
                "cosine, 100 neighbours, weighted average of the neighbours centred on the item means, no shrinkage; "
                "neighbours searched in {10, ..., 200} and cosine/Pearson against the test file (BARS has no "
                "validation split)"),
    "ease": (0.1765, 0.1467, "BARS open benchmark (EASE_gowalla_x0): l2=80 searched in {1, 10, 20, 50, 80, 100, 150, "
             "200, 500} against the test file"),
}
REFERENCE_ROWS = [
    ("Mult-VAE", 0.1641, 0.1335, "He et al., LightGCN (SIGIR 2020), Table 4"),
    ("LightGCN", 0.1830, 0.1554, "He et al., LightGCN (SIGIR 2020), Table 4"),
]
NOTES = [
    "- Grids are small because the benchmark shares a 2-core machine under a rationed lock (45 minutes of lock "
    "time for the first version of this file, 35 more for the second round: EASE l2=100 and the ItemKNN points with "
    "feature weighting); the validation table lists every point tried. iALS and BPR are in the script "
    "(`--models ials bpr`) but were not run for this file, for the same reason.",
    "- How the second-round ItemKNN points were picked: before spending lock time, variants were fitted off the "
    "lock on a random 40% of train.txt's users (11,772 users, their own random 10% holdout; test.txt not read), "
    "Recall@20 there: binary cosine k=200 shrink=50 0.159; TF-IDF shrink 500 / 2000 / 5000 0.164 / 0.168 / 0.165 "
    "(TF-IDF multiplies each co-occurrence by about idf^2 ~ 50, so shrink must grow by as much; at shrink 50 it "
    "fell to 0.141); TF-IDF shrink 2000 with asymmetric alpha 0.7 / 0.85 0.171 / 0.172; BM25 0.105 (shrink 50) "
    "and 0.109 (shrink 2000, alpha 0.7). BM25's item-side weight falls with popularity (0.03-1.64 here, 1st-99th "
    "percentile 0.29-1.44); it scales the history at scoring (the same similarity scored with the plain binary "
    "history: 0.125) and, on binary data, cancels out of the cosine except against the shrink, which it makes "
    "larger for popular items; both hurt on Gowalla. BARS's prediction rule (weighted average centred on item "
    "means, k=100, no shrink) 0.122 (0.112 without the centring). Those sample numbers are not in the tables "
    "above; the most promising settings, and BARS's own, were then run on the full validation split. There TF-IDF "
    "and alpha kept their order, but BARS's rule did not: the sample put it far below binary cosine (0.122 vs 0.159), "
    "the full split above it (0.1947 vs 0.1854), probably because a 40% sample leaves many items with few "
    "co-occurrences, where a normalised average is noisy. A sample is a guide to which points to fit, not a "
    "substitute for the validation split.",
    "- EASE: l2=100 was added first (200 had been the smallest l2 tried); validation chose it and its test fit gave "
    "0.1764 / 0.1466 (Recall / NDCG, kept in the JSON below). l2=50 was then added because 100 sat at the "
    "grid's edge; validation prefers 50 (0.2167 vs 0.2143), so the table reports 50, whose test NDCG@20 misses the "
    "0.146 bar by 0.0005. l2=25 was then validated too (0.2132), so 50 is now an interior optimum: a parabola "
    "through the three validation Recall@20 values in log(l2) peaks near l2=53, which would not move the test "
    "numbers materially. BARS's l2=80, searched on the test file, lies between 50 and 100; validation on a 10% "
    "holdout of train.txt prefers less regularisation than the test file does. The test numbers of 100 did not "
    "and must not change the choice.",
    "- EASE, session 7 (this note was written before its fits ran): l2=35 and 70 were added to the grid of the "
    "protocol's holdout (seed 0), so that the choice between the 25 / 50 / 100 points is made on validation rather "
    "than by interpolation; whatever validation prefers among the seven values is the test row. Separately, "
    "l2 in {35, 50, 70, 100} was validated on two more holdout draws (seeds 1 and 2, `--other-seeds`) to show how "
    "much the choice depends on which 10% is held out; those rows are reported only and cannot change the choice. "
    "The test figures of l2=50, 100 and 200 were known when this was planned, which is why the second study is "
    "kept out of the choice.",
    "- EASE, session 7 results: on the protocol's holdout l2=50 stays the best of the seven values (Recall@20 "
    "0.2167; 70: 0.2157, 35: 0.2151), so the test row is unchanged (0.1752 / 0.1455). On the other two holdout "
    "draws validation prefers l2=70 (0.2166 vs 0.2155, 0.2153 vs 0.2145); averaged over the three draws, 70 leads "
    "50 by 0.0003 in Recall@20 and trails it by 0.0003 in NDCG@20. The validation optimum is flat between 50 and "
    "70, and which of them a single 10% holdout picks is down to the draw. The issue's NDCG@20 bar (0.146, from "
    "BARS's l2=80 chosen on the test file) is 0.0005 above the row the protocol gives; l2=70 was not fitted on "
    "test, because no rule fixed before these fits would have chosen it.",
    "- ItemKNN: validation chose alpha=1.0, the end of alpha's range (the denominator is then |x_i|^2 + shrink, "
    "the history item's norm alone: a shrunk conditional probability P(j | i) on TF-IDF weights), so no wider "
    "alpha grid exists; k=200 and shrink=2000 lie inside the values tried.",
    "- BARS's ItemKNN (the published row) is a different estimator from Dacrema et al.'s ItemKNNCF: each item's "
    "100 neighbour weights are normalised to sum to 1 and centred on the item means (`prediction='average_bias'` "
    "here); its neighbour count and similarity were searched against the test file, so the published row is an "
    "optimistic reference, not a bar tuned the way ours is.",
    "- ItemKNN points with fit times near 100 s were fitted by an earlier version of src/genrec/models/itemknn.py "
    "that pruned dense blocks of S (the same S up to ties); the current one works on the sparse co-occurrences "
    "only and fits in 12-40 s, depending on the load.",
    "- EASE uses the Woodbury form on this split (29,858 users < 40,981 items): it inverts the 29,858^2 user Gram "
    "matrix instead of the 40,981^2 item one (the same B up to float32 rounding, 2.6x fewer flops); see "
    "src/genrec/models/ease.py.",
    "- Timings were taken while other jobs ran on the same 2 cores outside the lock (the load average column); "
    "on an idle machine they would be shorter.",
]
TARGETS = {"ease": (0.175, 0.146), "itemknn": (0.155, 0.120)}
EASE_LIMITS = (600.0, 16.0)  # fit seconds, peak GB


def load_stage(stage: str, seed: int = 0):
    """(train, holdout) for 'validation' (train.txt minus 10% per user / those 10%, drawn with `seed`) or 'test'
    (the files)."""
    from genrec.data.loaders import load_lightgcn
    from genrec.data.splits import split_fixed, split_random_holdout

    train, test = load_lightgcn(DATA)
    if stage == "test":
        return train, split_fixed(train, test, protocol="lightgcn_fixed").test
    tuning = split_random_holdout(train, test_fraction=0.1, validation_fraction=0.0, seed=seed)
    return tuning.train, tuning.test


def run_job(name: str, params: dict, stage: str, save_to: Path | None = None, seed: int = 0) -> dict:
    """Fit one model on one stage's training data and evaluate it; runs in its own process. With `save_to`, the
    fitted model (and train.txt's id maps and histories) is saved there as a bundle after the measurements."""
    from genrec.evaluation.evaluate import evaluate
    from genrec.models import get_model_class

    load = os.getloadavg()[0]
    train, holdout = load_stage(stage, seed)
    model = get_model_class(name)(**params)
    start = time.perf_counter()
    model.fit(train)
    fit_seconds = time.perf_counter() - start
    fit_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    results = evaluate(model, holdout, ks=(K,), metrics=("recall", "ndcg"), train=train)
    return {"model": name, "params": params, "stage": stage, **({"seed": seed} if seed else {}),
            "recall": results[f"recall@{K}"], "ndcg": results[f"ndcg@{K}"], "users": results.n_users,
            "fit_seconds": fit_seconds, "eval_seconds": results.seconds, "fit_peak_gb": fit_peak,
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "load_average": load,
            "saved_to": _save(model, train, save_to)}


def _save(model, train, path: Path | None) -> str | None:
    if path is None:
        return None
    model.save(path, train=train, extra={"benchmark": "benchmarks/gowalla.py", "data": "lightgcn-gowalla train.txt"})
    return str(path)


def in_fresh_process(name: str, params: dict, stage: str, save_to: Path | None = None, seed: int = 0) -> dict:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(run_job, name, params, stage, save_to, seed).result()


def tune_and_test(name: str, store: dict, keep, log, save_to: Path | None = None, test: bool = True) -> None:
    """Every grid point on validation, then (with `test`) the best validated (by Recall@20) refitted on train.txt
    and scored on test. Fits already in `store` are reused; `keep` is called after each new one."""
    for params in GRIDS[name]:
        _validated(name, params, store, keep, log)
    best = max(_trials(store, name, "validation"), key=lambda t: t["recall"])
    if not test:
        log(f"  best on validation so far: {best['params']} (test not run: --validation-only)")
        return
    final = store.get(_key(name, "test", best["params"]))
    if final is None:
        final = in_fresh_process(name, best["params"], "test", save_to)
        keep(final)
    log(f"  test {name} {best['params']}: recall {final['recall']:.4f} ndcg {final['ndcg']:.4f} "
        f"fit {final['fit_seconds']:.0f}s peak {final['peak_gb']:.1f} GB")


def validate_other_seeds(name: str, store: dict, keep, log) -> None:
    """ROBUSTNESS_GRIDS[name] on validation for every seed in ROBUSTNESS_SEEDS (reported, never used to choose)."""
    for seed in ROBUSTNESS_SEEDS:
        for params in ROBUSTNESS_GRIDS.get(name, []):
            _validated(name, params, store, keep, log, seed)


def _validated(name: str, params: dict, store: dict, keep, log, seed: int = 0) -> dict:
    """The kept validation fit of `params` on holdout `seed`, fitted (and kept) first if there is none."""
    trial = store.get(_key(name, "validation", params, seed))
    if trial is None:
        trial = in_fresh_process(name, params, "validation", seed=seed)
        keep(trial)
    where = f" seed {seed}" if seed else ""
    log(f"  validation{where} {name} {params}: recall {trial['recall']:.4f} ndcg {trial['ndcg']:.4f} "
        f"fit {trial['fit_seconds']:.0f}s")
    return trial


# the kept fits ------------------------------------------------------------------------------------------------
def _key(name: str, stage: str, params: dict, seed: int = 0) -> str:
    """Seed 0 (the protocol's holdout) keeps the key it had before other seeds existed."""
    return f"{name}|{stage}|{json.dumps(params, sort_keys=True)}" + (f"|seed={seed}" if seed else "")


def _trial_key(trial: dict) -> str:
    return _key(trial["model"], trial["stage"], trial["params"], trial.get("seed", 0))


def _trials(store: dict, name: str, stage: str, seed: int = 0) -> list[dict]:
    return [t for t in store.values() if t["model"] == name and t["stage"] == stage and t.get("seed", 0) == seed]


def read_store(path: Path) -> dict:
    found = STORE.search(path.read_text()) if path.exists() else None
    return {_trial_key(t): t for t in json.loads(found.group(1))} if found else {}


def _final(store: dict, name: str) -> dict | None:
    """The test fit of the best validated hyperparameters, if it has run."""
    validated = _trials(store, name, "validation")
    if not validated:
        return None
    return store.get(_key(name, "test", max(validated, key=lambda t: t["recall"])["params"]))


# report -------------------------------------------------------------------------------------------------------
def machine() -> list[str]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line), "?")
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    import implicit
    import numpy
    import scipy

    return [
        f"- CPU: {model}, {len(os.sched_getaffinity(0))} cores available to the process "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); RAM {mem_kb / 2**20:.1f} GiB",
        f"- load average when this file was written: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (the machine is "
        "shared; other work running beside the benchmark slows the timings)",
        f"- Python {platform.python_version()}, numpy {numpy.__version__}, scipy {scipy.__version__}, "
        f"implicit {implicit.__version__}",
    ]


def fmt_params(params: dict) -> str:
    shown = {k: v for k, v in params.items() if k != "num_threads"}
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()) or "-"


def report(store: dict) -> str:
    """The whole results file from every kept fit (models in GRIDS order), the kept fits at the end."""
    names = [n for n in GRIDS if _trials(store, n, "validation")]
    finals = {n: f for n in names if (f := _final(store, n)) is not None}
    commands = sorted({t["command"] for t in store.values()}, key=lambda c: min(
        t["finished"] for t in store.values() if t["command"] == c))
    users = next(iter(finals.values()))["users"] if finals else 0
    lines = ["# Gowalla (LightGCN split): classical baselines", "", *machine(), "- commands (one model each; "
             "fits kept between runs, see benchmarks/gowalla.py):", *[f"  - `{c}`" for c in commands], "",
             "## Test (train.txt -> test.txt, full ranking)", "",
             f"Recall@{K} = hits / |test items|, NDCG@{K} binary gains, full ranking over every item except the "
             f"user's train.txt items; {users} test users. Fit seconds: wall clock of `fit` alone; peak memory: "
             "the fitting process's peak RSS up to the end of the fit (data and imports included).", "",
             f"| model | hyperparameters (chosen on validation) | Recall@{K} | NDCG@{K} | published Recall / NDCG "
             "| fit seconds | peak memory (fit) |", "|---|---|---:|---:|---|---:|---:|"]
    for name, final in finals.items():
        pub = PUBLISHED.get(name)
        pub_text = f"{pub[0]:.4f} / {pub[1]:.4f}" if pub else ""
        lines.append(f"| {NAMES[name]} | {fmt_params(final['params'])} | {final['recall']:.4f} | {final['ndcg']:.4f} "
                     f"| {pub_text} | {final['fit_seconds']:.1f} | {final['fit_peak_gb']:.2f} GB |")
    for label, recall, ndcg, _ in REFERENCE_ROWS:
        lines.append(f"| {label} (published only) | | | | {recall:.4f} / {ndcg:.4f} | | |")
    lines += ["", "Published numbers: " + "; ".join(
        [f"{NAMES[n]}: {p[2]}" for n, p in PUBLISHED.items()] + [f"{r[0]}: {r[3]}" for r in REFERENCE_ROWS])
        + ". No published popularity figure on this split is cited here.", ""]
    lines += acceptance(finals)
    lines += validation_table(store, names, finals)
    lines += seeds_table(store, names)
    lines += ["", "## Notes", "", *NOTES, *edge_notes(store, finals)]
    kept = json.dumps(sorted(store.values(), key=lambda t: t["finished"]), indent=None)
    return "\n".join(lines) + f"\n\n<!-- gowalla-runs\n{kept}\n-->\n"


def validation_table(store: dict, names: list[str], finals: dict[str, dict]) -> list[str]:
    lines = ["", "## Validation (hyperparameter choice)", "",
             "train.txt split by `split_random_holdout(train, test_fraction=0.1, validation_fraction=0.0, seed=0)`: "
             "a random 10% of each user's train.txt items are the validation targets, the other 90% the history "
             "and training data. test.txt is not read during the choice; the best Recall@20 is chosen. Load average: "
             "the machine's 1-minute load when the fit started (it is shared; 2 cores).", "",
             f"| model | hyperparameters | Recall@{K} | NDCG@{K} | fit seconds | load average | chosen |",
             "|---|---|---:|---:|---:|---:|---|"]
    for name in names:
        chosen = finals.get(name, {}).get("params")
        for t in sorted(_trials(store, name, "validation"), key=lambda t: sorted(t["params"].items())):
            mark = "yes" if t["params"] == chosen else ""
            lines.append(f"| {NAMES[name]} | {fmt_params(t['params'])} | {t['recall']:.4f} | {t['ndcg']:.4f} "
                         f"| {t['fit_seconds']:.1f} | {t['load_average']:.1f} | {mark} |")
    return lines


def seeds_table(store: dict, names: list[str]) -> list[str]:
    """Validation Recall@20 / NDCG@20 of ROBUSTNESS_GRIDS on every holdout seed, and each seed's best."""
    seeds = (0, *ROBUSTNESS_SEEDS)
    lines = []
    for name in names:
        rows = [p for p in ROBUSTNESS_GRIDS.get(name, [])
                if all(store.get(_key(name, "validation", p, s)) for s in seeds)]
        if not rows:
            continue
        if not lines:
            lines = ["", "## Validation on other holdout seeds (how robust the choice is)", "",
                     "The same validation fits with the 10% holdout drawn with other seeds "
                     "(`split_random_holdout(..., seed=S)`, `--other-seeds`). Reported only: the choice above "
                     "uses seed 0's holdout and was not changed by these rows. Recall@20 / NDCG@20.", ""]
        lines += [f"| {NAMES[name]} | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
                  "|---|" + "---:|" * (len(seeds) + 1)]
        for params in rows:
            trials = [store[_key(name, "validation", params, s)] for s in seeds]
            mean = [sum(t[m] for t in trials) / len(trials) for m in ("recall", "ndcg")]
            lines.append(f"| {fmt_params(params)} | " + " | ".join(f"{t['recall']:.4f} / {t['ndcg']:.4f}"
                                                                  for t in trials)
                         + f" | {mean[0]:.4f} / {mean[1]:.4f} |")
        best = [fmt_params(max(rows, key=lambda p: store[_key(name, "validation", p, s)]["recall"])) for s in seeds]
        lines += ["", f"Best Recall@20 by seed ({', '.join(map(str, seeds))}): {'; '.join(best)}.", ""]
    return lines


def edge_notes(store: dict, finals: dict[str, dict]) -> list[str]:
    """A line for every chosen hyperparameter that sits at the end of the range validated."""
    lines = []
    for name, final in finals.items():
        for param, value in final["params"].items():
            tried = {t["params"][param] for t in _trials(store, name, "validation") if param in t["params"]}
            at_bound = param == "alpha" and value in (0.0, 1.0)  # the asymmetric cosine's alpha lives in [0, 1]
            if isinstance(value, int | float) and len(tried) > 1 and value in (min(tried), max(tried)) and not at_bound:
                end = "largest" if value == max(tried) else "smallest"
                lines.append(f"- {NAMES[name]}: validation chose the {end} {param} tried ({value:g}); a wider grid "
                             "might do better.")
    return lines


def acceptance(finals: dict[str, dict]) -> list[str]:
    lines = ["## Issue 2 acceptance", ""]
    for name, (recall_min, ndcg_min) in TARGETS.items():
        if name in finals:
            final = finals[name]
            ok = final["recall"] >= recall_min and final["ndcg"] >= ndcg_min
            lines.append(f"- {NAMES[name]} Recall@{K} >= {recall_min} and NDCG@{K} >= {ndcg_min}: "
                         f"{'pass' if ok else 'FAIL'} ({final['recall']:.4f} / {final['ndcg']:.4f})")
    if "ease" in finals:
        final = finals["ease"]
        ok = final["fit_seconds"] < EASE_LIMITS[0] and final["fit_peak_gb"] < EASE_LIMITS[1]
        lines.append(f"- EASE fit under {EASE_LIMITS[0]:.0f} s and {EASE_LIMITS[1]:.0f} GB: {'pass' if ok else 'FAIL'} "
                     f"({final['fit_seconds']:.0f} s, peak {final['fit_peak_gb']:.2f} GB during the fit)")
        if final.get("saved_to"):
            lines.append(f"- the test-stage EASE model was saved as a bundle at `{final['saved_to']}` (outside the "
                         "repository; lost when /tmp is cleared)")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(GRIDS), default=["popularity", "itemknn", "ease"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--fresh", action="store_true", help="drop the kept fits of --models first")
    parser.add_argument("--validation-only", action="store_true", help="fit the grids on validation, skip test")
    parser.add_argument("--other-seeds", action="store_true",
                        help=f"also validate ROBUSTNESS_GRIDS on holdout seeds {ROBUSTNESS_SEEDS} (reported only)")
    parser.add_argument("--save-ease", type=Path, default=SAVE_EASE, help="bundle folder for the final EASE model")
    args = parser.parse_args(argv)
    if not (DATA / "train.txt").exists():
        sys.exit(f"{DATA}/train.txt is missing; see ../shared/data/README.md")
    command = " ".join([f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}",
                        shlex.quote(os.path.relpath(sys.executable)), *map(shlex.quote, sys.argv)])
    store = read_store(args.out)
    if args.fresh:
        store = {k: t for k, t in store.items() if t["model"] not in args.models}

    def keep(trial: dict) -> None:
        store[_trial_key(trial)] = {**trial, "command": command, "finished": time.time()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report(store))

    for name in args.models:
        print(f"{NAMES[name]}:", flush=True)
        tune_and_test(name, store, keep, lambda msg: print(msg, flush=True),
                      args.save_ease if name == "ease" else None, test=not args.validation_only)
        if args.other_seeds:
            validate_other_seeds(name, store, keep, lambda msg: print(msg, flush=True))
    text = report(store)
    args.out.write_text(text)
    print(text[:STORE.search(text).start()] if STORE.search(text) else text)


if __name__ == "__main__":
    main()
