"""Spark batch scoring (`mapInPandas` over users' histories) equals the in-process `recommend`, item for item."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genrec.data.movielens import load_movielens
from genrec.data.splits import split_strong_generalization
from genrec.models.multvae import MultVAE
from genrec.spark import local_session, spark_available
from tests.conftest import shared_data

pytestmark = [pytest.mark.skipif(not spark_available(), reason="pyspark or a Java runtime is missing"),
              pytest.mark.filterwarnings("ignore::FutureWarning"),  # pyspark 4 on pandas 3
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
K = 10


@pytest.fixture(scope="module")
def spark():
    return local_session("genrec-tests", cores=2, shuffle_partitions=4)  # the session test_prepare started


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    split = split_strong_generalization(load_movielens(shared_data("movielens-100k"), min_rating=4), 100, seed=0)
    model = MultVAE(hidden_dims=(64, 16), epochs=3, batch_size=100, train_options={"progress": False})
    model.fit(split.train)
    bundle = model.save(tmp_path_factory.mktemp("bundle") / "multvae")
    return model, bundle, split.test.histories


def _events(histories) -> pd.DataFrame:
    """The histories as an event table (user = row, position = order within the table)."""
    m = histories.matrix
    users = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    return pd.DataFrame({"user": users, "item": m.indices.astype(np.int64), "value": m.data.astype(np.float64),
                         "position": np.arange(m.nnz)})


def test_spark_batch_scoring_equals_in_process_recommend(spark, fitted, tmp_path):
    from genrec.spark.scoring import write_recommendations

    model, bundle, histories = fitted
    events = spark.createDataFrame(_events(histories)).repartition(3)  # users spread over several tasks
    out = write_recommendations(events, bundle, tmp_path / "top", k=K, batch_size=16)
    got = pd.read_parquet(out).sort_values(["user", "rank"])
    expected = model.recommend(histories, k=K).to_frame()
    assert len(got) == len(expected) == histories.n_users * K
    assert np.array_equal(got["user"].to_numpy(), expected["user"].to_numpy())
    assert np.array_equal(got["item"].to_numpy(), expected["item"].to_numpy())
    assert np.allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-5, atol=1e-5)


def test_seen_items_are_never_recommended(spark, fitted):
    from genrec.spark.scoring import score_users

    _, bundle, histories = fitted
    frame = _events(histories[:20])
    got = score_users(spark.createDataFrame(frame), bundle, k=K).toPandas()
    seen = set(zip(frame["user"], frame["item"]))
    assert not any((u, i) in seen for u, i in zip(got["user"], got["item"]))
