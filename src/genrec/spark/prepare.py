"""Interaction logs too big for pandas, prepared with Spark: load, clean (threshold, deduplication, k-core),
index, split by held-out users, and write Parquet shards that the trainer streams (`genrec.training.shards`).

Every step gives the same result as its pandas twin in `genrec.data.clean` and `genrec.data.splits`, row for
row: ids are indexed in sorted order as the loaders do, and `split_strong_generalization` replays numpy's random
draws exactly. The user permutation is drawn on the driver (one int per user); each event's fold-in draw is the
n-th number of the same PCG64 stream, where n is the event's position in the cleaned log, so each input
partition jumps its generator ahead (`PCG64.advance`) to its first event and draws its own share.

Output folder of `prepare`:
  train/         Parquet shards, whole users per shard (hashed by user), sorted by user then log position
  validation/    held-out users' kept events, `target` False for the fold-in history, True for the targets
  test/          the same for test users
  users.parquet  index, user (raw id), role (0 train, 1 validation, 2 test)
  items.parquet  index, item (raw id)
  meta.json      counts and the settings used
Event columns: user, item (indices), value (double), timestamp (long seconds, -1 when unknown), position
(long: the event's place in the source log, which keeps ties in time in file order).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genrec.data.interactions import DataError, IdMap, Interactions
from genrec.data.splits import Split, _holdout_from_masks, _keep_users

PROTOCOL = "strong_generalization"
_EVENT = "user long, item long, value double, timestamp long, position long"


# loading and cleaning -----------------------------------------------------------------------------------------
def read_interactions(spark, path: str | Path, schema: str | None = None, sep: str = ",", header: bool = False,
                      user: str = "user", item: str = "item", value: str | None = None,
                      timestamp: str | None = None):
    """An event log as DataFrame[user, item, value, timestamp, position], from Parquet or delimited text.

    schema: DDL for text files, e.g. "user long, item long, rating double, ts long" (ML-100K's u.data with
    sep="\\t"); without it the column types are inferred (a second pass over the file). value defaults to 1.0,
    timestamp to -1. position numbers events in file order (not contiguously)."""
    from pyspark.sql import functions as F

    path = str(path)
    if path.endswith(".parquet") or (Path(path).is_dir() and any(Path(path).glob("*.parquet"))):
        frame = spark.read.parquet(path)
    else:
        reader = spark.read.option("sep", sep).option("header", header).option("mode", "FAILFAST")
        frame = reader.schema(schema).csv(path) if schema else reader.option("inferSchema", True).csv(path)
    for name in (user, item, value, timestamp):
        if name is not None and name not in frame.columns:
            raise DataError(f"{path}: missing column {name!r} (columns: {', '.join(frame.columns)})")
    return frame.select(
        F.col(user).alias("user"),
        F.col(item).alias("item"),
        (F.col(value).cast("double") if value else F.lit(1.0)).alias("value"),
        (F.col(timestamp).cast("long") if timestamp else F.lit(-1).cast("long")).alias("timestamp"),
        F.monotonically_increasing_id().alias("position"),
    )


def filter_min_value(events, min_value: float):
    """Events with value >= `min_value` (ratings -> positive feedback), as `genrec.data.clean.filter_min_value`."""
    from pyspark.sql import functions as F

    return events.where(F.col("value") >= float(min_value))


def deduplicate(events, keep: str = "last"):
    """One event per (user, item): the latest by (timestamp, position) with keep='last', the earliest with
    'first', as `genrec.data.clean.deduplicate`."""
    from pyspark.sql import functions as F

    if keep not in ("first", "last"):
        raise ValueError(f"keep must be 'first' or 'last', not {keep!r}")
    pick = F.max if keep == "last" else F.min
    return (events.groupBy("user", "item").agg(pick(F.struct("timestamp", "position", "value")).alias("e"))
            .select("user", "item", "e.value", "e.timestamp", "e.position"))


def k_core(events, user_k: int | None = None, item_k: int | None = None, unique_pairs: bool = False):
    """The largest subset where every user has >= user_k and every item >= item_k distinct partners, as
    `genrec.data.clean.k_core` (repeated events of kept pairs stay). Each round counts partners per user and
    per item (distinct counts unless `unique_pairs` says the events are deduplicated already) and keeps the
    events of users and items with enough, through broadcast semi-joins (the id sets are small); rounds repeat
    until nothing changes. The result is cached."""
    from pyspark.sql import functions as F

    if not user_k and not item_k:
        return events
    kept = events.persist()
    n = kept.count()
    while True:
        current = kept
        for column, other, k in (("user", "item", user_k), ("item", "user", item_k)):
            if k:
                partners = F.count("*") if unique_pairs else F.countDistinct(other)
                enough = current.groupBy(column).agg(partners.alias("n")).where(F.col("n") >= int(k)).select(column)
                kept = kept.join(F.broadcast(enough), column, "left_semi")
        kept = kept.persist()  # computed once, by the count; the next round reads it from the cache
        m = kept.count()
        current.unpersist()
        if m == n:
            return kept
        n = m


def index_ids(spark, events) -> tuple[Any, np.ndarray, np.ndarray]:
    """Replace raw user and item ids by indices into their sorted distinct values (the loaders' id maps).
    Returns (events, user raw ids, item raw ids); the id lists are collected on the driver."""
    from pyspark.sql import functions as F

    events = events.localCheckpoint()  # counted and joined below: computed once
    maps = []
    for column in ("user", "item"):
        raw = np.sort(events.select(column).distinct().toPandas()[column].to_numpy())
        lookup = spark.createDataFrame(pd.DataFrame({column: raw, "index": np.arange(len(raw), dtype=np.int64)}))
        events = (events.join(F.broadcast(lookup), column).drop(column).withColumnRenamed("index", column))
        maps.append(raw)
    return events.select("user", "item", "value", "timestamp", "position"), maps[0], maps[1]


# the split ----------------------------------------------------------------------------------------------------
def heldout_count(n_users: int, n_heldout: int | float, validation: bool) -> int:
    k = int(round(n_users * n_heldout)) if isinstance(n_heldout, float) and n_heldout < 1 else int(n_heldout)
    if k < 1 or (2 if validation else 1) * k >= n_users:
        raise DataError(f"n_heldout={n_heldout} leaves no users for training or for held-out sets ({n_users} users)")
    return k


def split_strong_generalization(spark, events, n_users: int, n_heldout: int | float = 0.1, fold_in: float = 0.8,
                                seed: int = 0, validation: bool = True) -> tuple[dict[str, Any], np.ndarray]:
    """Held-out users with a random `fold_in` share of their events as history, as
    `genrec.data.splits.split_strong_generalization` with the same seed (events on items no training user has
    are dropped first). Returns ({'train', 'validation', 'test'} -> DataFrame, role per user index)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    k = heldout_count(n_users, n_heldout, validation)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_users)
    role = np.zeros(n_users, np.int8)
    role[perm[:k]] = 2
    if validation:
        role[perm[k : 2 * k]] = 1
    heldout = _draw_heldout(events, role, rng.bit_generator.state)
    roles = spark.createDataFrame(pd.DataFrame({"user": np.arange(n_users, dtype=np.int64), "role": role}))
    train = events.join(F.broadcast(roles.where("role = 0").select("user")), "user", "left_semi")
    known = train.select("item").distinct()
    kept = heldout.join(F.broadcast(known), "item", "left_semi").join(F.broadcast(roles), "user")
    by_user = Window.partitionBy("user")
    ranked = (kept.withColumn("rank", F.row_number().over(by_user.orderBy("draw")) - 1)
              .withColumn("n", F.count("*").over(by_user)))
    ranked = ranked.withColumn("target", F.col("rank") >= F.ceil(F.col("n") * float(fold_in))).persist()
    columns = ["user", "item", "value", "timestamp", "position", "target"]
    parts = {"train": train, "test": ranked.where("role = 2").select(*columns)}
    if validation:
        parts["validation"] = ranked.where("role = 1").select(*columns)
    return parts, role


