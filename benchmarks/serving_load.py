"""Load benchmark of `genrec serve`: a real uvicorn process on 127.0.0.1 serving Mult-VAE on Gowalla (40,981
items), driven by our own minimal asyncio HTTP/1.1 client (on uvloop) with 32 concurrent connections asking for
the top 20 items of a raw history (fold-in). Server and client share the machine's 2 cores; the client's CPU
time per request is measured and reported beside the server's.

Runs, for each place the server scores (its batcher thread, or a child process):
- paced (open loop): 32 clients together send `--rates` requests/s on a fixed schedule; latency counts from the
  scheduled send time, so a server that falls behind cannot hide it (no coordinated omission). This is the
  run the targets are about: p50 <= 5 ms and p99 <= 25 ms at >= 400 requests/s.
- saturated (closed loop): 32 clients send back to back; gives the most requests/s the server sustains
  (latency there is 32 / throughput by Little's law, so it is reported but not held to the targets).

`--parts fuzz` runs tests/serving/test_schemathesis.py with 230 cases per operation and mode (>= 2,000
requests). Results go to benchmarks/results/serving.md. Run (heavy: hold the shared lock):

    flock /tmp/genrec-heavy.lock env OMP_NUM_THREADS=2 .venv/bin/python benchmarks/serving_load.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "lightgcn-gowalla"
TARGETS = {"p50_ms": 5.0, "p99_ms": 25.0, "rps": 400.0}
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"


SHARED_BUNDLE = Path("/tmp/genrec-artifacts/gowalla-multvae/model")  # a fully trained one, when present
QUICK_BUNDLE = Path("/tmp/genrec-artifacts/gowalla-multvae-quick/model")  # else ours, trained for --epochs


def ensure_bundle(bundle_dir: Path | None, epochs: int, train_users: int) -> Path:
    """The Mult-VAE bundle to serve: `bundle_dir` if given, else the shared Gowalla bundle, else a quick one
    trained here (and kept for the next run) for `epochs` on the first `train_users` users of train.txt, over
    all 40,981 items: the network has the full model's shape, which is all that serving cost depends on (a
    full epoch takes ~10 minutes on the shared 2 cores)."""
    from genrec.data.interactions import IdMap, Interactions
    from genrec.data.loaders import load_lightgcn
    from genrec.models.multvae import MultVAE

    for candidate in ([bundle_dir] if bundle_dir else [SHARED_BUNDLE, QUICK_BUNDLE]):
        if (candidate / "model.json").exists():
            return candidate
    out = bundle_dir or QUICK_BUNDLE
    full, _ = load_lightgcn(DATA)
    keep = full.users < train_users
    train = Interactions(full.users[keep], full.items[keep], full.values[keep], full.timestamps[keep],
                         IdMap(full.user_ids.raw[:train_users], "user"), full.item_ids,
                         source=f"{full.source} (first {train_users} users)")
    print(f"training Mult-VAE for {epochs} epoch(s) on {train} ...", flush=True)
    start = time.perf_counter()
    model = MultVAE(epochs=epochs, seed=0).fit(train)
    print(f"trained in {time.perf_counter() - start:.0f} s", flush=True)
    return Path(model.save(out, train))


def request_bodies(n: int, k: int, seed: int = 0) -> list[bytes]:
    """Histories of random Gowalla test users (their held-out items: users the model saw with other items)."""
    lines = [line.split() for line in (DATA / "test.txt").read_text().splitlines()]
    lines = [ids[1:] for ids in lines if len(ids) > 1]
    rng = random.Random(seed)
    return [json.dumps({"history": [int(i) for i in rng.choice(lines)], "k": k}).encode() for _ in range(n)]


def start_server(bundle: Path, port: int, torch_threads: int, max_wait_ms: float, store: Path, scoring: str,
                 weights: str = "none", rerank: str = "64:128", fast_path: bool = True,
                 processes: int = 1) -> subprocess.Popen:
    """weights: none (float32), int8, or rerank (float32, two-stage with `rerank` = RANK:CANDIDATES); fast_path:
    False sends every request through FastAPI's stack (GENREC_FAST_PATH=0), for comparison; processes: scoring
    processes of a scoring='process' server."""
    env = {**os.environ, "GENREC_MODEL_DIR": str(bundle), "GENREC_STORE": str(store),
           "GENREC_IMPORTS": "genrec.models.multvae", "GENREC_TORCH_THREADS": str(torch_threads),
           "GENREC_MAX_WAIT_MS": str(max_wait_ms), "OMP_NUM_THREADS": str(torch_threads),
           "GENREC_SCORING_PROCESS": str(processes) if scoring == "process" else "0",
           "GENREC_QUANTIZE": "int8" if weights == "int8" else "",
           "GENREC_RERANK": rerank if weights == "rerank" else "", "GENREC_FAST_PATH": "1" if fast_path else "0"}
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "genrec.serving.app:app_from_env", "--host", "127.0.0.1",
           "--port", str(port), "--no-access-log", "--log-level", "warning"]
    return subprocess.Popen(cmd, cwd=REPO, env=env)


def wait_healthy(base: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base}/health did not answer in {timeout_s} s")


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol to POST JSON and read a
    Content-Length response: the client shares the server's 2 cores, so it should cost as little as possible
    (httpx costs several ms of CPU per request there)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        """The response's status code (its body is read and dropped)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), self.port,
                                                                   len(body), body))
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            await self.reader.readexactly(int(length.group(1)) if length else 0)
            return int(head[9:12])
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _client(conn: Connection, bodies: list[bytes], schedule: list[float] | None, stop_at: float, out: dict,
                  first: int) -> None:
    """One connection's loop: on `schedule` (paced) or back to back (schedule None), until stop_at."""
    i = 0
    while True:
        now = time.perf_counter()
        planned = schedule[i] if schedule is not None else now
        if planned >= stop_at or now >= stop_at + 5.0 or (schedule is not None and i >= len(schedule) - 1):
            return
        if planned > now:
            await asyncio.sleep(planned - now)
        sent = time.perf_counter()
        try:
            ok = await conn.post("/v1/recommendations", bodies[(first + i) % len(bodies)]) == 200
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            ok = False
        done = time.perf_counter()
        out["latency"].append(done - planned)
        out["service"].append(done - sent)
        out["errors"] += 0 if ok else 1
        i += 1


