
import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from genrec.data.interactions import Histories
from genrec.data.splits import split_strong_generalization
from genrec.explain import (
    Explanation,
    bundle_user_history,
    deletion_check,
    explain,
    explain_command_rows,
    explain_many,
    resolve_method,
    without_items,
)
from genrec.models import EASE, MultVAE, SASRec
from genrec.models.base import Recommender, load_bundle
from genrec.models.lda import LDA
from genrec.models.torch_base import TorchRecommender
from genrec.training.data import sparse_rows
from tests.conftest import block_interactions


class CosineKNN(Recommender):
    """An ItemKNN-like fake: score = history @ S, S the item-item cosine similarity with a zero diagonal."""

    def fit(self, train, validation=None):
        x = train.csr(binary=True).astype(np.float64)
        norms = np.sqrt(np.asarray(x.sum(0)).ravel()) + 1e-9
        sim = (x.T @ x).toarray() / norms[:, None] / norms[None, :]
        np.fill_diagonal(sim, 0.0)
        self.similarity_ = sim.astype(np.float32)
        self.n_items_ = train.n_items
        return self

    def score(self, histories):
        return np.asarray(histories.binary() @ self.similarity_, dtype=np.float32)


class LinearNetwork(torch.nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(weight)

    def score(self, batch):
        return F.embedding_bag(batch.indices, self.weight, batch.offsets, mode="sum",
                               per_sample_weights=batch.values, include_last_offset=True)


class LinearTorch(TorchRecommender):
    """A torch model whose scores are linear in the input: score_i = Σ_j x_j W[j, i]."""

    def __init__(self, weight: np.ndarray):
        self.module_ = LinearNetwork(torch.from_numpy(weight.astype(np.float32)))
        self.n_items_ = weight.shape[0]

    def _score_input(self, histories):
        return sparse_rows(histories.matrix)


class FakeSequenceModel(Recommender):
    """Attention weights proportional to position (later items weigh more), left-padded to 8 positions."""

    needs_order = True

    def __init__(self, n_items: int):
        self.n_items_ = n_items

    def score(self, histories):
        return np.asarray(histories.binary().sum(1)).repeat(self.n_items_, 1).astype(np.float32)

    def attention_weights(self, histories):
        out = np.zeros((histories.n_users, 8))
        for u in range(histories.n_users):
            n = min(len(histories.sequence(u)), 8)
            w = np.arange(1, n + 1, dtype=np.float64)
            out[u, 8 - n:] = w / w.sum()
        return out


@pytest.fixture(scope="module")
def split():
    data = block_interactions(n_users=300, n_items=80, p_in=0.45, p_out=0.03, seed=2)
    return split_strong_generalization(data, n_heldout=100, seed=0)


def bag_models():
    return [pytest.param(lambda: CosineKNN(), id="itemknn-like"),
            pytest.param(lambda: EASE(l2=50.0), id="ease"),
            pytest.param(lambda: MultVAE(hidden_dims=(64, 16), epochs=30, batch_size=50, total_anneal_steps=200,
                                         seed=0), id="multvae")]


@pytest.mark.parametrize("make", bag_models())
def test_removing_the_top_3_explaining_items_lowers_the_score_more_than_3_random_ones(make, split):
    model = make().fit(split.train)
    frame = deletion_check(model, split.test.histories, top=3, n_random=10, seed=0)
    assert len(frame) >= 80
    assert frame["faithful"].mean() >= 0.9, frame["faithful"].mean()


@pytest.fixture(scope="module")
def sasrec(split):
    return SASRec(dim=16, max_len=20, dropout=0.2, epochs=15, batch_size=32, lr=1e-2, seed=0,
                  train_options={"progress": False}).fit(split.train)


def test_sasrec_explanations_pass_the_same_deletion_check(sasrec, split):
    """The acceptance bar for sequence models too: >= 90% of users, with the default method (leave-one-out)."""
    frame = deletion_check(sasrec, split.test.histories, top=3, n_random=10, seed=0)
    assert resolve_method(sasrec, "auto") == "leave_one_out" and len(frame) >= 80
    assert frame["faithful"].mean() >= 0.9, frame["faithful"].mean()


def test_sasrec_attention_is_the_last_blocks_attention_of_the_final_position(sasrec, split):
    """Weights over the history items sum to 1 (the final position is an item and attends to itself), and
    mixing the block's value vectors with them reproduces its attention output at the final position."""
    h = split.test.histories[:6]
    explanations = explain_many(sasrec, h, np.zeros(6, np.int64), top=None, method="attention")
    block = sasrec.module_.blocks[-1]
    seen = {}
    hook = block.register_forward_pre_hook(lambda _, args: seen.update(x=args[0], mask=args[1]))
    tokens = sasrec._score_input(h)
    with torch.no_grad():
        sasrec.module_.eval()
        sasrec.module_.score(tokens)
        b, t, d = seen["x"].shape
        q, k, v = block.qkv(block.norm1(seen["x"])).view(b, t, 3, 1, d).permute(2, 0, 3, 1, 4)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=seen["mask"])[:, 0, -1]  # (B, d)
    hook.remove()
    for u, e in enumerate(explanations):
        assert e.method == "attention" and {i for i, _ in e.contributions} <= set(h.sequence(u)[-20:])
        assert sum(c for _, c in e.contributions) == pytest.approx(1.0, abs=1e-5)
        weights = np.zeros(t)  # per position, from the per-item sums: positions of one item share its weight
        row = tokens[u].numpy()
        contribution = dict(e.contributions)
        for pos in np.flatnonzero(row > 0):
            weights[pos] = contribution[row[pos] - 1] / (row == row[pos]).sum()
        mixed = torch.from_numpy(weights).float() @ v[u, 0]
        if len(set(row[row > 0])) == (row > 0).sum():  # no repeated item: the mixture is exact
            np.testing.assert_allclose(mixed.numpy(), expected[u].numpy(), atol=1e-5)


