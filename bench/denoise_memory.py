"""Wall time and peak memory of `scribe denoise` on 10,000 cells x 2,000 genes (NBVCP: every entry is computed).

The data are simulated from the NBVCP prior (scribe_cli.simulate) and the posterior is built in numpy with
--posterior-draws draws (the cost depends on the shapes, not on the values). `scribe denoise` runs as its own
process under GNU time (`/usr/bin/time -f`: wall, CPU = user + system, peak RSS), once for the mean layer alone
and once with --interval 0.9 and two --draws layers (at --interval-posterior-draws draws: the simulation of one
true count per draw and entry costs about ten times the closed-form mean, and the peak does not depend on the
number of draws, since blocks shrink as draws grow). On a busy machine read the CPU seconds, not the wall. Work is done over blocks of cells sized so that draws x cells x genes stays below 2e6
elements (scribe_cli/reports/denoise.py), so the peak is the input, the output layers (float32, dense) and
a bounded working set.

    .venv/bin/python bench/denoise_memory.py                       # 10000 x 2000, 100 draws (interval: 20)
    .venv/bin/python bench/denoise_memory.py --cells 2000 --posterior-draws 50 --interval-posterior-draws 50
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import anndata
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scribe_cli.simulate import at_truth, simulate_from_prior, write_posterior  # noqa: E402


def timed(cmd: list[str]) -> dict:
    proc = subprocess.run(["/usr/bin/time", "-f", "TIME %e %U %S %M", *cmd], capture_output=True, text=True)
    m = re.search(r"TIME ([0-9.]+) ([0-9.]+) ([0-9.]+) ([0-9]+)", proc.stderr)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    out = {"wall_s": float(m[1]), "cpu_s": round(float(m[2]) + float(m[3]), 1), "peak_rss_gb": round(int(m[4]) / 1024**2, 3),
           "report": json.loads(proc.stdout)}
    print(json.dumps(out), file=sys.stderr)  # each run as it ends: a long second run does not hide the first
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=10_000)
    ap.add_argument("--genes", type=int, default=2_000)
    ap.add_argument("--posterior-draws", type=int, default=100)
    ap.add_argument("--interval-posterior-draws", type=int, default=20)
    args = ap.parse_args()
    S = args.posterior_draws
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sim = simulate_from_prior(np.random.default_rng(1), args.cells, args.genes, capture=True, gate=False, p=0.7)
        genes, cells = [f"g{j}" for j in range(args.genes)], [f"c{i}" for i in range(args.cells)]
        data = tmp / "data.h5ad"
        anndata.AnnData(X=sim.X, obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=genes)).write_h5ad(data)
        post = write_posterior(tmp / "post.nc", data, genes, cells, at_truth(sim, S=S // 2, chains=2))
        base = [sys.executable, "-m", "scribe_cli.cli", "denoise", str(post), str(data)]
        results = {"cells": args.cells, "genes": args.genes, "nnz": int(sim.X.nnz), "input_mb": round(data.stat().st_size / 1e6, 1)}
        results["mean_only"] = timed(base + ["-o", str(tmp / "a.h5ad"), "--posterior-draws", str(S)])
        results["mean_interval_2draws"] = timed(base + ["-o", str(tmp / "b.h5ad"), "--interval", "0.9", "--draws", "2",
                                                        "--posterior-draws", str(args.interval_posterior_draws)])
        for key in ("mean_only", "mean_interval_2draws"):
            results[key]["output_mb"] = round((tmp / ("a.h5ad" if key == "mean_only" else "b.h5ad")).stat().st_size / 1e6, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