def _draw_heldout(events, role: np.ndarray, state: dict):
    """Held-out users' events with `draw`: the uniform number numpy's `rng.random(len(events))` gives the event,
    which is the n-th of the stream for the n-th event in log order. Events are grouped by the source
    partition they came from (position >> 33); each group advances a copy of the generator to its first event.
    Only (part, user, position) travel to Python; the held-out users' draws are joined back by position."""
    from pyspark.sql import functions as F

    with_part = events.select("user", "position", F.shiftright("position", 33).alias("part"))
    counts = with_part.groupBy("part").count().toPandas().sort_values("part")
    starts = dict(zip(counts["part"].tolist(), (np.cumsum(counts["count"]) - counts["count"]).tolist()))

    def draw(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.sort_values("position")
        bits = np.random.PCG64()
        bits.state = state
        bits.advance(starts[int(frame["part"].iloc[0])])
        draws = np.random.Generator(bits).random(len(frame))
        held = role[frame["user"].to_numpy()] > 0
        return pd.DataFrame({"position": frame["position"].to_numpy()[held], "draw": draws[held]})

    draws = with_part.groupBy("part").applyInPandas(draw, "position long, draw double")
    heldout_users = events.sparkSession.createDataFrame(
        pd.DataFrame({"user": np.flatnonzero(role > 0).astype(np.int64)}))
    return events.join(F.broadcast(heldout_users), "user", "left_semi").join(draws, "position")


# the whole preparation ----------------------------------------------------------------------------------------
def prepare(spark, events, out: str | Path, min_value: float | None = None, dedup: bool = True,
            user_k: int | None = None, item_k: int | None = None, n_heldout: int | float = 0.1,
            fold_in: float = 0.8, seed: int = 0, validation: bool = True, n_shards: int = 16) -> dict[str, Any]:
    """Clean `events` (read_interactions), split them and write the output folder (see the module doc).
    Returns meta.json's content: counts per part and the settings."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if min_value is not None:
        events = filter_min_value(events, min_value)
    if dedup:
        events = deduplicate(events)
    events = k_core(events, user_k, item_k, unique_pairs=dedup)
    events, user_raw, item_raw = index_ids(spark, events)
    parts, role = split_strong_generalization(spark, events, len(user_raw), n_heldout, fold_in, seed, validation)
    (parts["train"].repartition(n_shards, "user").sortWithinPartitions("user", "position")
     .write.mode("overwrite").parquet(str(out / "train")))
    for name in ("validation", "test"):
        if name in parts:
            parts[name].coalesce(max(1, n_shards // 8)).write.mode("overwrite").parquet(str(out / name))
    pd.DataFrame({"index": np.arange(len(user_raw)), "user": user_raw, "role": role}).to_parquet(
        out / "users.parquet", index=False)
    pd.DataFrame({"index": np.arange(len(item_raw)), "item": item_raw}).to_parquet(out / "items.parquet",
                                                                                   index=False)
    meta = {"protocol": PROTOCOL, "n_users": len(user_raw), "n_items": len(item_raw),
            "n_train_users": int((role == 0).sum()), "n_shards": n_shards,
            "settings": {"min_value": min_value, "dedup": dedup, "user_k": user_k, "item_k": item_k,
                         "n_heldout": n_heldout, "fold_in": fold_in, "seed": seed, "validation": validation}}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def read_split(folder: str | Path) -> Split:
    """The `Split` a `prepare` folder holds, in memory (for data that fits: evaluation, tests): the same
    object `genrec.data.splits.split_strong_generalization` returns for the same cleaned log and seed."""
    folder = Path(folder)
    users = pd.read_parquet(folder / "users.parquet")
    items = pd.read_parquet(folder / "items.parquet")
    frames = [pd.read_parquet(folder / "train").assign(target=False)]
    frames += [pd.read_parquet(folder / n) for n in ("validation", "test") if (folder / n).exists()]
    events = pd.concat(frames, ignore_index=True).sort_values("position", kind="stable")
    data = Interactions(events["user"].to_numpy(), events["item"].to_numpy(), events["value"].to_numpy(),
                        events["timestamp"].to_numpy(), IdMap(users["user"].to_numpy(), "user"),
                        IdMap(items["item"].to_numpy(), "item"), source=str(folder))
    role = users["role"].to_numpy()
    is_target = events["target"].to_numpy(bool)
    in_hist = ~is_target & (role[data.users] > 0)
    train = _keep_users(data.select(role[data.users] == 0), np.flatnonzero(role == 0))
    holdouts = {r: _holdout_from_masks(data, np.flatnonzero(role == r), in_hist, is_target, PROTOCOL)
                for r in (1, 2) if (role == r).any()}
    return Split(train, holdouts.get(1), holdouts[2], PROTOCOL)


def shard_paths(folder: str | Path) -> list[Path]:
    """The training shards of a `prepare` folder, in name order."""
    paths = sorted((Path(folder) / "train").glob("*.parquet"))
    if not paths:
        raise DataError(f"{folder}: no training shards (train/*.parquet); run genrec.spark.prepare.prepare first")
    return paths


__all__ = ["deduplicate", "filter_min_value", "heldout_count", "index_ids", "k_core", "prepare",
           "read_interactions", "read_split", "shard_paths", "split_strong_generalization"]
