"""The joint two-dataset model's coordinates: log mean per (gene, dataset) with the capture shift (shipped,
plan.samples_dataset_log_mean) against r and p's standardised deviations with per-cell capture (the form before
it, `--r-coordinates`).

The seed's joint model (zinbvcp, `--organism human`, horseshoe on expression, gaussian on p, NEG on the gate
across datasets). The likelihood pins each (gene, dataset)'s mean mu = r p / (1 - p) times each cell's capture:
in (r, z) coordinates the r x p and mean x capture ridges that the single-dataset programs left behind with
log-mean coordinates and the capture shift (docs/models.md, "Parameterizations").
  log_mean   render(config) as `scribe run` compiles it, started by fit.capture_starts
  z          the same with mean_coordinates=False: r and p through their non-centred hierarchies, eta per cell
Each runs one NUTS chain (warmup saved) and prints one JSON line: leapfrog steps in warmup and per draw,
divergences after warmup, the adapted step size, and the six smallest bulk ESS; `--keep DIR` keeps the CSV.
The dataset-level gate's columns are centred where the data pin them (plan.splits_dataset_gate) in both.

    python bench/joint_coordinates.py /tmp/scribe-scale-data/zinbvcp_d2_1000x500_t20000.h5ad log_mean --seed 1
    python bench/joint_coordinates.py /tmp/scribe-scale-data/zinbvcp_d2_1000x500_t20000.h5ad z --seed 1

(the data: `python bench/scale.py --only joint --sizes 1000x500 ...` simulates them into /tmp/scribe-scale-data)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scribe_cli.cache import compile_program  # noqa: E402
from scribe_cli.config import ModelConfig, validate  # noqa: E402
from scribe_cli.data import read_counts  # noqa: E402
from scribe_cli.fit import capture_starts  # noqa: E402
from scribe_cli.render import render  # noqa: E402
from scribe_cli.standata import stan_data  # noqa: E402

JOINT = dict(model="zinbvcp", organism="human", dataset_key="dataset", expression_dataset_prior="horseshoe",
             prob_dataset_prior="gaussian", zero_inflation_dataset_prior="neg", prob_prior="none")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("h5ad", type=Path)
    ap.add_argument("variant", choices=["log_mean", "z"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--keep", help="write the chain's CSV here (kept) instead of a temporary directory")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="change the joint configuration (ModelConfig fields), e.g. expression_dataset_prior=gaussian "
                         "or gated_mean=false")
    args = ap.parse_args()
    options = {**JOINT, **{k: _value(v) for k, v in (kv.split("=", 1) for kv in args.set)}}
    config = validate(ModelConfig(**options, mean_coordinates=args.variant == "log_mean"))
    counts = read_counts(args.h5ad, dataset_key="dataset")
    data = stan_data(config, counts)
    model = compile_program(render(config), name=f"joint_{args.variant}").model
    with tempfile.TemporaryDirectory() as tmp:
        row = run_chain(model, data, args.seed, args.warmup, args.draws, args.keep or tmp)
    print(json.dumps({"variant": args.variant, "set": args.set, **row}))


def _value(text: str):
    """A --set value: true / false as booleans (gated_mean=false), numbers as numbers, the rest as text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text


def run_chain(model, data: dict, seed: int, warmup: int, draws: int, output_dir: str) -> dict:
    """One NUTS chain from fit.capture_starts, warmup saved: the figures this script prints (also used by
    bench/joint_signal_scales.py, which runs edited programs the same way)."""
    inits = capture_starts(model, data, 1, seed)
    t = time.monotonic()
    fit = model.sample(data=data, chains=1, inits=inits[0] if inits else None, iter_warmup=warmup,
                       iter_sampling=draws, seed=seed, output_dir=output_dir, show_progress=False, save_warmup=True)
    mv = fit.method_variables()
    summary = fit.summary()
    steps = mv["n_leapfrog__"].ravel()
    ess = summary["ESS_bulk"].drop("lp__", errors="ignore").sort_values().head(6)
    return {"seed": seed, "wall_s": round(time.monotonic() - t, 1),
            "steps_warmup": int(steps[:warmup].sum()),
            "steps_per_draw": round(float(steps[warmup:].mean()), 1),
            "divergences": int(mv["divergent__"].ravel()[warmup:].sum()),
            "stepsize": float(mv["stepsize__"].ravel()[-1]),
            "lowest_bulk_ess": {k: round(float(v), 1) for k, v in ess.items()}}


if __name__ == "__main__":
    main()
