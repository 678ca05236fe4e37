"""`make bench`: run every benchmark script in turn; each writes its own Markdown to benchmarks/results/.

    .venv/bin/python benchmarks/run_all.py                 # all of them (hours on 2 cores: Gowalla EASE, VAEs...)
    .venv/bin/python benchmarks/run_all.py serving gowalla # some of them, by name
    .venv/bin/python benchmarks/run_all.py --list          # names, scripts and rough cost on 2 cores

The scripts read the public data sets from ../shared/data (or $GENREC_DATA); a script whose data is absent fails
with one line and the others still run. The exit code is the number of scripts that failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name, script, rough wall time on the 2-core reference machine, what it measures (issue)
BENCHMARKS = [
    ("gowalla", "gowalla.py", "1 h", "popularity, ItemKNN, EASE on the LightGCN Gowalla split (foundation)"),
    ("vae", "vae_gowalla.py", "2 h+", "Mult-VAE/DAE, RecVAE on Gowalla: quality and epoch time vs GEMM floor"),
    ("sequences", "sequences.py", "1 h", "SASRec, BERT4Rec, GRU4Rec on Beauty and LastFM, leave-one-out"),
    ("gan", "gan.py", "30 min", "CFGAN beside EASE/Mult-VAE; synthetic users' fidelity and privacy"),
    ("imbalance", "imbalance.py", "40 min", "LDA, explanation faithfulness, popularity debiasing"),
    ("serving", "serving_load.py", "10 min", "HTTP latency and throughput under 32 concurrent clients"),
    ("compression", "compression.py", "20 min", "ONNX, int8 and low-rank models: size, latency, NDCG"),
    ("scale", "scale.py", "1 h", "Spark preparation and streamed Mult-VAE epoch on 50M interactions"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    known = {name: (script, cost, what) for name, script, cost, what in BENCHMARKS}
    if args.list:
        for name, (script, cost, what) in known.items():
            print(f"{name:12} {script:18} {cost:>7}  {what}")
        return 0
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(known)}")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1))}
    failed = []
    for name in args.names or list(known):
        script = HERE / known[name][0]
        print(f"== {name}: {script.name} (about {known[name][1]} on 2 cores)", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)], env=env)
        print(f"== {name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
