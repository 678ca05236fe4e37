"""The `genrec` command: a thin shell over `genrec.experiment` and the library.

    genrec datasets list | download NAME --dest DIR | inspect PATH --format F
    genrec train CONFIG.yaml --out DIR          → DIR/model (+ DIR/<name>/model per configured model)
    genrec evaluate --model DIR/model --config CONFIG.yaml
    genrec recommend --model DIR/model --histories FILE --format lightgcn|sequence|csv -k K --out RECS.csv
    genrec compare CONFIG.yaml --out DIR
    genrec demo --out DIR

Every user error (bad data, bad config, missing file, unknown model or id) is one line on stderr,
`genrec: error: ...`, and exit code 2; `--debug` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import os
import re
import sys
import time
from enum import StrEnum
from pathlib import Path

import pandas as pd
import pydantic
import typer

app = typer.Typer(name="genrec", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Recommendations from deep generative models, evaluated beside honest baselines.")
datasets = typer.Typer(no_args_is_help=True, help="Built-in and benchmark data sets: list, download, inspect.")
app.add_typer(datasets, name="datasets")

PROGRESS = typer.Option(None, "--progress/--no-progress", help="Progress bars (default: when stderr is a terminal).")
OUT = typer.Option(..., "--out", "-o", help="Run folder to write.")


class Format(StrEnum):
    movielens = "movielens"
    lightgcn = "lightgcn"
    sequence = "sequence"
    csv = "csv"
    parquet = "parquet"
    synthetic = "synthetic"


class HistoryFormat(StrEnum):
    lightgcn = "lightgcn"
    sequence = "sequence"
    csv = "csv"


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors.")):
    """genrec: train, evaluate, compare and serve recommenders."""


# output ---------------------------------------------------------------------------------------------------------
def _progress(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def _say(text: str = "") -> None:
    typer.echo(text)


def _warn(text: str) -> None:
    typer.echo(f"genrec: warning: {text}", err=True)


def print_table(frame: pd.DataFrame, title: str = "") -> None:
    """A rich table on a terminal, plain Markdown otherwise (pipes, files, tests)."""
    from genrec.experiment import markdown_table

    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        frame = frame.reset_index()
        table = Table(title=title or None)
        for col in frame.columns:
            table.add_column(str(col), justify="right" if pd.api.types.is_numeric_dtype(frame[col]) else "left")
        for row in frame.itertuples(index=False):
            table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
        Console().print(table)
    else:
        if title:
            _say(f"{title}\n")
        _say(markdown_table(frame))


# datasets ---------------------------------------------------------------------------------------------------------
def _shared_data() -> Path:
    return Path(os.environ.get("GENREC_DATA") or Path.cwd().parent / "shared" / "data").resolve()


SHARED = (  # (name, format, path under the shared data folder, what it is)
    ("movielens-100k", "movielens", "movielens-100k/u.data", "100,000 ratings, 943 users, 1,682 items"),
    ("lightgcn-gowalla", "lightgcn", "lightgcn-gowalla", "LightGCN split: 29,858 users, 40,981 items"),
    ("beauty", "sequence", "s3rec-sequences/Beauty.txt", "Amazon Beauty sequences: 22,363 users, 12,101 items"),
    ("lastfm", "sequence", "s3rec-sequences/LastFM.txt", "LastFM sequences: 1,090 users, 3,646 items"),
)


@datasets.command("list")
def datasets_list() -> None:
    """The built-in synthetic set, the downloadable MovieLens archives and the shared benchmark files."""
    rows = [{"name": "synthetic", "format": "synthetic", "where": "built in (genrec.data.synthetic)",
             "about": "tastes, long tail, sessions; item category/price_band/tags/title"}]
    try:
        from genrec.data.download import MOVIELENS

        for name, (url, sha256) in MOVIELENS.items():
            rows.append({"name": name, "format": "movielens", "where": f"genrec datasets download {name}",
                         "about": url + ("" if sha256 else " (no published sha256: unverified)")})
    except ImportError:
        pass
    shared = _shared_data()
    for name, fmt, rel, about in SHARED:
        path = shared / rel
        rows.append({"name": name, "format": fmt, "where": str(path) + ("" if path.exists() else " (absent)"),
                     "about": about})
    print_table(pd.DataFrame(rows).set_index("name"), "data sets (shared folder: $GENREC_DATA or ../shared/data)")


@datasets.command("download")
def datasets_download(name: str = typer.Argument(..., help="A MovieLens archive, e.g. ml-100k."),
                      dest: Path = typer.Option(Path("data"), "--dest", help="Folder to download into.")) -> None:
    """Download and verify (sha256) a public MovieLens archive."""
    from genrec.data.download import download_movielens

    _say(str(download_movielens(name, dest)))


@datasets.command("inspect")
def datasets_inspect(
    path: str = typer.Argument(None, help="File or folder (not needed for synthetic)."),
    format: Format = typer.Option(..., "--format", "-f", help="How to read PATH."),
    sep: str = typer.Option(None, help="CSV delimiter (default: sniffed)."),
    user: str = typer.Option("user", help="CSV/Parquet user column."),
    item: str = typer.Option("item", help="CSV/Parquet item column."),
    value: str = typer.Option(None, help="CSV/Parquet value column."),
    timestamp: str = typer.Option(None, help="CSV/Parquet timestamp column."),
) -> None:
    """Counts, density, the popularity long tail and history lengths of a data set."""
    from genrec.config import DataConfig
    from genrec.experiment import load_dataset

    fields = {"format": format.value, "path": None if path is None else str(Path(path).resolve())}
    if format in (Format.csv, Format.parquet):
        fields.update(sep=sep, columns={"user": user, "item": item, "value": value, "timestamp": timestamp})
    if path is None and format != Format.synthetic:
        raise ValueError(f"datasets inspect: PATH is required for format {format.value}")
    cfg = DataConfig(**fields)
    data = load_dataset(cfg)
    parts = dict(zip(("train", "test"), data)) if isinstance(data, tuple) else {"data": data}
    table = pd.DataFrame({name: _inspect(d) for name, d in parts.items()}).rename_axis("statistic")
    print_table(table, f"{path or 'synthetic'} ({format.value})")


def _inspect(data) -> dict:
    """describe() plus the long tail in more detail and history-length percentiles."""
    import numpy as np

    from genrec.data.synthetic import describe

    out = describe(data)
    per_item = np.sort(np.bincount(data.items, minlength=data.n_items))[::-1]
    for share in (0.01, 0.1):
        out[f"top{share:.0%}_share"] = float(per_item[: max(1, round(share * data.n_items))].sum() / max(len(data), 1))
    out["items_under_5_events"] = int((per_item < 5).sum())
    per_user = np.bincount(data.users, minlength=data.n_users)
    for q in (10, 25, 75, 90):
        out[f"history_p{q}"] = float(np.percentile(per_user, q)) if len(per_user) else 0.0
    return {k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in out.items()}


# train, evaluate, compare ---------------------------------------------------------------------------------------
@app.command()
def train(config: Path = typer.Argument(..., help="Experiment YAML."), out: Path = OUT,
          progress: bool = PROGRESS) -> None:
    """Fit the configured models; write DIR/model (the first model) and DIR/<name>/model for each."""
    from genrec.config import load_config

    cfg = load_config(config)
    from genrec.experiment import clean, load_data, make_split, train_models

    split = make_split(clean(load_data(cfg), cfg), cfg)
    _say(f"{split}")
    models = train_models(split, cfg, out, progress=_progress(progress))
    for name, model in models.items():
        _say(f"{name}: fitted in {model.fit_seconds_:.1f} s → {out / name / 'model'}")
    _say(f"model bundle: {out / 'model'}")


@app.command()
def evaluate(
    model: Path = typer.Option(..., "--model", "-m", help="A model bundle folder (DIR/model)."),
    config: Path = typer.Option(None, "--config", "-c", help="Experiment YAML: data, cleaning, split, metrics."),
    data: str = typer.Option(None, "--data", help="Data path, instead of --config."),
    format: Format = typer.Option(None, "--format", "-f", help="Format of --data."),
    protocol: str = typer.Option(None, help="Split protocol with --data (default: fixed for lightgcn, "
                                 "leave_one_out for sequence, strong_generalization otherwise)."),
    seed: int = typer.Option(0, help="Split seed with --data."),
    out: Path = typer.Option(None, "--out", "-o", help="Also write metrics.json, results.md, buckets.md here."),
    sampled: int = typer.Option(None, "--sampled", min=1, help="Also rank each user's targets among this many "
                                "sampled negatives (labelled columns, e.g. uni100:hr@10; full ranking stays)."),
    sampling: str = typer.Option("uniform", "--sampling", help="How --sampled draws negatives: uniform or "
                                 "popularity."),
) -> None:
    """Evaluate a saved model under a protocol (full ranking; sampled metrics too with --sampled) and print the
    metric table."""
    from genrec import experiment as ex
    from genrec.config import SampledConfig, config_from_dict, load_config
    from genrec.evaluation.sampled import SAMPLINGS
    from genrec.models.base import load_bundle

    bundle = load_bundle(model)
    name = (bundle.meta.get("extra") or {}).get("name") or bundle.meta["model"]
    if config is not None:
        cfg = load_config(config)
    elif data is not None and format is not None:
        default = {"lightgcn": "fixed", "sequence": "leave_one_out"}.get(format.value, "strong_generalization")
        cfg = config_from_dict({"name": f"evaluate {name}", "seed": seed, "data": {"format": format.value,
                                "path": data}, "split": {"protocol": protocol or default},
                                "models": {name: {"model": bundle.meta["model"]}}}, base_dir=Path.cwd())
    else:
        raise ValueError("evaluate needs --config, or --data with --format")
    if sampling not in SAMPLINGS:
        raise ValueError(f"--sampling must be {' or '.join(SAMPLINGS)}, got {sampling!r}")
    if sampled is not None:
        cfg = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={
            "sampled": SampledConfig(negatives=sampled, sampling=sampling)})})
    split = ex.make_split(ex.clean(ex.load_data(cfg), cfg), cfg)
    if bundle.item_ids is not None:
        holdout, dropped = ex.align_holdout(split.test, split.train.item_ids, bundle.item_ids)
        if dropped:
            _warn(f"{dropped} test targets are items the model never saw; they count as misses")
        if holdout is not split.test:
            split = type(split)(split.train, None, holdout, split.protocol)
    elif bundle.model.n_items_ != split.train.n_items:
        raise ValueError(f"{model}: the model has {bundle.model.n_items_} items, the data {split.train.n_items}")
    same_items = bundle.item_ids is None or bundle.item_ids == split.train.item_ids
    results = ex.evaluate_models({name: bundle.model}, split, cfg, progress=False, train_popularity=same_items)
    table = ex.results_table(results)
    if out is not None:
        ex.write_results(out, cfg, split, results, table)
    print_table(ex.headline(table, cfg).drop(columns=["fit_s"], errors="ignore"), f"{name} on {cfg.name}")


@app.command()
def compare(config: Path = typer.Argument(..., help="Experiment YAML."), out: Path = OUT,
            baselines: str = typer.Option("popularity", help="Comma-separated baselines added when missing."),
            progress: bool = PROGRESS) -> None:
    """One protocol, several models, one table (printed and written to DIR/results.md)."""
    from genrec.config import ModelSpec, load_config
    from genrec.experiment import headline, run_experiment, write_report
    from genrec.models import get_model_class

    cfg = load_config(config)
    present = {spec.model for spec in cfg.models.values()}
    for b in filter(None, (x.strip() for x in baselines.split(","))):
        get_model_class(b)  # an unknown name fails here, before any training
        if b not in present and b not in cfg.models:
            cfg.models[b] = ModelSpec(model=b)
    split, models, table = run_experiment(cfg, out, progress=_progress(progress))
    print_table(headline(table, cfg, models), f"{cfg.name}: {split}")
    report = write_report(out)
    _say(f"\nresults: {out / 'results.md'}  report: {report}")


# recommend ------------------------------------------------------------------------------------------------------
@app.command()
def recommend(
    model: Path = typer.Option(..., "--model", "-m", help="A model bundle folder (DIR/model)."),
    histories: Path = typer.Option(..., "--histories", help="Users' histories to recommend for."),
    format: HistoryFormat = typer.Option(..., "--format", "-f", help="lightgcn, sequence, or csv "
                                         "(columns user,item[,timestamp])."),
    k: int = typer.Option(10, "-k", min=1, help="Recommendations per user."),
    out: Path = typer.Option(None, "--out", "-o", help="CSV to write (default: stdout)."),
    sep: str = typer.Option(None, help="CSV delimiter (default: sniffed)."),
) -> None:
    """Write `user,rank,item,score` (original ids), top-k per user, history items excluded."""
    from genrec.models.base import load_bundle

    bundle = load_bundle(model)
    if bundle.item_ids is None:
        raise ValueError(f"{model}: bundle has no item id map (save it with the training data)")
    data = _read_histories(histories, format.value, sep)
    hist, unknown, distinct = _to_model_histories(data, bundle.item_ids)
    if unknown:
        _warn(f"{unknown} history events ({distinct} distinct item ids) are not in the model's item map "
              "and were ignored")
    frames = []
    chunk = 8192
    from tqdm.auto import tqdm

    for start in tqdm(range(0, hist.n_users, chunk), desc="recommending", unit="chunk",
                      disable=hist.n_users <= chunk or not sys.stderr.isatty()):
        recs = bundle.model.recommend(hist[start : start + chunk], k=k, exclude_seen=True)
        frames.append(recs.to_frame(bundle.item_ids, data.user_ids.raw[start : start + chunk]))
    result = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["user", "rank", "item",
                                                                                     "score"])
    if out is None:
        result.to_csv(sys.stdout, index=False, float_format="%.6g")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(out, index=False, float_format="%.6g")
        typer.echo(f"{len(result)} recommendations for {hist.n_users} users → {out}", err=True)


def _read_histories(path: Path, fmt: str, sep: str | None):
    """Histories file → Interactions with the file's own raw-id maps (events in file order)."""
    from genrec.data import loaders
    from genrec.data.interactions import DataError

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such histories file")
    if fmt in ("lightgcn", "sequence"):  # both `user item item ...`; a lightgcn file has no test file beside it
        data = loaders.load_sequences(path)
        if fmt == "lightgcn" and (data.user_ids.raw.dtype == object or data.item_ids.raw.dtype == object):
            raise DataError(f"{path}, line {_first_non_integer_line(path)}: lightgcn ids are integers "
                            "(`user item item ...`); use --format sequence for other ids")
        return data
    with open(path, errors="replace") as f:
        header = re.split(r"[,\t;| ]+" if sep is None else re.escape(sep), f.readline().strip())
    has_time = "timestamp" in [h.strip().strip('"') for h in header]
    return loaders.load_table(path, user="user", item="item", timestamp="timestamp" if has_time else None, sep=sep)


