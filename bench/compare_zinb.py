"""Acceptance check of `scribe compare --by gene` (issue 14): on counts simulated from a ZINB in which 10% of the
genes are zero-inflated, does the per-gene comparison of an NB fit and a ZINB fit rank the truly zero-inflated
genes at the top, and is the hierarchical-gate ZINB (the seed's replacement for an NB-vs-ZINB choice) not
worse than either in PSIS-LOO?

    .venv/bin/python bench/compare_zinb.py [--cells 400 --genes 200 --parallel-chains 2 --out bench_out/compare_zinb]

Prints one JSON object per step (and writes them to OUT/results.json); the AUC is P(z of a zero-inflated gene >
z of another gene), z the per-gene elpd difference ZINB - NB over its SE, with its Hanley-McNeil standard error
(the sampling error of an AUC over 20 + 180 genes, not the posterior's). `--reuse` keeps fits already written
(same data and seed), so the comparisons can be redone without refitting.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
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


def auc_with_se(score: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """AUC = P(score of a positive > score of a negative) and its Hanley-McNeil (1982) standard error."""
    u = mannwhitneyu(score[truth], score[~truth]).statistic
    n1, n0 = int(truth.sum()), int((~truth).sum())
    auc = float(u / (n1 * n0))
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se = np.sqrt((auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n1 * n0))
    return auc, float(se)


def gate_summary(post: Path, truth: np.ndarray) -> dict:
    """Posterior mean gate of the truly zero-inflated genes and of the others: says whether a hierarchical gate
    found the inflated genes or shrank them to its centre."""
    import arviz as az

    g = az.from_netcdf(post).posterior["gate"].mean(("chain", "draw")).values
    return {"gate_mean_zi_median": round(float(np.median(g[truth])), 4),
            "gate_mean_other_median": round(float(np.median(g[~truth])), 4),
            "gate_mean_other_p95": round(float(np.quantile(g[~truth], 0.95)), 4)}


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
    ap.add_argument("--parallel-chains", type=int, default=2, help="chains at once (a shared 2-core machine)")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fits", nargs="*", default=list(FITS), choices=list(FITS))
    ap.add_argument("--reuse", action="store_true", help="keep fits already in OUT (same data, seed and flags)")
    ap.add_argument("--out", type=Path, default=REPO / "bench_out" / "compare_zinb")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "zinb_sim.h5ad"
    truth_zi = simulate(data, args.cells, args.genes, 0.10, args.seed)  # also in the gene names (g###_zi)
    results = []

    def report(obj: dict) -> None:
        print(json.dumps(obj), flush=True)
        results.append(obj)
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    posts = {}
    for name in args.fits:
        posts[name] = args.out / f"{name}.nc"
        if args.reuse and posts[name].exists():
            report({"fit": name, "reused": str(posts[name])})
            continue
        t = time.monotonic()
        res = scribe("run", data, *FITS[name], *COMMON, "--chains", args.chains, "--parallel-chains",
                     args.parallel_chains, "--warmup", args.warmup, "--draws", args.draws, "--seed", args.seed,
                     "-o", posts[name])
        report({"fit": name, "flags": " ".join(FITS[name]), "wall_s": round(time.monotonic() - t, 1),
                "timings": res["timings"], "diagnostics": res["diagnostics"]})

    def by_gene(a: str, b: str) -> pd.DataFrame:
        t = time.monotonic()
        res = scribe("compare", posts[a], posts[b], "--by", "gene", "--draws", 200, "-o", args.out / f"{a}_vs_{b}.genes",
                     "--overwrite")
        table = pd.read_csv(res["table"], sep="\t", index_col="gene")
        truth = np.asarray(table.index.str.endswith("_zi"))
        auc, se = auc_with_se(table.z.to_numpy(), truth)
        top = table.sort_values("z", ascending=False).head(int(truth.sum()))
        report({"by_gene": f"{a} - {b}", "auc": round(auc, 4), "auc_se": round(se, 4), "zi_genes": int(truth.sum()),
                "zi_in_top": int(top.index.str.endswith("_zi").sum()),
                "zi_in_top10": int(table.head(10).index.str.endswith("_zi").sum()),
                "favour_a": res["favour_a"], "favour_b": res["favour_b"], "elpd_diff_total": res["elpd_diff_total"],
                "figure": res["figure"], "wall_s": round(time.monotonic() - t, 1)})
        return table

    if {"zinb", "nb"} <= posts.keys():
        by_gene("zinb", "nb")
    if "zinb_hier_gate" in posts:
        report({"gates": {n: gate_summary(posts[n], truth_zi) for n in posts if n != "nb"}})
        for other in ("nb", "zinb"):
            if other in posts:
                # where the hierarchical gate gains or loses against each alternative, gene by gene
                tab = by_gene("zinb_hier_gate", other)
                zi = np.asarray(tab.index.str.endswith("_zi"))
                report({"hier_gate_vs": other,
                        "elpd_diff_zi_genes": round(float(tab.elpd_diff[zi].sum()), 2),
                        "elpd_diff_other_genes": round(float(tab.elpd_diff[~zi].sum()), 2),
                        "worst_genes": [{"gene": g, "elpd_diff": round(float(r.elpd_diff), 2), "z": round(float(r.z), 2),
                                         "obs_mean": round(float(r.obs_mean), 3)}
                                        for g, r in tab.sort_values("z").head(5).iterrows()]})

    loo = scribe("compare", *posts.values(), "-o", args.out / "loo", "--overwrite")
    rows = {r["fit"]: r for r in loo["comparison"]}
    out = {"loo": [{k: r[k] for k in ("fit", "rank", "elpd_loo", "se", "p_loo", "elpd_diff", "se_diff", "weight")}
                   for r in loo["comparison"]],
           "pareto_k": {f: v["pareto_k"] for f, v in loo["fits"].items()},
           "waic": {f: {"elpd_waic": v["elpd_waic"], "se_waic": v["se_waic"]} for f, v in loo["fits"].items()}}
    if "zinb_hier_gate" in rows:
        hier = rows["zinb_hier_gate"]
        # "not worse" = behind the best fit by less than two SE of the difference (or the best fit itself)
        out["hier_gate_not_worse"] = bool(hier["elpd_diff"] <= 2 * max(hier["se_diff"], 1e-9))
    report(out)


if __name__ == "__main__":
    main()
