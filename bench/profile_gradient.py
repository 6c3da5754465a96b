"""Where one gradient's time goes: Stan `profile` blocks around the model block's priors and likelihood.

Renders a configuration as `scribe run` would (CLI defaults for the p prior unless --options says otherwise), wraps
the model block's statements before the likelihood in profile("priors") and the likelihood statement in
profile("likelihood"), runs one chain x (--warmup + --samples) on an h5ad's counts, and prints per gradient: the
two sections (forward and reverse), and the rest (transformed parameters, whose declarations cannot sit inside a
profile block, and the sampler) as the chain's warmup and sampling time over its gradients minus the two. One chain on one
core: run it alone, or read its seconds as upper bounds.

    python bench/profile_gradient.py ../shared/data/pbmc_1k_v3.h5ad --model nbdm
    python bench/profile_gradient.py ../shared/data/pbmc_1k_v3.h5ad --model nbdm --options '{"native_gradients": false}'

`--perf` runs the program as `scribe run` compiles it under Linux `perf record` instead (one chain, no adaptation,
unit metric, a fixed tiny step and tree depth 5, as bench/likelihood_scaling.py times gradients) and prints the
functions that take the most samples: what the profile blocks cannot split (transcendentals, the tape, CSV output).

    python bench/profile_gradient.py ../shared/data/pbmc_1k_v3.h5ad --model nbdm --perf
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def with_profiles(program: str) -> str:
    """The model block's priors and its likelihood statement (under `if (!prior_only)`, or the first top-level
    `target +=`) in two profile blocks."""
    start = program.index("\nmodel {\n") + len("\nmodel {\n")
    end = program.index("\n}\n", start)
    body = program[start:end]
    lik = re.search(r"^  if \(!prior_only\) \{$|^  target \+= ", body, flags=re.M)  # the likelihood statement
    if lik is None:
        raise SystemExit("no `target +=` likelihood statement in the model block")
    wrapped = ('  profile("priors") {\n' + body[:lik.start()] + '  }\n  profile("likelihood") {\n'
               + body[lik.start():] + "\n  }")
    return program[:start] + wrapped + program[end:]


def perf_report(exe: str, data: dict, iterations: int, seed: int, top: int = 25) -> None:
    """`perf record` one fixed-step chain of ``exe`` and print its ``top`` functions by self time."""
    from cmdstanpy import write_stan_json

    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "data.json"
        write_stan_json(str(data_file), data)
        run = [exe, "sample", "num_warmup=0", f"num_samples={iterations}", "adapt", "engaged=0", "algorithm=hmc",
               "engine=nuts", "max_depth=5", "stepsize=0.001", "metric=unit_e", "data", f"file={data_file}",
               "init=0.5", "output", f"file={Path(tmp) / 'out.csv'}", "random", f"seed={seed}"]
        perf_data = str(Path(tmp) / "perf.data")
        subprocess.run(["perf", "record", "-q", "-o", perf_data, *run], check=True, capture_output=True)
        report = subprocess.run(["perf", "report", "-i", perf_data, "--no-children", "--sort", "symbol", "--stdio"],
                                check=True, capture_output=True, text=True).stdout
    rows = [line for line in report.splitlines() if line.strip() and not line.startswith("#") and "%" in line]
    print("\n".join(row[:160] for row in rows[:top]))


def main() -> None:
    import pandas as pd

    from scribe_cli.cache import compile_program
    from scribe_cli.cli_options import default_prob_prior
    from scribe_cli.config import ModelConfig, validate
    from scribe_cli.data import read_counts
    from scribe_cli.render import render
    from scribe_cli.standata import stan_data

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("h5ad", type=Path)
    ap.add_argument("--model", default="nbdm")
    ap.add_argument("--options", default="{}", help="more ModelConfig options, as JSON")
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--perf", action="store_true", help="sample the shipped program under `perf record` instead")
    args = ap.parse_args()
    options = {"model": args.model, **json.loads(args.options)}
    options.setdefault("prob_prior", default_prob_prior(options.get("parameterization", "canonical")))
    config = validate(ModelConfig(**options))
    # read as `scribe run` reads it, so that a joint model (options "dataset_key") gets its cells' datasets
    counts = read_counts(args.h5ad, dataset_key=config.dataset_key)
    X = counts.X
    data = stan_data(config, counts)
    if args.perf:
        perf_report(compile_program(render(config), name=args.model).model.exe_file, data, args.samples, args.seed)
        return
    model = compile_program(with_profiles(render(config)), name="gradient").model
    with tempfile.TemporaryDirectory() as tmp:
        t = time.monotonic()
        here = os.getcwd()
        os.chdir(tmp)  # the driver writes profile.csv to its working directory
        try:
            fit = model.sample(data=data, chains=1, iter_warmup=args.warmup, iter_sampling=args.samples,
                               seed=args.seed, output_dir=tmp, show_progress=False, save_warmup=True)
        finally:
            os.chdir(here)
        wall = time.monotonic() - t
        profile = pd.read_csv(Path(tmp) / "profile.csv")
        steps = int(fit.method_variables()["n_leapfrog__"].sum())
        timing = next(iter(fit.time.values())) if isinstance(fit.time, dict) else fit.time[0]  # Stan's own timer
        chain_seconds = float(timing["warmup"] + timing["sampling"])
    per = {}
    for _, row in profile.iterrows():
        calls = row["autodiff_calls"]
        per[row["name"]] = dict(ms=1e3 * row["total_time"] / calls, forward_ms=1e3 * row["forward_time"] / calls,
                                reverse_ms=1e3 * row["reverse_time"] / calls, calls=int(calls))
    total_ms = 1e3 * chain_seconds / steps
    rest = total_ms - sum(v["ms"] for v in per.values())
    print(json.dumps({"config": options, "cells": X.shape[0], "genes": X.shape[1], "gradients": steps,
                      "chain_seconds": round(chain_seconds, 2), "wall_seconds": round(wall, 2),
                      "ms_per_gradient": round(total_ms, 3), "sections": per,
                      "rest_ms (transformed parameters, sampler)": round(rest, 3)}, indent=2))


if __name__ == "__main__":
    main()