def _first_non_integer_line(path: Path) -> int:
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not all(token.isdigit() for token in line.split()):
                return number
    return 0


def _to_model_histories(data, item_ids):
    """Histories in the model's item space (binary), the number of events and distinct ids left out."""
    import numpy as np

    from genrec.data.interactions import Interactions

    to_model = item_ids.index(data.item_ids.raw, missing="ignore")
    mapped = to_model[data.items]
    keep = mapped >= 0
    unknown_ids = int((to_model < 0).sum() if len(data) else 0)
    table = Interactions(data.users[keep], mapped[keep], np.ones(int(keep.sum()), np.float32),
                         data.timestamps[keep], data.user_ids, item_ids, source=data.source)
    return table.histories(), int((~keep).sum()), unknown_ids


# explain, generate, report ---------------------------------------------------------------------------------------
@app.command()
def explain(
    model: Path = typer.Option(..., "--model", "-m", help="A model bundle folder (DIR/model)."),
    item: str = typer.Option(..., "--item", help="The recommended item (original id) to explain."),
    user: str = typer.Option(None, "--user", help="A user the model was trained on (original id)."),
    history: str = typer.Option(None, "--history", help="Or a new user's history: comma-separated item ids."),
    top: int = typer.Option(3, "--top", min=1, help="History items to show."),
    method: str = typer.Option("auto", help="auto, leave_one_out, gradient, attention or topics."),
) -> None:
    """Why ITEM is recommended: the history items that contributed most to its score."""
    from genrec.explain import bundle_user_history, explain_command_rows
    from genrec.models.base import load_bundle

    if (user is None) == (history is None):
        raise ValueError("explain needs exactly one of --user and --history")
    bundle = load_bundle(model)
    items = bundle_user_history(bundle, user) if user is not None else \
        [x.strip() for x in history.split(",") if x.strip()]
    rows = explain_command_rows(bundle, items, item, top=top, method=method)
    if not rows:
        raise ValueError(f"nothing to explain: the history of {user or 'the given user'} is empty")
    _say(f"item {rows[0]['item']} (score {rows[0]['score']:.4g}, method {rows[0]['method']}) because of:")
    frame = pd.DataFrame(rows).drop(columns=["item", "score", "method"]).set_index("rank")
    print_table(frame.dropna(axis=1, how="all"))


