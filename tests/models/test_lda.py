import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import LatentDirichletAllocation

from genrec.data.interactions import Histories
from genrec.models import get_model_class
from genrec.models.lda import LDA
from tests.models.contract import RecommenderContract


class TestLDA(RecommenderContract):
    def make_model(self):
        return LDA(n_topics=4, max_iter=20, batch_size=32, seed=0)


@pytest.fixture(scope="module")
def fitted(blocks):
    return LDA(n_topics=4, max_iter=20, batch_size=32, seed=3).fit(blocks)


def test_lda_is_registered():
    assert get_model_class("lda") is LDA


def test_training_is_scikit_learns_online_lda(blocks, fitted):
    reference = LatentDirichletAllocation(n_components=4, learning_method="online", max_iter=20, batch_size=32,
                                          random_state=3).fit(blocks.csr(binary=True).astype(np.float64))
    np.testing.assert_allclose(fitted.components_, reference.components_, rtol=1e-10)


def test_fold_in_equals_sklearn_transform(blocks, fitted):
    reference = LatentDirichletAllocation(n_components=4, learning_method="online", max_iter=20, batch_size=32,
                                          random_state=3).fit(blocks.csr(binary=True).astype(np.float64))
    rng = np.random.default_rng(0)
    lists = [rng.choice(blocks.n_items, size=n, replace=False) for n in (0, 1, 3, 10, 25)]
    h = Histories.from_lists(lists, blocks.n_items)
    ours = fitted.transform(h)
    theirs = reference.transform(h.binary().astype(np.float64))
    np.testing.assert_allclose(ours, theirs, atol=1e-8)
    np.testing.assert_allclose(ours.sum(1), 1.0)


def test_fold_in_after_load_equals_before(blocks, fitted, tmp_path):
    fitted.save(tmp_path / "lda")
    loaded = LDA.load(tmp_path / "lda")
    h = blocks.histories(np.arange(10))
    np.testing.assert_allclose(loaded.transform(h), fitted.transform(h), atol=1e-12)


def test_score_is_a_distribution_over_items(blocks, fitted):
    s = fitted.score(blocks.histories(np.arange(5)))
    np.testing.assert_allclose(s.sum(1), 1.0, rtol=1e-4)
    assert (s > 0).all()


def test_topics_recover_the_taste_groups(blocks, fitted):
    """Block data: raw item i belongs to group i % 4 and carries category c{i % 4}; each topic's top items fall
    in one group and its most over-represented category is that group's."""
    frame = fitted.topics(top=8, item_ids=blocks.item_ids)
    assert list(frame.columns[:4]) == ["topic", "share", "items", "probs"]
    groups = set()
    for items, category in zip(frame["items"], frame["category"]):
        group = {i % 4 for i in items}
        assert len(group) == 1
        assert category[0][0] == f"c{group.pop()}" and category[0][1] > 2.0
        groups.add(category[0][0])
    assert groups == {"c0", "c1", "c2", "c3"}
    np.testing.assert_allclose(frame["share"].sum(), 1.0)


def test_topics_split_pipe_joined_values_and_skip_identifier_columns(blocks, fitted):
    raw = blocks.item_ids.raw  # row i of the attributes describes item index i, raw id raw[i]
    attrs = pd.DataFrame({
        "genres": [f"g{r % 4}|common" for r in raw],
        "title": [f"Item {r}" for r in raw],
    })
    frame = fitted.topics(top=3, item_attributes=attrs, item_ids=blocks.item_ids)
    assert "title" not in frame.columns
    for items, genres in zip(frame["items"], frame["genres"]):
        assert genres[0][0] == f"g{items[0] % 4}"
        assert "common" not in [v for v, _ in genres], "a value every item has is not over-represented"


def test_topics_reject_misaligned_attributes(fitted):
    with pytest.raises(ValueError, match="rows"):
        fitted.topics(item_attributes=pd.DataFrame({"genres": ["a", "b"]}))