def test_leave_one_out_equals_naive_rescoring(split):
    model = CosineKNN().fit(split.train)
    h = split.test.histories[[0, 1, 2]]
    items = model.recommend(h, k=1).items[:, 0]
    explanations = explain_many(model, h, items, top=None, method="leave_one_out")
    for u, e in enumerate(explanations):
        history = list(h.sequence(u))
        full = model.score(Histories.from_lists([history], h.n_items))[0, items[u]]
        naive = {j: full - model.score(Histories.from_lists([[i for i in history if i != j]], h.n_items))[0, items[u]]
                 for j in history}
        assert e.method == "leave_one_out" and e.item == items[u]
        assert e.score == pytest.approx(full, abs=1e-6)
        assert sorted(i for i, _ in e.contributions) == sorted(set(history))
        for j, c in e.contributions:
            assert c == pytest.approx(naive[j], abs=1e-5)
        assert [c for _, c in e.contributions] == sorted((c for _, c in e.contributions), reverse=True)


def test_explain_keeps_only_the_top_contributions(split):
    model = CosineKNN().fit(split.train)
    e = explain(model, split.test.histories, 4, 7, top=3)
    assert isinstance(e, Explanation) and len(e.contributions) == 3
    assert list(e.to_frame()["rank"]) == [1, 2, 3]


def test_gradient_x_input_on_a_linear_model_is_the_exact_contribution():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(12, 12))
    model = LinearTorch(weight)
    h = Histories.from_lists([[0, 3, 5, 9], [1, 2]], 12, values=[[1, 2, 1, 3], [1, 1]])
    explanations = explain_many(model, h, np.array([7, 4]), top=None, method="gradient")
    assert [len(e.contributions) for e in explanations] == [4, 2]
    for e, (history, values) in zip(explanations, [([0, 3, 5, 9], [1, 2, 1, 3]), ([1, 2], [1, 1])]):
        expected = {j: v * weight[j, e.item] for j, v in zip(history, values)}
        for j, c in e.contributions:
            assert c == pytest.approx(expected[j], rel=1e-5)
            assert np.sign(c) == np.sign(expected[j])
        assert e.score == pytest.approx(sum(expected.values()), rel=1e-5)


