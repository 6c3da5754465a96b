"""Which pathfinder and ADVI settings work best? Measured against a simulation's truth.

Simulated NBVCP with a shared p (default 2000 cells x 500 genes, known r_g, p, capture nu_c), fitted with
scribe's own rendered program and code path (fit.run_method with Stan arguments over the defaults,
idata.to_inference_data for pathfinder's PSIS resampling). Under variable capture only mu_g up to the
common mean x capture scale is identified, so each draw's mu and the true mu are both divided by their
geometric mean over genes before comparing. Per setting:

- corr: correlation of the posterior mean of log mu (normalised) with the true log mu (normalised);
- cov90: fraction of genes whose true normalised mean lies in the 90% interval (target 0.90; 0.80-0.97 passes);
- width: median width of those intervals on the log scale (about the relative width);
- err: median absolute error of the posterior mean of the normalised log mu;
- wall time of the Stan run, ADVI's iterations (the last one its transcript reports, to the nearest 100),
  Pareto k, PSIS ESS, distinct draws after resampling.

Pathfinder rows come in two: the PSIS-resampled draws (what `scribe run` writes when the resample holds
enough distinct draws) and all raw draws of the approximation (what it writes when it does not).

    .venv/bin/python bench/variational_defaults.py [--cells 2000] [--genes 500] [--seed 7] [--only advi]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import anndata
import numpy as np
import scipy.sparse as sp

from scribe_cli import psis
from scribe_cli.cache import compile_program
from scribe_cli.config import ModelConfig, validate
from scribe_cli.data import read_counts
from scribe_cli.diagnostics import convergence
from scribe_cli.fit import RunOptions, run_method
from scribe_cli.idata import posterior_arrays, to_inference_data
from scribe_cli.idata import variable_dims
from scribe_cli.render import render
from scribe_cli.standata import stan_data

# (label, method, paths, Stan arguments over fit.py's defaults)
SETTINGS = [
    # explicit values, so that the rows keep their meaning whatever fit.PATHFINDER_TUNING says (Stan's 25 ELBO draws)
    ("pathfinder default", "pathfinder", 4, {"num_elbo_draws": 25}),  # Stan's defaults
    ("pathfinder 8 paths", "pathfinder", 8, {"num_elbo_draws": 25}),
    ("pathfinder history 15", "pathfinder", 4, {"history_size": 15, "num_elbo_draws": 25}),
    ("pathfinder 100 elbo draws", "pathfinder", 4, {"num_elbo_draws": 100}),
    ("pathfinder 5 elbo draws", "pathfinder", 4, {"num_elbo_draws": 5}),  # fit.PATHFINDER_TUNING
    # explicit values, so that the rows keep their meaning whatever fit.ADVI_TUNING says
    ("advi tol 0.01 (Stan default)", "advi", 1, {"tol_rel_obj": 0.01, "iter": 10000}),
    ("advi tol 0.001", "advi", 1, {"tol_rel_obj": 0.001, "iter": 10000}),
    ("advi tol 0.001, 5 grad samples", "advi", 1, {"tol_rel_obj": 0.001, "iter": 10000, "grad_samples": 5}),
    ("advi tol 0.001, 25 elbo draws", "advi", 1, {"tol_rel_obj": 0.001, "iter": 10000, "elbo_samples": 25}),
    ("advi tol 0.001, eta 0.1", "advi", 1, {"tol_rel_obj": 0.001, "iter": 10000, "eta": 0.1, "adapt_engaged": False}),
    ("advi tol 0.0001, 30000 iter", "advi", 1, {"iter": 30000, "tol_rel_obj": 0.0001}),
]


def simulate(cells: int, genes: int, seed: int):
    """NBVCP with a shared p: u ~ NB(mean nu_c mu_g, size r_g), mu_g = r_g p / (1 - p)."""
    rng = np.random.default_rng(seed)
    p = 0.4
    r = rng.lognormal(-0.3, 1.0, size=genes)
    mu = r * p / (1 - p)
    nu = rng.beta(4.0, 4.0, size=cells)
    mean = nu[:, None] * mu[None, :]
    # numpy's negative_binomial(n, q): failures before n successes, mean n (1 - q) / q; q = r / (r + mean).
    X = rng.negative_binomial(r[None, :], r[None, :] / (r[None, :] + mean))
    return sp.csr_matrix(X.astype(np.int32)), mu


def log_normalised(mu: np.ndarray) -> np.ndarray:
    """log mu minus its mean over genes (the last axis): mu divided by its geometric mean."""
    lm = np.log(mu)
    return lm - lm.mean(axis=-1, keepdims=True)


def recovery(draws: np.ndarray, mu_true: np.ndarray) -> dict:
    """``draws``: (n_draws, genes) of mu."""
    ln, truth = log_normalised(draws), log_normalised(mu_true)
    lo, hi = np.quantile(ln, [0.05, 0.95], axis=0)
    mean = ln.mean(axis=0)
    return {"corr": float(np.corrcoef(mean, truth)[0, 1]), "cov90": float(np.mean((truth >= lo) & (truth <= hi))),
            "width": float(np.median(hi - lo)), "err": float(np.median(np.abs(mean - truth)))}


def advi_iterations(fit) -> int:
    """The last iteration ADVI's transcript reports (it prints the ELBO every eval_elbo = 100 iterations)."""
    text = Path(fit.runset.stdout_files[0]).read_text()
    text = text.split("Begin stochastic gradient ascent", 1)[-1]
    return max((int(m) for m in re.findall(r"(?m)^\s*(\d+)\s+-?\d", text)), default=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--genes", type=int, default=500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--only", default="", help="comma-separated: run only the settings whose label contains one of these")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    X, mu = simulate(args.cells, args.genes, args.seed)
    print(f"simulated NBVCP {args.cells} x {args.genes}, zero fraction {1 - X.nnz / np.prod(X.shape):.3f}", file=sys.stderr)
    config = validate(ModelConfig(model="nbvcp"))
    model = compile_program(render(config), name=config.model).model
    rows = []
    print("| setting | draws | wall s | iterations | corr | cov90 | width | err | Pareto k | PSIS ESS | distinct |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sim.h5ad"
        anndata.AnnData(X=X).write_h5ad(path)
        counts = read_counts(path)
        data = stan_data(config, counts)
        coords = {"gene": counts.genes, "cell": counts.cells}
        labels = [s[0] for s in SETTINGS]
        for label, method, paths, tuning in SETTINGS:
            parts = args.only.split(",")
            if label not in parts and not any(part in label for part in parts if part not in labels):
                continue
            opts = RunOptions(method=method, chains=paths, draws=args.draws, seed=1, show_progress=False).validate()
            out = Path(tmp) / label.replace(" ", "_").replace(",", "")
            out.mkdir()
            t0 = time.monotonic()
            fit = run_method(model, data, opts, out, tuning=tuning)
            wall = time.monotonic() - t0
            idata = to_inference_data(fit, method, lambda a: variable_dims(config, a, data), coords,
                                      n_draws=args.draws, seed=1)
            diag = convergence(idata, method)
            written = idata.posterior["mu"].values.reshape(-1, args.genes)
            kind = "written" if method != "pathfinder" else ("PSIS-resampled" if diag["draws_written"] == "PSIS-resampled"
                                                              else "raw (fallback)")
            variants = [(kind, written)]
            if method == "pathfinder":
                raw = posterior_arrays(fit, method)["mu"].reshape(-1, args.genes)
                variants.append(("all raw", raw))
                if kind != "PSIS-resampled":  # what writing the collapsed resample would have given
                    cols = list(fit.column_names)
                    d = np.asarray(fit.draws()).reshape(-1, len(cols))
                    log_ratio = d[:, cols.index("lp__")] - d[:, cols.index("lp_approx__")]
                    variants.append(("PSIS resample (refused)", raw[psis.resample_indices(log_ratio, args.draws, seed=1)]))
            for what, draws in variants:
                row = {"setting": label, "method": method, "paths": paths, "tuning": tuning, "draws": what,
                       "wall_s": round(wall, 1), "iterations": advi_iterations(fit) if method == "advi" else None, **{k: round(v, 4) for k, v in recovery(draws, mu).items()},
                       "pareto_k": round(diag["pareto_k"], 2), "psis_ess": round(diag["psis_ess"], 1),
                       "distinct": diag.get("distinct_draws")}
                rows.append(row)
                print(f"| {label} | {what} | {row['wall_s']} | {row['iterations'] or '-'} | {row['corr']:.4f} | {row['cov90']:.3f} | {row['width']:.3f} "
                      f"| {row['err']:.3f} | {row['pareto_k']} | {row['psis_ess']} | {row['distinct'] or '-'} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
