"""Scale benchmark: a synthetic log of 500k users x 50k items x 50M events prepared with Spark into Parquet
shards, then Mult-VAE trained by streaming those shards, with peak memory and time beside the FLOP floor.

Steps (each appends its figures to OUT/results.json; run them under the heavy lock, in order):
  python benchmarks/scale.py generate --out /tmp/genrec-scale          # the synthetic log, Parquet
  python benchmarks/scale.py prepare  --out /tmp/genrec-scale          # Spark: dedup, 5-core, split, shards
  python benchmarks/scale.py train    --out /tmp/genrec-scale --batches 40   # Mult-VAE streaming shards
  python benchmarks/scale.py report   --out /tmp/genrec-scale          # machine and all figures
`train --batches N` times the first N batches of the epoch and extrapolates to the whole epoch (0 = all).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import time
from pathlib import Path

import numpy as np


def _record(out: Path, step: str, figures: dict) -> None:
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[step] = figures
    path.write_text(json.dumps(results, indent=2))
    print(step, json.dumps(figures, indent=2))


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


# 1. the synthetic log -----------------------------------------------------------------------------------------
def generate(out: Path, n_users: int, n_items: int, n_events: int, n_files: int, seed: int) -> None:
    """Users with log-normal activity (>= 5 events) in 50 taste groups; each group has its own Zipf(0.9)
    popularity over items (a group-specific rotation of one ranking); timestamps over a year; ratings 1..5.
    Written user range by user range, so memory holds one file's events."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.0, n_users)
    lengths = np.maximum(5, np.round(activity / activity.sum() * (n_events - 5 * n_users) + 5)).astype(np.int64)
    group = rng.integers(0, 50, n_users)
    cdf = np.cumsum(1.0 / np.arange(1, n_items + 1) ** 0.9)
    cdf /= cdf[-1]
    folder = out / "log"
    folder.mkdir(parents=True, exist_ok=True)
    for f, users in enumerate(np.array_split(np.arange(n_users), n_files)):
        user = np.repeat(users, lengths[users])
        rank = np.searchsorted(cdf, rng.random(len(user)))
        item = (rank + group[user] * (n_items // 50)) % n_items
        table = pa.table({"user": user, "item": item.astype(np.int64),
                          "rating": rng.integers(1, 6, len(user)).astype(np.float64),
                          "ts": rng.integers(1_600_000_000, 1_631_536_000, len(user))})
        pq.write_table(table, folder / f"part-{f:03d}.parquet")
    _record(out, "generate", {"users": n_users, "items": n_items, "events": int(lengths.sum()), "files": n_files,
                              "seconds": time.perf_counter() - start, "peak_rss_gb": _peak_rss_gb()})


# 2. Spark preparation -----------------------------------------------------------------------------------------
def prepare(out: Path, n_shards: int, driver_memory: str, n_heldout: int) -> None:
    from genrec.spark import local_session
    from genrec.spark import prepare as P

    start = time.perf_counter()
    spark = local_session("genrec-scale", cores=2, shuffle_partitions=64, driver_memory=driver_memory,
                          extra={"spark.local.dir": str(out / "spark-tmp")})
    events = P.read_interactions(spark, out / "log", value="rating", timestamp="ts")
    meta = P.prepare(spark, events, out / "prepared", user_k=5, item_k=5, n_heldout=n_heldout, seed=0,
                     n_shards=n_shards)
    seconds = time.perf_counter() - start
    spark.stop()
    train_rows = sum(_parquet_rows(p) for p in (out / "prepared" / "train").glob("*.parquet"))
    _record(out, "prepare", {**meta, "train_events": train_rows, "seconds": seconds, "driver_memory": driver_memory,
                             "spark_jvm_peak_rss_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2})


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


# 3. streaming training ----------------------------------------------------------------------------------------
def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The best float32 matrix-multiply rate of this process's threads (the FLOP floor's denominator)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def mult_vae_flops(n_users: int, nnz: int, n_items: int, dims=(600, 200)) -> float:
    """Forward + backward FLOPs of one Mult-VAE epoch: 2 per multiply-add, backward = 2x forward for dense
    layers, 1x for the sparse input layer (weight gradient only). Softmax and Adam are left out (< 1%)."""
    hidden, latent = dims
    dense = hidden * 2 * latent + latent * hidden + hidden * n_items  # encoder 600->400, decoder 200->600->I
    return 2 * nnz * hidden * 2 + 2 * n_users * dense * 3


def train(out: Path, n_batches: int, batch_size: int, from_log: bool = False) -> None:
    """One Mult-VAE epoch (or its first `n_batches`) streaming the prepared shards; with `from_log`, the raw
    log's files (whole users, sorted by user, raw item ids 0..n-1) stand in for them."""
    import torch

    from genrec.models.multvae import MultVAE
    from genrec.training.shards import UserShards, fit_streaming

    if from_log:
        shards = UserShards(sorted((out / "log").glob("*.parquet")), json.loads(
            (out / "results.json").read_text())["generate"]["items"])
    else:
        shards = UserShards.from_prepared(out / "prepared")
    t = time.perf_counter()  # a full pass over the data, as an epoch reads it: every shard, every batch
    for idx in shards.plan_batches(np.random.default_rng(0).permutation(len(shards)), batch_size):
        shards.batch(idx)
    read_seconds, reads = time.perf_counter() - t, shards.shards_read
    total_batches = len(shards.plan_batches(np.arange(len(shards)), batch_size))
    model = MultVAE(batch_size=batch_size, epochs=1, train_options={
        "progress": False, "max_batches_per_epoch": n_batches or None, "log_every": 10**9})
    t = time.perf_counter()
    fit_streaming(model, shards)
    seconds = time.perf_counter() - t
    done = n_batches or total_batches
    epoch_seconds = seconds / done * total_batches
    n_train = len(shards)
    nnz = sum(_parquet_rows(p) for p in shards.paths)
    flops = mult_vae_flops(n_train, nnz, shards.n_items)
    peak = matmul_peak_gflops()
    _record(out, "train_from_log" if from_log else "train", {
        "torch_threads": torch.get_num_threads(), "train_users": n_train, "train_events": nnz,
        "n_items": shards.n_items, "shards": shards.n_shards, "batch_size": batch_size,
        "data_pass_seconds": read_seconds, "data_pass_shard_reads": reads,
        "batches_timed": done, "batches_per_epoch": total_batches, "timed_seconds": seconds,
        "epoch_seconds": epoch_seconds, "extrapolated": done < total_batches,
        "loss": model.history_[-1]["loss"], "epoch_tflop": flops / 1e12, "matmul_peak_gflops": peak,
        "flop_floor_seconds": flops / (peak * 1e9), "peak_rss_gb": _peak_rss_gb()})


# 4. the report ------------------------------------------------------------------------------------------------
def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{model}, {os.cpu_count()} cores, {ram:.0f} GB RAM, {platform.system()} {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["generate", "prepare", "train", "report"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/genrec-scale"))
    parser.add_argument("--users", type=int, default=500_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=50_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--heldout", type=int, default=10_000)
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--from-log", action="store_true", help="train on the raw log's files, not Spark's")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step == "generate":
        generate(args.out, args.users, args.items, args.events, args.files, seed=0)
    elif args.step == "prepare":
        prepare(args.out, args.shards, args.driver_memory, args.heldout)
    elif args.step == "train":
        train(args.out, args.batches, args.batch_size, args.from_log)
    else:
        results = json.loads((args.out / "results.json").read_text())
        print(machine())
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