async def load(base: str, bodies: list[bytes], clients: int, duration_s: float, rate: float | None) -> dict:
    """Run `clients` connections for duration_s; paced at `rate` requests/s in total, or closed loop."""
    host, port = base.removeprefix("http://").split(":")
    connections = [Connection(host, int(port)) for _ in range(clients)]
    start = time.perf_counter() + 0.5
    stop_at = start + duration_s
    results = [{"latency": [], "service": [], "errors": 0} for _ in range(clients)]
    tasks = []
    for c in range(clients):
        schedule = None
        if rate:
            interval = clients / rate
            offset = start + c * interval / clients
            schedule = [offset + j * interval for j in range(int(duration_s / interval) + 2)]
        tasks.append(_client(connections[c], bodies, schedule, stop_at, results[c], c * 61))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for conn in connections:
        conn.close()
    latency = np.concatenate([r["latency"] for r in results]) * 1e3
    service = np.concatenate([r["service"] for r in results]) * 1e3
    return {"requests": len(latency), "errors": sum(r["errors"] for r in results), "rps": len(latency) / elapsed,
            **{f"p{q}_ms": float(np.percentile(latency, q)) for q in (50, 90, 99)},
            **{f"service_p{q}_ms": float(np.percentile(service, q)) for q in (50, 90, 99)},
            "max_ms": float(latency.max())}


def batch_sizes(metrics: str) -> dict[str, float]:
    """Cumulative genrec_scoring_batch_size buckets from a /metrics page."""
    found = re.findall(r'genrec_scoring_batch_size_bucket\{le="([^"]+)"\} (\S+)', metrics)
    return {le: float(n) for le, n in found}


def batch_distribution(before: dict, after: dict) -> list[tuple[str, int]]:
    """Batches per size range between two scrapes."""
    rows, previous, lower = [], 0.0, 1
    for le in after:
        total = after[le] - before.get(le, 0.0)
        upper = le if le == "+Inf" else str(int(float(le)))
        rows.append((upper if str(lower) == upper else f"{lower}-{upper}", int(total - previous)))
        previous = total
        lower = int(float(le)) + 1 if le != "+Inf" else lower
    return [r for r in rows if r[1] > 0]


