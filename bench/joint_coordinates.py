"""The joint two-dataset model's coordinates, as shipped against log mean per (gene, dataset) with the capture
shift (docs/performance.md, session 18): an experiment on hand-edited program text, not a shipped option.

The seed's joint model (zinbvcp, `--organism human`, horseshoe on expression, gaussian on p, NEG on the gate
across datasets) samples r and p per (gene, dataset) through their non-centred hierarchies, and each cell's
capture on its own. The likelihood pins each (gene, dataset)'s mean mu = r p / (1 - p) times each cell's
capture: the r x p and mean x capture ridges that the single-dataset programs left behind with log-mean
coordinates and the capture shift (docs/models.md, "Parameterizations"; params/capture_organism.stan.j2). The
variants, each the rendered program with string edits (asserted to apply once):
  shipped       render(config) as `scribe run` compiles it
  logmu         log mu per (gene, dataset) sampled; logit p = log mu - log r, its Gaussian hierarchy centred
                (the Jacobian of log mu -> logit p at fixed r is 1)
  logmu_shift   logmu in units of each column's standard error (offset/multiplier from the counts), moving with
                the cells' common capture shift, the cells sampled as shift + zero-sum deviations (as the
                single-dataset programs do); starts near the data's centres, as fit.capture_starts does
Each runs one NUTS chain (warmup saved) and prints one JSON line: leapfrog steps in warmup and per draw,
divergences after warmup, the adapted step size, and the six smallest bulk ESS.

    python bench/joint_coordinates.py /tmp/scribe-scale-data/zinbvcp_d2_1000x500_t20000.h5ad shipped --seed 1
    python bench/joint_coordinates.py /tmp/scribe-scale-data/zinbvcp_d2_1000x500_t20000.h5ad logmu_shift --seed 1

(the data: `python bench/scale.py --only joint --sizes 1000x500 ...` simulates them into /tmp/scribe-scale-data)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scribe_cli.cache import compile_program  # noqa: E402
from scribe_cli.centring import log_mean_scales  # noqa: E402
from scribe_cli.config import ModelConfig, validate  # noqa: E402
from scribe_cli.data import read_counts  # noqa: E402
from scribe_cli.render import render  # noqa: E402
from scribe_cli.standata import SHIFTED_SDS, index_split, prior_mean_capture, stan_data  # noqa: E402

JOINT = dict(model="zinbvcp", organism="human", dataset_key="dataset", expression_dataset_prior="horseshoe",
             prob_dataset_prior="gaussian", zero_inflation_dataset_prior="neg", prob_prior="none")


def replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise SystemExit(f"the rendered program no longer has exactly one {old.strip()!r}: update this script")
    return text.replace(old, new)


def column_scales(counts, data: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per (gene, dataset): centring.log_mean_scales of the dataset's cells (the single-dataset programs' log mu
    coordinates), the offset moved by the prior's mean capture as standata does under the capture shift."""
    ds = np.asarray(counts.cell_dataset)
    columns = [log_mean_scales(counts.X[ds == d]) for d in range(int(ds.max()) + 1)]
    offset = np.column_stack([c["log_mu_offset"] for c in columns]) - np.log(prior_mean_capture(data))
    return offset, np.column_stack([c["log_mu_scale"] for c in columns])


