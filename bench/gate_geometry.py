"""What the gate hierarchy's coordinates do to NUTS on real droplet data (docs/performance.md).

`--model zinb --gate-prior neg` on PBMC (../shared/data/pbmc_1k_v3.h5ad, the top genes by UMIs). One
program, four choices of which genes are sampled centred, passed as data (scribe_cli/centring.py):
  noncentred  every gene non-centred (the template before the split)
  centred     every gene centred
  split-free  centred where per-gene ZINB fits with a free p pin the gate (a fit that ignores the model's p)
  split       the shipped choice: the fits share one p where the model does (--prob-prior none)
`--prob-prior none` (default) is the spec's shared p; `--prob-prior gaussian` is the CLI's default p per gene,
and `--parameterization` says which coordinates of (r, p) NUTS moves in.
Each runs one NUTS chain (warmup 150, 100 draws, warmup saved) and reports the mean leapfrog steps per
post-warmup iteration (gradients per draw), the adapted step size, divergences, the smallest bulk ESS of the
gate, its scales and r, and the genes with the smallest ESS.

    python bench/gate_geometry.py [--genes 300] [--warmup 150] [--draws 100] [--choices split noncentred]
    python bench/gate_geometry.py --choices split --prob-prior gaussian --parameterization mean-prob
    python bench/gate_geometry.py --choices split --prob-prior gaussian --seeds 1 2 3 [--neg-local-scales]

`--neg-local-scales` samples NEG's local scales (psi_raw) instead of integrating them out (plan.marginal_neg).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "pbmc_1k_v3.h5ad"


def choice_data(name: str, X, G: int, shared_p: bool) -> dict:
    from scribe_cli import centring

    if name == "noncentred":
        centred = np.zeros(G, bool)
    elif name == "centred":
        centred = np.ones(G, bool)
    else:
        # split: the fits share one p where the model does (what stan_data ships); split-free never does
        se, lr = centring.gate_evidence(X, shared_p=name == "split" and shared_p)
        centred = (se < centring.CENTRED_SD) & (lr > centring.CENTRED_LR)
    return {"gate_n_centred": int(centred.sum()), "gate_centred_idx": np.flatnonzero(centred) + 1,
            "gate_noncentred_idx": np.flatnonzero(~centred) + 1}


def main() -> None:
    import arviz as az

    from scribe_cli.cache import compile_program
    from scribe_cli.config import ModelConfig, validate
    from scribe_cli.data import read_counts, select
    from scribe_cli.render import render
    from scribe_cli.standata import stan_data

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--genes", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--parameterization", default="canonical")
    ap.add_argument("--prob-prior", default="none",
                    help="none: one shared p (the spec's model); gaussian|horseshoe|neg: p per gene (the CLI default "
                         "is gaussian)")
    ap.add_argument("--choices", nargs="*", default=["noncentred", "centred", "split-free", "split"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[1])
    ap.add_argument("--neg-local-scales", action="store_true", help="sample psi (psi_raw): the form before "
                    "plan.marginal_neg")
    args = ap.parse_args()
    config = validate(ModelConfig(model="zinb", gate_prior="neg", parameterization=args.parameterization,
                                 prob_prior=args.prob_prior, neg_marginal=not args.neg_local_scales))
    counts = select(read_counts(DATA), top_genes=args.genes)
    G = counts.n_genes
    model = compile_program(render(config), name="zinb_neg").model
    base = stan_data(config, counts)
    rows = []
    for name, seed in ((n, s) for n in args.choices for s in args.seeds):
        data = {**base, **choice_data(name, counts.X, G, not config.gene_specific_p)}
        with tempfile.TemporaryDirectory() as tmp:
            fit = model.sample(data=data, chains=1, iter_warmup=args.warmup, iter_sampling=args.draws,
                               save_warmup=True, seed=seed, output_dir=tmp, show_progress=False)
            stats = fit.method_variables()
            post = az.from_cmdstanpy(fit).posterior
        steps = stats["n_leapfrog__"][args.warmup:].mean()
        ess = {v: az.ess(post[v]).to_array().values.ravel() for v in ("gate", "gate_psi", "r")}
        worst = np.argsort(ess["gate"])[:5]
        rows.append({"choice": name, "seed": seed, "centred_genes": data["gate_n_centred"], "leapfrog_per_draw": float(steps),
                     "step_size": float(stats["stepsize__"][-1].ravel()[0]),
                     "divergences_after_warmup": int(stats["divergent__"][args.warmup:].sum()),
                     **{f"min_ess_{v}": float(np.min(e)) for v, e in ess.items()},
                     "genes_ess_below_10": int(np.sum(np.minimum.reduce(list(ess.values())) < 10)),
                     "worst_gate_genes": [counts.genes[i] for i in worst]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"PBMC top {G} genes, zinb --gate-prior neg --parameterization {args.parameterization} "
          f"--prob-prior {args.prob_prior}{' --neg-local-scales' if args.neg_local_scales else ''}, "
          f"1 chain x ({args.warmup} + {args.draws})\n")
    print("| genes sampled | seed | centred genes | leapfrog / draw | step size | divergences | min ESS gate | "
          "min ESS psi | min ESS r | genes with ESS < 10 | lowest-ESS gates |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['choice']} | {r['seed']} | {r['centred_genes']} | {r['leapfrog_per_draw']:.0f} | {r['step_size']:.4f} | "
              f"{r['divergences_after_warmup']} | {r['min_ess_gate']:.0f} | {r['min_ess_gate_psi']:.0f} | "
              f"{r['min_ess_r']:.0f} | {r['genes_ess_below_10']} | {', '.join(r['worst_gate_genes'])} |")


if __name__ == "__main__":
    main()