def machine(load_before: str) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")) / 2**20
    import torch
    import uvicorn

    stack = "httptools + uvloop" if _has("httptools") and _has("uvloop") else "h11 + asyncio"
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM; Python {platform.python_version()}, "
            f"torch {torch.__version__}, uvicorn {uvicorn.__version__} ({stack}); server and client share the "
            f"cores; load average (1/5/15 min) before the run: {load_before}")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU seconds of a process (all its threads: the event loop and any worker) and of its
    children (the scoring process), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")

    def used(p: int) -> float:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    return used(pid), sum(used(c) for c in children)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all processes, all cores) since boot, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def _run(coroutine):
    """asyncio.run on uvloop when it is installed (as uvicorn uses it): the cheaper loop for the client too."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def wait_quiet(max_wait_s: float, threshold_cores: float = 0.15) -> float:
    """Wait (up to max_wait_s) until the rest of the machine uses under `threshold_cores` over a second, so
    that a run does not start while someone else's job holds a core; returns the seconds waited."""
    start = time.perf_counter()
    while True:
        busy = machine_busy_seconds()
        time.sleep(1.0)
        if machine_busy_seconds() - busy < threshold_cores or time.perf_counter() - start > max_wait_s:
            return time.perf_counter() - start


def run_mode(base: str, bodies: list[bytes], args, rate: float | None, server_pid: int) -> dict:
    waited = wait_quiet(args.quiet_wait_s)
    _run(load(base, bodies, args.clients, 2.0, rate))  # warm-up
    before = batch_sizes(httpx.get(f"{base}/metrics").text)
    server_cpu, client_cpu, busy = cpu_seconds(server_pid), time.process_time(), machine_busy_seconds()
    wall = time.perf_counter()
    result = _run(load(base, bodies, args.clients, args.duration, rate))
    wall = time.perf_counter() - wall
    per_request = 1e3 / result["requests"]
    loop_cpu, scoring_cpu = (b - a for a, b in zip(server_cpu, cpu_seconds(server_pid)))
    result["server_cpu_ms"] = (loop_cpu + scoring_cpu) * per_request
    result["loop_cpu_ms"], result["scoring_cpu_ms"] = loop_cpu * per_request, scoring_cpu * per_request
    result["client_cpu_ms"] = (time.process_time() - client_cpu) * per_request
    # everything else on the machine (other people's jobs) during the run, in cores
    result["other_cores"] = (machine_busy_seconds() - busy - loop_cpu - scoring_cpu
                             - (time.process_time() - client_cpu)) / wall
    result["waited_s"] = waited
    result["batches"] = batch_distribution(before, batch_sizes(httpx.get(f"{base}/metrics").text))
    return result


def make_scorer(bundle: Path, weights: str, rerank: str = "64:128"):
    """What the server scores with, in-process: a ServedModel (float32 or int8) or a TwoStageScorer."""
    from genrec.serving.rerank import TwoStageScorer, parse_rerank
    from genrec.serving.served import ServedModel

    if weights == "rerank":
        return TwoStageScorer(ServedModel.load(bundle), *parse_rerank(rerank))
    return ServedModel.load(bundle, quantize=None if weights == "none" else weights)


def scoring_floor(bundle: Path, torch_threads: int, weights: str, rerank: str = "64:128", sizes=(1, 8, 32, 64),
                  repeats: int = 10, served=None) -> dict[int, float]:
    """Milliseconds per `score_rows` call (model.score + exclusion + top-20) by batch size, in-process: the
    floor under any request's latency, whatever the HTTP layer does."""
    import torch

    from genrec.serving.served import ScoringRow

    torch.set_num_threads(torch_threads)
    served = served or make_scorer(bundle, weights, rerank)
    rng = np.random.default_rng(0)
    rows = [ScoringRow(rng.choice(served.n_items, 7, replace=False).astype(np.int64), np.ones(7, np.float32), 20,
                       True) for _ in range(max(sizes))]
    out = {}
    for size in sizes:
        served.score_rows(rows[:size])
        start = time.perf_counter()
        for _ in range(repeats):
            served.score_rows(rows[:size])
        out[size] = (time.perf_counter() - start) / repeats * 1e3
    return out


