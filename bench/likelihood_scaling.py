"""Per-gradient cost of the fast (sufficient-statistic) likelihoods against the dense one.

The time of one log-density gradient is measured inside Stan: NUTS with adaptation off, a unit metric,
a small fixed step size and max_depth = 5, so nearly every iteration runs 31 leapfrog steps (one
gradient each); per-gradient time = sampling time (Stan's own "Elapsed Time") / total leapfrog steps.
Runs on the bundled real data (906 cells x 500 genes) and on subsets of it (cells, genes), and on
simulated NB data of varying sparsity. Writes a Markdown table to stdout.

    .venv/bin/python bench/likelihood_scaling.py [--models nbdm,zinb,nbvcp] [--iters 40]
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from scribe_cli.cache import compile_program
from scribe_cli.config import ModelConfig, validate
from scribe_cli.data import Counts, read_counts
from scribe_cli.plan import plan
from scribe_cli.render import render
from scribe_cli.standata import stan_data

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo_pbmc_500genes.h5ad"


def per_gradient_seconds(model, data: dict, iters: int, seed: int = 1) -> float:
    """Sampling time / leapfrog steps of NUTS with a unit metric and a fixed tiny step (max depth 5: 31 steps per
    iteration). On large data the log density's gradient at the start is large enough for a step of 1e-3 to
    diverge at once; an iteration then takes 1-2 steps and the per-iteration work (writing a draw) inflated
    this figure (nbdm 10,000 x 2,000: 8.2 ms). So the step shrinks until no transition diverges."""
    for step in (1e-3, 1e-5, 1e-7, 1e-9):
        with tempfile.TemporaryDirectory() as tmp:
            fit = model.sample(data=data, chains=1, iter_warmup=0, iter_sampling=iters, adapt_engaged=False,
                               metric="unit_e", step_size=step, max_treedepth=5, seed=seed, output_dir=tmp,
                               show_progress=False, show_console=False, inits=0.5)
            sampler = fit.method_variables()
            steps = sampler["n_leapfrog__"].sum()
            text = Path(fit.runset.csv_files[0]).read_text()
            seconds = float(re.search(r"([0-9.]+) seconds \(Sampling\)", text).group(1))
        if not sampler["divergent__"].any():
            break
    return seconds / steps


def subset(counts: Counts, cells: int | None = None, genes: int | None = None) -> Counts:
    X = counts.X[:cells] if cells else counts.X
    X = X[:, :genes] if genes else X
    X = sp.csr_matrix(X)
    return Counts(X=X, genes=counts.genes[: X.shape[1]], cells=counts.cells[: X.shape[0]], obs=counts.obs.iloc[: X.shape[0]],
                  source=counts.source)


def simulated(mean_scale: float, cells: int = 906, genes: int = 500, seed: int = 0) -> Counts:
    rng = np.random.default_rng(seed)
    mu = mean_scale * rng.lognormal(-1.0, 1.0, size=genes)
    r = rng.lognormal(0.0, 0.5, size=genes)
    X = rng.negative_binomial(r, r / (r + mu), size=(cells, genes))
    X[:, X.sum(axis=0) == 0] = 1
    return Counts(X=sp.csr_matrix(X), genes=[f"g{i}" for i in range(genes)], cells=[f"c{i}" for i in range(cells)],
                  obs=None, source=Path("simulated"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="nbdm,zinb,nbvcp")
    ap.add_argument("--iters", type=int, default=40)
    args = ap.parse_args()
    demo = read_counts(DEMO)
    cases = [("demo 906 x 500", demo)]
    cases += [(f"demo cells {c}", subset(demo, cells=c)) for c in (100, 300)]
    cases += [(f"demo genes {g}", subset(demo, genes=g)) for g in (100, 250)]
    cases += [(f"simulated, mean x{m}", simulated(m)) for m in (0.2, 1.0, 5.0)]
    print("| model | data | cells x genes | zero fraction | J pairs | fast form | fast us/grad | dense us/grad | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        config = validate(ModelConfig(model=name))
        fast = compile_program(render(config), name=name).model
        dense = compile_program(render(config, dense=True), name=f"{name}_dense").model
        for label, counts in cases:
            data = stan_data(config, counts, dense=True)
            t_fast = per_gradient_seconds(fast, data, args.iters)
            t_dense = per_gradient_seconds(dense, data, max(5, args.iters // 8))
            zero = 1 - counts.X.nnz / (counts.n_cells * counts.n_genes)
            J = data.get("J", "-")
            print(f"| {name} | {label} | {counts.n_cells} x {counts.n_genes} | {zero:.3f} | {J} | {plan(config).form} | "
                  f"{t_fast * 1e6:.1f} | {t_dense * 1e6:.1f} | {t_dense / t_fast:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