def variant_program(program: str, variant: str, counts, data: dict, seed: int) -> tuple[str, dict | None]:
    """The edited program, with its extra data added to ``data``, and the chain's starting values (or None)."""
    if variant == "shipped":
        return program, None
    p = program
    mu_decl = "  matrix[G, D] log_mu; // log mean per (gene, dataset): logit p = log_mu - log r\n"
    mu_tp = ""
    inits = None
    if variant == "logmu_shift":
        loc, sd = np.asarray(data["capture_eta_loc"]), data["capture_eta_sd"]
        data.update(index_split(loc >= SHIFTED_SDS * sd, "capture_n_shifted", "capture_shifted_idx", "capture_own_idx"))
        off, sc = column_scales(counts, data)
        data.update(log_mu_offset=off, log_mu_scale=sc)
        at = p.index("\n", p.index("cell_dataset;   // dataset of each cell")) + 1
        p = p[:at] + ("  matrix[G, D] log_mu_offset;\n  matrix<lower=0>[G, D] log_mu_scale;\n"
                      "  int<lower=0, upper=C> capture_n_shifted;\n"
                      "  array[capture_n_shifted] int<lower=1, upper=C> capture_shifted_idx;\n"
                      "  array[C - capture_n_shifted] int<lower=1, upper=C> capture_own_idx;\n") + p[at:]
        p = replace_once(p, "  vector<lower=0>[C] capture_eta;                // -log(capture) per cell\n",
                         "  array[capture_n_shifted > 0] real capture_shift;\n"
                         "  sum_to_zero_vector[max(capture_n_shifted, 1)] capture_dev;\n"
                         "  vector<lower=0>[C - capture_n_shifted] capture_eta_own;\n")
        p = replace_once(p, "  vector[C] capture = exp(-capture_eta);         // capture probability per cell\n",
                         "  vector<lower=0>[C] capture_eta;\n"
                         "  capture_eta[capture_shifted_idx] = capture_eta_loc[capture_shifted_idx] + sum(capture_shift)\n"
                         "                                     + head(capture_dev, capture_n_shifted);\n"
                         "  capture_eta[capture_own_idx] = capture_eta_own;\n"
                         "  vector[C] capture = exp(-capture_eta);\n")
        mu_decl = "  matrix<offset=log_mu_offset, multiplier=log_mu_scale>[G, D] log_mu_shifted;\n"
        mu_tp = "  matrix[G, D] log_mu = log_mu_shifted + sum(capture_shift);\n"
        rng = np.random.default_rng(seed)
        n = int(data["capture_n_shifted"])
        jitter = rng.uniform(-0.1, 0.1, n)
        shift = float(jitter.mean()) if n else 0.0
        own = np.asarray(data["capture_own_idx"], int) - 1
        inits = {"capture_shift": [shift] if n else [], "capture_dev": (jitter - shift).tolist() if n else [0.0],
                 "capture_eta_own": (loc[own] + 0.05).tolist(),
                 "log_mu_shifted": (off - shift + rng.uniform(-0.1, 0.1, off.shape)).tolist()}
    elif variant != "logmu":
        raise SystemExit(f"unknown variant {variant}")
    p = replace_once(p, "  matrix[G, D] prob_dataset_z;                   // standardised deviations from the centre\n", mu_decl)
    p = replace_once(p, "  matrix[G, D] p = inv_logit(prob_dataset_loc + prob_dataset_sigma * prob_dataset_z);\n",
                     mu_tp + "  matrix[G, D] logit_p = log_mu - log(r);\n  matrix[G, D] p = inv_logit(logit_p);\n")
    p = replace_once(p, "  matrix[G, D] mu = r .* p ./ (1 - p);\n", "  matrix[G, D] mu = exp(log_mu);\n")
    p = replace_once(p, "  to_vector(prob_dataset_z) ~ std_normal();\n",
                     "  to_vector(logit_p) ~ normal(prob_dataset_loc, prob_dataset_sigma); // centred\n")
    return p, inits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("h5ad", type=Path)
    ap.add_argument("variant", choices=["shipped", "logmu", "logmu_shift"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--draws", type=int, default=100)
    args = ap.parse_args()
    config = validate(ModelConfig(**JOINT))
    counts = read_counts(args.h5ad, dataset_key="dataset")
    data = stan_data(config, counts)
    program, inits = variant_program(render(config), args.variant, counts, data, args.seed)
    model = compile_program(program, name=f"joint_{args.variant}").model
    t = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        fit = model.sample(data=data, chains=1, inits=inits, iter_warmup=args.warmup, iter_sampling=args.draws,
                           seed=args.seed, output_dir=tmp, show_progress=False, save_warmup=True)
        mv = fit.method_variables()
        summary = fit.summary()
    steps = mv["n_leapfrog__"].ravel()
    ess = summary["ESS_bulk"].drop("lp__", errors="ignore").sort_values().head(6)
    print(json.dumps({"variant": args.variant, "seed": args.seed, "wall_s": round(time.monotonic() - t, 1),
                      "steps_warmup": int(steps[:args.warmup].sum()),
                      "steps_per_draw": round(float(steps[args.warmup:].mean()), 1),
                      "divergences": int(mv["divergent__"].ravel()[args.warmup:].sum()),
                      "stepsize": float(mv["stepsize__"].ravel()[-1]),
                      "lowest_bulk_ess": {k: round(float(v), 1) for k, v in ess.items()}}))


if __name__ == "__main__":
    main()
