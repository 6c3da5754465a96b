"""Where NUTS's warmup spends its gradients on large data, and whether data-scaled coordinates shorten it.

Stan's warmup starts on the unit metric: for its first 100 iterations (init buffer 75, first window 25) the
step size fits the tightest direction, the log mean of the highest-count genes (posterior sd ~ 1/sqrt(total
count)), and each trajectory must span the loosest, so those iterations cost ~(ratio of scales) leapfrog
steps, up to 1023. The ratio grows with the cells. This compares, on one chain with the warmup saved:

- `plain`: the CLI's program (canonical NBDM, p per gene; log_mu declared plainly);
- `scaled`: the same program with `vector<offset=log_mu_hat, multiplier=log_mu_se>[G] log_mu`, from each
  gene's observed mean and its standard error, sqrt(var / (C mean^2)) (genes with no counts: offset log(0.5 / C),
  multiplier 1). The affine map changes neither the model nor the density (Stan adds its Jacobian); only the
  coordinates NUTS moves in, and so only what the unit metric of early warmup sees.

    python bench/warmup_metric.py /tmp/scribe-scale-data/nbdm_d1_10000x2000.h5ad [--warmup 1000 --draws 200]

Prints leapfrog steps in warmup iterations 1-100, 101-end and sampling, step size and wall time per variant;
both chains run at once (one core each).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from scribe_cli.cache import compile_program
from scribe_cli.cli import run as run_command
from scribe_cli.cli_options import MODEL_OPTION_NAMES, model_config_from_options
from scribe_cli.data import read_counts
from scribe_cli.render import render
from scribe_cli.standata import stan_data


def scaled_program(program: str) -> str:
    decl = "  vector[G] log_mu;"
    assert decl in program, "the program has no plain log_mu declaration"
    program = program.replace(decl, "  vector<offset=log_mu_hat, multiplier=log_mu_se>[G] log_mu;", 1)
    end_of_data = "\n}\n\ntransformed data {"
    assert end_of_data in program
    return program.replace(end_of_data, "\n  vector[G] log_mu_hat;\n  vector<lower=0>[G] log_mu_se;" + end_of_data, 1)


def gene_scales(X) -> tuple[np.ndarray, np.ndarray]:
    C = X.shape[0]
    mean = np.asarray(X.mean(axis=0)).ravel()
    sq = np.asarray(X.multiply(X).mean(axis=0)).ravel()
    var = np.maximum(sq - mean**2, mean)  # at least Poisson
    seen = mean > 0
    hat = np.where(seen, np.log(np.where(seen, mean, 1.0)), np.log(0.5 / C))
    se = np.where(seen, np.sqrt(var / (C * np.where(seen, mean, 1.0) ** 2)), 1.0)
    return hat, np.minimum(se, 1.0)


def run(model, data, warmup, draws, seed):
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        fit = model.sample(data=data, chains=1, iter_warmup=warmup, iter_sampling=draws, save_warmup=True,
                           seed=seed, output_dir=tmp, show_progress=False, show_console=False)
        wall = time.monotonic() - t0
        steps = fit.draws_pd(inc_warmup=True)["n_leapfrog__"].to_numpy()
        step_size = float(fit.step_size[0])
    return {"warmup 1-100": int(steps[:100].sum()), "warmup 101-end": int(steps[100:warmup].sum()),
            "sampling": int(steps[warmup:].sum()), "steps/draw": float(steps[warmup:].mean()),
            "step size": step_size, "wall s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("h5ad", type=Path)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    counts = read_counts(args.h5ad)
    # the CLI's defaults (a p per gene with the Gaussian hierarchy), through its own option parser
    params = run_command.make_context("run", [str(args.h5ad), "--model", "nbdm"]).params
    config = model_config_from_options(**{k: v for k, v in params.items() if k in MODEL_OPTION_NAMES})
    program = render(config)
    data = stan_data(config, counts)
    hat, se = gene_scales(counts.X)
    variants = {"plain": (compile_program(program, name="nbdm").model, data),
                "scaled": (compile_program(scaled_program(program), name="nbdm_scaled").model,
                           {**data, "log_mu_hat": hat, "log_mu_se": se})}
    print(f"{args.h5ad.name}: {counts.X.shape[0]} x {counts.X.shape[1]}, log_mu_se from {se.min():.4f} to {se.max():.2f}",
          file=sys.stderr)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, m, d, args.warmup, args.draws, args.seed) for name, (m, d) in variants.items()}
        rows = {name: f.result() for name, f in futures.items()}
    keys = list(next(iter(rows.values())))
    print("| variant | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
