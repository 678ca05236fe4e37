"""The `genrec` command, end to end in real processes on tiny data: every command, the files it writes, the
exact `recommend` CSV contract other tools rely on, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from genrec.data.synthetic import make_synthetic
from tests.conftest import shared_data

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def genrec(*args, cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    """Run `python -m genrec.cli ARGS` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "genrec.cli", *map(str, args)], cwd=cwd, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)


def genrec_here(capsys, *args) -> subprocess.CompletedProcess:
    """The same through `genrec.cli.main` in this process (error paths: no model import per process)."""
    from genrec.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, info.value.code, out.out, out.err)


def assert_one_line_error(proc, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genrec: error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def read_recs(path: Path) -> pd.DataFrame:
    assert path.read_text().splitlines()[0] == "user,rank,item,score"
    return pd.read_csv(path, dtype={"user": str, "item": str})


def assert_contract(recs: pd.DataFrame, histories: dict[str, set[str]], k: int, known_items: set[str]) -> None:
    """Ranks 1..k per user in order, scores non-increasing, original ids, no history item."""
    assert set(recs["user"]) == set(histories)
    for user, group in recs.groupby("user", sort=False):
        assert group["rank"].tolist() == list(range(1, k + 1))
        assert np.all(np.diff(group["score"].to_numpy()) <= 1e-6)
        assert not set(group["item"]) & histories[user]
        assert set(group["item"]) <= known_items
        assert group["item"].is_unique


# tiny data -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A CSV of synthetic events with string ids, a LightGCN folder, and configs for both."""
    root = tmp_path_factory.mktemp("cli")
    frame = make_synthetic(n_users=150, n_items=80, seed=3).to_frame()
    frame["user"] = "u" + frame["user"].astype(str)
    frame["item"] = "i" + frame["item"].astype(str)
    frame.rename(columns={"value": "rating"}).to_csv(root / "events.csv", index=False)
    gowalla = root / "lightgcn"
    gowalla.mkdir()
    rng = np.random.default_rng(0)
    lines = {"train.txt": [], "test.txt": []}
    for u in range(60):
        items = rng.choice(40, size=8, replace=False) + 100
        lines["train.txt"].append(" ".join(map(str, [u, *items[:6]])))
        lines["test.txt"].append(" ".join(map(str, [u, *items[6:]])))
    for name, rows in lines.items():
        (gowalla / name).write_text("\n".join(rows) + "\n")
    csv_cfg = {
        "name": "tiny-csv", "seed": 1,
        "data": {"format": "csv", "path": "events.csv", "columns": {"value": "rating", "timestamp": "timestamp"}},
        "clean": {"min_value": 3},
        "split": {"protocol": "strong_generalization", "n_heldout": 15},
        "models": {"vae": {"model": "multvae", "params": {"epochs": 2, "hidden_dims": [32, 8], "batch_size": 64}},
                   "pop": {"model": "popularity"}},
        "evaluation": {"ks": [5, 10]},
    }
    (root / "csv.yaml").write_text(yaml.safe_dump(csv_cfg, sort_keys=False))
    lightgcn_cfg = {"name": "tiny-lightgcn", "data": {"format": "lightgcn", "path": "lightgcn"},
                    "split": {"protocol": "fixed"}, "models": {"pop": {"model": "popularity"}},
                    "evaluation": {"ks": [5]}}
    (root / "lightgcn.yaml").write_text(yaml.safe_dump(lightgcn_cfg, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def csv_run(workspace) -> Path:
    proc = genrec("train", workspace / "csv.yaml", "--out", workspace / "run", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    return workspace / "run"


@pytest.fixture(scope="module")
def lightgcn_run(workspace) -> Path:
    proc = genrec("train", workspace / "lightgcn.yaml", "--out", workspace / "lg", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    return workspace / "lg"


# train ---------------------------------------------------------------------------------------------------------
def test_train_writes_the_first_model_to_dir_model_and_every_model_by_name(csv_run):
    assert json.loads((csv_run / "model" / "model.json").read_text())["model"] == "multvae"
    for name, registry in (("vae", "multvae"), ("pop", "popularity")):
        meta = json.loads((csv_run / name / "model" / "model.json").read_text())
        assert meta["model"] == registry and meta["extra"]["name"] == name
        assert (csv_run / name / "model" / "items.parquet").exists()
    assert len((csv_run / "vae" / "history.jsonl").read_text().splitlines()) == 2
    resolved = yaml.safe_load((csv_run / "config.yaml").read_text())
    assert resolved["data"]["path"] == str(csv_run.parent / "events.csv")


# recommend -----------------------------------------------------------------------------------------------------
def test_recommend_csv_keeps_the_contract_with_original_ids(workspace, csv_run):
    model_items = set(pd.read_parquet(csv_run / "model" / "items.parquet")["item"])
    hist = pd.DataFrame({"user": ["new1", "new1", "new1", "u7", "u7", "new2"],
                         "item": ["i1", "i2", "i3", "i4", "i5", "i6"],
                         "timestamp": [3, 1, 2, 5, 6, 7]})
    hist = hist[hist["item"].isin(model_items)]
    hist.to_csv(workspace / "hist.csv", index=False)
    out = workspace / "recs.csv"
    proc = genrec("recommend", "--model", csv_run / "model", "--histories", workspace / "hist.csv",
                  "--format", "csv", "-k", 7, "--out", out)
    assert proc.returncode == 0, proc.stderr
    histories = {u: set(g["item"]) for u, g in hist.groupby("user")}
    assert_contract(read_recs(out), histories, 7, model_items)


def test_recommend_ignores_unknown_items_with_a_count_on_stderr(workspace, csv_run):
    (workspace / "odd.csv").write_text("user,item\na,i1\na,nope1\nb,nope2\nb,nope2\n")
    out = workspace / "odd_recs.csv"
    proc = genrec("recommend", "--model", csv_run / "model", "--histories", workspace / "odd.csv",
                  "--format", "csv", "-k", 3, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "genrec: warning: 3 history events (2 distinct item ids) are not in the model's item map" in proc.stderr
    recs = read_recs(out)
    assert recs.groupby("user")["rank"].max().to_dict() == {"a": 3, "b": 3}  # b has no known item: still served
    assert "i1" not in set(recs.loc[recs["user"] == "a", "item"])


def test_recommend_sequence_format_writes_to_stdout_by_default(workspace, csv_run):
    """Sequence files carry raw ids as tokens; the string item ids of this model pass through unchanged."""
    (workspace / "seq.txt").write_text("alice i1 i2 i3\nbob i10\n")
    proc = genrec("recommend", "--model", csv_run / "pop" / "model", "--histories", workspace / "seq.txt",
                  "--format", "sequence", "-k", 4)
    assert proc.returncode == 0, proc.stderr
    (workspace / "seq_recs.csv").write_text(proc.stdout)
    items = set(pd.read_parquet(csv_run / "pop" / "model" / "items.parquet")["item"])
    assert_contract(read_recs(workspace / "seq_recs.csv"), {"alice": {"i1", "i2", "i3"}, "bob": {"i10"}}, 4, items)


def test_recommend_lightgcn_format(workspace, lightgcn_run):
    (workspace / "lg_hist.txt").write_text("7 100 101 102\n900 110\n")
    out = workspace / "lg_recs.csv"
    proc = genrec("recommend", "--model", lightgcn_run / "model", "--histories", workspace / "lg_hist.txt",
                  "--format", "lightgcn", "-k", 5, "--out", out)
    assert proc.returncode == 0, proc.stderr
    items = {str(i) for i in range(100, 140)}
    assert_contract(read_recs(out), {"7": {"100", "101", "102"}, "900": {"110"}}, 5, items)


@pytest.mark.parametrize(("content", "fmt", "fragment"), [
    (b"\x00\x01\xff\xfe binary", "sequence", "seq.bad"),
    (b"user,item\n", "csv", "seq.bad"),
    (b"7 100 abc\n", "lightgcn", "line 1"),
])
def test_recommend_rejects_bad_histories_in_one_line(workspace, csv_run, content, fmt, fragment, capsys):
    bad = workspace / "seq.bad"
    bad.write_bytes(content)
    proc = genrec_here(capsys, "recommend", "--model", csv_run / "model", "--histories", bad, "--format", fmt, "-k", 3)
    assert_one_line_error(proc, fragment)


def test_recommend_needs_a_model_bundle(workspace, capsys):
    proc = genrec_here(capsys, "recommend", "--model", workspace, "--histories", workspace / "hist.csv",
                       "--format", "csv")
    assert_one_line_error(proc, "not a model bundle")


# evaluate and compare --------------------------------------------------------------------------------------------
def test_evaluate_a_saved_model_under_its_config(workspace, csv_run):
    proc = genrec("evaluate", "--model", csv_run / "vae" / "model", "--config", workspace / "csv.yaml",
                  "--out", workspace / "eval", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    assert "| vae |" in proc.stdout and "ndcg@10" in proc.stdout
    metrics = json.loads((workspace / "eval" / "metrics.json").read_text())
    assert metrics["protocol"] == "strong_generalization" and metrics["models"]["vae"]["n_users"] > 0


def test_evaluate_from_data_and_format(workspace, lightgcn_run):
    proc = genrec("evaluate", "--model", lightgcn_run / "model", "--data", workspace / "lightgcn",
                  "--format", "lightgcn")
    assert proc.returncode == 0, proc.stderr
    assert "| pop |" in proc.stdout and "recall@20" in proc.stdout


def test_evaluate_adds_labelled_sampled_metrics_on_request(workspace, lightgcn_run):
    proc = genrec("evaluate", "--model", lightgcn_run / "model", "--data", workspace / "lightgcn",
                  "--format", "lightgcn", "--sampled", 30, "--out", workspace / "sampled")
    assert proc.returncode == 0, proc.stderr
    assert "uni30:ndcg@20" in proc.stdout and "recall@20" in proc.stdout
    metrics = json.loads((workspace / "sampled" / "metrics.json").read_text())
    assert metrics["sampled"] == {"negatives": 30, "sampling": "uniform", "metrics": ["hr", "ndcg"]}
    summary = metrics["models"]["pop"]["summary"]
    # fewer candidates can only lift the targets: the sampled hit rate is at least the full-ranking one
    assert summary["uni30:hr@20"] >= summary["hr@20"] and summary["uni30:hr@20"] > 0
    assert "30 uniform negatives, not among all items" in (workspace / "sampled" / "results.md").read_text()


def test_evaluate_names_an_unknown_sampling(workspace, lightgcn_run, capsys):
    proc = genrec_here(capsys, "evaluate", "--model", lightgcn_run / "model", "--data", workspace / "lightgcn",
                       "--format", "lightgcn", "--sampled", 30, "--sampling", "zipf")
    assert_one_line_error(proc, "sampling", "zipf")


def test_compare_writes_one_table_and_adds_the_popularity_baseline(workspace):
    cfg = yaml.safe_load((workspace / "csv.yaml").read_text())
    cfg["models"] = {"vae": cfg["models"]["vae"]}
    (workspace / "cmp.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = genrec("compare", workspace / "cmp.yaml", "--out", workspace / "cmp", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    results = (workspace / "cmp" / "results.md").read_text()
    for text in (results, proc.stdout):
        assert "| vae |" in text and "| popularity |" in text and "ndcg@10 vs popularity" in text
    assert "## users" in (workspace / "cmp" / "buckets.md").read_text()
    assert (workspace / "cmp" / "report.html").exists()


# datasets --------------------------------------------------------------------------------------------------------
def test_datasets_list_names_builtin_downloadable_and_shared_sets():
    proc = genrec("datasets", "list")
    assert proc.returncode == 0, proc.stderr
    for name in ("synthetic", "ml-100k", "ml-25m", "lightgcn-gowalla", "beauty"):
        assert f"| {name} |" in proc.stdout


def test_datasets_download_reuses_an_existing_release_folder(tmp_path):
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.data").write_text("1\t1\t5\t0\n")
    proc = genrec("datasets", "download", "ml-100k", "--dest", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "ml-100k")


def test_datasets_download_offline_says_so_in_one_line(tmp_path):
    env = {**ENV, "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "",
           "NO_PROXY": ""}
    proc = genrec("datasets", "download", "ml-100k", "--dest", tmp_path, env=env)
    assert_one_line_error(proc, "could not reach", "ml-100k")


def test_datasets_download_unknown_name(tmp_path, capsys):
    proc = genrec_here(capsys, "datasets", "download", "ml-7", "--dest", tmp_path)
    assert_one_line_error(proc, "unknown MovieLens release")


def test_datasets_inspect_lightgcn_shows_train_and_test(workspace):
    proc = genrec("datasets", "inspect", workspace / "lightgcn", "--format", "lightgcn")
    assert proc.returncode == 0, proc.stderr
    assert "| statistic | train | test |" in proc.stdout
    assert "| interactions | 360 | 120 |" in proc.stdout


def test_datasets_inspect_movielens_100k():
    folder = shared_data("movielens-100k")
    proc = genrec("datasets", "inspect", folder, "--format", "movielens")
    assert proc.returncode == 0, proc.stderr
    for row in ("| users | 943 |", "| items | 1682 |", "| interactions | 100000 |", "top20_share", "history_p90"):
        assert row in proc.stdout


def test_datasets_inspect_bad_file_is_one_line(tmp_path, capsys):
    proc = genrec_here(capsys, "datasets", "inspect", tmp_path / "missing.csv", "--format", "csv")
    assert_one_line_error(proc, "missing.csv")
    (tmp_path / "garbage.csv").write_bytes(bytes(range(256)) * 10)
    proc = genrec_here(capsys, "datasets", "inspect", tmp_path / "garbage.csv", "--format", "csv")
    assert_one_line_error(proc, "garbage.csv")


# errors ----------------------------------------------------------------------------------------------------------
def test_a_config_typo_is_one_line_naming_the_key_and_debug_shows_the_traceback(workspace):
    cfg = yaml.safe_load((workspace / "csv.yaml").read_text())
    cfg["models"]["vae"]["params"]["latnt_dim"] = 3
    (workspace / "typo.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = genrec("train", workspace / "typo.yaml", "--out", workspace / "typo")
    assert_one_line_error(proc, "typo.yaml: models.vae.params.latnt_dim: unknown hyperparameter of multvae")
    assert not (workspace / "typo").exists()
    debug = genrec("train", workspace / "typo.yaml", "--out", workspace / "typo", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_missing_files_and_bad_data_are_one_line_with_exit_code_2(workspace, tmp_path, capsys):
    assert_one_line_error(genrec_here(capsys, "train", tmp_path / "nope.yaml", "--out", tmp_path), "nope.yaml")
    cfg = yaml.safe_load((workspace / "csv.yaml").read_text())
    cfg["data"]["path"] = str(tmp_path / "broken.csv")
    (tmp_path / "broken.csv").write_text("user,item,rating,timestamp\nu1,i1,5,1\nu2,i2,oops,2\n")
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = genrec_here(capsys, "compare", tmp_path / "broken.yaml", "--out", tmp_path / "o")
    assert_one_line_error(proc, "broken.csv", "line 3")


def test_usage_errors_are_one_line_too(capsys):
    assert_one_line_error(genrec_here(capsys, "train"), "Missing", "config")
    proc = genrec_here(capsys, "recommend", "--model", "m", "--histories", "h", "--format", "xml")
    assert_one_line_error(proc, "xml")


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "genrec"
    if not script.exists():
        pytest.skip("genrec console script is not installed in this environment")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 0 and "demo" in proc.stdout


# demo ------------------------------------------------------------------------------------------------------------
def test_demo_runs_the_whole_job_small(tmp_path):
    proc = genrec("demo", "--out", tmp_path / "demo", "--users", 300, "--items", 200, "--epochs", 2, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "ndcg@20 vs popularity" in out and "| popularity |" in out and "| multvae |" in out
    assert out.count("because of:") == 15  # 3 users x 5 recommendations, each explained
    for name in ("report.html", "results.md", "buckets.md", "metrics.json", "config.yaml", "examples.md"):
        assert (tmp_path / "demo" / name).exists(), name
    assert (tmp_path / "demo" / "model" / "model.json").exists()
    assert "<table" in (tmp_path / "demo" / "report.html").read_text()


# explain, generate, report, serve, retrain ------------------------------------------------------------------------
def test_explain_a_known_user_and_a_new_history(csv_run):
    recs = read_recs_for(csv_run)
    user, item = recs.iloc[0]["user"], recs.iloc[0]["item"]
    proc = genrec("explain", "--model", csv_run / "model", "--user", user, "--item", item, "--top", 2)
    assert proc.returncode == 0, proc.stderr
    assert f"item {item}" in proc.stdout and "because of:" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 2
    history = ",".join(pd.read_parquet(csv_run / "model" / "items.parquet")["item"].astype(str)[:4])
    proc = genrec("explain", "--model", csv_run / "model", "--history", history, "--item", item)
    assert proc.returncode == 0, proc.stderr
    assert "because of:" in proc.stdout


def read_recs_for(run: Path) -> pd.DataFrame:
    """Top recommendations of a few training users of the run's bundle, through `genrec recommend`."""
    from genrec.models.base import load_bundle

    bundle = load_bundle(run / "model")
    rows = [(bundle.user_ids.raw[u], bundle.item_ids.raw[i]) for u in range(3)
            for i in bundle.histories.sequence(u)]
    path = run / "explain-histories.csv"
    pd.DataFrame(rows, columns=["user", "item"]).to_csv(path, index=False)
    out = run / "explain-recs.csv"
    proc = genrec("recommend", "--model", run / "model", "--histories", path, "--format", "csv", "-k", 3,
                  "--out", out)
    assert proc.returncode == 0, proc.stderr
    return read_recs(out)


def test_explain_needs_exactly_one_of_user_and_history(csv_run, capsys):
    proc = genrec_here(capsys, "explain", "--model", csv_run / "model", "--item", "i1")
    assert_one_line_error(proc, "--user", "--history")


def test_generate_writes_synthetic_users_and_a_fidelity_report(csv_run, tmp_path):
    out, report = tmp_path / "synthetic.csv", tmp_path / "fidelity.json"
    proc = genrec("generate", "--model", csv_run / "vae" / "model", "--users", 40, "--out", out,
                  "--report", report, "--seed", 1)
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out, dtype={"item": str})
    assert frame["user"].nunique() == 40
    assert set(frame["item"]) <= set(pd.read_parquet(csv_run / "model" / "items.parquet")["item"].astype(str))
    fidelity = json.loads(report.read_text())
    assert {"item_popularity_js", "privacy"} <= set(fidelity), fidelity.keys()
    assert 0.0 <= fidelity["item_popularity_js"] <= 1.0


@pytest.fixture(scope="module")
def compare_run(workspace) -> Path:
    proc = genrec("compare", workspace / "lightgcn.yaml", "--out", workspace / "lg-compare", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    return workspace / "lg-compare"


def test_report_writes_one_html_file_for_several_runs(compare_run, tmp_path):
    out = tmp_path / "both.html"
    proc = genrec("report", compare_run, compare_run, "--out", out)
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    assert page.count("tiny-lightgcn") >= 2 and "<table" in page
    assert list(tmp_path.glob("both-*.png")) or "data:image/png;base64" in page


def test_report_of_a_train_only_folder_says_to_run_compare(csv_run, capsys):
    assert_one_line_error(genrec_here(capsys, "report", csv_run), "compare")


def test_report_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert_one_line_error(genrec_here(capsys, "report", tmp_path / "nope"), "nope")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_over_http_and_retrain_folds_in_the_new_events(csv_run, tmp_path):
    import httpx

    port, store = free_port(), tmp_path / "events.db"
    server = subprocess.Popen([sys.executable, "-m", "genrec.cli", "serve", "--model", str(csv_run / "model"),
                               "--port", str(port), "--store", str(store)], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read()
            time.sleep(0.1)
        items = pd.read_parquet(csv_run / "model" / "items.parquet")["item"].astype(str).tolist()
        reply = httpx.post(f"{base}/v1/recommendations", json={"history": items[:3], "k": 5}, timeout=10)
        assert reply.status_code == 200, reply.text
        assert len(reply.json()["items"]) == 5 and not {r["item_id"] for r in reply.json()["items"]} & set(items[:3])
        events = [{"user_id": "newcomer", "item_id": item} for item in items[:4]]
        assert httpx.post(f"{base}/v1/events", json={"events": events}, timeout=10).status_code < 300
    finally:
        server.terminate()
        server.wait(timeout=30)
    proc = genrec("retrain", "--model", csv_run / "model", "--store", store, "--out", tmp_path / "next")
    assert proc.returncode == 0, proc.stderr
    assert "1 new" in proc.stdout
    assert "newcomer" in set(pd.read_parquet(tmp_path / "next" / "users.parquet")["user"].astype(str))