@app.command()
def generate(
    model: Path = typer.Option(..., "--model", "-m", help="A Mult-VAE, RecVAE, CFGAN or SASRec bundle."),
    users: int = typer.Option(1000, "--users", "-n", min=1, help="Synthetic users to sample."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV of the synthetic interactions (user,item)."),
    report: Path = typer.Option(None, "--report", help="Also write the fidelity and privacy report (JSON)."),
    test: Path = typer.Option(None, "--test", help="Real held-out users (user,item CSV) for the "
                              "train-on-synthetic utility."),
    seed: int = typer.Option(0, help="Sampling seed."),
    temperature: float = typer.Option(1.0, min=0.01, help="Softmax temperature of the sampling."),
    condition: str = typer.Option("popularity", help="popularity: no real user at generation time (the VAE "
                                  "prior); partial: each synthetic user starts from half of a real one."),
) -> None:
    """Sample synthetic users from a generative model and measure how realistic and how private they are."""
    import json

    from genrec.synthesis import generate_command

    summary = generate_command(model, users, out, report=report, test=test, seed=seed, temperature=temperature,
                               condition=condition)
    _say(f"{summary['n_users']} synthetic users, {summary['n_interactions']} interactions → {out}")
    if "fidelity" in summary:
        _say(json.dumps(summary["fidelity"], indent=2))


@app.command()
def report(runs: list[Path] = typer.Argument(..., help="Run folders written by compare, demo or train."),
           out: Path = typer.Option(None, "--out", "-o", help="HTML file (default: report.html in the first run).")
           ) -> None:
    """One self-contained HTML report (and PNGs) of one or more runs."""
    from genrec.report.html import write_report

    for run in runs:
        if not run.is_dir():
            raise FileNotFoundError(f"{run}: no such run folder")
    _say(f"report: {write_report(runs, out)}")


# serve, retrain ---------------------------------------------------------------------------------------------------
@app.command()
def serve(
    model: Path = typer.Option(..., "--model", "-m", help="A model bundle folder (DIR/model)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    store: str = typer.Option("events.db", help="Event store: SQLite file, sqlite:///PATH or postgresql://..."),
    api_key: str = typer.Option(None, "--api-key", envvar="GENREC_API_KEY", help="Enables /v1/admin/* (reload, "
                                "delete a user)."),
    max_batch: int = typer.Option(64, min=1, help="Most requests scored in one micro-batch."),
    max_wait_ms: float = typer.Option(0.0, min=0.0, help="Longest wait to fill a micro-batch (0: score as soon "
                                      "as the scorer is free; requests that arrived together still share a batch)."),
    quantize: str = typer.Option(None, help="int8: serve an 8-bit copy of a Mult-VAE/DAE (smaller, faster)."),
    rerank: str = typer.Option(None, help="RANK:CANDIDATES, e.g. 64:128: two-stage scoring of a Mult-VAE/DAE, a "
                               "low-rank shortlist re-scored with the float32 weights (same top-20 for 99.6% of "
                               "Gowalla requests, 3-7x less scoring CPU)."),
    scoring_process: bool = typer.Option(False, "--scoring-process", help="Score in a child process (the event "
                                         "loop keeps the interpreter lock to itself; best p99 under load)."),
    scoring_processes: int = typer.Option(1, min=1, help="With --scoring-process: child processes that score "
                                          "batches in parallel (each holds a copy of the model; 2 gave the best "
                                          "latency and throughput on Gowalla with 2 cores)."),
) -> None:
    """Recommendations, similar items, explanations and an event log over HTTP (OpenAPI docs at /docs)."""
    from genrec.models.base import load_bundle
    from genrec.serving.commands import serve as run_server

    load_bundle(model)  # a bad bundle fails here with one line, before the server starts
    run_server(model, host=host, port=port, store=store, api_key=api_key, max_batch=max_batch,
               max_wait_ms=max_wait_ms, quantize=quantize, rerank=rerank,
               scoring_process=scoring_processes if scoring_process else 0)


@app.command()
def retrain(
    model: Path = typer.Option(..., "--model", "-m", help="The bundle being served."),
    store: str = typer.Option("events.db", help="The event store the server writes."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the new bundle (swap it in with "
                             "POST /v1/admin/reload)."),
) -> None:
    """Refit the served model on its training histories plus the events recorded since."""
    from genrec.serving.commands import describe
    from genrec.serving.commands import retrain as run_retrain

    _say(describe(run_retrain(model, store, out)))



# demo -----------------------------------------------------------------------------------------------------------
@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run folder to write."),
    users: int = typer.Option(2000, min=50, help="Synthetic users."),
    items: int = typer.Option(1500, min=20, help="Synthetic items."),
    epochs: int = typer.Option(None, min=1, help="Epochs of the torch models (default: configs/synthetic.yaml's)."),
    seed: int = typer.Option(0, help="Seed of the data, split and models."),
    progress: bool = PROGRESS,
) -> None:
    """The whole job on built-in synthetic data: split, train the baselines and generative models, evaluate,
    print the table and example recommendations, write DIR/report.html."""
    from genrec import experiment as ex

    start = time.perf_counter()
    show = _progress(progress)
    cfg = ex.demo_config(users, items, epochs, seed)
    data = ex.clean(ex.load_data(cfg), cfg)
    _say(f"synthetic data: {data.n_users} users, {data.n_items} items, {len(data)} liked (rating >= 4) events")
    split = ex.make_split(data, cfg)
    _say(f"{split}; models: {', '.join(cfg.models)}\n")
    models = ex.train_models(split, cfg, out, progress=show)
    table = ex.compare(models, split, cfg, out, progress=show)
    view = ex.headline(table, cfg, models)
    print_table(view, f"full ranking over {split.train.n_items} items, {len(split.test)} held-out users")
    score = f"ndcg@{max(cfg.evaluation.ks)}"
    best = table.drop(index=[n for n in table.index if n == "popularity"])[score].idxmax() \
        if len(table) > 1 else table.index[0]
    examples = ex.format_examples(best, models[best], split, n_users=3, k=5, seed=seed)
    (out / "examples.md").write_text(examples + "\n")
    _say("\n" + examples)
    report = ex.write_report(out)
    _say(f"\nrun folder: {out}  report: {report}  ({time.perf_counter() - start:.0f} s)")


# errors ---------------------------------------------------------------------------------------------------------
USER_ERRORS = (ValueError, KeyError, OSError, pydantic.ValidationError)


def _pydantic_line(e: pydantic.ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{e.title}: {loc + ': ' if loc else ''}{err['msg']}"


def _one_line(e: BaseException) -> str:
    if isinstance(e, pydantic.ValidationError):
        text = _pydantic_line(e)
    elif isinstance(e, KeyError) and e.args:
        text = str(e.args[0])
    elif isinstance(e, OSError) and e.filename is not None:
        text = f"{e.filename}: {e.strerror or e}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `genrec` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get("GENREC_DEBUG"))
    args = [a for a in args if a != "--debug"]
    try:
        code = app(args=args, prog_name="genrec", standalone_mode=False)
    except typer.Exit as e:
        code = e.exit_code
    except typer.Abort:
        typer.echo("genrec: aborted", err=True)
        code = 130
    except typer.TyperException as e:
        if debug:
            raise
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        message = " ".join(e.format_message().split())
        if message:  # (no_args_is_help has printed the help already)
            typer.echo(f"genrec: error: {message}{hint}", err=True)
        code = e.exit_code
    except USER_ERRORS as e:
        if debug:
            raise
        typer.echo(f"genrec: error: {_one_line(e)}", err=True)
        code = 2
    except Exception as e:
        if debug:
            raise
        typer.echo(f"genrec: error: unexpected {type(e).__name__}: {_one_line(e)} (run with --debug for the "
                   "traceback)", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
