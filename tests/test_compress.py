"""Compact Mult-VAE / Mult-DAE: the ONNX graph ranks exactly as torch does on ML-100K, int8 weights take a
quarter of the bytes at (nearly) the same accuracy, and the low-rank decoder is the truncated SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")

from genrec import compress  # noqa: E402
from genrec.data.clean import filter_min_value  # noqa: E402
from genrec.data.loaders import load_movielens  # noqa: E402
from genrec.data.splits import split_strong_generalization  # noqa: E402
from genrec.evaluation.evaluate import evaluate  # noqa: E402
from genrec.models.multvae import MultDAE, MultVAE  # noqa: E402
from genrec.models.popularity import Popularity  # noqa: E402
from tests.conftest import block_interactions, shared_data  # noqa: E402

FAST = {"progress": False}


@pytest.fixture(scope="module")
def ml100k():
    data = filter_min_value(load_movielens(shared_data("movielens-100k")), 4, binarize=True)
    return split_strong_generalization(data, n_heldout=0.1, fold_in=0.8, seed=0)


@pytest.fixture(scope="module", params=["multvae", "multdae"])
def trained(request, ml100k):
    """Liang et al.'s architectures, a few epochs (enough for a real ranking, fast for a test)."""
    cls = {"multvae": MultVAE, "multdae": MultDAE}[request.param]
    return cls(epochs=12, batch_size=100, train_options=FAST).fit(ml100k.train)


@pytest.fixture(scope="module")
def small():
    split = split_strong_generalization(block_interactions(200, 80), n_heldout=0.1, seed=0)
    return split, MultVAE(hidden_dims=(32, 8), epochs=5, batch_size=32, train_options=FAST).fit(split.train)


def ndcg(model, holdout) -> float:
    return evaluate(model, holdout, ks=(20,), metrics=("ndcg",))["ndcg@20"]


# ONNX -------------------------------------------------------------------------------------------------------------
def test_onnx_top20_is_identical_to_torch_for_every_ml100k_test_user(trained, ml100k, tmp_path):
    onnx_model = compress.OnnxRecommender(compress.export_onnx(trained, tmp_path / "m.onnx"))
    h = ml100k.test.histories
    np.testing.assert_allclose(onnx_model.score(h), trained.score(h), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(onnx_model.recommend(h, k=20).items, trained.recommend(h, k=20).items)


def test_onnx_graph_takes_any_number_of_users(small, tmp_path):
    split, model = small
    onnx_model = compress.OnnxRecommender(compress.export_onnx(model, tmp_path / "m.onnx"), threads=1)
    h = split.train.histories()
    for rows in ([0], np.arange(h.n_users)):
        np.testing.assert_allclose(onnx_model.score(h[rows]), model.score(h[rows]), atol=1e-4)
    assert onnx_model.n_items_ == model.n_items_


def test_int8_onnx_is_a_quarter_of_the_bytes_with_ndcg_within_one_percent(trained, ml100k, tmp_path):
    fp32 = compress.export_onnx(trained, tmp_path / "m.onnx")
    int8 = compress.quantize_onnx(fp32, tmp_path / "m.int8.onnx")
    assert fp32.stat().st_size / int8.stat().st_size > 3.5
    ref, got = ndcg(trained, ml100k.test), ndcg(compress.OnnxRecommender(int8), ml100k.test)
    assert abs(got / ref - 1) <= 0.01


def test_an_onnx_model_serves_but_does_not_fit(small, tmp_path):
    split, model = small
    onnx_model = compress.OnnxRecommender(compress.export_onnx(model, tmp_path / "m.onnx"))
    with pytest.raises(TypeError, match="export_onnx"):
        onnx_model.fit(split.train)


def test_models_without_a_mult_vae_network_are_refused_by_name(small, tmp_path):
    split, _ = small
    with pytest.raises(TypeError, match="Popularity is not a fitted Mult-VAE or Mult-DAE"):
        compress.export_onnx(Popularity().fit(split.train), tmp_path / "p.onnx")


# int8 in torch ------------------------------------------------------------------------------------------------------
def test_torch_int8_keeps_the_ranking_quality_in_a_quarter_of_the_bytes(trained, ml100k):
    int8 = compress.quantize_int8(trained)
    assert compress.weight_bytes(trained) / compress.weight_bytes(int8) > 3.5
    assert abs(ndcg(int8, ml100k.test) / ndcg(trained, ml100k.test) - 1) <= 0.03  # 94 test users: noisy
    assert isinstance(trained.module_.input_layer.weight, torch.nn.Parameter)  # the original is untouched


def test_int8_input_layer_is_the_embedding_bag_up_to_rounding(small):
    split, model = small
    from genrec.training.data import sparse_rows

    batch = sparse_rows(split.test.histories.binary())
    exact = model.module_.input_layer(batch, batch.values)
    rounded = compress.Int8SparseLinear(model.module_.input_layer)(batch, batch.values)
    weight = model.module_.input_layer.weight.detach()
    step = (weight.max(1).values - weight.min(1).values) / 255  # one 8-bit step per item row
    bound = float(step.max()) * float(np.diff(batch.offsets.numpy()).max())
    assert torch.allclose(rounded, exact, atol=bound)
    assert not torch.equal(rounded, exact)


# low-rank decoder -----------------------------------------------------------------------------------------------------
def test_low_rank_decoder_is_the_truncated_svd_of_the_output_layer(small):
    _, model = small
    low = compress.low_rank_decoder(model, 4)
    w = model.module_.decoder[-1].weight.detach().double()
    first, second = low.module_.decoder[-1]
    product = (second.weight.double() @ first.weight.double())
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    torch.testing.assert_close(product, (u[:, :4] * s[:4]) @ vh[:4], atol=1e-5, rtol=1e-5)
    assert torch.linalg.matrix_rank(product) == 4
    torch.testing.assert_close(second.bias, model.module_.decoder[-1].bias)
    n_items, d = w.shape
    assert compress.weight_bytes(model) - compress.weight_bytes(low) == 4 * (n_items * d - 4 * (n_items + d))


def test_full_rank_minus_nothing_is_refused_and_so_is_a_second_factorisation(small):
    _, model = small
    d = model.module_.decoder[-1].weight.shape[1]
    with pytest.raises(ValueError, match="rank must be in 1"):
        compress.low_rank_decoder(model, d)
    with pytest.raises(ValueError, match="low-rank already"):
        compress.low_rank_decoder(compress.low_rank_decoder(model, 2), 1)


def test_choose_rank_takes_the_smallest_rank_within_the_tolerance(small):
    split, model = small
    rank, rows = compress.choose_rank(model, split.validation, ranks=(2, 4, 6, 64), tolerance=1.0)
    assert rank == 2  # any NDCG is within 100%
    assert [r["rank"] for r in rows] == [2, 4, 6]  # 64 is not below the layer's width (32)
    rank, rows = compress.choose_rank(model, split.validation, ranks=(2, 4, 6), tolerance=-1.0)
    assert rank == max(rows, key=lambda r: r["ndcg@20"])["rank"]  # none qualifies: the best one
