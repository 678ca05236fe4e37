"""Published results to set beside ours: each names its data set, protocol, model, metrics and source."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Anchor:
    """A published result: `metrics` in genrec's names (recall = hits / |targets| as LightGCN; recall_liang =
    hits / min(k, |targets|) as Liang et al.)."""

    dataset: str
    protocol: str
    model: str
    metrics: dict[str, float]
    source: str


PUBLISHED = (
    Anchor("gowalla", "fixed", "Mult-VAE", {"recall@20": 0.1641, "ndcg@20": 0.1335},
           "He et al. 2020, LightGCN (SIGIR), Table 4"),
    Anchor("gowalla", "fixed", "EASE", {"recall@20": 0.1765, "ndcg@20": 0.1467},
           "EASE (Steck 2019) on the LightGCN split, as reported by Shen et al. 2021, GF-CF (CIKM)"),
    Anchor("gowalla", "fixed", "LightGCN", {"recall@20": 0.1830, "ndcg@20": 0.1554},
           "He et al. 2020, LightGCN (SIGIR), Table 4"),
    Anchor("ml-20m", "strong_generalization", "Mult-VAE",
           {"recall_liang@20": 0.395, "recall_liang@50": 0.537, "ndcg@100": 0.426},
           "Liang et al. 2018, Variational Autoencoders for CF (WWW), Table 2"),
    Anchor("ml-20m", "strong_generalization", "Mult-DAE",
           {"recall_liang@20": 0.387, "recall_liang@50": 0.524, "ndcg@100": 0.419},
           "Liang et al. 2018, Variational Autoencoders for CF (WWW), Table 2"),
)


def dataset_key(config: dict | None) -> str | None:
    """'gowalla', 'ml-20m', 'ml-100k', ... from the data section of a resolved config, when recognisable."""
    data = (config or {}).get("data") or {}
    path = str(data.get("path") or "").lower()
    if data.get("format") == "lightgcn" and "gowalla" in path:
        return "gowalla"
    if data.get("format") == "movielens":
        for key, pattern in (("ml-100k", r"100k"), ("ml-1m", r"(ml|movielens)-1m"), ("ml-20m", r"20m")):
            if re.search(pattern, path):
                return key
    return None


def anchors_for(run) -> list[Anchor]:
    """The anchors for a run's data set (from its config) and protocol (from its metrics)."""
    key = dataset_key(run.config)
    return [a for a in PUBLISHED if a.dataset == key and a.protocol == run.metrics.get("protocol")]