def bundle_description(bundle: Path) -> str:
    meta = json.loads((bundle / "model.json").read_text())
    params = meta.get("params", {})
    ran = len((meta.get("state") or {}).get("history") or [])
    trained = f"configured for {params.get('epochs')} epoch(s)" + (f", ran {ran}" if ran else "")
    source = Path(meta.get("data", {}).get("source", "LightGCN Gowalla"))
    shared = REPO.parent / "shared"  # the data folder beside the checkout, named as the README names it
    if source.is_relative_to(shared):
        source = Path("../shared") / source.relative_to(shared)
    return (f"{meta.get('model')} at {bundle} (hidden_dims {params.get('hidden_dims')}, {trained}, on "
            f"{source})")


def _score_all(scorer, rows: list, batch: int = 64) -> list:
    return [r for i in range(0, len(rows), batch) for r in scorer.score_rows(rows[i: i + batch])]


def request_rows(served, bodies: list[bytes]) -> list:
    """The benchmark's requests (fold-in histories) as ScoringRows for top-20, seen items excluded."""
    from genrec.serving.served import ScoringRow

    histories = [served.item_index([str(i) for i in json.loads(b)["history"]]) for b in bodies]
    return [ScoringRow(h[h >= 0], np.ones(int((h >= 0).sum()), np.float32), 20, True) for h in histories]


def test_user_rows(served, n: int, seed: int = 0):
    """n random Gowalla test users: (rows of their training histories for top-20, their test items as CSR)."""
    import scipy.sparse as sp

    from genrec.serving.served import ScoringRow

    lines = [line.split() for line in (DATA / "test.txt").read_text().splitlines()]
    lines = [ids for ids in lines if len(ids) > 1]
    lines = [lines[i] for i in np.random.default_rng(seed).choice(len(lines), min(n, len(lines)), replace=False)]
    users = served._user_keys.get_indexer([ids[0] for ids in lines])
    rows, targets = [], []
    for user, ids in zip(users, lines):
        history = served.user_history(ids[0]) if user >= 0 else None
        if history is None or not len(history[0]):
            continue
        rows.append(ScoringRow(history[0], np.ones(len(history[0]), np.float32), 20, True))
        idx = served.item_index(ids[1:])
        targets.append(idx[idx >= 0])
    indptr = np.concatenate([[0], np.cumsum([len(t) for t in targets])])
    matrix = sp.csr_matrix((np.ones(indptr[-1], np.float32), np.concatenate(targets), indptr),
                           shape=(len(targets), served.n_items))
    return rows, matrix


def ndcg20(results: list, targets) -> float:
    from genrec.evaluation.metrics import hit_matrix, n_relevant, ndcg_at_k

    top = np.full((len(results), 20), -1, np.int64)
    for i, (items, _) in enumerate(results):
        top[i, : len(items)] = items[:20]
    return float(ndcg_at_k(hit_matrix(top, targets), n_relevant(targets), 20).mean())


def agreement(exact: list, other: list) -> tuple[float, float]:
    """(mean share of the float32 top-20 items in the other top-20, share of identical top-20 lists)."""
    overlap = [len(set(a.tolist()) & set(b.tolist())) / max(len(a), 1) for (a, _), (b, _) in zip(exact, other)]
    same = [np.array_equal(a, b) for (a, _), (b, _) in zip(exact, other)]
    return float(np.mean(overlap)), float(np.mean(same))


def quality(bundle: Path, bodies: list[bytes], specs: list[str], torch_threads: int, n_requests: int = 1000,
            n_users: int = 3000) -> list[dict]:
    """For float32, int8 and two-stage scoring at each RANK:CANDIDATES spec: agreement with float32's top-20
    on request histories, NDCG@20 on Gowalla test users (training history -> held-out items), and ms per
    score_rows call of 1, 8 and 32 users."""
    from genrec.serving.rerank import TwoStageScorer, parse_rerank
    from genrec.serving.served import ServedModel

    exact = ServedModel.load(bundle)
    requests = request_rows(exact, bodies[:n_requests])
    users, targets = test_user_rows(exact, n_users)
    reference = _score_all(exact, requests)
    scorers = {"float32": exact, "int8": ServedModel.load(bundle, quantize="int8")}
    for spec in specs:
        start = time.perf_counter()
        scorers[f"two-stage {spec}"] = TwoStageScorer(exact, *parse_rerank(spec))
        print(f"two-stage {spec}: built in {time.perf_counter() - start:.1f} s", flush=True)
    out = []
    for name, scorer in scorers.items():
        overlap, same = agreement(reference, _score_all(scorer, requests))
        out.append({"scoring": name, "overlap": overlap, "identical": same,
                    "ndcg": ndcg20(_score_all(scorer, users), targets), "requests": len(requests),
                    "users": len(users),
                    "ms": scoring_floor(bundle, torch_threads, "", sizes=(1, 8, 32), served=scorer)})
        print(out[-1], flush=True)
    return out


def quality_section(rows: list[dict], torch_threads: int) -> str:
    lines = ["## Two-stage scoring: agreement with float32 and NDCG", "",
             f"Top-20 of {rows[0]['requests']} benchmark requests (fold-in of a random Gowalla user's test items, "
             "seen items excluded) compared with the float32 model's; NDCG@20 of "
             f"{rows[0]['users']} random Gowalla test users (their training history in, their test.txt items "
             "held out); milliseconds per in-process score_rows call of 1 / 8 / 32 users (7-item histories, "
             f"{torch_threads} torch thread(s)). two-stage R:C = a rank-R shortlist of C items per user, re-scored "
             "with the float32 output layer (`rerank='R:C'`, `genrec.serving.rerank`).", "",
             "| scoring | top-20 items shared with float32 | identical top-20 lists | NDCG@20 | ms: batch 1 / 8 / 32 |",
             "|---|---|---|---|---|"]
    for r in rows:
        ms = " / ".join(f"{v:.1f}" for v in r["ms"].values())
        lines.append(f"| {r['scoring']} | {r['overlap']:.2%} | {r['identical']:.1%} | {r['ndcg']:.4f} | {ms} |")
    return "\n".join(lines) + "\n"


