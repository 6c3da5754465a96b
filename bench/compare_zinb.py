"""Acceptance check of `scribe compare --by gene` (issue 14): on counts simulated from a ZINB in which 10% of the
genes are zero-inflated, does the per-gene comparison of an NB fit and a ZINB fit rank the truly zero-inflated
genes at the top, and is the hierarchical-gate ZINB (the seed's replacement for an NB-vs-ZINB choice) not
worse than either in PSIS-LOO?

    .venv/bin/python bench/compare_zinb.py [--cells 400 --genes 200 --out bench_out/compare_zinb]

Prints one JSON object per step; the AUC is P(z of a zero-inflated gene > z of another gene), z the per-gene
elpd difference ZINB - NB over its SE.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

REPO = Path(__file__).resolve().parents[1]
# The CLI defaults (canonical with a p per gene under a Gaussian prior on logit p_g) for every fit.
COMMON = ["--log-lik", "--quiet", "--overwrite"]
FITS = {
    "nb": ["--model", "nbdm"],
    "zinb": ["--model", "zinb"],
    "zinb_hier_gate": ["--model", "zinb", "--gate-prior", "horseshoe"],
}


def simulate(path: Path, cells: int, genes: int, frac_zi: float, seed: int) -> np.ndarray:
    """ZINB counts: gene means LogNormal(0.5, 1), sizes LogNormal(0.5, 0.5); a random frac_zi of the genes get a
    gate Uniform(0.2, 0.5), the others none. Returns the truth (True = zero-inflated)."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    mu = rng.lognormal(0.5, 1.0, genes)
    r = rng.lognormal(0.5, 0.5, genes)
    zi = np.zeros(genes, dtype=bool)
    zi[rng.choice(genes, int(round(frac_zi * genes)), replace=False)] = True
    gate = np.where(zi, rng.uniform(0.2, 0.5, genes), 0.0)
    U = rng.poisson(rng.gamma(r, mu / r, size=(cells, genes)))
    U[rng.random((cells, genes)) < gate] = 0
    a = ad.AnnData(sp.csr_matrix(U.astype(np.int32)))
    a.var_names = [f"g{j:03d}{'_zi' if zi[j] else ''}" for j in range(genes)]
    a.obs_names = [f"c{i}" for i in range(cells)]
    a.write_h5ad(path)
    return zi


def scribe(*args) -> dict:
    res = subprocess.run([sys.executable, "-m", "scribe_cli.cli", *map(str, args)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"scribe {' '.join(map(str, args))} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=400)
    ap.add_argument("--genes", type=int, default=200)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "bench_out" / "compare_zinb")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "zinb_sim.h5ad"
    simulate(data, args.cells, args.genes, 0.10, args.seed)  # the truth is in the gene names (g###_zi)
    posts = {}
    for name, flags in FITS.items():
        posts[name] = args.out / f"{name}.nc"
        res = scribe("run", data, *flags, *COMMON, "--chains", args.chains, "--warmup", args.warmup, "--draws",
                     args.draws, "--seed", args.seed, "-o", posts[name])
        print(json.dumps({"fit": name, "timings": res["timings"], "diagnostics": res["diagnostics"]}), flush=True)

    genes = scribe("compare", posts["zinb"], posts["nb"], "--by", "gene", "--draws", 200, "-o", args.out / "zinb_vs_nb.genes", "--overwrite")
    table = pd.read_csv(genes["table"], sep="\t", index_col="gene")
    truth = table.index.str.endswith("_zi")
    u = mannwhitneyu(table.z[truth], table.z[~truth]).statistic
    auc = float(u / (truth.sum() * (~truth).sum()))
    top = table.sort_values("z", ascending=False).head(int(truth.sum()))
    print(json.dumps({"by_gene": {"auc": round(auc, 4), "zi_genes": int(truth.sum()),
                                  "zi_in_top": int(top.index.str.endswith("_zi").sum()),
                                  "favour_zinb": genes["favour_a"], "favour_nb": genes["favour_b"],
                                  "figure": genes["figure"]}}), flush=True)

    loo = scribe("compare", *posts.values(), "-o", args.out / "loo", "--overwrite")
    rows = {r["fit"]: r for r in loo["comparison"]}
    hier = rows["zinb_hier_gate"]
    print(json.dumps({"loo": [{k: r[k] for k in ("fit", "rank", "elpd_loo", "elpd_diff", "se_diff", "weight")}
                              for r in loo["comparison"]],
                      "hier_gate_not_worse": bool(hier["elpd_diff"] <= 2 * max(hier["se_diff"], 1e-9)),
                      "pareto_k": {f: v["pareto_k"] for f, v in loo["fits"].items()}}), flush=True)


if __name__ == "__main__":
    main()
