"""One self-contained HTML report from one or more run folders: `write_report([run, ...], out)`.

A run folder (see `genrec.experiment`) holds config.yaml, metrics.json (every figure and the bucket tables),
<model>/model bundles and, for torch models, <model>/history.jsonl. For each run the report shows the metric
table with published anchors beside ours (marked as published, with their source), bar charts across models,
training curves, metrics per user-activity and item-popularity bucket, long-tail plots, a 2-D map of a VAE's
latent space coloured by item category, and example recommendations with their explanations.

Every figure is written as a PNG beside the HTML and inlined as a base64 data URI, so the HTML file alone is
complete: no scripts, no external CSS, fonts or images, and a Content-Security-Policy that forbids loading any.
A missing piece (no torch model, no item attributes, data that can no longer be read) leaves a note where its
section would be, never an error.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd
import yaml

from genrec.report import plots

#: users whose recommendations feed the long-tail plots (a seeded sample when the test set is larger)
LONG_TAIL_USERS = 2000
#: items placed on the latent map (the most popular ones when there are more)
MAP_ITEMS = 5000


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


@dataclass
class Run:
    """What a run folder holds, read once."""

    path: Path
    metrics: dict
    config: dict | None
    histories: dict[str, list[dict]]
    examples: str | None
    slug: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.metrics.get("experiment") or self.path.name)

    @property
    def ks(self) -> list[int]:
        ks = (self.config or {}).get("evaluation", {}).get("ks")
        if ks:
            return sorted(int(k) for k in ks)
        keys = [k for m in self.metrics["models"].values() for k in m["summary"]]
        return sorted({int(k.split("@")[1]) for k in keys if k.startswith("ndcg@")}) or [20]


def read_run(path: str | Path) -> Run:
    """Read a run folder; only metrics.json is required."""
    path = Path(path)
    metrics_file = path / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{path}: not a run folder (no metrics.json; run `genrec compare` first)")
    metrics = json.loads(metrics_file.read_text())
    config = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").is_file() else None
    histories = {}
    for name in metrics.get("models", {}):
        f = path / name / "history.jsonl"
        if f.is_file():
            histories[name] = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    examples = (path / "examples.md").read_text() if (path / "examples.md").is_file() else None
    return Run(path, metrics, config, histories, examples)


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


def anchors_for(run: Run) -> list[Anchor]:
    key = dataset_key(run.config)
    return [a for a in PUBLISHED if a.dataset == key and a.protocol == run.metrics.get("protocol")]


# page pieces ------------------------------------------------------------------------------------------------------
class Page:
    """The HTML body being built, and the PNGs written beside it."""

    def __init__(self, out: Path):
        self.out = out
        self.parts: list[str] = []
        self.images: list[Path] = []

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        ident = f' id="{html.escape(anchor)}"' if anchor else ""
        self.add(f"<h{level}{ident}>{html.escape(text)}</h{level}>")

    def note(self, text: str) -> None:
        self.add(f'<p class="note">{html.escape(text)}</p>')

    def figure(self, fig, name: str, alt: str) -> None:
        """Write `fig` as <out stem>-<name>.png beside the HTML and inline it."""
        data = plots.png_bytes(fig)
        png = self.out.with_name(f"{self.out.stem}-{name}.png")
        png.write_bytes(data)
        self.images.append(png)
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        self.add(f'<img src="{uri}" alt="{html.escape(alt)}">')

    def table(self, frame: pd.DataFrame, published: Sequence[bool] | None = None, digits: int = 4) -> None:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
        rows = []
        for i, row in enumerate(frame.itertuples(index=False)):
            cls = ' class="published"' if published is not None and published[i] else ""
            cells = "".join(f"<td>{html.escape(_cell(v, digits))}</td>" for v in row)
            rows.append(f"<tr{cls}>{cells}</tr>")
        self.add(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _cell(value, digits: int) -> str:
    if isinstance(value, float | np.floating):
        return "–" if np.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _try(page: Page, what: str, fn, *args) -> None:
    """Run one section; an unexpected failure becomes a note in the report, so one bad piece never sinks it."""
    try:
        fn(page, *args)
    except Exception as e:  # noqa: BLE001 (a report shows what it can)
        page.note(f"{what} skipped: {type(e).__name__}: {e}")


# sections ---------------------------------------------------------------------------------------------------------
def headline_table(run: Run) -> tuple[pd.DataFrame, list[bool]]:
    """Our models' headline figures, then the published anchors for this data set and protocol."""
    ks = run.ks
    keys = [f"{m}@{k}" for k in ks for m in ("recall", "recall_liang", "ndcg")]
    anchors = anchors_for(run)
    keys += [k for a in anchors for k in a.metrics if k not in keys]
    present = [k for k in keys if any(k in m["summary"] for m in run.metrics["models"].values())
               or any(k in a.metrics for a in anchors)]
    rows, published = [], []
    for name, m in run.metrics["models"].items():
        rows.append({"model": name, **{k: m["summary"].get(k, np.nan) for k in present},
                     f"coverage@{ks[-1]}": m["summary"].get(f"coverage@{ks[-1]}", np.nan),
                     "fit s": np.nan if m.get("fit_seconds") is None else m["fit_seconds"], "source": "this run"})
        published.append(False)
    for a in anchors:
        rows.append({"model": f"{a.model} (published)", **{k: a.metrics.get(k, np.nan) for k in present},
                     f"coverage@{ks[-1]}": np.nan, "fit s": np.nan, "source": a.source})
        published.append(True)
    return pd.DataFrame(rows), published


