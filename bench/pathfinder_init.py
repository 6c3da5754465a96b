"""Does starting NUTS from pathfinder draws shorten warmup? Measured in gradient evaluations.

Wall time on a shared 2-core machine is noisy, so the measure is the number of log-density gradients
(leapfrog steps) spent in warmup and sampling, plus the pathfinder run's own gradients, and the
resulting min bulk ESS per 1000 gradients. Runs the rendered program of a configuration on real data.

    .venv/bin/python bench/pathfinder_init.py [DATA.h5ad] [--parameterization mean-disp] [--seeds 1,2,3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import arviz as az

from scribe_cli.cache import compile_program
from scribe_cli.config import ModelConfig, validate
from scribe_cli.data import read_counts
from scribe_cli.render import render
from scribe_cli.standata import stan_data

SETTINGS = [("random", 1000), ("pathfinder", 1000), ("random", 300), ("pathfinder", 300), ("pathfinder", 150)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default=str(Path(__file__).resolve().parents[1] / "data" / "demo_pbmc_500genes.h5ad"))
    ap.add_argument("--model", default="nbdm")
    ap.add_argument("--parameterization", default="canonical")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--settings", default=",".join(f"{i}:{w}" for i, w in SETTINGS), help="init:warmup,...")
    args = ap.parse_args()
    config = validate(ModelConfig(model=args.model, parameterization=args.parameterization))
    data = stan_data(config, read_counts(args.data))
    model = compile_program(render(config), name=config.model).model
    print(f"{args.data}: {config.describe()}")
    print("| init | warmup | seed | pathfinder grads | warmup grads | sampling grads | max R-hat | min bulk ESS | ESS per 1000 grads |")
    print("|---|---|---|---|---|---|---|---|---|")
    settings = [(s.split(":")[0], int(s.split(":")[1])) for s in args.settings.split(",")]
    for init, warmup in settings:
        for seed in map(int, args.seeds.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                pf_grads, inits = 0, None
                if init == "pathfinder":
                    pf = model.pathfinder(data=data, num_paths=4, num_single_draws=1000, psis_resample=False,
                                          seed=seed, output_dir=tmp, show_console=False)
                    inits = pf.create_inits(seed=seed, chains=4)
                    pf_grads = _pathfinder_grads(pf)
                fit = model.sample(data=data, chains=4, iter_warmup=warmup, iter_sampling=1000, seed=seed,
                                   inits=inits, save_warmup=True, output_dir=tmp, show_progress=False)
                steps = fit.draws(inc_warmup=True)[:, :, list(fit.column_names).index("n_leapfrog__")]
                warm, samp = int(steps[:warmup].sum()), int(steps[warmup:].sum())
                idata = az.from_cmdstanpy(fit)
                ess = min(float(az.ess(idata.posterior)[v].min()) for v in idata.posterior.data_vars)
                rhat = max(float(az.rhat(idata.posterior)[v].max()) for v in idata.posterior.data_vars)
                total = pf_grads + warm + samp
                print(f"| {init} | {warmup} | {seed} | {pf_grads} | {warm} | {samp} | {rhat:.3f} | {ess:.0f} | {1000 * ess / total:.2f} |",
                      flush=True)


def _pathfinder_grads(pf) -> int:
    """Sum over paths of Stan's "Best Iter: [i] ELBO (x) evaluations: (n)" console lines."""
    import re

    total = 0
    for f in pf._runset.stdout_files:  # cmdstanpy keeps the console files there
        total += sum(int(n) for n in re.findall(r"evaluations: \((\d+)\)", Path(f).read_text()))
    return total


if __name__ == "__main__":
    main()
