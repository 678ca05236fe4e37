"""The report's figures: each function draws what its docstring promises from plain data."""

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from genrec.report import plots


def _png_size(fig) -> tuple[int, int]:
    return Image.open(io.BytesIO(plots.png_bytes(fig))).size


def test_png_bytes_renders_the_figure_at_its_size_in_pixels():
    fig = plots.new_figure(4, 3)
    fig.subplots().plot([0, 1], [1, 0])
    data = plots.png_bytes(fig)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(data)).size == (400, 300)


def test_png_bytes_carry_no_software_metadata_with_a_url():
    fig = plots.new_figure(2, 2)
    assert b"matplotlib.org" not in plots.png_bytes(fig)


def test_training_curves_have_a_loss_and_a_validation_panel_per_model():
    histories = {
        "multvae": [{"epoch": e, "loss": 10.0 - e, "val_ndcg@20": 0.1 * e} for e in range(4)],
        "cfgan": [{"epoch": e, "loss_generator": 1.0, "loss_discriminator": 2.0} for e in range(3)],
    }
    fig = plots.training_curves(histories)
    axes = fig.axes
    assert len(axes) == 4
    assert [line.get_label() for line in axes[0].get_lines()] == ["loss"]
    assert [line.get_label() for line in axes[1].get_lines()] == ["ndcg@20"]
    assert list(axes[1].get_lines()[0].get_xdata()) == [1, 2, 3, 4]  # epochs counted from 1
    assert sorted(line.get_label() for line in axes[2].get_lines()) == ["discriminator", "generator"]
    assert "not validated" in [t.get_text() for t in axes[3].texts]


def test_training_curves_need_a_history():
    with pytest.raises(ValueError, match="at least one"):
        plots.training_curves({})


def test_metric_bars_draw_one_bar_per_model_and_metric_and_hatch_published_rows():
    table = pd.DataFrame({"recall@20": [0.1, 0.2, 0.16], "ndcg@20": [0.05, 0.1, 0.13]},
                         index=["popularity", "ease", "Mult-VAE (published)"])
    fig = plots.metric_bars(table, ["recall@20", "ndcg@20", "absent@5"])
    bars = fig.axes[0].patches
    assert len(bars) == 6
    assert [round(b.get_height(), 3) for b in bars] == [0.1, 0.05, 0.2, 0.1, 0.16, 0.13]
    assert [b.get_hatch() for b in bars] == [None, None, None, None, "//", "//"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["recall@20", "ndcg@20"]


def test_bucket_bars_keep_the_bucket_order_of_the_frame():
    frame = pd.DataFrame({"model": ["a", "a", "b", "b"], "bucket": ["1-5 items", "6-9 items"] * 2,
                          "ndcg@20": [0.1, 0.2, 0.3, 0.4]})
    fig = plots.bucket_bars(frame, "ndcg@20", "by activity", "history length")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1-5 items", "6-9 items"]
    assert [round(b.get_height(), 2) for b in ax.patches] == [0.1, 0.2, 0.3, 0.4]


def test_popularity_groups_split_items_by_rank_into_head_mid_and_tail():
    popularity = np.array([0, 10, 5, 9, 1, 8, 2, 7, 3, 6])
    group = plots.popularity_groups(popularity, (0.2, 0.3, 0.5))
    assert set(np.flatnonzero(group == 0)) == {1, 3}  # the two most popular
    assert set(np.flatnonzero(group == 1)) == {5, 7, 9}
    assert set(np.flatnonzero(group == 2)) == {0, 2, 4, 6, 8}


def test_group_shares_are_the_share_of_counts_per_group():
    shares = plots.group_shares(np.array([3, 1, 0, 4]), np.array([0, 1, 2, 0]))
    np.testing.assert_allclose(shares, [7 / 8, 1 / 8, 0])


def test_long_tail_draws_a_curve_per_model_and_stacked_shares():
    rng = np.random.default_rng(0)
    popularity = np.sort(rng.zipf(1.5, 500))[::-1].astype(float)
    counts = {"popularity": np.r_[np.full(20, 50), np.zeros(480)], "vae": rng.poisson(2, 500)}
    fig = plots.long_tail(popularity, counts)
    curve_ax, share_ax = fig.axes[:2]
    assert [line.get_label() for line in curve_ax.get_lines()] == ["training interactions", "popularity", "vae"]
    assert curve_ax.get_xscale() == "log" and curve_ax.get_yscale() == "log"
    widths = np.array([b.get_width() for b in share_ax.patches]).reshape(3, 3)  # (group, row)
    np.testing.assert_allclose(widths.sum(axis=0), 1.0)
    assert widths[0, 1] == pytest.approx(1.0)  # popularity recommends head items only


def test_latent_map_colours_the_most_frequent_labels_and_greys_the_rest():
    coords = np.arange(20, dtype=float).reshape(10, 2)
    labels = ["a"] * 5 + ["b"] * 3 + ["c", None]
    fig = plots.latent_map(coords, labels, "map", max_labels=2)
    ax = fig.axes[0]
    names = [c.get_label() for c in ax.collections]
    assert names == ["other", "a", "b"]
    assert [len(c.get_offsets()) for c in ax.collections] == [2, 5, 3]
    assert tuple(ax.collections[0].get_facecolor()[0]) == to_rgba("lightgrey")
    assert _png_size(fig) == (750, 600)


def test_latent_map_rejects_coordinates_that_are_not_two_dimensional():
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        plots.latent_map(np.zeros((3, 3)), ["a"] * 3, "map")
