import numpy as np

from genrec.models import Popularity
from tests.models.contract import RecommenderContract


class TestPopularity(RecommenderContract):
    beats_popularity_by = None

    def make_model(self):
        return Popularity()


def test_popularity_ranks_by_distinct_users(blocks):
    model = Popularity().fit(blocks)
    counts = np.bincount(blocks.csr().indices, minlength=blocks.n_items)
    recs = model.recommend(blocks.histories([0]), k=3, exclude_seen=False)
    assert list(counts[recs.items[0]]) == sorted(counts, reverse=True)[:3]