def test_gradient_needs_a_torch_model(split):
    with pytest.raises(ValueError, match="gradient"):
        explain(CosineKNN().fit(split.train), split.test.histories, 0, 1, method="gradient")


def test_topics_split_an_lda_score_over_topics_and_history_items(split):
    model = LDA(n_topics=4, max_iter=20, batch_size=32).fit(split.train)
    h = split.test.histories[:5]
    items = model.recommend(h, k=1).items[:, 0]
    scores = model.score(h)
    theta = model.transform(h)
    for u, e in enumerate(explain_many(model, h, items, top=None, method="topics")):
        assert e.method == "topics" and e.score == pytest.approx(scores[u, items[u]], rel=1e-4)
        assert len(e.topics) == 4
        products = [share * prob for _, share, prob in e.topics]
        assert products == sorted(products, reverse=True)
        for k, share, prob in e.topics:
            assert share == pytest.approx(theta[u, k]) and prob == pytest.approx(model.topic_item_[k, items[u]])
        prior_part = model.doc_topic_prior_ * model.topic_item_[:, items[u]].sum()
        prior_part /= model.n_topics * model.doc_topic_prior_ + h.lengths()[u]
        total = sum(c for _, c in e.contributions) + prior_part
        assert total == pytest.approx(e.score, rel=0.02)


def test_attention_weights_are_summed_per_item_and_aligned_to_the_sequence_end():
    model = FakeSequenceModel(20)
    h = Histories.from_lists([[3, 4, 3, 5], list(range(10))], 20)
    first, second = explain_many(model, h, np.array([0, 19]), top=None)
    assert first.method == "attention"
    assert dict(first.contributions) == pytest.approx({3: 0.4, 4: 0.2, 5: 0.4})
    assert [i for i, _ in second.contributions][:2] == [9, 8] and 0 not in dict(second.contributions)


def test_without_items_removes_every_occurrence_and_keeps_order():
    h = Histories.from_lists([[1, 2, 1, 3], [4, 5]], 6)
    out = without_items(h, np.array([0, 0, 1]), np.array([[1, -1], [2, 3], [-1, -1]]))
    assert [list(out.sequence(r)) for r in range(3)] == [[2, 3], [1, 1], [4, 5]]
    assert sp.isspmatrix_csr(out.matrix) and list(out.lengths()) == [2, 1, 2]


def test_resolve_method_picks_attention_only_where_it_exists(split):
    assert resolve_method(CosineKNN(), "auto") == "leave_one_out"
    assert resolve_method(FakeSequenceModel(3), "auto") == "attention"
    with pytest.raises(ValueError, match="method"):
        resolve_method(CosineKNN(), "shap")
    with pytest.raises(ValueError, match="topics"):
        resolve_method(CosineKNN(), "topics")
    with pytest.raises(ValueError, match="attention"):
        resolve_method(CosineKNN(), "attention")


def test_explain_command_rows_speak_raw_ids(split, tmp_path):
    model = LDA(n_topics=4, max_iter=10, batch_size=32).fit(split.train)
    bundle = load_bundle(model.save(tmp_path / "lda", train=split.train))
    user = split.train.user_ids.raw[0]
    history = bundle_user_history(bundle, user)
    assert sorted(history) == sorted(split.train.item_ids.raw[split.train.histories([0]).sequence(0)])
    item = split.train.item_ids.raw[model.recommend(split.train.histories([0]), k=1).items[0, 0]]
    rows = explain_command_rows(bundle, history, item, top=3)
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert {r["history_item"] for r in rows} <= set(history)
    assert rows[0]["item"] == item and rows[0]["method"] == "leave_one_out"
    typed = explain_command_rows(bundle, [str(i) for i in history], str(item), top=3)  # ids from a command line
    assert [(r["history_item"], r["item"]) for r in typed] == [(r["history_item"], r["item"]) for r in rows]
    with pytest.raises(KeyError, match="unknown item"):
        explain_command_rows(bundle, history, "no-such-item")
