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

The page itself (head, style, Content-Security-Policy) is template.html beside this module; published anchors
are in `genrec.report.anchors`, the sections that need the fitted models in `genrec.report.recommendations`.
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
from genrec.report.anchors import anchors_for, dataset_key
from genrec.report.recommendations import examples_section, latent_section, load_models, long_tail_section


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
    template = Template(Path(__file__).with_name("template.html").read_text())  # the page around the body
    out.write_text(template.substitute(title=html.escape(title), body="\n".join(page.parts)), encoding="utf-8")
    return out
