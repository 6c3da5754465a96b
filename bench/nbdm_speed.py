"""Performance target of the brief: simulated NBDM, 2000 cells x 1000 genes.

Reference on this machine kind: Stan NUTS (4 chains, 1000 + 1000) over distinct (gene, count) pairs
~125 s. `scribe run` must match or beat it, and pathfinder must take a tenth of it.
Runs `scribe run` end to end (read, render, compile (cached), fit, NetCDF) for NUTS and pathfinder
and reports wall time and the relative error of the posterior-mean gene means against the truth.

    .venv/bin/python bench/nbdm_speed.py [--cells 2000] [--genes 1000] [--seed 7] [--options "--prob-prior none"]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata
import arviz as az
import numpy as np
import scipy.sparse as sp


def simulate(cells: int, genes: int, seed: int):
    rng = np.random.default_rng(seed)
    p = 0.3  # shared success probability (NumPyro convention: mean = r p / (1 - p))
    r = rng.lognormal(-0.5, 1.0, size=genes)
    mu = r * p / (1 - p)
    # numpy's negative_binomial(n, q) counts failures before n successes with success prob q:
    # mean n (1 - q) / q, so q = 1 - p gives mean r p / (1 - p).
    X = rng.negative_binomial(r, 1 - p, size=(cells, genes))
    return sp.csr_matrix(X.astype(np.int32)), mu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--genes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7, help="the simulation's seed")
    ap.add_argument("--run-seeds", default="1,2,3",
                    help="`scribe run --seed` values: NUTS's time depends on the seed (one chain's warmup can stall "
                         "for a few hundred iterations and the wall waits for it), so each seed is a row")
    ap.add_argument("--methods", default="nuts,pathfinder")
    ap.add_argument("--options", default="", help='more `scribe run` options, e.g. "--prob-prior none" (the seed\'s '
                    'shared p, the model the brief\'s 125-150 s prototype fitted)')
    args = ap.parse_args()
    X, mu = simulate(args.cells, args.genes, args.seed)
    print(f"simulated {args.cells} x {args.genes}, zero fraction {1 - X.nnz / np.prod(X.shape):.3f}", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sim.h5ad"
        anndata.AnnData(X=X).write_h5ad(path)
        for method, run_seed in [(m, s) for m in args.methods.split(",") for s in args.run_seeds.split(",")]:
            out = Path(tmp) / f"{method}.nc"
            cmd = [sys.executable, "-m", "scribe_cli.cli", "run", str(path), "-o", str(out), "--method", method,
                   "--seed", run_seed, "--quiet", "--overwrite", *args.options.split()]
            t0 = time.monotonic()
            res = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.monotonic() - t0
            if res.returncode != 0:
                print(res.stderr, file=sys.stderr)
                raise SystemExit(f"{method} failed")
            summary = json.loads(res.stdout)
            post = az.from_netcdf(out).posterior
            mu_hat = post["mu"].mean(("chain", "draw")).values
            rel = np.abs(mu_hat - mu) / mu
            rows.append({
                "method": method, "seed": int(run_seed), "wall_s": round(wall, 1), "sample_s": summary["timings"].get("sample"),
                "compile_s": summary["timings"].get("compile"),
                "median_rel_err_mu": round(float(np.median(rel)), 4), "mean_rel_err_mu": round(float(rel.mean()), 4),
                **{k: summary["diagnostics"].get(k) for k in ("max_rhat", "min_ess_bulk", "divergences", "pareto_k")},
            })
    print(json.dumps(rows, indent=2))
    for method in args.methods.split(","):
        walls = [r["wall_s"] for r in rows if r["method"] == method]
        print(f"{method} {args.options or '(CLI defaults)'}: wall median {np.median(walls):.1f} s, range "
              f"{min(walls):.1f}-{max(walls):.1f} s over seeds {args.run_seeds}", file=sys.stderr)


if __name__ == "__main__":
    main()
