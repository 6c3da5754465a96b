"""Which default model fits droplet data? Posterior gene means against observed means, and the PPC, per
candidate configuration and real dataset (issue 14: defaults that fit real data).

For each dataset and candidate, `scribe run` (NUTS, 4 chains, --warmup/--draws below, --log-lik) then
`scribe ppc`; reported: the median over genes of posterior mean(mu_g) / observed mean, the 90% PPC coverage of
the gene means, variances and zero fractions, max R-hat, divergences, wall time; and `scribe compare` (PSIS-LOO)
of the candidates on each dataset.

    .venv/bin/python bench/default_fit.py [--quick] [--out bench_out/default_fit]

Datasets: the bundled demo (906 x 500), pbmc_1k_v3 restricted to 1000 random genes seen in >= 5% of cells, and
CellBench CEL-seq2 (3 cell lines) restricted to 500 such genes (../shared/data; skipped when absent).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

CANDIDATES = {
    # the previous default (the seed's model): one p shared by all genes
    "shared_p": ["--prob-prior", "none"],
    # the new default: canonical with a gene-specific p under a Gaussian hierarchical prior on logit p_g
    "default": [],
    "mean_disp": ["--parameterization", "mean-disp"],
}


def subset(src: Path, dst: Path, n_genes: int, seed: int = 0) -> Path:
    import anndata as ad

    if dst.exists():
        return dst
    a = ad.read_h5ad(src)
    X = a.X.tocsc()
    detected = np.diff(X.indptr) / a.n_obs
    keep = np.flatnonzero(detected >= 0.05)
    pick = np.sort(np.random.default_rng(seed).choice(keep, size=min(n_genes, keep.size), replace=False))
    a[:, pick].copy().write_h5ad(dst)
    return dst


def scribe(*args) -> dict:
    res = subprocess.run([sys.executable, "-m", "scribe_cli.cli", *map(str, args)], capture_output=True, text=True)
    if res.returncode not in (0, 3):
        raise SystemExit(f"scribe {' '.join(map(str, args))} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def mean_ratio(post: Path, data: Path) -> float:
    import arviz as az

    from scribe_cli.data import read_counts

    mu = az.from_netcdf(post).posterior["mu"].mean(("chain", "draw")).values
    obs = np.asarray(read_counts(data).X.mean(axis=0)).ravel()
    return float(np.median(mu / obs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "bench_out" / "default_fit")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="the bundled demo data only")
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    ap.add_argument("--datasets", nargs="*", help="only these datasets (names as printed)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    datasets = {"demo_pbmc_500genes": REPO / "data" / "demo_pbmc_500genes.h5ad"}
    if not args.quick and SHARED.is_dir():
        datasets["pbmc_1k_v3_1000genes"] = args.out / "pbmc_1k_v3_1000genes.h5ad"
        datasets["cellbench_celseq2_500genes"] = args.out / "cellbench_celseq2_500genes.h5ad"
    if args.datasets:
        datasets = {k: v for k, v in datasets.items() if k in args.datasets}
    for name, src, n in (("pbmc_1k_v3_1000genes", "pbmc_1k_v3.h5ad", 1000),
                         ("cellbench_celseq2_500genes", "cellbench_3cl_celseq2.h5ad", 500)):
        if name in datasets:
            subset(SHARED / src, datasets[name], n)
    rows = []
    for name, data in datasets.items():
        posts = []
        for cand in args.candidates:
            post = args.out / f"{name}.{cand}.nc"
            t = time.monotonic()
            run = scribe("run", data, *CANDIDATES[cand], "--warmup", args.warmup, "--draws", args.draws, "--seed", 1,
                         "--log-lik", "--quiet", "-o", post, "--overwrite")
            wall = time.monotonic() - t
            ppc = scribe("ppc", post, data, "-o", args.out / f"{name}.{cand}.ppc")
            row = {"dataset": name, "candidate": cand, "flags": " ".join(CANDIDATES[cand]) or "(defaults)",
                   "median_mean_ratio": round(mean_ratio(post, data), 4), "ppc_coverage_90": ppc["coverage_90"],
                   "max_rhat": run["diagnostics"].get("max_rhat"), "divergences": run["diagnostics"].get("divergences"),
                   "wall_s": round(wall, 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
            posts.append(post)
        if len(posts) > 1:
            cmp = scribe("compare", *posts, "-o", args.out / f"{name}.compare", "--overwrite")
            print(json.dumps({"dataset": name, "compare": cmp["comparison"]}), flush=True)
            rows.append({"dataset": name, "compare": cmp["comparison"]})
    (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
