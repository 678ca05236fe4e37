"""Compact Mult-VAE / Mult-DAE: ONNX export, int8 dynamic quantisation and a low-rank decoder, measured.

For each data set the benchmark trains (or reuses) a Mult-VAE and a Mult-DAE, builds every variant of
`genrec.compress`, and measures its size (bytes on disk), its scoring latency (one user, and a batch of 256
users; history → scores → top-20 with the history masked, median of repeated runs) and NDCG@20 / Recall@20 on
the test users, full ranking. The low-rank decoder's rank is chosen on validation users, never on test users.

- ML-100K: ratings >= 4, binarised; strong generalisation (10% test users, 10% validation users, 80/20 fold-in),
  seed 0, as configs/ml100k.yaml.
- Gowalla: the LightGCN train/test split. It has no validation set, so 2,000 training users (seed 0) give 20%
  of their train.txt items as validation targets; those events are left out of the models' training table.
  Test histories are the full train.txt rows, test targets test.txt (the published protocol).

    OMP_NUM_THREADS=2 flock /tmp/genrec-heavy.lock .venv/bin/python benchmarks/compression.py
    ... benchmarks/compression.py --data ml100k --epochs-gowalla 10 --models multvae multdae

Trained bundles are kept in runs/compression/<data>/<model>/model (reused on the next run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from genrec import compress
from genrec.data.clean import filter_min_value
from genrec.data.interactions import Interactions
from genrec.data.loaders import load_lightgcn, load_movielens
from genrec.data.splits import Holdout, split_fixed, split_strong_generalization
from genrec.evaluation.evaluate import evaluate_topk
from genrec.models.base import Recommender, load_bundle
from genrec.models.multvae import MultDAE, MultVAE

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RUNS = ROOT / "runs" / "compression"
RESULT = ROOT / "benchmarks" / "results" / "compression.md"
K = 20
COMMAND = "OMP_NUM_THREADS=2 flock /tmp/genrec-heavy.lock .venv/bin/python benchmarks/compression.py"


@dataclass
class Benchmark:
    """A data set under its protocol: what the models train on, validate on (rank choice) and are tested on."""

    name: str
    train: Interactions
    validation: Holdout
    test: Holdout
    protocol: str


# data -------------------------------------------------------------------------------------------------------
def ml100k() -> Benchmark:
    data = filter_min_value(load_movielens(DATA / "movielens-100k"), 4, binarize=True)
    split = split_strong_generalization(data, n_heldout=0.1, fold_in=0.8, seed=0)
    return Benchmark("ML-100K", split.train, split.validation, split.test,
                     "strong generalisation, ratings >= 4, 10% + 10% held-out users, 80/20 fold-in, seed 0")


def gowalla(n_validation: int = 2000, share: float = 0.2, seed: int = 0) -> Benchmark:
    """The LightGCN split, with validation targets carved out of train.txt (see the module docstring)."""
    train, test = load_lightgcn(DATA / "lightgcn-gowalla")
    test_split = split_fixed(train, test, protocol="lightgcn")
    rng = np.random.default_rng(seed)
    counts = np.bincount(train.users, minlength=train.n_users)
    users = np.sort(rng.choice(np.flatnonzero(counts >= 5), n_validation, replace=False))
    is_val_user = np.zeros(train.n_users, bool)
    is_val_user[users] = True
    draw = rng.random(len(train))
    # per validation user, the events with the lowest `share` of random keys become targets
    order = np.lexsort((draw, train.users))
    rank = np.empty(len(train), np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank[order] = np.arange(len(train)) - np.repeat(starts, counts)
    n_target = np.maximum(1, np.floor(counts * share)).astype(np.int64)
    is_target = is_val_user[train.users] & (rank < n_target[train.users])
    fit_table = train.select(~is_target)
    targets = sp.csr_matrix((np.ones(is_target.sum(), np.float32), (train.users[is_target], train.items[is_target])),
                            shape=(train.n_users, train.n_items))[users]
    validation = Holdout(fit_table.histories(users), targets, users, "carved from train.txt")
    return Benchmark("Gowalla", fit_table, validation, test_split.test,
                     "LightGCN train/test split (train.txt histories, test.txt targets); validation: 20% of "
                     f"train.txt items of {n_validation} users, left out of training")


# models -----------------------------------------------------------------------------------------------------
def trained(bench: Benchmark, name: str, epochs: int, bundle: Path | None = None) -> tuple[Recommender, dict]:
    """The bundle at `bundle` (trained elsewhere) or in runs/compression/<data>/<name>/model, trained here (best
    validation epoch kept) if absent; with how it was trained."""
    if bundle is not None:
        return external(bench, name, bundle)
    path = RUNS / bench.name.lower().replace("-", "") / name / "model"
    if not (path / "model.json").exists():
        cls = {"multvae": MultVAE, "multdae": MultDAE}[name]
        model = cls(epochs=epochs, train_options={"monitor": f"ndcg@{K}", "progress": False})
        start = time.perf_counter()
        model.fit(bench.train, validation=bench.validation)
        info = {"epochs": epochs, "best_epoch": model.best_epoch_ + 1, "fit_seconds": time.perf_counter() - start,
                "params": {k: v for k, v in model.get_params().items() if k != "train_options"}}
        model.save(path, extra=info)
        print(f"{bench.name} {name}: trained {info}", flush=True)
    bundle = load_bundle(path)
    return bundle.model, bundle.meta["extra"]


def external(bench: Benchmark, name: str, path: Path) -> tuple[Recommender, dict]:
    """A bundle trained by someone else: it must be `name` over the benchmark's item ids; how it was trained is
    read from its model.json (its own training data may include the validation events carved out here)."""
    bundle = load_bundle(path)
    if bundle.model.name != name:
        raise ValueError(f"{path}: a {bundle.model.name} bundle, not {name}")
    if bundle.item_ids is None or not np.array_equal(bundle.item_ids.raw, bench.train.item_ids.raw):
        raise ValueError(f"{path}: its item ids are not {bench.name}'s (items.parquet differs)")
    history = bundle.meta["state"].get("history") or []
    best = bundle.meta["state"].get("best_epoch")
    data = bundle.meta.get("data") or {}
    trained_on = bundle.meta.get("extra", {}).get("trained_on") or data.get("source")
    info = {"epochs": len(history), "best_epoch": len(history) if best is None else best + 1,
            "fit_seconds": sum(h.get("seconds", 0.0) for h in history),
            "params": {k: v for k, v in bundle.meta["params"].items() if k != "train_options"},
            "source": f"bundle {path}, trained elsewhere ({trained_on})",
            "saw_validation": data.get("fingerprint") != bench.train.fingerprint()}
    return bundle.model, info


# variants and measurements ------------------------------------------------------------------------------------
def variants(model: Recommender, bench: Benchmark, work: Path) -> tuple[dict[str, tuple[Recommender, int]], dict]:
    """name -> (scorer, size in bytes), and how the low-rank rank was chosen."""
    rank, rows = compress.choose_rank(model, bench.validation, ranks=(16, 32, 64, 128, 256), tolerance=0.01, k=K)
    low = compress.low_rank_decoder(model, rank)
    fp32 = compress.export_onnx(model, work / "model.onnx")
    int8 = compress.quantize_onnx(fp32, work / "model.int8.onnx")
    low_int8 = compress.quantize_onnx(compress.export_onnx(low, work / "low.onnx"), work / "low.int8.onnx")
    out = {
        "torch fp32 (sparse input)": (model, compress.weight_bytes(model)),
        "ONNX fp32 (dense input)": (compress.OnnxRecommender(fp32), fp32.stat().st_size),
        "ONNX int8 (onnxruntime dynamic)": (compress.OnnxRecommender(int8), int8.stat().st_size),
        "torch int8 (row-wise input, dynamic Linear)": (q := compress.quantize_int8(model), compress.weight_bytes(q)),
        f"torch low-rank decoder (r={rank})": (low, compress.weight_bytes(low)),
        f"torch low-rank r={rank} + int8": (lq := compress.quantize_int8(low), compress.weight_bytes(lq)),
        f"ONNX low-rank r={rank} + int8": (compress.OnnxRecommender(low_int8), low_int8.stat().st_size),
    }
    return out, {"rank": rank, "candidates": rows}


def latency_ms(scorer: Recommender, histories, rows: np.ndarray, batch: int, repeats: int) -> float:
    """Median wall time (ms) of history -> scores -> top-K with the history masked, for `batch` users."""
    times = []
    groups = [rows[i : i + batch] for i in range(0, len(rows) - batch + 1, batch)]  # (batch users each)
    scorer.recommend(histories[groups[0]], k=K, batch_size=batch)  # warm-up
    for _ in range(repeats):
        for g in groups:
            h = histories[g]
            start = time.perf_counter()
            scorer.recommend(h, k=K, batch_size=batch)
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def measure(bench: Benchmark, name: str, model: Recommender) -> dict:
    work = RUNS / bench.name.lower().replace("-", "") / name / "compressed"
    found, rank_choice = variants(model, bench, work)
    rng = np.random.default_rng(0)
    test = bench.test
    single = np.sort(rng.choice(len(test), min(50, len(test)), replace=False))
    batch = np.sort(rng.choice(len(test), 256, replace=len(test) < 256))  # ML-100K has fewer test users
    reference = None
    rows = []
    for variant, (scorer, size) in found.items():
        items = scorer.recommend(test.histories, k=K).items
        reference = items if reference is None else reference  # the first variant is torch fp32
        r = evaluate_topk(items, test, ks=(K,), metrics=("ndcg", "recall"))
        rows.append({"variant": variant, "bytes": int(size),
                     "single_ms": latency_ms(scorer, test.histories, single, 1, 3),
                     "batch256_ms": latency_ms(scorer, test.histories, batch, len(batch), 5),
                     "ndcg": r[f"ndcg@{K}"], "recall": r[f"recall@{K}"],
                     "identical_topk": float((items == reference).all(axis=1).mean())})
        print(f"  {variant}: {rows[-1]}", flush=True)
    return {"rows": rows, "rank_choice": rank_choice}


# the report ---------------------------------------------------------------------------------------------------
PUBLISHED = {"Gowalla": {"multvae": (0.1335, 0.1641, "He et al. 2020 (LightGCN, SIGIR), Table 4: Mult-VAE "
                                                     "600-200 trained to convergence")}}


def machine() -> str:
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{model}, {os.cpu_count()} cores, {ram:.0f} GiB RAM; torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, onnxruntime {ort_version()} with the same intra-op thread count; "
            f"Python {platform.python_version()}")


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def markdown(results: dict) -> str:
    lines = ["# Compact Mult-VAE / Mult-DAE: ONNX, int8 and a low-rank decoder", "",
             f"Machine: {results['machine']}. The machine is shared with other jobs, so latencies are indicative.",
             "",
             "Size: bytes of the weights as stored (torch: tensors, int8 entries one byte each; ONNX: the .onnx "
             "file). Latency: history -> scores -> top-20 with the history masked, median over repeats (one user: "
             "50 users x 3; batch: 256 users x 5). NDCG@20 / Recall@20 (recall = hits / |test items|, as LightGCN): "
             "all test users, full ranking. 'same top-20': share of test users whose top-20 list (in order) equals "
             "the torch fp32 model's. Relative figures are against torch fp32 of the same model.", ""]
    lines += summary(results)
    for data, per_model in results["data"].items():
        for name, r in per_model.items():
            base = r["rows"][0]
            lines += [f"## {data}: {name}", "", f"Run with: `{r.get('command', '')}`", "",
                      f"Protocol: {r['protocol']}. Training: {r['training']}.", ""]
            pub = PUBLISHED.get(data, {}).get(name)
            if pub:
                lines += [f"Published (not measured here): NDCG@20 {pub[0]}, Recall@20 {pub[1]} — {pub[2]}.", ""]
            lines += ["| variant | bytes | smaller | 1 user ms | 256 users ms | faster (256) | NDCG@20 | rel. NDCG@20 "
                      "| Recall@20 | same top-20 |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for row in r["rows"]:
                lines.append(
                    f"| {row['variant']} | {row['bytes']:,} | {base['bytes'] / row['bytes']:.2f}x | "
                    f"{row['single_ms']:.2f} | {row['batch256_ms']:.1f} | "
                    f"{base['batch256_ms'] / row['batch256_ms']:.2f}x | {row['ndcg']:.4f} | "
                    f"{row['ndcg'] / base['ndcg'] - 1:+.2%} | {row['recall']:.4f} | {row['identical_topk']:.1%} |")
            choice = r["rank_choice"]
            cands = ", ".join(f"r={c['rank']}: {c[f'ndcg@{K}']:.4f} ({c['relative']:+.1%})"
                              for c in choice["candidates"])
            lines += ["", f"Low-rank rank chosen on validation users (smallest within 1% of the full model's "
                          f"validation NDCG@20): r={choice['rank']}. Candidates: {cands}.", ""]
    return "\n".join(lines) + "\n"


def summary(results: dict) -> list[str]:
    """Per data set and model: the variants >= 2x smaller or faster (256 users) within 1% relative NDCG@20."""
    lines = ["## Summary: >= 2x smaller or faster with <= 1% relative NDCG@20 loss", ""]
    for data, per_model in results["data"].items():
        for name, r in per_model.items():
            base = r["rows"][0]
            ratios = [(row, base["bytes"] / row["bytes"], base["batch256_ms"] / row["batch256_ms"])
                      for row in r["rows"][1:] if row["ndcg"] >= 0.99 * base["ndcg"]]
            good = [g for g in ratios if g[1] >= 2 or g[2] >= 2]
            found = "; ".join(f"{row['variant']} ({smaller:.2f}x smaller, {faster:.2f}x faster, NDCG@20 "
                              f"{row['ndcg'] / base['ndcg'] - 1:+.2%})" for row, smaller, faster in good)
            lines.append(f"- {data}, {name}: {found or 'none'}")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["ml100k", "gowalla"], choices=["ml100k", "gowalla"])
    parser.add_argument("--models", nargs="+", default=["multvae", "multdae"], choices=["multvae", "multdae"])
    parser.add_argument("--epochs-ml100k", type=int, default=200)
    parser.add_argument("--epochs-gowalla", type=int, default=10)
    parser.add_argument("--train-only", action="store_true", help="Train (or find) the bundles and stop.")
    parser.add_argument("--bundle", type=Path, help="Measure this bundle (trained elsewhere) instead of training; "
                        "needs exactly one --data and one --models.")
    args = parser.parse_args(argv)
    if args.bundle is not None and (len(args.data) != 1 or len(args.models) != 1):
        parser.error("--bundle needs exactly one --data and one --models")
    fresh: dict[str, dict] = {}
    for data in args.data:
        bench = {"ml100k": ml100k, "gowalla": gowalla}[data]()
        epochs = args.epochs_ml100k if data == "ml100k" else args.epochs_gowalla
        for name in args.models:
            model, info = trained(bench, name, epochs, args.bundle)
            if args.train_only:
                continue
            r = measure(bench, name, model)
            r["protocol"] = bench.protocol
            if info.get("saw_validation"):
                r["protocol"] += (". The bundle was trained elsewhere, on other events of train.txt than this "
                                  "script's training table, so some validation targets were training items for it: "
                                  "they serve only to compare low-rank variants with the full model when choosing "
                                  "the rank; the test numbers are unaffected")
            r["command"] = " ".join([COMMAND, *(argv or [])])
            r["training"] = (f"{info.get('source', 'trained by this script')}: {info['params']}, "
                             f"{info['epochs']} epochs, kept epoch {info['best_epoch']}, {info['fit_seconds']:.0f} s")
            fresh.setdefault(bench.name, {})[name] = r
    if args.train_only:
        return
    store = RUNS / "results.json"  # read now: another data set's run may have written it meanwhile
    results = json.loads(store.read_text()) if store.exists() else {"data": {}}
    for data, per_model in fresh.items():
        results["data"].setdefault(data, {}).update(per_model)
    results["machine"] = machine()
    store.write_text(json.dumps(results, indent=1))
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(markdown(results))
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main(sys.argv[1:])
