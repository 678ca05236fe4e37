"""Serving an 8-bit copy of a Mult-VAE: the same service, nearly the same rankings, refused for other models."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from genrec.models.multvae import MultVAE
from genrec.serving.app import create_app
from genrec.serving.served import ScoringRow, ServedModel
from tests.conftest import block_interactions


@pytest.fixture(scope="module")
def multvae_dir(tmp_path_factory):
    train = block_interactions()
    model = MultVAE(hidden_dims=(32, 8), epochs=20, batch_size=40, lr=1e-2, seed=0,
                    train_options={"progress": False}).fit(train)
    return model.save(tmp_path_factory.mktemp("multvae") / "model", train)


def test_int8_serving_keeps_the_rankings_close_to_float32(multvae_dir):
    exact, small = ServedModel.load(multvae_dir), ServedModel.load(multvae_dir, quantize="int8")
    assert exact.info()["quantize"] == "none" and small.info()["quantize"] == "int8"
    rows = [ScoringRow(np.array([g, g + 4, g + 8], np.int64), np.ones(3, np.float32), 10, True) for g in range(4)]
    for (a, score_a), (b, score_b) in zip(exact.score_rows(rows), small.score_rows(rows)):
        assert len(set(a) & set(b)) >= 7  # top-10 lists share most of their items
        assert not np.array_equal(score_a, score_b)  # ... and the scores did come from the 8-bit copy


def test_the_app_serves_the_int8_copy(multvae_dir):
    with TestClient(create_app(multvae_dir, quantize="int8")) as client:
        assert client.get("/health").json()["model"]["quantize"] == "int8"
        r = client.post("/v1/recommendations", json={"history": [0, 4, 8], "k": 5})
        assert r.status_code == 200 and len(r.json()["items"]) == 5


def test_quantize_names_what_it_accepts_and_which_models(multvae_dir, bundle_dir):
    with pytest.raises(ValueError, match="quantize must be one of"):
        ServedModel.load(multvae_dir, quantize="int4")
    with pytest.raises(ValueError, match="quantize='int8'"):
        ServedModel.load(bundle_dir, quantize="int8")  # the co-occurrence test model has no network to quantise
