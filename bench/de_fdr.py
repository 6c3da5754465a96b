"""DE false-discovery check on simulated truth (decisions.md item 12; spec de.md).

Counts of two groups are simulated from NB(mu_g, r_g) with the same sizes r_g in both groups and known fold
changes on a fraction of the genes (mu_A = fc * mu_B; |log fc| in {log 2, log 3, log 4}, random sign); every
other gene is identical in the two groups (a null). The posterior of each group comes from

- ``--mode fit`` (default): `scribe run` on each group separately (NBDM, mean-disp: gene-specific mu and r;
  NUTS), compared as two fits (`scribe de A.nc B.nc`'s path: draws paired by index);
- ``--mode conjugate``: a fast stand-in without Stan: r_g fixed at the truth and the conjugate posterior of p_g
  (p ~ Beta(1, 1); given r the likelihood is p^(sum u) (1 - p)^(C r)), so mu_g = r_g p_g / (1 - p_g).
  It ignores the uncertainty of r, so it is a check of the DE arithmetic more than of the fits.

Then the PEFP calls at several targets are compared with the truth: the realised false discovery proportion
(FDP = null genes called / genes called) should be at most about the target (PEFP controls its posterior
expectation, so replicate averages are what to compare) and power = planted genes called / planted genes.
Power is also split by the true size r (the composition draws carry Gamma(r) noise, whose log has sd
sqrt(trigamma(r)): large for small r, so genes with small r are rarely called whatever their fold change).

    .venv/bin/python bench/de_fdr.py                       # fit mode, two replicates (~2 min each on 2 busy cores)
    .venv/bin/python bench/de_fdr.py --mode conjugate             # 50 replicates in seconds
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scribe_cli.reports import de as D  # noqa: E402

TARGETS = (0.01, 0.05, 0.10, 0.20)
R_BINS = (0, 2, 8, math.inf)


def simulate(rng, cells: int, genes: int, frac: float):
    r = rng.lognormal(math.log(4.0), 1.0, genes)
    mu_b = rng.lognormal(math.log(2.0), 1.2, genes)
    n_de = int(round(frac * genes))
    de_idx = rng.choice(genes, n_de, replace=False)
    log_fc = np.zeros(genes)
    log_fc[de_idx] = rng.choice([math.log(2), math.log(3), math.log(4)], n_de) * rng.choice([-1, 1], n_de)
    mu_a = mu_b * np.exp(log_fc)

    def counts(mu):
        # numpy's negative_binomial(n, q): failures before n successes, mean n (1 - q) / q -> q = r / (r + mu)
        return rng.negative_binomial(r, r / (r + mu), size=(cells, genes)).astype(np.int32)

    return {"r": r, "mu_a": mu_a, "mu_b": mu_b, "log_fc": log_fc, "X_a": counts(mu_a), "X_b": counts(mu_b)}


def conjugate_group(rng, X, r, draws: int) -> D.Group:
    C = X.shape[0]
    p = rng.beta(1 + X.sum(axis=0), 1 + C * r, size=(draws, X.shape[1]))
    return D.Group("", r * p / (1 - p), np.broadcast_to(r, p.shape).copy())


def fit_group(X, path: Path, args, tmp: Path) -> None:
    import anndata
    import scipy.sparse as sp

    h5 = tmp / f"{path.stem}.h5ad"
    ad = anndata.AnnData(X=sp.csr_matrix(X))
    ad.var_names = [f"g{i}" for i in range(X.shape[1])]
    ad.write_h5ad(h5)
    cmd = [sys.executable, "-m", "scribe_cli.cli", "run", str(h5), "-o", str(path), "--model", "nbdm",
           "--parameterization", "mean-disp", "--method", args.method, "--chains", str(args.chains),
           "--warmup", str(args.warmup), "--draws", str(args.draws), "--seed", str(args.seed), "--quiet"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        raise SystemExit(f"scribe run failed:\n{res.stderr}")
    diag = json.loads(res.stdout)["diagnostics"]
    print(f"  fit {path.name}: max R-hat {diag.get('max_rhat')}, min bulk ESS {diag.get('min_ess_bulk')}, "
          f"divergences {diag.get('divergences')}", file=sys.stderr)


def score(table, truth_de: np.ndarray, r: np.ndarray, log_fc: np.ndarray) -> list[dict]:
    gene_idx = np.array([int(g[1:]) for g in table["gene"]])  # table order
    is_de = truth_de[gene_idx]
    order = np.arange(len(table))  # the table is sorted by lfsr_tau, then |effect|
    rows = []
    for target in TARGETS:
        called = D.pefp_calls(table["lfsr_tau"].to_numpy(), target, order)
        n = int(called.sum())
        false = int((called & ~is_de).sum())
        wrong_sign = int((called & is_de & (np.sign(table["mean_clr_diff"].to_numpy()) != np.sign(log_fc[gene_idx]))).sum())
        row = {"target": target, "called": n, "false": false, "fdp": false / max(n, 1),
               "pefp": float(table["lfsr_tau"].to_numpy()[called].mean()) if n else 0.0,
               "power": float((called & is_de).sum() / max(is_de.sum(), 1)), "wrong_sign": wrong_sign}
        for lo, hi in zip(R_BINS[:-1], R_BINS[1:]):
            sel = is_de & (r[gene_idx] >= lo) & (r[gene_idx] < hi)
            row[f"power_r[{lo},{hi})"] = float((called & sel).sum() / sel.sum()) if sel.sum() else float("nan")
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["fit", "conjugate"], default="fit")
    ap.add_argument("--cells", type=int, default=300, help="cells per group")
    ap.add_argument("--genes", type=int, default=300)
    ap.add_argument("--frac-de", type=float, default=0.1)
    ap.add_argument("--reps", type=int, help="replicates [default: 2 in fit mode, 50 in conjugate mode]")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--method", default="nuts", help="fit mode: scribe run --method")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=500, help="draws per chain (conjugate mode: chains x draws draws)")
    ap.add_argument("--samples-per-draw", type=int, default=1)
    ap.add_argument("--tau", type=float, default=math.log(1.1))
    args = ap.parse_args()
    if args.reps is None:
        args.reps = 2 if args.mode == "fit" else 50

    results = []
    t_start = time.monotonic()
    for rep in range(args.reps):
        rng = np.random.default_rng([args.seed, rep])
        sim = simulate(rng, args.cells, args.genes, args.frac_de)
        genes = [f"g{i}" for i in range(args.genes)]
        t0 = time.monotonic()
        if args.mode == "conjugate":
            S = args.chains * args.draws
            ga, gb = conjugate_group(rng, sim["X_a"], sim["r"], S), conjugate_group(rng, sim["X_b"], sim["r"], S)
            comp = D.Comparison("fits", "A", "B", [(ga, gb)], np.ones(1), genes)
        else:
            import arviz as az

            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                fit_group(sim["X_a"], tmp / "A.nc", args, tmp)
                fit_group(sim["X_b"], tmp / "B.nc", args, tmp)
                pa, pb = az.from_netcdf(tmp / "A.nc").posterior.load(), az.from_netcdf(tmp / "B.nc").posterior.load()
            comp = D.fits_comparison(pa, pb, "A.nc", "B.nc", seed=args.seed)
        t_post = time.monotonic() - t0
        t0 = time.monotonic()
        table = D.de_table(comp, tau=args.tau, samples_per_draw=args.samples_per_draw, seed=args.seed)
        t_de = time.monotonic() - t0
        for row in score(table, sim["log_fc"] != 0, sim["r"], sim["log_fc"]):
            results.append({"rep": rep, **row})
        print(f"rep {rep}: posterior {t_post:.1f} s, DE {t_de:.2f} s", file=sys.stderr)

    keys = ["called", "false", "fdp", "pefp", "power", "wrong_sign"] + [k for k in results[0] if k.startswith("power_r")]
    print(f"\nDE FDR check: mode {args.mode}, {args.reps} replicate(s), {args.cells} cells per group x {args.genes} genes, "
          f"{args.frac_de:.0%} DE (|log fc| in log 2..log 4), tau = {args.tau:.4f}, "
          f"{args.chains * args.draws} draws x {args.samples_per_draw} compositions; {time.monotonic() - t_start:.0f} s")
    header = ["target"] + ["mean_" + k for k in keys]
    print("\t".join(header))
    for target in TARGETS:
        rows = [r for r in results if r["target"] == target]
        vals = [np.nanmean([r[k] for r in rows]) for k in keys]
        print("\t".join([f"{target:.2f}"] + [f"{v:.3f}" if isinstance(v, float) else str(v) for v in vals]))


if __name__ == "__main__":
    main()
