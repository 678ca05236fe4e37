"""Synthetic users: generation from each kind of generative model, the fidelity metrics on hand-checkable cases,
writing the data set and the `genrec generate` command body."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from genrec.data.interactions import Histories, IdMap, Interactions
from genrec.data.loaders import load_table
from genrec.data.splits import split_strong_generalization
from genrec.models.cfgan import CFGAN
from genrec.models.multvae import MultDAE, MultVAE
from genrec.models.recvae import RecVAE
from genrec.synthesis import (
    cooccurrence_agreement,
    distribution_distance,
    fidelity_report,
    generate_command,
    generate_users,
    length_distances,
    model_kind,
    nearest_neighbour_jaccard,
    write_synthetic,
)
from tests.conftest import block_interactions

FAST = {"progress": False}


@pytest.fixture(scope="module")
def split():
    return split_strong_generalization(block_interactions(n_users=300), n_heldout=40, seed=1)


@pytest.fixture(scope="module")
def vae(split):
    return MultVAE(hidden_dims=(64, 16), epochs=20, batch_size=32, total_anneal_steps=100,
                   train_options=FAST).fit(split.train)


@pytest.fixture(scope="module")
def recvae(split):
    return RecVAE(hidden_dim=32, latent_dim=8, epochs=3, batch_size=64, train_options=FAST).fit(split.train)


@pytest.fixture(scope="module")
def cfgan(split):
    return CFGAN(alpha=1.0, lr=1e-3, epochs=5, d_steps=1, g_steps=2, train_options=FAST).fit(split.train)


class FakeSASRec:
    """A sequence model as `generate_users` sees one: needs_order, n_items_ and generate(); it emits
    item (previous + 1) mod n_items, so the output is checkable."""

    needs_order = True
    name = "fake-sasrec"

    def __init__(self, n_items):
        self.n_items_ = n_items
        self.calls = []

    def generate(self, histories, n_steps, temperature, top_k, seed):
        self.calls.append((histories.n_users, n_steps, temperature, top_k))
        last = np.array([s[-1] for s in histories.sequences()])
        return (last[:, None] + np.arange(1, n_steps + 1)[None, :]) % self.n_items_


def _rows(synthetic: Interactions) -> list[np.ndarray]:
    return synthetic.histories().sequences()


# generation --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["vae", "recvae", "cfgan"])
def test_generated_users_have_real_lengths_distinct_items_and_the_training_item_map(which, split, request):
    model = request.getfixturevalue(which)
    synthetic = generate_users(model, 150, split.train, seed=0)
    assert synthetic.n_users == 150 and synthetic.item_ids is split.train.item_ids
    real_lengths = set(np.diff(split.train.csr().indptr).tolist())
    for items in _rows(synthetic):
        assert len(items) in real_lengths and len(set(items)) == len(items)
    assert synthetic.user_ids.raw[0] == "synthetic-0" and (synthetic.values == 1.0).all()


def test_generation_is_seeded(vae, split):
    a, b = generate_users(vae, 50, split.train, seed=3), generate_users(vae, 50, split.train, seed=3)
    c = generate_users(vae, 50, split.train, seed=4)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


class FakeDecoder(torch.nn.Module):
    """A VAE network whose decoder puts logit `peak` on items 0..4 and 0 elsewhere, whatever z."""

    latent = 2

    def __init__(self, n_items: int, peak: float):
        super().__init__()
        self.n_items, self.peak = n_items, peak
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def decode(self, z):
        logits = torch.zeros(len(z), self.n_items)
        logits[:, :5] = self.peak
        return logits


class FakeVAE:
    def __init__(self, n_items: int, peak: float):
        self.n_items_, self.module_ = n_items, FakeDecoder(n_items, peak)


def test_vae_users_are_drawn_from_the_decoder_softmax_without_replacement(split):
    """Logit 3 on 5 of 60 items: a first draw lands there with probability 5e^3 / (5e^3 + 55) = 0.65."""
    n_items = split.train.n_items
    synthetic = generate_users(FakeVAE(n_items, 3.0), 400, split.train, seed=0)
    first = np.array([items[0] for items in _rows(synthetic)])
    assert abs(np.mean(first < 5) - 5 * np.e**3 / (5 * np.e**3 + n_items - 5)) < 0.06
    sharp = generate_users(FakeVAE(n_items, 3.0), 400, split.train, seed=0, temperature=0.1)
    assert np.mean([items[0] < 5 for items in _rows(sharp)]) == 1.0
    for items in _rows(sharp):  # without replacement: the 5 favourites come first, each once
        assert set(items[: min(5, len(items))].tolist()) <= set(range(5))


@pytest.mark.parametrize("which", ["vae", "cfgan"])
@pytest.mark.parametrize("condition", ["popularity", "partial"])
def test_both_conditions_generate_users(which, condition, split, request):
    synthetic = generate_users(request.getfixturevalue(which), 60, split.train, seed=0, condition=condition)
    assert synthetic.n_users == 60 and len(synthetic) > 0


def test_a_partial_condition_keeps_a_vae_user_in_one_taste_group(vae, split):
    """Block data: items (raw ids) i and j share a taste group when i = j mod 4. Conditioned on half of a real
    user, the posterior mean's favourites stay in that user's group far more often than the 1 in 4 of chance."""
    synthetic = generate_users(vae, 100, split.train, seed=0, temperature=0.3, condition="partial")
    groups = split.train.item_ids.raw.astype(np.int64) % 4
    firsts = [groups[items[:2]] for items in _rows(synthetic) if len(items) >= 2]
    assert np.mean([a == b for a, b in firsts]) > 0.6


def test_unknown_condition_and_bad_arguments_are_named(cfgan, split):
    with pytest.raises(ValueError, match="condition"):
        generate_users(cfgan, 5, split.train, condition="noise")
    with pytest.raises(ValueError, match="temperature"):
        generate_users(cfgan, 5, split.train, temperature=0.0)
    with pytest.raises(ValueError, match="n_users"):
        generate_users(cfgan, 0, split.train)


def test_sequence_models_start_from_a_first_item_and_generate_the_rest(split):
    model = FakeSASRec(split.train.n_items)
    synthetic = generate_users(model, 40, split.train, seed=0, temperature=0.8)
    h = split.train.histories()
    firsts = set(h.seq_items[h.seq_indptr[:-1][np.diff(h.seq_indptr) > 0]].tolist())
    for items in _rows(synthetic):
        assert items[0] in firsts
        np.testing.assert_array_equal(items, (items[0] + np.arange(len(items))) % split.train.n_items)
    assert model.calls[0][0] == 40 and model.calls[0][2] == 0.8
    assert model_kind(model) == "sequence"


def test_a_model_that_cannot_generate_is_refused(split):
    from genrec.models import Popularity

    with pytest.raises(ValueError, match="Popularity is not a generative model"):
        generate_users(Popularity().fit(split.train), 5, split.train)
    dae = MultDAE(hidden_dims=(8,), epochs=1, train_options=FAST).fit(split.train)
    with pytest.raises(ValueError, match="no prior"):
        generate_users(dae, 5, split.train)


# fidelity metrics on hand-checkable cases -------------------------------------------------------------------------
def test_js_distance_is_zero_for_identical_and_one_for_disjoint_distributions():
    assert distribution_distance([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0, abs=1e-12)
    assert distribution_distance([1, 0], [0, 5]) == pytest.approx(1.0)
    assert length_distances(np.array([3, 5, 8, 8]), np.array([3, 5, 8, 8]))["length_js"] == pytest.approx(0.0)


def test_nearest_neighbour_jaccard_by_hand():
    synthetic = sp.csr_matrix(np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 1]]))
    real = sp.csr_matrix(np.array([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0]]))
    # user 0: best is real 0 (3 shared / 4 in the union); user 1: real 1 (1 / 2); user 2: real 1 (1 / 1)
    np.testing.assert_allclose(nearest_neighbour_jaccard(synthetic, real, block=2), [0.75, 0.5, 1.0])
    no_overlap = sp.csr_matrix(np.array([[0, 0, 0, 0, 1, 0]]))
    np.testing.assert_allclose(nearest_neighbour_jaccard(no_overlap, real), [0.0])


def test_a_copy_of_the_real_data_is_fully_memorised_and_faithful(split):
    report = fidelity_report(split.train, split.train, split, ease_l2=10.0)
    assert report["privacy"]["memorised_share"] == 1.0
    assert report["item_popularity_js"] == pytest.approx(0.0, abs=1e-9)
    assert report["length_js"] == pytest.approx(0.0, abs=1e-9) and report["length_wasserstein"] == 0.0
    assert report["cooccurrence_pearson"] == pytest.approx(1.0) and report["cooccurrence_cosine"] == pytest.approx(1.0)
    assert report["utility"]["ndcg@20_ratio"] == pytest.approx(1.0)
    json.dumps(report)  # JSON-able as written by `genrec generate --report`


def test_random_users_are_not_memorised_and_are_less_faithful(split):
    rng = np.random.default_rng(0)
    real = split.train
    lengths = np.diff(real.csr().indptr)
    users = np.repeat(np.arange(real.n_users), lengths)
    random_users = Interactions(users, rng.integers(0, real.n_items, len(users)), None, None,
                                IdMap(np.arange(real.n_users), "user"), real.item_ids)
    report = fidelity_report(random_users, real, split, ease_l2=10.0)
    assert report["privacy"]["memorised_share"] < 0.01
    assert report["item_popularity_js"] > 0.1 and report["utility"]["ndcg@20_ratio"] < 0.8


def test_cooccurrence_agreement_of_shuffled_pairs_is_low():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 5, 400)
    real = sp.csr_matrix((rng.random((400, 50)) < np.where(np.arange(50) % 5 == groups[:, None], 0.6, 0.02))
                         .astype(np.float32))
    same_structure = sp.csr_matrix(real[rng.permutation(400)])
    no_structure = sp.csr_matrix(real.toarray()[:, rng.permutation(50)])
    assert cooccurrence_agreement(same_structure, real, 100)["cooccurrence_pearson"] > 0.95
    assert cooccurrence_agreement(no_structure, real, 100)["cooccurrence_pearson"] < 0.5


def test_reports_need_one_item_map(split):
    other = Interactions([0], [0], None, None, IdMap([0], "user"), IdMap(["x"], "item"))
    with pytest.raises(ValueError, match="item id map"):
        fidelity_report(other, split.train, None)


# writing and the command -------------------------------------------------------------------------------------------
def test_written_users_read_back_with_load_table(vae, split, tmp_path):
    synthetic = generate_users(vae, 30, split.train, seed=0)
    path = write_synthetic(synthetic, tmp_path / "out" / "synthetic.csv")
    back = load_table(path, value="value", timestamp="timestamp")
    assert len(back) == len(synthetic) and back.n_users == 30
    raw = pd.read_csv(path)
    assert list(raw.columns) == ["user", "item", "value", "timestamp"]
    assert set(raw["item"]) <= set(split.train.item_ids.raw.tolist())


def test_generate_command_writes_users_and_a_report(vae, split, tmp_path):
    bundle = vae.save(tmp_path / "model", train=split.train)
    test = split.test
    rows = np.repeat(np.arange(len(test)), np.diff((test.histories.matrix + test.targets).tocsr().indptr))
    items = (test.histories.matrix + test.targets).tocsr().indices
    pd.DataFrame({"user": test.histories.user_ids[rows], "item": split.train.item_ids.raw[items]}).to_csv(
        tmp_path / "test.csv", index=False)
    summary = generate_command(bundle, 80, tmp_path / "synthetic.csv", report=tmp_path / "report.json",
                               test=tmp_path / "test.csv", ease_l2=10.0)
    assert summary["n_users"] == 80 and (tmp_path / "synthetic.csv").exists()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["n_synthetic_users"] == 80 and report["utility"]["ndcg@20_real"] > 0
    assert 0.0 <= report["privacy"]["memorised_share"] <= 1.0


def test_generate_command_needs_a_bundle_with_training_histories(vae, tmp_path):
    with pytest.raises(ValueError, match="training histories"):
        generate_command(vae.save(tmp_path / "bare"), 5, tmp_path / "x.csv")


def test_histories_from_lists_keep_users_without_items():
    h = Histories.from_lists([[1, 2], []], 4)
    assert h.n_users == 2
