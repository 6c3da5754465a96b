"""Which default model fits droplet data? Posterior gene means against observed means, and the PPC, per
candidate configuration and real dataset (issue 14: defaults that fit real data).

For each dataset and candidate, `scribe run` (NUTS, --chains/--warmup/--draws below, --log-lik) then
`scribe ppc`; reported: the median over genes of posterior mean(mu_g) / observed mean, the 90% PPC coverage of
the gene means, variances and zero fractions, max R-hat, divergences, wall time; and `scribe compare` (PSIS-LOO)
of the candidates on each dataset.

    .venv/bin/python bench/default_fit.py [--quick] [--parallel-chains 2] [--out bench_out/default_fit]

Datasets: the bundled data (demo_pbmc_500genes, 906 x 500, the same matrix as ../shared/data's; and
cellbench_two_protocols_200genes, 499 x 200, fitted as one dataset since defaults set no --dataset-key), and from
../shared/data (skipped when absent): pbmc_1k_v3 restricted to 1000 random genes seen in >= 5% of cells, each
CellBench file restricted to 500 such genes (NUTS on the full 15,000-28,000 genes takes hours here; a random
subset of detected genes keeps the whole range of expression, where --top-genes would keep only the highest).

The acceptance of issue 14, per dataset: the median over genes of posterior mean(mu_g) / observed mean within 10%
of 1 (reported with a bootstrap SE over genes and its 5-95% range), and the fit passes its own PPC: for each of
mean, variance and zero fraction, the share of genes inside their 90% predictive interval is at least
0.9 - 3 sqrt(0.09 / genes) (posterior predictive intervals cover at least nominally when the model fits; the
margin is 3 binomial SD of a 0.9 rate).
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


SHARED_SUBSETS = (  # (name, file in ../shared/data, genes kept)
    ("pbmc_1k_v3_1000genes", "pbmc_1k_v3.h5ad", 1000),
    ("cellbench_celseq2_500genes", "cellbench_3cl_celseq2.h5ad", 500),
    ("cellbench_dropseq_500genes", "cellbench_3cl_dropseq.h5ad", 500),
    ("cellbench_two_protocols_500genes", "cellbench_3cl_two_protocols.h5ad", 500),
    ("cellbench_5cl_celseq2_p1_500genes", "cellbench_5cl_celseq2_p1.h5ad", 500),
)


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


def mean_ratio(post: Path, data: Path) -> dict:
    """Median over genes of posterior mean(mu_g) / observed mean, its bootstrap SE over genes, its 5-95% range."""
    import arviz as az

    from scribe_cli.data import read_counts

    mu = az.from_netcdf(post).posterior["mu"].mean(("chain", "draw")).values
    obs = np.asarray(read_counts(data).X.mean(axis=0)).ravel()
    ratio = mu / obs
    boot = np.median(ratio[np.random.default_rng(0).integers(0, ratio.size, (2000, ratio.size))], axis=1)
    lo, hi = np.quantile(ratio, [0.05, 0.95])
    return {"median_mean_ratio": round(float(np.median(ratio)), 4), "median_ratio_se": round(float(boot.std()), 4),
            "ratio_5_95": [round(float(lo), 3), round(float(hi), 3)]}


def ppc_passes(coverage: dict, n_genes: int) -> bool:
    floor = 0.9 - 3 * np.sqrt(0.09 / n_genes)
    return all(coverage[k] >= floor for k in ("mean", "var", "zero_frac"))


def _shape(post: Path) -> tuple[int, int]:
    import arviz as az

    attrs = az.from_netcdf(post).posterior.attrs
    return int(attrs["n_cells"]), int(attrs["n_genes"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "bench_out" / "default_fit")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--parallel-chains", type=int, default=2, help="chains at once (a shared 2-core machine)")
    ap.add_argument("--quick", action="store_true", help="the bundled demo data only")
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    ap.add_argument("--datasets", nargs="*", help="only these datasets (names as printed)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    datasets = {"demo_pbmc_500genes": REPO / "data" / "demo_pbmc_500genes.h5ad"}
    if not args.quick:
        datasets["cellbench_two_protocols_200genes"] = REPO / "data" / "cellbench_two_protocols_200genes.h5ad"
        if SHARED.is_dir():
            datasets.update({name: args.out / f"{name}.h5ad" for name, _, _ in SHARED_SUBSETS})
    if args.datasets:
        datasets = {k: v for k, v in datasets.items() if k in args.datasets}
    for name, src, n in SHARED_SUBSETS:
        if name in datasets:
            subset(SHARED / src, datasets[name], n)
    prior = args.out / "results.json"
    rows = json.loads(prior.read_text()) if prior.exists() else []  # rows of earlier invocations are kept
    rows = [r for r in rows if not (r.get("dataset") in datasets and (r.get("candidate") in args.candidates
                                                                         or "compare" in r))]
    for name, data in datasets.items():
        posts = []
        for cand in args.candidates:
            post = args.out / f"{name}.{cand}.nc"
            t = time.monotonic()
            run = scribe("run", data, *CANDIDATES[cand], "--warmup", args.warmup, "--draws", args.draws, "--seed", 1,
                         "--chains", args.chains, "--parallel-chains", args.parallel_chains, "--log-lik", "--quiet",
                         "-o", post, "--overwrite")
            wall = time.monotonic() - t
            ppc = scribe("ppc", post, data, "-o", args.out / f"{name}.{cand}.ppc")
            ratio = mean_ratio(post, data)
            n_cells, n_genes = _shape(post)
            row = {"dataset": name, "candidate": cand, "flags": " ".join(CANDIDATES[cand]) or "(defaults)",
                   "cells_x_genes": [n_cells, n_genes], **ratio,
                   "mean_within_10pct": abs(ratio["median_mean_ratio"] - 1) <= 0.10,
                   "ppc_coverage_90": ppc["coverage_90"], "ppc_passes": ppc_passes(ppc["coverage_90"], n_genes),
                   "max_rhat": run["diagnostics"].get("max_rhat"), "divergences": run["diagnostics"].get("divergences"),
                   "diagnostics_ok": run["diagnostics"].get("ok"), "wall_s": round(wall, 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
            posts.append(post)
            (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
        if len(posts) > 1:
            cmp = scribe("compare", *posts, "-o", args.out / f"{name}.compare", "--overwrite")
            print(json.dumps({"dataset": name, "compare": cmp["comparison"]}), flush=True)
            rows.append({"dataset": name, "compare": cmp["comparison"]})
    (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
