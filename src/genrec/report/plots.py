"""The figures of a report: training curves, metric bars, bucket bars, long-tail curves and the latent map.

Each function takes plain data (lists of dicts, frames, arrays) and returns a matplotlib `Figure` drawn on an
Agg canvas, without pyplot, so no global backend state changes; `png_bytes` renders one to PNG.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

GROUP_NAMES = ("head", "mid", "tail")


def new_figure(width: float, height: float) -> Figure:
    """A figure (inches) on the Agg canvas, laid out with constrained layout."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (no metadata, so the bytes depend on the picture alone)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


# training -------------------------------------------------------------------------------------------------------
def training_curves(histories: dict[str, list[dict]]) -> Figure:
    """One row per model: training loss per parameter group against the epoch (left) and the validation
    metrics, where the model was validated (right). histories: model name -> history.jsonl records."""
    if not histories:
        raise ValueError("training_curves needs at least one model's history")
    fig = new_figure(10, 2.6 * len(histories))
    axes = fig.subplots(len(histories), 2, squeeze=False)
    for row, (name, records) in enumerate(histories.items()):
        frame = pd.DataFrame(records)
        epochs = frame["epoch"] + 1 if "epoch" in frame else np.arange(1, len(frame) + 1)
        loss_ax, val_ax = axes[row]
        for col in [c for c in frame.columns if c.startswith("loss")]:
            loss_ax.plot(epochs, frame[col], marker=".", label=col.removeprefix("loss").strip("_") or "loss")
        loss_ax.set(title=f"{name}: training loss", xlabel="epoch", ylabel="loss per batch")
        loss_ax.legend(fontsize="small", loc="upper right")
        vals = [c for c in frame.columns if c.startswith("val_")]
        for col in vals:
            val_ax.plot(epochs, frame[col], marker=".", label=col.removeprefix("val_"))
        if vals:
            val_ax.legend(fontsize="small", loc="lower right")
        else:
            val_ax.text(0.5, 0.5, "not validated", ha="center", va="center", transform=val_ax.transAxes)
        val_ax.set(title=f"{name}: validation", xlabel="epoch")
        for ax in (loss_ax, val_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


# metrics --------------------------------------------------------------------------------------------------------
def metric_bars(table: pd.DataFrame, metrics: Sequence[str], title: str = "") -> Figure:
    """Grouped bars: one group per metric, one bar per row of `table` (index: model). Rows whose name ends
    in '(published)' are hatched, so published anchors never pass for our own numbers."""
    metrics = [m for m in metrics if m in table.columns]
    if not metrics or table.empty:
        raise ValueError("metric_bars needs at least one model and one of the metrics")
    fig = new_figure(max(6.0, 1.2 * len(metrics) * max(1, len(table)) / 3 + 3), 3.6)
    ax = fig.subplots()
    width = 0.8 / len(table)
    x = np.arange(len(metrics))
    for j, (name, row) in enumerate(table[metrics].iterrows()):
        published = str(name).endswith("(published)")
        ax.bar(x + j * width - 0.4 + width / 2, row.to_numpy(dtype=float), width, label=str(name),
               hatch="//" if published else None, edgecolor="black" if published else None,
               alpha=0.6 if published else 1.0)
    ax.set_xticks(x, metrics)
    ax.set(title=title, ylabel="mean over test users")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def bucket_bars(frame: pd.DataFrame, metric: str, title: str, xlabel: str) -> Figure:
    """frame: one row per (model, bucket) with columns `model`, `bucket` and `metric`; bars per bucket (in
    the frame's order), one per model."""
    if frame.empty or metric not in frame.columns:
        raise ValueError(f"bucket_bars needs rows with a {metric!r} column")
    buckets = list(dict.fromkeys(frame["bucket"]))
    models = list(dict.fromkeys(frame["model"]))
    fig = new_figure(max(6.0, 1.1 * len(buckets) + 3), 3.4)
    ax = fig.subplots()
    width = 0.8 / len(models)
    x = np.arange(len(buckets))
    for j, model in enumerate(models):
        part = frame[frame["model"] == model].set_index("bucket").reindex(buckets)
        ax.bar(x + j * width - 0.4 + width / 2, part[metric].to_numpy(dtype=float), width, label=model)
    ax.set_xticks(x, buckets)
    ax.set(title=title, xlabel=xlabel, ylabel=metric)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


# long tail ------------------------------------------------------------------------------------------------------
def popularity_groups(popularity: np.ndarray, shares: Sequence[float] = (0.2, 0.3, 0.5)) -> np.ndarray:
    """(n_items,) group index by popularity rank: 0 for the most popular `shares[0]` of items, then 1, ..."""
    order = np.argsort(-np.asarray(popularity), kind="stable")
    bounds = np.round(np.cumsum(shares) / np.sum(shares) * len(order)).astype(np.int64)
    group = np.empty(len(order), np.int64)
    group[order] = np.searchsorted(bounds, np.arange(len(order)), side="right")
    return group


def group_shares(counts: np.ndarray, group: np.ndarray, n_groups: int = 3) -> np.ndarray:
    """(n_groups,) share of the total of `counts` (per item) that falls in each group."""
    total = np.bincount(group, weights=np.asarray(counts, dtype=np.float64), minlength=n_groups)
    return total / max(total.sum(), 1e-12)


def long_tail(popularity: np.ndarray, rec_counts: dict[str, np.ndarray],
              shares: Sequence[float] = (0.2, 0.3, 0.5), n_bins: int = 40) -> Figure:
    """Left: each item's share of all recommendations against its popularity rank in training (log-log,
    averaged in log-spaced rank bins), one line per model, beside the items' share of training interactions.
    Right: the share of recommendations falling in the head / mid / tail items (by `shares` of items).
    popularity: (n_items,) training interactions per item; rec_counts: model -> (n_items,) times recommended."""
    popularity = np.asarray(popularity, dtype=np.float64)
    order = np.argsort(-popularity, kind="stable")
    n = len(order)
    edges = np.unique(np.geomspace(1, n + 1, n_bins + 1).astype(np.int64))
    which = np.searchsorted(edges, np.arange(1, n + 1), side="right") - 1
    centres = np.sqrt(edges[:-1] * np.maximum(edges[1:] - 1, edges[:-1]))

    def binned(values: np.ndarray) -> np.ndarray:
        v = values[order] / max(values.sum(), 1e-12)
        sums = np.bincount(which, weights=v, minlength=len(edges) - 1)[: len(edges) - 1]
        return sums / np.maximum(np.bincount(which, minlength=len(edges) - 1)[: len(edges) - 1], 1)

    fig = new_figure(11, 3.8)
    curve_ax, share_ax = fig.subplots(1, 2, width_ratios=[3, 2])
    curve_ax.plot(centres, binned(popularity), "k--", label="training interactions")
    for name, counts in rec_counts.items():
        y = binned(np.asarray(counts, dtype=np.float64))
        curve_ax.plot(centres[y > 0], y[y > 0], marker=".", label=name)
    curve_ax.set(xscale="log", yscale="log", xlabel="item popularity rank in training (1 = most popular)",
                 ylabel="share per item", title="recommendation frequency vs popularity")
    curve_ax.legend(fontsize="small", loc="lower left")
    group = popularity_groups(popularity, shares)
    names = ["training interactions", *rec_counts]
    table = np.array([group_shares(popularity, group, len(shares))]
                     + [group_shares(c, group, len(shares)) for c in rec_counts.values()])
    left = np.zeros(len(names))
    labels = GROUP_NAMES if len(shares) == 3 else [f"group {g + 1}" for g in range(len(shares))]
    pct = np.round(100 * np.cumsum(shares) / np.sum(shares)).astype(int)
    for g, label in enumerate(labels):
        lo = 0 if g == 0 else pct[g - 1]
        share_ax.barh(names, table[:, g], left=left, label=f"{label} ({lo}-{pct[g]}% of items)")
        left += table[:, g]
    share_ax.invert_yaxis()
    share_ax.set(xlim=(0, 1), xlabel="share of recommendations", title="head / mid / tail share")
    share_ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=3)
    return fig


# latent space ---------------------------------------------------------------------------------------------------
def latent_map(coords: np.ndarray, labels: Sequence, title: str, max_labels: int = 10) -> Figure:
    """Scatter of (n, 2) coordinates coloured by label; the `max_labels` most frequent labels get their own
    colour, the rest are grey ('other')."""
    coords = np.asarray(coords, dtype=np.float64)
    labels = pd.Series(np.asarray(labels, dtype=object)).fillna("(none)").astype(str)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != len(labels):
        raise ValueError(f"latent_map needs (n, 2) coordinates and n labels, got {coords.shape} and {len(labels)}")
    top = list(labels.value_counts().index[:max_labels])
    fig = new_figure(7.5, 6)
    ax = fig.subplots()
    other = ~labels.isin(top).to_numpy()
    if other.any():
        ax.scatter(coords[other, 0], coords[other, 1], s=6, c="lightgrey", label="other")
    for label in top:
        sel = (labels == label).to_numpy()
        ax.scatter(coords[sel, 0], coords[sel, 1], s=8, label=label)
    ax.set(title=title, xlabel="component 1", ylabel="component 2")
    ax.legend(fontsize="small", markerscale=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig
