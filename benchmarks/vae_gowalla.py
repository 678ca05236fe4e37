"""Mult-VAE, Mult-DAE and RecVAE on the LightGCN Gowalla split (issue 3): quality beside the published numbers,
and the speed of one Mult-VAE epoch against this machine's matrix-multiply floor.

Quality protocol: train.txt is split by `split_random_holdout(train, test_fraction=0.1, validation_fraction=0.0,
seed=0)` (as benchmarks/gowalla.py does for the baselines): each model trains on the other 90% and is validated
after every epoch on a fixed random sample of the held-out users (Recall@20 / NDCG@20); the best epoch's weights are
kept (the Trainer's best-weights restore). The kept model then scores the test users by fold-in of their whole
train.txt row (no retraining, no refit on the held-out 10%: the time budget allows one training run per model),
full ranking over all items except the training items; Recall@20 = hits / |test items|, NDCG@20 binary gains.
test.txt is read only for that final scoring.

Speed protocol: the FLOPs of one Mult-VAE epoch over train.txt (every Linear forward 2*B*in*out and backward twice
that; the sparse input layer 2*nnz*600 forward and the same for its weight gradient), the time `torch.mm` takes for
those matrix shapes in our and the transposed layout (the floor divides by the fastest rate seen, a 2048^3
product included), and two real epochs through the Trainer; the sparse input layer (embedding_bag) against a dense
one (x @ W on the densified batch) on the same batches. The `recbole` stage times RecBole 1.2.1's MultiVAE on the
same train.txt (benchmarks/recbole_compare.py, its own venv) beside the speed stage's epochs.

    flock /tmp/genrec-heavy.lock timeout 900 env OMP_NUM_THREADS=2 .venv/bin/python benchmarks/vae_gowalla.py \
        --stages speed recbole

writes benchmarks/results/vae_gowalla.md (stages: speed, recbole, multvae, recvae, multdae; `--stages` picks some,
and the per-model epoch budgets are arguments).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lightgcn-gowalla"
RESULTS = ROOT / "benchmarks" / "results" / "vae_gowalla.md"
RUNS = ROOT / "runs" / "vae_gowalla"
BUNDLE = Path("/tmp/genrec-artifacts/gowalla-multvae/model")  # the trained Mult-VAE other benchmarks use
K = 20
N_VALIDATION_USERS = 3000
PUBLISHED = {"multvae": (0.1641, 0.1335, "He et al., LightGCN (SIGIR 2020), Table 4")}
REFERENCES = [("EASE (ours, benchmarks/results/gowalla.md target)", 0.177, 0.147),
              ("LightGCN (He et al. 2020)", 0.1830, 0.1554), ("best published on this split (issue 3)", 0.192, 0.162)]
NAMES = {"multvae": "Mult-VAE", "multdae": "Mult-DAE", "recvae": "RecVAE"}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def load_split():
    """(train.txt, tuning split of train.txt, test holdout with train.txt rows as histories)."""
    from genrec.data.loaders import load_lightgcn
    from genrec.data.splits import split_fixed, split_random_holdout

    train, test = load_lightgcn(DATA)
    tuning = split_random_holdout(train, test_fraction=0.1, validation_fraction=0.0, seed=0)
    return train, tuning, split_fixed(train, test, protocol="lightgcn_fixed").test


# speed --------------------------------------------------------------------------------------------------------
def mm_seconds(a_shape, b_shape, transpose_a: bool = False, transpose_b: bool = False, reps: int = 5,
               dtype=None) -> float:
    """Best wall time of torch.mm(a, b) over `reps` runs after a warm-up; a (b) is a transposed view when
    transpose_a (transpose_b), the layouts autograd hands MKL (F.linear's weight, grad_output.t()); float32
    unless `dtype`."""
    import torch

    a = torch.randn(a_shape[1], a_shape[0]).t() if transpose_a else torch.randn(*a_shape)
    b = torch.randn(b_shape[1], b_shape[0]).t() if transpose_b else torch.randn(*b_shape)
    a, b = (a, b) if dtype is None else (a.to(dtype), b.to(dtype))
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return float(min(times))


def step_gemms(batch: int, layers: list[tuple[int, int]]) -> list[tuple[str, float, float, float]]:
    """(name, flops, seconds in our layout, seconds in the transposed layout) of every GEMM in one training step
    of dense Linear layers (in, out), weight W stored (out, in) as nn.Linear's: forward x @ W.T (or W @ x.T),
    input gradient g @ W (or (g.T).T @ W with g stored transposed), weight gradient g.T @ x (or g stored
    transposed, contiguous, @ x). The output layer's fused OutputLayerNLL makes the same three products."""
    out = []
    for n_in, n_out in layers:
        flops = 2.0 * batch * n_in * n_out
        out.append((f"fwd {batch}x{n_in} @ ({n_out}x{n_in}).T", flops,
                    mm_seconds((batch, n_in), (n_in, n_out), transpose_b=True), mm_seconds((n_out, n_in), (n_in, batch),
                                                                                         transpose_b=True)))
        out.append((f"dgrad {batch}x{n_out} @ {n_out}x{n_in}", flops, mm_seconds((batch, n_out), (n_out, n_in)),
                    mm_seconds((batch, n_out), (n_out, n_in), transpose_a=True)))
        out.append((f"wgrad ({batch}x{n_out}).T @ {batch}x{n_in}", flops,
                    mm_seconds((n_out, batch), (batch, n_in), transpose_a=True),
                    mm_seconds((n_out, batch), (batch, n_in))))
    return out


def gemm_rate(gemms) -> float:
    """FLOP/s of one step's GEMMs, each in its faster layout."""
    return sum(g[1] for g in gemms) / sum(min(g[2], g[3]) for g in gemms)


def epoch_job(epochs: int = 2, amp_cpu: bool = False) -> dict:
    """Mult-VAE epochs over train.txt through the Trainer, in a fresh process (its peak RSS is reported), with
    the CPU seconds the process got per wall second (2.0 = both cores to itself; less = the machine was shared).
    amp_cpu: in bfloat16 autocast (TrainOptions.amp_cpu)."""
    from genrec.models.multvae import MultVAE

    train, _, _ = load_split()
    model = MultVAE(epochs=epochs, train_options={"progress": False, "amp_cpu": amp_cpu})
    usage, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    model.fit(train)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    return {"seconds": [h["seconds"] for h in model.history_], "loss": model.history_[-1]["loss"],
            "cores_used": cpu / wall, "peak_gb": peak_rss_gb()}


def input_layer_job(n_steps: int = 6) -> dict:
    """Seconds per training step (forward, backward, fused Adam) with the sparse and a dense input layer."""
    import torch

    from genrec.models.multvae import MultVAENetwork, normalized_input
    from genrec.training.data import CSRRows

    def dense_input_layer(net, batch):
        x = torch.zeros(batch.batch_size, net.input_layer.weight.shape[0])
        x[batch.rows, batch.indices] = normalized_input(batch, net.dropout, net.training)
        return x @ net.input_layer.weight + net.input_layer.bias

    class DenseInput(MultVAENetwork):
        """The same network with the input layer as a dense matmul over the densified batch (RecBole's way)."""

        def encode(self, batch):
            h = dense_input_layer(self, batch)
            for layer in self.encoder:
                h = layer(torch.tanh(h))
            return h[:, : self.latent], h[:, self.latent :]

    train, _, _ = load_split()
    data = CSRRows(train.csr(binary=True))
    order = np.random.default_rng(0).permutation(len(data))
    batches = [data.batch(order[i * 500 : (i + 1) * 500]) for i in range(n_steps + 1)]
    nets, times = {}, {"sparse": ([], []), "dense": ([], [])}
    for name, cls in (("sparse", MultVAENetwork), ("dense", DenseInput)):
        torch.manual_seed(0)
        net = cls(train.n_items, (600, 200), 0.5, True, 0.2, 200_000)
        nets[name] = (net, torch.optim.Adam(net.parameters(), lr=1e-3, fused=True))
    for i, batch in enumerate(batches):  # the two alternate step by step, so a burst of load hits both alike
        for name, (net, opt) in nets.items():
            start = time.perf_counter()
            loss = net.loss(batch, i)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step = time.perf_counter() - start
            start = time.perf_counter()  # the input layer alone, forward and weight gradient
            h = net.input_layer(batch, normalized_input(batch, 0.5, True)) if name == "sparse" else \
                dense_input_layer(net, batch)
            h.sum().backward()
            if i:  # the first step warms up
                times[name][0].append(step)
                times[name][1].append(time.perf_counter() - start)
    return {name: {"step_seconds": float(np.median(a)), "input_layer_seconds": float(np.median(b))}
            for name, (a, b) in times.items()}


def speed_stage(log) -> dict:
    import torch

    from genrec.training.data import CSRRows
    from genrec.training.trainer import Trainer

    train, _, _ = load_split()
    n_items, hidden = train.n_items, 600
    layers = [(600, 400), (200, 600), (600, n_items)]  # Mult-VAE's dense Linear layers (mu and logvar in one)
    data = CSRRows(train.csr(binary=True))
    batches = Trainer(1, 500, 1e-3, options={"progress": False})._batches(data, 0)
    sizes = np.array([len(b) for b in batches])
    nnz = np.array([data.matrix[data.users[b]].nnz for b in batches])
    dense_flops = float(sum(6.0 * sizes.sum() * i * o for i, o in layers))
    sparse_flops = float(4.0 * nnz.sum() * hidden)
    log(f"  torch threads {torch.get_num_threads()}, {len(batches)} batches, {nnz.sum()} interactions")
    gemms = step_gemms(500, layers)
    rate = gemm_rate(gemms)
    square = 2 * 2048**3 / mm_seconds((2048, 2048), (2048, 2048))
    epoch = in_fresh_process(epoch_job)
    epoch_bf16 = in_fresh_process(epoch_job, 2, True)
    bf16_square = 2 * 2048**3 / mm_seconds((2048, 2048), (2048, 2048), dtype=torch.bfloat16)
    gemms_after = step_gemms(500, layers)  # the machine is shared: measure the rate before and after the epoch
    rate_after = gemm_rate(gemms_after)
    square = max(square, 2 * 2048**3 / mm_seconds((2048, 2048), (2048, 2048)))
    floor = (dense_flops + sparse_flops) / max(rate, rate_after, square)  # the fastest GEMM rate seen
    layer = in_fresh_process(input_layer_job, 4)
    out = {"dense_flops": dense_flops, "sparse_flops": sparse_flops, "batches": len(batches),
           "gemms": gemms, "gemms_after": gemms_after, "rate": rate, "rate_after": rate_after, "floor": floor,
           "square_rate": square, "epoch": epoch, "input_layer": layer, "epoch_bf16": epoch_bf16,
           "bf16_square_rate": bf16_square,
           "input_layer_protocol": "the two alternating step by step, median of 4 steps after one warm-up",
           "load": os.getloadavg()}
    log(f"  epochs {epoch['seconds']}, floor {floor:.1f}s (GEMM {rate / 1e9:.1f} / {rate_after / 1e9:.1f} "
        f"GFLOP/s, square {square / 1e9:.1f}), ratio {min(epoch['seconds']) / floor:.2f}, cores "
        f"{epoch['cores_used']:.2f}; input layer {layer}")
    return out


def recbole_stage(log, ours: dict | None) -> dict:
    """RecBole 1.2.1's MultiVAE epochs (benchmarks/recbole_compare.py) beside ours: the speed stage's epochs when
    it ran in this invocation, else two fresh ones."""
    from recbole_compare import run_recbole

    ours = ours or in_fresh_process(epoch_job)
    theirs = run_recbole(DATA, epochs=2)
    log(f"  RecBole epochs {theirs['seconds']}, ours {ours['seconds']}, peak {theirs['peak_gb']:.2f} / "
        f"{ours['peak_gb']:.2f} GB")
    return {"ours": ours, "recbole": theirs, "load": os.getloadavg()}


# quality ------------------------------------------------------------------------------------------------------
def make_model(name: str, epochs: int, minutes: float, checkpoint_dir: Path, params: dict | None = None):
    """The model with its published defaults, `params` (e.g. {"anneal_cap": 1.0}) overriding some; a
    "train_options" entry of `params` adds to the training options."""
    from genrec.models.multvae import MultDAE, MultVAE
    from genrec.models.recvae import RecVAE

    options = {"progress": False, "monitor": f"ndcg@{K}", "checkpoint_dir": str(checkpoint_dir),
               "max_seconds": 60.0 * minutes}
    cls = {"multvae": MultVAE, "multdae": MultDAE, "recvae": RecVAE}[name]
    params = dict(params or {})
    options.update(params.pop("train_options", {}))  # e.g. {"amp_cpu": true}
    return cls(epochs=epochs, train_options=options, **params)


def quality_job(name: str, epochs: int, minutes: float, resume: bool, bundle: Path | None,
                params: dict | None = None, refit: bool = False) -> dict:
    """Train on the tuning split with per-epoch validation for at most `epochs` epochs or about `minutes` of
    training, keep the best epoch, save it as a bundle (with train.txt's id maps and rows) when `bundle` is
    given, and score the test users. refit: instead train on all of train.txt for exactly `epochs` epochs (the
    count chosen on validation by an earlier run), with no validation and nothing kept but the last epoch."""
    from genrec.evaluation.evaluate import evaluate

    train, tuning, test = load_split()
    rng = np.random.default_rng(0)
    validation = tuning.test.subset(np.sort(rng.choice(len(tuning.test), N_VALIDATION_USERS, replace=False)))
    ckpt = RUNS / (name + ("-refit" if refit else ""))
    if ckpt.exists() and not resume:
        shutil.rmtree(ckpt)
    model = make_model(name, epochs, 1e6 if refit else minutes, ckpt, params)
    start = time.perf_counter()
    model.fit(train) if refit else model.fit(tuning.train, validation=validation)
    fit_seconds = time.perf_counter() - start
    if model.best_epoch_ is None:  # no validation (refit): the last epoch is the model
        model.best_epoch_ = len(model.history_) - 1
    best = model.history_[model.best_epoch_]
    if bundle is not None:
        trained_on = (f"all of train.txt, {len(train)} events, for {epochs} epochs (chosen on validation)" if refit
                      else "train.txt less a random 10% of each user's items (split_random_holdout, seed 0), "
                      f"{len(tuning.train)} events; best epoch by validation NDCG@{K} on {N_VALIDATION_USERS} "
                      "users' held-out items")
        model.save(bundle, train, extra={
            "trained_on": trained_on, "epochs": len(model.history_), "best_epoch": model.best_epoch_ + 1,
            "fit_seconds": fit_seconds, **({} if refit else {f"val_ndcg@{K}": best[f"val_ndcg@{K}"],
                                                              f"val_recall@{K}": best[f"val_recall@{K}"]}),
            "benchmark": "benchmarks/vae_gowalla.py"})
        print(f"  saved {bundle} at {time.strftime('%H:%M:%S', time.gmtime())} UTC", flush=True)
    result = evaluate(model, test, ks=(K,), metrics=("recall", "ndcg"), train=train)
    options = {k: v for k, v in (model.train_options or {}).items()
               if k not in ("progress", "monitor", "checkpoint_dir", "max_seconds")}
    return {"model": name, "params": {**{k: v for k, v in model.get_params().items() if k != "train_options"},
                                      **({"train_options": options} if options else {})}, "refit": refit,
            "history": model.history_, "best_epoch": model.best_epoch_, "fit_seconds": fit_seconds,
            "minutes": minutes, "epochs_allowed": epochs, "bundle": None if bundle is None else str(bundle),
            "recall": result[f"recall@{K}"], "ndcg": result[f"ndcg@{K}"], "users": result.n_users,
            "eval_seconds": result.seconds, "peak_gb": peak_rss_gb()}


def in_fresh_process(fn, *args):
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


# report -------------------------------------------------------------------------------------------------------
def machine() -> list[str]:
    import torch

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line), "?")
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    flags = Path("/proc/cpuinfo").read_text().split()
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return [f"- CPU: {model}, {len(os.sched_getaffinity(0))} cores (OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}), vector instructions {', '.join(simd) or 'none listed'}, "
            f"RAM {mem_kb / 2**20:.1f} GiB; no GPU",
            f"- load average when the stage ended: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (the machine is "
            "shared with "
            "other work, which slows every timing here)",
            f"- Python {platform.python_version()}, torch {torch.__version__} (BLAS: MKL), numpy {np.__version__}"]


def speed_section(s: dict) -> list[str]:
    e, floor = s["epoch"], s["floor"]
    seconds = e["seconds"] if isinstance(e["seconds"], list) else [e["seconds"]]  # older results: one epoch
    total = s["dense_flops"] + s["sparse_flops"]
    lines = ["## Speed: one Mult-VAE epoch on train.txt (29,858 users x 40,981 items, batch 500, fused Adam)", "",
             f"- FLOPs per epoch: {total / 1e12:.3f} TFLOP ({s['batches']} batches; dense Linear layers forward + "
             f"both backward GEMMs {s['dense_flops'] / 1e12:.3f} TFLOP, sparse input layer "
             f"{s['sparse_flops'] / 1e9:.2f} GFLOP)",
             f"- fp32 GEMM rate of `torch.mm` at the step's exact shapes, each in its faster layout: "
             f"{s['rate'] / 1e9:.1f} GFLOP/s before the epoch, {s['rate_after'] / 1e9:.1f} GFLOP/s after; 2048^3 "
             f"square: {s['square_rate'] / 1e9:.1f} GFLOP/s (best of before and after)",
             f"- floor (FLOPs / the fastest of these rates): {floor:.1f} s; measured epochs through the Trainer "
             f"(a fresh model): {', '.join(f'{x:.1f} s' for x in seconds)}; ratio of the fastest "
             f"**{min(seconds) / floor:.2f}x** (acceptance: at most 1.5x) -> "
             f"{'pass' if min(seconds) <= 1.5 * floor else 'FAIL'}",
             *([f"- the epoch process got {e['cores_used']:.2f} CPU-seconds per wall second (2.00 = both cores to "
                "itself)"] if "cores_used" in e else []),
             f"- peak RSS of the process that loaded the data and ran the epochs: {e['peak_gb']:.2f} GB",
             *bf16_lines(s, floor),
             f"- load average after the speed stage: {' '.join(f'{x:.1f}' for x in s['load'])}", "",
             "| GEMM in one 500-user step (our layout) | GFLOP | seconds, ours (before / after) | GFLOP/s | "
             "seconds, transposed layout (before / after) | GFLOP/s |", "|---|---:|---:|---:|---:|---:|"]
    for g, g2 in zip(s["gemms"], s["gemms_after"]):
        if len(g) == 3:  # older results: one layout
            g, g2 = (*g, float("nan")), (*g2, float("nan"))
        name, flops = g[0], g[1]
        ours, alt = min(g[2], g2[2]), min(g[3], g2[3])
        lines.append(f"| {name} | {flops / 1e9:.2f} | {g[2]:.3f} / {g2[2]:.3f} | {flops / ours / 1e9:.1f} | "
                     f"{g[3]:.3f} / {g2[3]:.3f} | {flops / alt / 1e9:.1f} |")
    sp, dn = s["input_layer"]["sparse"], s["input_layer"]["dense"]
    lines += ["", "Sparse input layer (embedding_bag, mode sum, weighted by the L2-normalised values) against a dense "
              "one (the batch densified, x @ W), same weights and batches, "
              f"{s.get('input_layer_protocol', 'one after the other, mean of 4 steps after one warm-up')}:", "",
              "| input layer | full training step (s) | input layer forward + weight gradient (s) |",
              "|---|---:|---:|",
              f"| sparse (ours) | {sp['step_seconds']:.3f} | {sp['input_layer_seconds']:.4f} |",
              f"| dense | {dn['step_seconds']:.3f} | {dn['input_layer_seconds']:.4f} |",
              f"| speedup | {dn['step_seconds'] / sp['step_seconds']:.2f}x | "
              f"{dn['input_layer_seconds'] / sp['input_layer_seconds']:.1f}x |", ""]
    return lines


def bf16_lines(s: dict, floor: float) -> list[str]:
    """The speed stage's bfloat16 epochs (TrainOptions.amp_cpu), when it ran them."""
    if "epoch_bf16" not in s:
        return []
    b = s["epoch_bf16"]
    best, bf16_floor = min(b["seconds"]), (s["dense_flops"] + s["sparse_flops"]) / s["bf16_square_rate"]
    return [f"- the same epochs in bfloat16 autocast (`train_options={{'amp_cpu': True}}`: the Linear layers' "
            "products in bfloat16 with float32 accumulation; float32 weights, gradients and Adam): "
            f"{', '.join(f'{x:.1f} s' for x in b['seconds'])}; the fastest is **{best / floor:.2f}x the float32 "
            f"floor** ({'within' if best <= 1.5 * floor else 'NOT within'} 1.5x) and {best / bf16_floor:.2f}x a "
            f"bfloat16 floor ({bf16_floor:.1f} s at the 2048^3 bfloat16 rate, "
            f"{s['bf16_square_rate'] / 1e9:.1f} GFLOP/s); {b['cores_used']:.2f} cores used, peak RSS "
            f"{b['peak_gb']:.2f} GB"]


def recbole_section(s: dict) -> list[str]:
    ours, theirs = s["ours"], s["recbole"]
    mine, rb = min(ours["seconds"]), min(theirs["seconds"])
    return ["## RecBole 1.2.1 MultiVAE on the same train.txt, same architecture, same locked command", "",
            "RecBole: `mlp_hidden_size [600]`, `latent_dimension 400` (RecBole halves it into mu and logvar: a "
            "200-d code), `dropout_prob 0.5`, `anneal_cap 0.2`, `total_anneal_steps 200000`, `train_batch_size 500` "
            f"(users per update, {theirs['batches']} batches), Adam 1e-3, CPU, torch {theirs['torch']}, its own venv "
            f"({theirs['recbole_python']}); weight matrices {theirs['layers']}; dataset {theirs['n_users']} users "
            f"x {theirs['n_items']} items (ids include RecBole's padding id), {theirs['interactions']} training "
            "interactions; epoch = `Trainer._train_epoch`, what RecBole's `fit` times and logs. "
            "Written by benchmarks/recbole_compare.py (atomic files in /tmp/genrec-recbole).", "",
            "| | epoch seconds | fastest | peak RSS of the process |", "|---|---|---:|---:|",
            "| genrec MultVAE (Trainer: sparse input layer, one-buffer likelihood gradient, fused Adam, freed memory "
            f"reused) | "
            f"{', '.join(f'{x:.1f}' for x in ours['seconds'])} | {mine:.1f} | {ours['peak_gb']:.2f} GB |",
            f"| RecBole MultiVAE (dense input layer, autograd log-softmax, Adam) | "
            f"{', '.join(f'{x:.1f}' for x in theirs['seconds'])} | {rb:.1f} | {theirs['peak_gb']:.2f} GB |", "",
            f"RecBole / genrec wall time per epoch (fastest of each): **{rb / mine:.2f}x** (acceptance: at least 2x)"
            " -> "
            f"{'pass' if rb >= 2 * mine else 'FAIL'}; load average after: "
            f"{' '.join(f'{x:.1f}' for x in s['load'])}.", ""]


def label(run: dict) -> str:
    return NAMES[run["model"]] + (f" ({run['tag']})" if run.get("tag") else "")


def quality_section(runs: list[dict]) -> list[str]:
    lines = ["## Test (fold-in of each test user's train.txt row, full ranking)", "",
             f"| model | epochs run (best by validation NDCG@{K}) | validation NDCG@{K} at that epoch | Recall@{K} | "
             f"NDCG@{K} | published Recall / NDCG | fit minutes | peak memory |",
             "|---|---|---:|---:|---:|---|---:|---:|"]
    for r in runs:
        pub = PUBLISHED.get(r["model"])
        val = r["history"][r["best_epoch"]].get(f"val_ndcg@{K}")
        lines.append(f"| {label(r)} | {len(r['history'])} ({r['best_epoch'] + 1}) | "
                     f"{'refit: none' if val is None else f'{val:.4f}'} | {r['recall']:.4f} | "
                     f"{r['ndcg']:.4f} | {f'{pub[0]:.4f} / {pub[1]:.4f}' if pub else ''} | "
                     f"{max(r['fit_seconds'], sum(h['seconds'] for h in r['history'])) / 60:.1f} | "
                     f"{r['peak_gb']:.2f} GB |")  # (a resumed run's epochs before the resume count too)
    for reference, recall, ndcg in REFERENCES:
        lines.append(f"| {reference} | | | | | {recall:.4f} / {ndcg:.4f} | | |")
    if runs:
        lines += ["", f"{runs[0]['users']} test users. Published: Mult-VAE {PUBLISHED['multvae'][2]}.", ""]
    for r in runs:
        p = r["params"]
        beta = "total_anneal_steps" in p  # Mult-VAE: the KL weight at the end of each epoch
        lines += [f"### {label(r)}: {'training' if r.get('refit') else 'validation'} curve", "",
                  "hyperparameters: " + ", ".join(f"{k}={v}" for k, v in p.items()), "",
                  f"| epoch |{' beta |' if beta else ''} loss | val Recall@{K} | val NDCG@{K} | seconds (train + "
                  "validation) |", f"|---:|{'---:|' if beta else ''}---|---:|---:|---:|"]
        for h in r["history"]:
            loss = ", ".join(f"{h[k]:.2f}" for k in h if k.startswith("loss"))
            b = f" {min(p['anneal_cap'], h['step'] / p['total_anneal_steps']):.2f} |" if beta and "step" in h else \
                (" |" if beta else "")
            lines.append(f"| {h['epoch'] + 1} |{b} {loss} | {h.get(f'val_recall@{K}', float('nan')):.4f} | "
                         f"{h.get(f'val_ndcg@{K}', float('nan')):.4f} | {h['seconds']:.0f} |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", default=["speed", "multvae", "recvae"],
                        choices=["speed", "recbole", "multvae", "recvae", "multdae"])
    parser.add_argument("--epochs", type=json.loads, default={"multvae": 200, "recvae": 50, "multdae": 200},
                        help='JSON: most epochs per model, {"multvae": 200, ...}')
    parser.add_argument("--minutes", type=json.loads, default={"multvae": 25, "recvae": 10, "multdae": 10},
                        help="JSON: training time budget per model (no epoch starts that would overrun it)")
    parser.add_argument("--params", type=json.loads, default={},
                        help='JSON: hyperparameters per model over its defaults, {"multvae": {"anneal_cap": 1.0}}')
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="where the trained Mult-VAE bundle goes")
    parser.add_argument("--resume", action="store_true", help="continue training runs from runs/vae_gowalla")
    parser.add_argument("--refit", action="store_true", help="train on all of train.txt for exactly --epochs "
                        "epochs (no validation): the final fit once an earlier run chose the epochs")
    parser.add_argument("--tag", default="", help="keep this run's result beside the untagged one, under "
                        "STAGE-TAG (e.g. a hyperparameter search: --tag beta-search)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not (DATA / "train.txt").exists():
        sys.exit(f"{DATA}/train.txt is missing; see ../shared/data/README.md")
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    RUNS.mkdir(parents=True, exist_ok=True)
    ours = None  # the speed stage's epochs, which the recbole stage reuses
    for stage in args.stages:  # each stage's result is kept in runs/, so separate invocations add up
        print(f"{stage}:", flush=True)
        start = time.perf_counter()
        if stage == "speed":
            result = speed_stage(lambda msg: print(msg, flush=True))
            ours = result["epoch"]
        elif stage == "recbole":
            result = recbole_stage(lambda msg: print(msg, flush=True), ours)
        else:
            bundle = args.bundle if stage == "multvae" else None
            result = in_fresh_process(quality_job, stage, args.epochs[stage], args.minutes[stage], args.resume,
                                      bundle, args.params.get(stage), args.refit)
            print(f"  {stage}: test recall {result['recall']:.4f} ndcg {result['ndcg']:.4f}, best epoch "
                  f"{result['best_epoch'] + 1} of {len(result['history'])}, fit {result['fit_seconds'] / 60:.1f} min",
                  flush=True)
        result.update(command=command, stage_minutes=(time.perf_counter() - start) / 60, tag=args.tag,
                      finished=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=machine())
        (RUNS / f"{stage}{'-' + args.tag if args.tag else ''}.json").write_text(json.dumps(result))
    lines = report()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = args.out.read_text() if args.out.exists() else ""
    notes = old[old.index(NOTES):] if NOTES in old else NOTES + "\n"  # hand-written notes survive a rerun
    args.out.write_text("\n".join(lines) + "\n" + notes)
    print("\n".join(lines))


NOTES = "<!-- hand-written notes below: kept when the stages above are rerun -->"


def report() -> list[str]:
    """The Markdown report from every stage result kept in runs/vae_gowalla."""
    stages = {p.stem: json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))}
    lines = ["# Gowalla (LightGCN split): Mult-VAE, Mult-DAE, RecVAE", ""]
    order = ("speed", "recbole", "multvae", "recvae", "multdae")
    keys = sorted(stages, key=lambda k: (order.index(k.split("-")[0]) if k.split("-")[0] in order else 99,
                                         stages[k].get("finished", ""), k))  # each model's runs in time order
    for stage in keys:
        s = stages[stage]
        lines += [f"- `{stage}` stage, finished {s['finished']} after {s['stage_minutes']:.1f} min: "
                  f"`env OMP_NUM_THREADS=2 .venv/bin/{s['command']}` (under the heavy lock)"]
    first = stages.get("speed") or next(iter(stages.values()), None)  # the machine as the latest timings saw it
    lines += ["", *(first["machine"] if first else []), ""]
    lines += speed_section(stages["speed"]) if "speed" in stages else []
    lines += recbole_section(stages["recbole"]) if "recbole" in stages else []
    lines += quality_section([stages[k] for k in keys if k.split("-")[0] in NAMES])
    return lines


if __name__ == "__main__":
    main()