def results_section(page: Page, run: Run) -> None:
    table, published = headline_table(run)
    page.heading("Results", 3)
    page.add(f"<p>Protocol: {html.escape(str(run.metrics.get('protocol')))}; full ranking over every item except "
             "each user's history. Rows in italics on a tinted background are <b>published numbers</b> from the "
             "cited papers, not measured here.</p>")
    page.table(table, published)
    if not any(published):
        page.note(f"No published anchor is recorded for this data set and protocol "
                  f"({dataset_key(run.config) or 'unrecognised data'}, {run.metrics.get('protocol')}).")
    metrics = [c for c in table.columns if "@" in c and not c.startswith("coverage")]
    page.figure(plots.metric_bars(table.set_index("model"), metrics, f"{run.name}: models compared"),
                f"{run.slug}-metrics", "bar chart of the metrics of every model")


def training_section(page: Page, run: Run) -> None:
    page.heading("Training curves", 3)
    if not run.histories:
        page.note("No training history in this run (no torch model, or none saved a history.jsonl).")
        return
    page.figure(plots.training_curves(run.histories), f"{run.slug}-training",
                "training loss and validation metrics per epoch")


def buckets_section(page: Page, run: Run) -> None:
    page.heading("Metrics by user activity and item popularity", 3)
    k = run.ks[-1]
    for kind, metric, xlabel, what in (
            ("user_buckets", f"ndcg@{k}", "history length of the test user", "user activity"),
            ("item_buckets", f"recall@{k}", "popularity group of the target items", "item popularity")):
        frames = [pd.DataFrame(m[kind]).assign(model=name) for name, m in run.metrics["models"].items()
                  if m.get(kind)]
        if not frames:
            page.note(f"No {what} buckets in metrics.json.")
            continue
        frame = pd.concat(frames, ignore_index=True)
        page.figure(plots.bucket_bars(frame, metric, f"{metric} by {what}", xlabel), f"{run.slug}-{kind}",
                    f"{metric} per {what} bucket")
        keep = ("users", "items", "users_with_targets", *(f"{m}@{k}" for k in run.ks
                                                          for m in ("recall", "ndcg", "rec_share")))
        page.table(frame[["model", "bucket", *(c for c in keep if c in frame.columns)]])


# what the run's models do: recommendations, latent space, explanations ----------------------------------------------
@dataclass
class Models:
    """The run's loaded bundles, the users to recommend for and where they came from."""

    bundles: dict
    histories: object  # Histories
    targets: object  # csr targets of `histories` (None when the test split could not be rebuilt)
    popularity: np.ndarray
    source: str


