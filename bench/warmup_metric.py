"""Where NUTS's warmup spends its leapfrog steps on large data, window by window, with the tightest coordinates
declared plainly (`--unit-coordinates`) and in units of their standard errors from the counts (the default,
plan.scales_log_mean and plan.scales_prob_loc).

Stan's windowed adaptation starts on the unit metric (iterations 1-100: init buffer 75 and the first 25-draw
window), then re-estimates a diagonal metric at the end of windows of 25, 50, 100, 200 and 500 draws. Each
estimate is regularised towards 1e-3: (n / (n + 5)) var + 1e-3 x 5 / (n + 5). A coordinate whose posterior sd
is far below sqrt(1e-3 x 5 / 30) = 0.013 (each gene's log mean at 10,000 cells: down to 0.0008; the centre of
logit p when the genes share one p) keeps a metric scale many times its own after the early windows, and the
step size fits that mismatch. This runs one chain per (variant, seed), two at a time (one core each), with
the warmup saved, and prints the steps of each adaptation window, the sampling phase's steps per draw and
step size, the adapted metric's scale of the tightest coordinates (with their names), and the wall time:

    python bench/warmup_metric.py /tmp/scribe-scale-data/nbdm_d1_10000x2000.h5ad [--warmup 1000 --draws 200]
        [--seeds 1 2 3] [--options "--model zinb --gate-prior neg"] [--top-genes 1500] [--variants unit scaled]
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from scribe_cli.cache import check_program, compile_program
from scribe_cli.cli import run as run_command
from scribe_cli.cli_options import MODEL_OPTION_NAMES, model_config_from_options
from scribe_cli.data import read_counts, select
from scribe_cli.render import render
from scribe_cli.standata import stan_data

# Stan's default windows for 1,000 warmup iterations: init buffer 75, windows of 25, 50, 100, 200 and 500
# (the last one stretched to the term buffer), term buffer 50.
WINDOW_ENDS = [100, 150, 250, 450]


def run(model, data, parameters, warmup, draws, seed):
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        fit = model.sample(data=data, chains=1, iter_warmup=warmup, iter_sampling=draws, save_warmup=True,
                           seed=seed, output_dir=tmp, show_progress=False, show_console=False)
        wall = time.monotonic() - t0
        steps = fit.draws_pd(inc_warmup=True)["n_leapfrog__"].to_numpy()
        inv_metric = np.asarray(fit.inv_metric[0])
        step_size = float(fit.step_size[0])
        # The metric is over the unconstrained parameters in declaration order (matrices column-major), as the
        # CSV's parameter columns are; a constraint that changes the size (simplex, sum_to_zero) breaks the
        # correspondence, and then no names are given.
        columns = [c for c in fit.column_names if c.split("[")[0] in parameters]
    tightest = "-"
    if len(columns) == len(inv_metric):
        tightest = ", ".join(f"{columns[i]} {np.sqrt(inv_metric[i]):.2g}" for i in np.argsort(inv_metric)[:4])
    cuts = [0] + [e for e in WINDOW_ENDS if e < warmup] + [warmup]
    row = {f"warmup {a + 1}-{b}": int(steps[a:b].sum()) for a, b in zip(cuts, cuts[1:])}
    row.update({"warmup total": int(steps[:warmup].sum()), "steps / draw": round(float(steps[warmup:].mean()), 1),
                "step size": round(step_size, 4),
                "smallest metric sd": f"{np.sqrt(inv_metric.min()):.3g}", "tightest coordinates": tightest,
                "wall s": round(wall, 1)})
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("h5ad", type=Path)
    ap.add_argument("--options", default="--model nbdm", help="scribe run's model options")
    ap.add_argument("--top-genes", default=None)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--variants", nargs="+", default=["unit", "scaled"], choices=["unit", "scaled"])
    args = ap.parse_args()
    argv = [str(args.h5ad), *shlex.split(args.options)]
    params = run_command.make_context("run", argv).params  # the CLI's defaults, through its own option parser
    config = model_config_from_options(**{k: v for k, v in params.items() if k in MODEL_OPTION_NAMES})
    counts = read_counts(args.h5ad)
    if args.top_genes:
        counts = select(counts, top_genes=int(args.top_genes))
    variants = {}
    for name in args.variants:
        cfg = dataclasses.replace(config, scaled_coordinates=name == "scaled")
        program = render(cfg)
        variants[name] = (compile_program(program, name=f"{cfg.model}_{name}").model, stan_data(cfg, counts),
                          set(check_program(program)["parameters"]))
    print(f"{args.h5ad.name}: {counts.X.shape[0]} x {counts.X.shape[1]}, {args.options}", file=sys.stderr)
    jobs = [(name, seed) for seed in args.seeds for name in variants]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {job: pool.submit(run, *variants[job[0]], args.warmup, args.draws, job[1]) for job in jobs}
        rows = {job: f.result() for job, f in futures.items()}
    keys = list(next(iter(rows.values())))
    print("| variant | seed | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 2) + "|")
    for (name, seed), row in rows.items():
        print(f"| {name} | {seed} | " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
