"""Up to how many parameters does full-rank ADVI work? (sets fit.FULLRANK_MAX_PARAMS)

Simulated NBDM (shared p; 1000 cells, a growing number of genes G, so n = G + 1 parameters), fitted with
full-rank and mean-field ADVI through scribe's own code path (fit.run_method, Stan's default ADVI arguments
unless fit.py sets others), each run stopped after --timeout seconds. Per run: wall time, whether Stan
finished (or its reason for failing), Pareto k, and recovery of the true gene means (correlation of log
posterior means, fraction of genes whose true mean lies in the 90% interval).

    .venv/bin/python bench/advi_fullrank_size.py [--genes 100,300,1000] [--cells 1000] [--timeout 900]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import anndata
import numpy as np
import scipy.sparse as sp

from scribe_cli.cache import compile_program
from scribe_cli.config import ModelConfig, validate
from scribe_cli.data import read_counts
from scribe_cli.diagnostics import convergence
from scribe_cli.errors import UserInputError
from scribe_cli.fit import RunOptions, run_method
from scribe_cli.idata import to_inference_data
from scribe_cli.param_count import unconstrained_size
from scribe_cli.idata import variable_dims
from scribe_cli.render import render
from scribe_cli.standata import stan_data


def simulate(cells: int, genes: int, seed: int):
    rng = np.random.default_rng(seed)
    p = 0.3
    r = rng.lognormal(-0.5, 1.0, size=genes)
    X = rng.negative_binomial(r, 1 - p, size=(cells, genes))  # mean r p / (1 - p), as in bench/nbdm_speed.py
    return sp.csr_matrix(X.astype(np.int32)), r * p / (1 - p)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--genes", default="100,300,1000")
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--methods", default="advi-fullrank,advi")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    config = validate(ModelConfig(model="nbdm"))
    program = render(config)
    model = compile_program(program, name=config.model).model
    print("| genes | parameters | method | wall s | outcome | Pareto k | corr log mu | cov90 |")
    print("|---|---|---|---|---|---|---|---|")
    for genes in map(int, args.genes.split(",")):
        X, mu = simulate(args.cells, genes, args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "sim.h5ad"
            anndata.AnnData(X=X).write_h5ad(path)
            counts = read_counts(path)
            data = stan_data(config, counts)
            n = unconstrained_size(program, data)
            for method in args.methods.split(","):
                opts = RunOptions(method=method, seed=1, show_progress=False).validate()
                out = Path(tmp) / method
                out.mkdir()
                t0 = time.monotonic()
                try:
                    fit = run_method(model, data, opts, out, tuning={"timeout": args.timeout})
                except (UserInputError, TimeoutError) as exc:
                    print(f"| {genes} | {n} | {method} | {time.monotonic() - t0:.0f} | failed: {str(exc)[:160]} | | | |",
                          flush=True)
                    continue
                wall = time.monotonic() - t0
                idata = to_inference_data(fit, method, lambda a: variable_dims(config, a, data),
                                          {"gene": counts.genes, "cell": counts.cells})
                k = convergence(idata, method)["pareto_k"]
                draws = idata.posterior["mu"].values.reshape(-1, genes)
                lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
                corr = np.corrcoef(np.log(draws).mean(0), np.log(mu))[0, 1]
                cov = np.mean((mu >= lo) & (mu <= hi))
                print(f"| {genes} | {n} | {method} | {wall:.0f} | finished | {k:.2f} | {corr:.4f} | {cov:.3f} |", flush=True)
    print(f"({args.cells} cells; seed {args.seed})", file=sys.stderr)


if __name__ == "__main__":
    main()