def load_models(run: Run) -> Models | None:
    """Every bundle of the run that loads, and the test users' histories (the split rebuilt from config.yaml;
    failing that, the training users of the first bundle). None, with notes on `run`, when nothing loads."""
    from genrec.models.base import load_bundle

    bundles = {}
    for name in run.metrics["models"]:
        path = run.path / name / "model"
        if not (path / "model.json").is_file():
            run.notes.append(f"{name}: no bundle at {path}.")
            continue
        try:
            bundles[name] = load_bundle(path)
        except Exception as e:  # noqa: BLE001
            run.notes.append(f"{name}: bundle not loaded ({type(e).__name__}: {e}).")
    if not bundles:
        return None
    first = next(iter(bundles.values()))
    if first.histories is None:
        run.notes.append("The bundles hold no training histories (saved without train=...).")
        return None
    popularity = np.bincount(first.histories.matrix.indices, minlength=first.model.n_items_)
    try:
        holdout = _rebuild_test(run)
        return Models(bundles, holdout.histories, holdout.targets.tocsr(), popularity,
                      f"the {len(holdout)} test users of the split, rebuilt from config.yaml")
    except Exception as e:  # noqa: BLE001
        run.notes.append(f"The test split could not be rebuilt from config.yaml ({type(e).__name__}: {e}); "
                         "the training users' histories stand in for test users below.")
        return Models(bundles, first.histories, None, popularity, "training users (seen items excluded)")


def _rebuild_test(run: Run):
    from genrec.config import config_from_dict
    from genrec.experiment import clean, load_data, make_split

    if run.config is None:
        raise FileNotFoundError(f"{run.path}/config.yaml is missing")
    cfg = config_from_dict(run.config, source=str(run.path / "config.yaml"), base_dir=run.path)
    return make_split(clean(load_data(cfg), cfg), cfg).test


