"""Does `scribe denoise` recover the true counts? Simulated NBVCP and ZINB data with the truth kept, a NUTS fit,
then the denoised layer against the truth; and a round trip of the bundled demo data through anndata.

Simulation (scribe_cli.simulate.simulate_from_prior): r ~ LogNormal(0, 1) per gene, capture ~ Beta(1, 1) per
cell (NBVCP), gate ~ Beta(1, 9) per gene (ZINB), a shared p (canonical parameterization; --p, default 0.7, so
mu = 2.33 r), true counts m ~ NB(mu, r), observed u ~ Binomial(m, capture), zeroed with probability gate.
Drawing the parameters from the fit's own priors is what makes "the intervals cover the truth at their nominal
rate" a fair expectation (it holds on average over the prior), including for NBVCP's mean x capture
degeneracy, which only the priors resolve.

For each model: `scribe run` (NUTS, default priors), `scribe denoise --interval 0.9`, and the same denoising
from an oracle posterior whose every draw is the true parameters (what perfect parameter knowledge gives).
Reported: root mean squared and mean absolute error against the true counts of the observed counts, of the
denoised layer and of the oracle's; the coverage of the 90% intervals overall, at observed zeros and at
non-zeros.

    .venv/bin/python bench/denoise_accuracy.py                 # both models and the demo round trip (~5 min)
    .venv/bin/python bench/denoise_accuracy.py --models zinb --skip-demo
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
import numpy as np
import pandas as pd
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scribe_cli.simulate import at_truth, simulate_from_prior, write_posterior  # noqa: E402

DEMO = REPO / "data" / "demo_pbmc_500genes.h5ad"


def scribe(*args) -> dict:
    proc = subprocess.run([sys.executable, "-m", "scribe_cli.cli", *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"scribe {' '.join(map(str, args))} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def dense(x) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def scores(path: Path, truth: np.ndarray, observed: np.ndarray) -> dict:
    layers = anndata.read_h5ad(path).layers
    mean, lo, hi = (dense(layers[k]) for k in ("denoised", "denoised_lo", "denoised_hi"))
    inside = (lo <= truth) & (truth <= hi)
    zeros = observed == 0
    return {"rmse": float(np.sqrt(np.mean((mean - truth) ** 2))), "mae": float(np.mean(np.abs(mean - truth))),
            "coverage_90": float(inside.mean()), "coverage_90_at_zeros": float(inside[zeros].mean()),
            "coverage_90_at_nonzeros": float(inside[~zeros].mean())}


def accuracy(model: str, tmp: Path, args) -> dict:
    sim = simulate_from_prior(np.random.default_rng(args.seed), args.cells, args.genes, capture=model == "nbvcp",
                              gate=model == "zinb", p=args.p)
    genes, cells = [f"g{j}" for j in range(args.genes)], [f"c{i}" for i in range(args.cells)]
    data = tmp / f"{model}.h5ad"
    anndata.AnnData(X=sim.X, obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=genes)).write_h5ad(data)
    post = tmp / f"{model}.nc"
    t = time.monotonic()
    run = scribe("run", data, "--model", model, "--seed", args.seed, "--warmup", args.warmup, "--draws", args.draws,
                 "--quiet", "-o", post)
    fit_s = time.monotonic() - t
    common = ["--interval", "0.9", "--posterior-draws", args.posterior_draws, "--seed", args.seed]
    t = time.monotonic()
    scribe("denoise", post, data, "-o", tmp / f"{model}.denoised.h5ad", *common)
    denoise_s = time.monotonic() - t
    oracle = write_posterior(tmp / f"{model}.oracle.nc", data, genes, cells, at_truth(sim, S=args.posterior_draws // 2))
    scribe("denoise", oracle, data, "-o", tmp / f"{model}.oracle.h5ad", *common)
    observed = sim.X.toarray()
    M = sim.M
    return {
        "model": model, "cells": args.cells, "genes": args.genes, "p": sim.p,
        "mean_true_count": float(M.mean()), "observed_zero_fraction": float((observed == 0).mean()),
        "fit": {"seconds": round(fit_s, 1), "max_rhat": run["diagnostics"].get("max_rhat"),
                "min_ess_bulk": run["diagnostics"].get("min_ess_bulk"),
                "divergences": run["diagnostics"].get("divergences")},
        "denoise_seconds": round(denoise_s, 1),
        "observed": {"rmse": float(np.sqrt(np.mean((observed - M) ** 2))), "mae": float(np.mean(np.abs(observed - M)))},
        "denoised": scores(tmp / f"{model}.denoised.h5ad", M, observed),
        "oracle": scores(tmp / f"{model}.oracle.h5ad", M, observed),
    }


def demo_round_trip(tmp: Path, args) -> dict:
    """ZINB (pathfinder) on the bundled demo data, denoised and exported; both files read back with anndata and
    compared with the input (X, obs, var kept)."""
    post = tmp / "demo.nc"
    scribe("run", DEMO, "--model", "zinb", "--method", "pathfinder", "--seed", args.seed, "--quiet", "-o", post)
    den = scribe("denoise", post, DEMO, "-o", tmp / "demo.denoised.h5ad", "--interval", "0.9", "--draws", "1")
    exp = scribe("export", post, DEMO, "-o", tmp / "demo.export.h5ad")
    src = anndata.read_h5ad(DEMO)
    out = {}
    for name in ("demo.denoised.h5ad", "demo.export.h5ad"):
        ad = anndata.read_h5ad(tmp / name)
        same_x = (dense(ad.X) == dense(src.X)).all()
        kept_obs = ad.obs[src.obs.columns].equals(src.obs)
        kept_var = ad.var[src.var.columns].equals(src.var)
        out[name] = {"shape": list(ad.shape), "X_unchanged": bool(same_x), "obs_kept": bool(kept_obs),
                     "var_kept": bool(kept_var), "layers": list(ad.layers.keys()),
                     "new_var_columns": len(ad.var.columns) - len(src.var.columns),
                     "new_obs_columns": len(ad.obs.columns) - len(src.obs.columns)}
    out["denoise_seconds"], out["export_seconds"] = den["seconds"], exp["seconds"]
    try:  # scanpy is not a dependency: checked when the environment has it (the README's usage)
        import matplotlib

        matplotlib.use("Agg")
        import scanpy as sc

        ad = sc.read_h5ad(tmp / "demo.export.h5ad")
        sc.pp.calculate_qc_metrics(ad, inplace=True)
        sc.pl.scatter(ad, x="total_counts", y="n_genes_by_counts", show=False)
        dn = sc.read_h5ad(tmp / "demo.denoised.h5ad")
        sc.pp.log1p(dn, layer="denoised")
        sc.pp.pca(dn, layer="denoised", n_comps=10)
        out["scanpy"] = (f"scanpy {sc.__version__}: read both files, sc.pl.scatter on the export, log1p and PCA on the "
                         f"denoised layer ({dn.obsm['X_pca'].shape[1]} components)")
    except ImportError:
        out["scanpy"] = "scanpy not installed (not a dependency); anndata.read_h5ad is what sc.read_h5ad calls"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["nbvcp", "zinb"], choices=["nbvcp", "zinb"])
    ap.add_argument("--cells", type=int, default=300)
    ap.add_argument("--genes", type=int, default=100)
    ap.add_argument("--p", type=float, default=0.7)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--posterior-draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model in args.models:
            results[model] = accuracy(model, tmp, args)
            print(json.dumps(results[model], indent=2), file=sys.stderr)
        if not args.skip_demo:
            results["demo"] = demo_round_trip(tmp, args)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