def load_section(results: dict, args, floors: dict[str, dict[int, float]]) -> str:
    def row(name: str, r: dict) -> str:
        return (f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | "
                f"{r['service_p50_ms']:.1f} / {r['service_p99_ms']:.1f} | {r['server_cpu_ms']:.2f} "
                f"({r['loop_cpu_ms']:.2f} / {r['scoring_cpu_ms']:.2f}) | {r['client_cpu_ms']:.2f} | "
                f"{r['other_cores']:.2f} | {r['requests']} | {r['errors']} |")

    lines = ["## Load: 32 clients, top-20 by history", "",
             f"Model: {bundle_description(args.bundle_used)}; scoring cost depends on the network's shape, not "
             "on how well it was trained. Requests: top-20 for the held-out (test.txt) items of a random Gowalla "
             f"user, by raw history (fold-in); {args.clients} concurrent client connections (our own minimal "
             f"asyncio HTTP/1.1 client on uvloop, one process); micro-batching window {args.max_wait_ms} ms, at "
             f"most 64 per batch; torch threads for scoring: {args.torch_threads}; {args.duration:.0f} s per run "
             f"after a 2 s warm-up; before each run the benchmark waited up to {args.quiet_wait_s:.0f} s for the "
             "rest of the machine to use under 0.15 cores (waits: "
             + ", ".join(f"{r['waited_s']:.0f}" for r in results.values()) + " s).", "",
             "| run | requests/s | p50 ms | p90 ms | p99 ms | service p50 / p99 ms | server CPU ms/req (server "
             "process / scoring process) | client CPU ms/req | other jobs' CPU (cores) | requests | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(row(name, r))
    lines += ["", "Paced runs are open loop: latency counts from the scheduled send time, so a server that falls "
              "behind cannot hide it; 'service' counts from the actual send. The saturated run is closed loop "
              "(32 clients back to back): its requests/s is the most the server sustained, its latency is "
              "32 / throughput by Little's law. Server and client CPU are user + system seconds per request "
              "(server: its process, i.e. the event loop and any worker thread, and its scoring child, from /proc; "
              "client: this process's time.process_time()); both share the same 2 cores. 'Other jobs' is the "
              "rest of the machine's busy time during the run (/proc/stat), in cores: work of other people on "
              "this shared machine that competed for the 2 cores; runs where it is well above 0 are slowed by it.", "",
              f"Targets (issue 7): p50 <= {TARGETS['p50_ms']} ms, p99 <= {TARGETS['p99_ms']} ms, "
              f">= {TARGETS['rps']:.0f} requests/s on 2 cores.", "", "Batch sizes (users per model.score call):", ""]
    for name, r in results.items():
        lines.append(f"- {name}: " + ", ".join(f"{size}: {n}" for size, n in r["batches"]))
    lines += ["", "Weights: float32; int8 (`quantize='int8'`: `genrec.compress.quantize_int8`, 8-bit row-wise input "
              f"layer, dynamic int8 Linear layers); rerank (`rerank='{args.rerank}'`: float32, two-stage: a low-rank "
              "shortlist re-scored exactly, see the next section for its agreement with float32)."]
    lines += ["", f"Scoring alone, in-process (no HTTP; {args.torch_threads} torch thread(s); 7-item histories, "
              "top-20), before the runs: milliseconds per batch (per user)", "",
              "| weights | " + " | ".join(f"batch {b}" for b in next(iter(floors.values()))) + " |",
              "|---|" + "---|" * len(next(iter(floors.values())))]
    for weights, floor in floors.items():
        lines.append(f"| {'float32' if weights == 'none' else weights} | "
                     + " | ".join(f"{ms:.1f} ({ms / b:.2f})" for b, ms in floor.items()) + " |")
    return "\n".join(lines) + "\n"


def run_fuzz(examples: int) -> tuple[str, float]:
    """tests/serving/test_schemathesis.py with `examples` cases per operation and mode; its summary line."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                           "tests/serving/test_schemathesis.py"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "GENREC_FUZZ_EXAMPLES": str(examples)})
    elapsed = time.perf_counter() - start
    found = re.findall(r"^schemathesis: .*$", proc.stdout, re.M)
    summary = found[-1] if found else "no summary line"
    verdict = "passed" if proc.returncode == 0 else f"FAILED (pytest exit {proc.returncode})"
    print(proc.stdout[-3000:], flush=True)
    return f"{summary}; test {verdict}", elapsed


def fuzz_section(summary: str, elapsed: float, examples: int) -> str:
    return "\n".join([
        "## Schemathesis over the OpenAPI spec", "",
        f"`GENREC_FUZZ_EXAMPLES={examples} pytest -s tests/serving/test_schemathesis.py` ({elapsed:.0f} s): "
        f"schema-conforming and schema-violating cases for every operation, {examples} per operation and "
        "mode, sent to the app in-process through Schemathesis's ASGI transport (every other admin request with "
        "the API key, so reloads and deletions run).", "", f"Result: {summary}.", ""])


SECTIONS = ("quality", "load", "fuzz")


def write_results(out: Path, header: str, sections: dict[str, str]) -> None:
    """Rewrite `out` with the sections run now; sections not run now and the notes keep their old text."""
    old = out.read_text() if out.exists() else ""
    notes = old.split(NOTES_MARKER, 1)[1] if NOTES_MARKER in old else "\n"
    parts = [header]
    for name in SECTIONS:
        text = sections.get(name)
        if text is None:
            kept = re.search(rf"<!-- {name} -->\n(.*?)<!-- /{name} -->", old, re.S)
            text = kept.group(1) if kept else ""
        if text:
            parts.append(f"<!-- {name} -->\n{text}<!-- /{name} -->\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts) + "\n" + NOTES_MARKER + notes)


def run_load(args) -> str:
    bundle = args.bundle_used = ensure_bundle(args.bundle, args.epochs, args.train_users)
    bodies = request_bodies(2000, 20)
    servers = [(*s.split(":")[:2], not s.endswith(":fastapi")) for s in args.servers]
    floors = {w: scoring_floor(bundle, args.torch_threads, w, args.rerank)
              for w in dict.fromkeys(w for _, w, _ in servers)}
    # 'processN': N scoring processes
    servers = [(where.rstrip("0123456789"), weights, fast, int(where[7:] or 1) if where.startswith("process") else 0)
               for where, weights, fast in servers]
    print("scoring floor (ms per batch):", floors, flush=True)
    results = {}
    for scoring, weights, fast_path, processes in servers:
        port = args.port or _free_port()
        with tempfile.TemporaryDirectory() as tmp:
            proc = start_server(bundle, port, args.torch_threads, args.max_wait_ms, Path(tmp) / "events.db", scoring,
                                weights, args.rerank, fast_path, processes)
            base = f"http://127.0.0.1:{port}"
            try:
                wait_healthy(base, proc)
                for rate in [*args.rates, None]:
                    label = {"none": "float32", "rerank": f"two-stage {args.rerank}"}.get(weights, weights)
                    where = f"{processes} processes" if processes > 1 else scoring
                    name = f"{where}, {label}{'' if fast_path else ', FastAPI path only'}: " + (
                        f"paced {rate:.0f}/s" if rate else "saturated")
                    results[name] = run_mode(base, bodies, args, rate, proc.pid)
                    print(name, results[name], flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    return load_section(results, args, floors)


def server_spec(text: str) -> str:
    if not re.fullmatch(r"(thread|process[1-9]?):(none|int8|rerank)(:fastapi)?", text):
        raise argparse.ArgumentTypeError(f"expected where:weights[:fastapi], e.g. process2:rerank, got {text!r}")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="quality: two-stage scoring's agreement with float32 and NDCG; load: the load "
                             "benchmark; fuzz: the >= 2,000-request Schemathesis run")
    parser.add_argument("--bundle", type=Path, default=None,
                        help=f"default: {SHARED_BUNDLE} if present, else {QUICK_BUNDLE} (trained if absent)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-users", type=int, default=2000, help="users the quick bundle is trained on")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rates", type=float, nargs="*", default=[200.0, 400.0])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--max-wait-ms", type=float, default=0.0)
    parser.add_argument("--quiet-wait-s", type=float, default=60.0,
                        help="before each run, wait up to this long for other jobs to leave the cores")
    parser.add_argument("--rerank", default="64:128", help="RANK:CANDIDATES of the servers with rerank weights")
    parser.add_argument("--quality-specs", nargs="+", default=["32:128", "64:128", "64:256", "128:256"],
                        help="RANK:CANDIDATES settings the quality part compares")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--servers", nargs="+", default=["process:rerank", "process2:rerank", "process:rerank:fastapi"],
                        type=server_spec,
                        help="servers to run, as where:weights[:fastapi]; where: thread (score on the batcher's "
                             "thread), process (in a child process) or processN (in N); weights: none (float32), "
                             "int8, or rerank (float32 in two stages, --rerank); :fastapi: without the lean path "
                             "for plain recommendation requests")
    parser.add_argument("--fuzz-examples", type=int, default=230)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serving.md")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} is not present")
    args.load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    script = Path(sys.argv[0])
    command = "flock /tmp/genrec-heavy.lock env OMP_NUM_THREADS=2 .venv/bin/python " + " ".join(
        [str(script.relative_to(REPO) if script.is_absolute() else script), *sys.argv[1:]])
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sections = {}
    if "quality" in args.parts:
        bodies = request_bodies(2000, 20)
        sections["quality"] = quality_section(quality(ensure_bundle(args.bundle, args.epochs, args.train_users),
                                                      bodies, args.quality_specs, args.torch_threads),
                                              args.torch_threads)
    if "load" in args.parts:
        sections["load"] = run_load(args)
    if "fuzz" in args.parts:
        sections["fuzz"] = fuzz_section(*run_fuzz(args.fuzz_examples), args.fuzz_examples)
    for name, text in sections.items():  # each section says which command made it, as others may be older
        title, rest = text.split("\n", 1)
        sections[name] = (f"{title}\n\nMade by `{command}` (started {started}; load average before: "
                          f"{args.load_before}).\n{rest}")
    header = "\n".join(["# genrec serve: load benchmark and API fuzzing", "",
                        f"Machine: {machine(args.load_before)}.", "", f"Last command: `{command}` (each section "
                        "names the command that made it)", ""])
    write_results(args.out, header, sections)
    print(f"wrote {args.out}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
