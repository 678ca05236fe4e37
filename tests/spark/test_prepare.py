"""Spark preparation gives, row for row, the split the pandas pipeline gives: ML-100K with ratings >= 4,
deduplicated, 5-core, 100 validation and 100 test users with 80% fold-in; and the shards hold whole users."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genrec.data.clean import deduplicate, filter_min_value, k_core
from genrec.data.interactions import DataError
from genrec.data.movielens import load_movielens
from genrec.data.splits import Holdout, split_strong_generalization
from genrec.spark import local_session, spark_available
from tests.conftest import shared_data

pytestmark = [pytest.mark.skipif(not spark_available(), reason="pyspark or a Java runtime is missing"),
              pytest.mark.filterwarnings("ignore::FutureWarning"),  # pyspark 4 on pandas 3
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
ML100K_SCHEMA = "user long, item long, rating double, ts long"
SETTINGS = dict(min_value=4.0, user_k=5, item_k=5, n_heldout=100, fold_in=0.8, seed=3)


@pytest.fixture(scope="module")
def spark():
    return local_session("genrec-tests", cores=2, shuffle_partitions=4)  # one session for every Spark test


@pytest.fixture(scope="module")
def prepared(spark, tmp_path_factory):
    from genrec.spark.prepare import prepare, read_interactions

    path = shared_data("movielens-100k") / "u.data"
    events = read_interactions(spark, path, ML100K_SCHEMA, sep="\t", value="rating", timestamp="ts")
    out = tmp_path_factory.mktemp("ml100k-spark")
    meta = prepare(spark, events, out, n_shards=4, **SETTINGS)
    return out, meta


@pytest.fixture(scope="module")
def pandas_split():
    data = load_movielens(shared_data("movielens-100k"))
    data = k_core(deduplicate(filter_min_value(data, SETTINGS["min_value"])), user_k=5, item_k=5)
    return split_strong_generalization(data, n_heldout=100, fold_in=0.8, seed=3)


def _assert_same_holdout(a: Holdout, b: Holdout):
    assert np.array_equal(a.users, b.users)
    assert np.array_equal(a.histories.user_ids, b.histories.user_ids)
    assert (a.histories.matrix != b.histories.matrix).nnz == 0
    assert np.array_equal(a.histories.seq_indptr, b.histories.seq_indptr)
    assert np.array_equal(a.histories.seq_items, b.histories.seq_items)
    assert (a.targets != b.targets).nnz == 0


def test_spark_and_pandas_pipelines_give_identical_splits(prepared, pandas_split):
    from genrec.spark.prepare import read_split

    out, meta = prepared
    ours = read_split(out)
    train, expected = ours.train, pandas_split.train
    assert train.user_ids == expected.user_ids and train.item_ids == expected.item_ids
    for column in ("users", "items", "values", "timestamps"):
        assert np.array_equal(getattr(train, column), getattr(expected, column)), column
    _assert_same_holdout(ours.validation, pandas_split.validation)
    _assert_same_holdout(ours.test, pandas_split.test)
    assert meta["n_users"] == len(pandas_split.train.user_ids) + 200
    assert meta["n_items"] == pandas_split.train.n_items


def test_each_training_shard_holds_whole_users_in_log_order(prepared):
    from genrec.spark.prepare import shard_paths

    out, meta = prepared
    shards = [pd.read_parquet(p) for p in shard_paths(out)]
    users = [set(s["user"]) for s in shards]
    assert sum(len(u) for u in users) == len(set().union(*users)) == meta["n_train_users"]
    for s in shards:
        assert s.equals(s.sort_values(["user", "position"]))


def test_k_core_leaves_every_user_and_item_with_k_partners(spark):
    from genrec.spark.prepare import k_core

    # a chain: user 0 has items 0, 1; user 1 has item 1 only; a 2-core drops user 1, then item 0 and 1 lose...
    rows = [(0, 0), (0, 1), (1, 1), (2, 0), (2, 1), (3, 2)]
    events = spark.createDataFrame(pd.DataFrame(rows, columns=["user", "item"]))
    kept = k_core(events, user_k=2, item_k=2).toPandas()
    assert sorted(map(tuple, kept[["user", "item"]].to_numpy().tolist())) == [(0, 0), (0, 1), (2, 0), (2, 1)]


def test_a_missing_column_is_named(spark, tmp_path):
    from genrec.spark.prepare import read_interactions

    path = tmp_path / "log.csv"
    path.write_text("user,item\n1,2\n")
    with pytest.raises(DataError, match="'rating'"):
        read_interactions(spark, path, header=True, value="rating")


def test_trainer_streams_the_prepared_shards_one_shard_at_a_time(prepared):
    from genrec.models.multvae import MultVAE
    from genrec.spark.prepare import read_split
    from genrec.training.shards import UserShards, fit_streaming

    out, meta = prepared
    shards = UserShards.from_prepared(out)
    split = read_split(out)
    assert len(shards) == meta["n_train_users"] and shards.n_shards == 4
    # the streamed rows are the training users' rows
    users = np.concatenate(shards.shard_users)
    rows = shards.batch(np.arange(len(shards)))
    roles = pd.read_parquet(out / "users.parquet")["role"].to_numpy()
    expected = split.train.csr(binary=True)[np.searchsorted(np.flatnonzero(roles == 0), users)]
    assert (rows.to_dense(meta["n_items"]).numpy() != expected.toarray()).sum() == 0
    shards.shards_read = 0
    model = MultVAE(hidden_dims=(32, 8), epochs=2, batch_size=50, train_options={"progress": False})
    fit_streaming(model, shards, split.validation)
    assert shards.shards_read == 2 * shards.n_shards  # each epoch reads each shard once
    assert len(model.history_) == 2 and model.history_[-1]["val_ndcg@100"] > 0.1
    assert model.recommend(split.test.histories, k=5).items.shape == (100, 5)