def _sample(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.arange(n) if n <= size else np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def long_tail_section(page: Page, run: Run, models: Models | None) -> None:
    page.heading("Long tail", 3)
    if models is None:
        page.note("No model bundle could be loaded, so there are no recommendations to plot.")
        return
    k = run.ks[-1]
    rows = _sample(models.histories.n_users, LONG_TAIL_USERS)
    histories = models.histories[rows]
    counts = {}
    for name, bundle in models.bundles.items():
        items = bundle.model.recommend(histories, k=k).items
        counts[name] = np.bincount(items[items >= 0], minlength=len(models.popularity))
    page.add(f"<p>Top-{k} recommendations of {len(rows)} users ({html.escape(models.source)}"
             f"{', a sample drawn with seed 0' if len(rows) < models.histories.n_users else ''}); items ranked by "
             "the number of training users who have them. Head: the 20% most popular items, mid: the next 30%, "
             "tail: the remaining 50%.</p>")
    page.figure(plots.long_tail(models.popularity, counts), f"{run.slug}-long-tail",
                "recommendation frequency against item popularity rank, and head/mid/tail shares")
    group = plots.popularity_groups(models.popularity)
    shares = {name: plots.group_shares(c, group) for name, c in counts.items()}
    frame = pd.DataFrame(shares, index=list(plots.GROUP_NAMES)).T.reset_index(names="model")
    frame["items recommended"] = [int((c > 0).sum()) for c in counts.values()]
    page.table(frame)


def item_categories(attributes: pd.DataFrame | None) -> tuple[np.ndarray | None, str]:
    """Each item's category (the `category` column, or the first of '|'-joined `genres`) and its name."""
    if attributes is None:
        return None, ""
    if "category" in attributes.columns:
        return attributes["category"].astype(str).to_numpy(), "category"
    if "genres" in attributes.columns:
        first = attributes["genres"].fillna("").astype(str).str.split("|").str[0].replace("", "(none)")
        return first.to_numpy(), "first listed genre"
    return None, ""


def item_vectors(model, items: np.ndarray) -> tuple[np.ndarray, str]:
    """(len(items), d): the encoder's posterior mean for one-item histories where the network has `encode`,
    else the rows of its last linear layer onto the items (the decoder's item vectors)."""
    import scipy.sparse as sp
    import torch

    from genrec.training.data import sparse_rows

    module = getattr(model, "module_", None)
    if module is None:
        raise TypeError(f"{type(model).__name__} has no torch network")
    with torch.no_grad():
        if hasattr(module, "encode"):
            one_item = sp.csr_matrix((np.ones(len(items), np.float32), (np.arange(len(items)), items)),
                                     shape=(len(items), model.n_items_))
            out = [module.encode(sparse_rows(one_item[s:s + 1024]))
                   for s in range(0, len(items), 1024)]
            return torch.cat([o[0] if isinstance(o, tuple) else o for o in out]).cpu().numpy(), \
                "encoder mean of one-item histories"
        linear = [m for m in module.modules() if isinstance(m, torch.nn.Linear) and m.out_features == model.n_items_]
        if not linear:
            raise TypeError(f"{type(model).__name__}'s network has no encoder and no item output layer")
        return linear[-1].weight.detach().cpu().numpy()[items], "decoder item vectors"


def latent_section(page: Page, run: Run, models: Models | None) -> None:
    page.heading("Latent space", 3)
    torch_models = {n: b for n, b in (models.bundles.items() if models else []) if hasattr(b.model, "module_")}
    if not torch_models:
        page.note("No torch model in this run, so there is no latent space to map.")
        return
    name = next((n for n, b in torch_models.items() if "vae" in b.model.name), next(iter(torch_models)))
    bundle = torch_models[name]
    items = np.sort(np.argsort(-models.popularity, kind="stable")[:MAP_ITEMS])
    vectors, how = item_vectors(bundle.model, items)
    from sklearn.decomposition import PCA

    coords = PCA(n_components=2, random_state=0).fit_transform(vectors)
    labels, what = item_categories(bundle.item_attributes)
    if labels is None:
        page.note("The items have no category or genres attribute; the map is coloured by popularity group.")
        labels, what = np.array(plots.GROUP_NAMES)[plots.popularity_groups(models.popularity)], "popularity group"
    subset = f", the {len(items)} most popular items" if len(items) < len(models.popularity) else ""
    page.add(f"<p>{html.escape(name)}: {how}{subset}, projected to two dimensions by PCA and coloured by "
             f"{what}.</p>")
    page.figure(plots.latent_map(coords, labels[items], f"{name}: items in latent space (PCA)"),
                f"{run.slug}-latent", f"2-D map of {name}'s latent space coloured by {what}")


def describe(item: int, bundle) -> str:
    """An item's title (or raw id) and category, from the bundle's item map and attributes."""
    ids, attrs = bundle.item_ids, bundle.item_attributes
    text = str(ids.raw[item]) if ids is not None else str(item)
    if attrs is not None and item < len(attrs):
        row = attrs.iloc[item]
        if "title" in row and pd.notna(row["title"]):
            text = str(row["title"])
        if "category" in row and pd.notna(row["category"]) and str(row["category"]) not in text:
            text += f" ({row['category']})"
    return text


def examples_section(page: Page, run: Run, models: Models | None, n_users: int = 3, k: int = 5) -> None:
    page.heading("Example recommendations", 3)
    if models is None:
        page.note("No model bundle could be loaded, so there are no examples to show.")
        return
    key = f"ndcg@{run.ks[-1]}"
    ranked = sorted(models.bundles, key=lambda n: -run.metrics["models"][n]["summary"].get(key, 0.0))
    name = next((n for n in ranked if models.bundles[n].model.name != "popularity"), ranked[0])
    bundle, h = models.bundles[name], models.histories
    ok = h.lengths() >= 5
    if models.targets is not None:
        ok &= np.diff(models.targets.indptr) > 0
    rows = np.flatnonzero(ok) if ok.any() else np.arange(h.n_users)
    rows = rows[_sample(len(rows), n_users)]
    recs = bundle.model.recommend(h[rows], k=k)
    try:
        from genrec.explain import explain_many
    except ImportError:
        explain_many = None
        page.note("genrec.explain is not available: recommendations are shown without explanations.")
    hit_note = " A ✓ marks a held-out target item." if models.targets is not None else ""
    page.add(f"<p>{html.escape(name)} (the best {key} here), top {k} for {len(rows)} users "
             f"({html.escape(models.source)}), each with the history items that contributed most.{hit_note}</p>")
    for j, row in enumerate(rows):
        items = recs.items[j][recs.items[j] >= 0]
        why = explain_many(bundle.model, h[np.full(len(items), row)], items, top=3) if explain_many else None
        history = h.sequence(row)
        page.add(f"<h4>user {html.escape(str(h.user_ids[row] if h.user_ids is not None else row))}: "
                 f"{len(np.unique(history))} history items</h4><ol class=\"examples\">")
        for i, item in enumerate(items):
            hit = models.targets is not None and models.targets[row, item] > 0
            mark = ' <span class="hit">✓</span>' if hit else ""
            because = ""
            if why is not None:
                parts = [f"{describe(c, bundle)} ({w:+.3g})" for c, w in why[i].contributions if w > 0]
                because = f"<br><small>because of: {html.escape('; '.join(parts) or 'no single history item')} " \
                          f"[{html.escape(why[i].method)}]</small>"
            page.add(f"<li>{html.escape(describe(int(item), bundle))} "
                     f"<small>score {recs.scores[j][i]:.3g}</small>{mark}{because}</li>")
        page.add("</ol>")


# the whole report -----------------------------------------------------------------------------------------------
def run_section(page: Page, run: Run) -> None:
    page.heading(f"{run.name}", 2, anchor=run.slug)
    models_info = ", ".join(f"{n} ({m.get('model') or n})" for n, m in run.metrics["models"].items())
    page.add(f"<p>Run folder <code>{html.escape(str(run.path))}</code>; models: {html.escape(models_info)}.</p>")
    _try(page, "results", results_section, run)
    _try(page, "training curves", training_section, run)
    _try(page, "buckets", buckets_section, run)
    models = None
    try:
        models = load_models(run)
    except Exception as e:  # noqa: BLE001
        run.notes.append(f"Models not loaded ({type(e).__name__}: {e}).")
    for note in run.notes:
        page.note(note)
    _try(page, "long tail", long_tail_section, run, models)
    _try(page, "latent space", latent_section, run, models)
    _try(page, "examples", examples_section, run, models)
    if run.config is not None:
        page.add(f"<details><summary>Configuration (config.yaml)</summary><pre>"
                 f"{html.escape(yaml.safe_dump(run.config, sort_keys=False))}</pre></details>")


def write_report(run_dirs: str | Path | Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Write one self-contained HTML report of the runs to `out` (default: report.html in the first run
    folder) and each figure as a PNG beside it (<out stem>-<run>-<figure>.png). Returns `out`."""
    paths = [Path(run_dirs)] if isinstance(run_dirs, str | Path) else [Path(p) for p in run_dirs]
    if not paths:
        raise ValueError("write_report needs at least one run folder")
    runs = [read_run(p) for p in paths]
    for i, run in enumerate(runs):
        run.slug = re.sub(r"[^A-Za-z0-9_-]+", "-", run.name).strip("-").lower() or "run"
        if any(r.slug == run.slug for r in runs[:i]):
            run.slug = f"{run.slug}-{i + 1}"
    out = Path(out) if out is not None else paths[0] / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    page = Page(out)
    title = "genrec report: " + ", ".join(r.name for r in runs)
    page.heading(title, 1)
    if len(runs) > 1:
        page.add("<nav>" + "".join(f'<a href="#{html.escape(r.slug)}">{html.escape(r.name)}</a>' for r in runs)
                 + "</nav>")
    for run in runs:
        run_section(page, run)
    template = Template((Path(__file__).with_name("report.html")).read_text())
    out.write_text(template.substitute(title=html.escape(title), body="\n".join(page.parts)), encoding="utf-8")
    return out
