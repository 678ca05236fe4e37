"""Batch scoring with Spark: the top-K items of every user, computed where the data lives.

Each user's history (events grouped by user, in log order) goes to a Python worker with `mapInPandas`; the
worker loads the model bundle once (from a path every executor can read: a shared file system, or a file
shipped with `spark-submit --files`/`SparkContext.addFile`), folds the histories in batch by batch with the
model's own `recommend`, and returns long-format rows `user, rank, item, score`. So the Spark result is the
in-process `model.recommend(histories, k)`, computed in parallel, and memory per worker is the model plus one
Arrow batch of users.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from genrec.data.interactions import Histories
from genrec.models.base import Recommender

RECOMMENDATIONS = "user long, rank int, item long, score float"
_MODELS: dict[str, Recommender] = {}  # bundles loaded in this worker process, by path


def _model(bundle: str) -> Recommender:
    if bundle not in _MODELS:
        _MODELS[bundle] = Recommender.load(bundle)
    return _MODELS[bundle]


def user_histories(events):
    """DataFrame[user, items array<long>, values array<double>]: each user's events in log order (position)."""
    from pyspark.sql import functions as F

    ordered = F.array_sort(F.collect_list(F.struct("position", "item", "value")))
    return (events.groupBy("user").agg(ordered.alias("h"))
            .select("user", F.col("h.item").alias("items"), F.col("h.value").alias("values")))


def _recommend_batches(bundle: str, k: int, exclude_seen: bool, batch_size: int):
    def recommend(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = _model(bundle)
        for frame in frames:
            if len(frame) == 0:
                continue
            histories = Histories.from_lists(list(frame["items"]), model.n_items_, frame["user"].to_numpy(),
                                             [np.asarray(v, np.float32) for v in frame["values"]])
            recs = model.recommend(histories, k=k, exclude_seen=exclude_seen, batch_size=batch_size)
            out = recs.to_frame(user_ids=frame["user"].to_numpy())
            yield out.astype({"user": np.int64, "rank": np.int32, "item": np.int64, "score": np.float32})

    return recommend


def score_users(events, bundle: str | Path, k: int = 10, exclude_seen: bool = True, batch_size: int = 1024):
    """DataFrame[user, rank, item, score]: the top-`k` items (indices) for every user in `events`
    (DataFrame[user, item, value, position], items indexed as the model's), best first, rank from 1.

    bundle: a saved model folder readable from every executor. Users are scored `batch_size` at a time inside
    each Arrow batch (spark.sql.execution.arrow.maxRecordsPerBatch users)."""
    recommend = _recommend_batches(str(Path(bundle).resolve()), int(k), bool(exclude_seen), int(batch_size))
    return user_histories(events).mapInPandas(recommend, RECOMMENDATIONS)


def write_recommendations(events, bundle: str | Path, out: str | Path, k: int = 10, exclude_seen: bool = True,
                          batch_size: int = 1024) -> Path:
    """Score every user in `events` (see `score_users`) and write the top-K rows as Parquet to `out`."""
    score_users(events, bundle, k, exclude_seen, batch_size).write.mode("overwrite").parquet(str(out))
    return Path(out)
