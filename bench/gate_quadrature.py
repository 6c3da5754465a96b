"""`--model zinb --gate-prior neg` with each gene's gate summed out of the likelihood (plan.integrates_gate, the
default since session 25; session 24 ran it here as an experiment) against the sampled gates.

Under zinb (no capture) the gate of gene g enters only through its zero and non-zero cell counts,
(C - m_g) log(pi + (1 - pi) f0_g) + m_g log(1 - pi), so its integral against the gate prior is one dimension per
gene: a trapezoid on a fixed grid of logit(pi) - gate_loc (scribe_cli/gate_grid.py), value and gradient in C++
(stan/cpp/gate_quadrature.hpp). NUTS then samples log mu, p and gate_loc only. The one-sided gate posteriors
that bench/hessian_spectrum.py found bounding the step size are gone from the sampler's coordinates. One chain
(or `--chains`), seed and lengths as that script's baseline; one JSON line. `--diagnose` runs Stan's gradient
test on the program instead; `--h` replaces the grid by one of that spacing (the session-24 weights). With a
baseline chain of the sampled-gate program kept by bench/hessian_spectrum.py (`--keep DIR`): `--accuracy DIR`
compares grids' per-gene integrals (spacing 0.2, 0.1, 0.05 with session 24's weights, and the shipped grid) with a
0.005 grid at three of its draws (numpy, no sampling),
`--fixed-gates DIR` runs the sampled-gate program with every gate fixed at its posterior mean there (the bound on
what removing the gates from the sampler can give) and `--baseline DIR` compares posterior means.

    python bench/gate_quadrature.py ../shared/data/pbmc_1k_v3.h5ad --top-genes 1500 --seed 1
    python bench/gate_quadrature.py ../shared/data/pbmc_1k_v3.h5ad --top-genes 1500 --accuracy /tmp/hess_zinb
    python bench/gate_quadrature.py ../shared/data/pbmc_1k_v3.h5ad --top-genes 1500 --fixed-gates /tmp/hess_zinb
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

from hessian_spectrum import kept_warmup, sampling_csv  # noqa: E402

import scribe_cli.cache as cache  # noqa: E402
from scribe_cli.config import ModelConfig, validate  # noqa: E402
from scribe_cli.data import read_counts, select  # noqa: E402
from scribe_cli.gate_grid import gate_grid, log_gene_integrals, neg_marginal_logpdf  # noqa: E402
from scribe_cli.plan import integrates_gate  # noqa: E402
from scribe_cli.render import render  # noqa: E402
from scribe_cli.standata import stan_data  # noqa: E402

LO, HI = -15.0, 15.0


def grid(h: float) -> tuple[np.ndarray, np.ndarray]:
    node = np.arange(LO, HI + h / 2, h)
    log_w = neg_marginal_logpdf(node) + np.log(h)
    z = np.linspace(np.arcsinh(-1e6), np.arcsinh(LO - h / 2), 200001)  # the left tail's mass, on the asinh scale
    left = np.trapezoid(np.exp(neg_marginal_logpdf(np.sinh(z))) * np.cosh(z), z)
    log_w[0] = np.logaddexp(log_w[0], np.log(left))
    return node, log_w


class Edit:
    """Text edits of a rendered program; each must match exactly once."""

    def __init__(self, text: str):
        self.text = text

    def sub(self, old: str, new: str) -> None:
        assert self.text.count(old) == 1, old
        self.text = self.text.replace(old, new)

    def cut(self, start: str, end: str) -> None:
        i = self.text.index(start)
        j = self.text.index(end, i) + len(end)
        self.text = self.text[:i] + self.text[j:]

    def without_gate_parameters(self) -> None:
        """The gate's sampled coordinates and their prior gone (gate_loc stays, as does its normal prior)."""
        self.cut("  vector[G - gate_n_centred] gate_z;", "\n")
        self.cut("  vector[gate_n_centred] gate_centred;", "\n")
        self.cut("  gate_link - gate_loc ~ neg_marginal(neg_tau);", "\n")
        self.cut("  target += sum(abs(gate_z)", "\n")
        self.cut("  vector[G] gate_psi", "\n")


def fixed_gate_program(text: str) -> str:
    """The rendered program with every gate given as data (`gate_fixed`) and no gate hierarchy."""
    e = Edit(text)
    e.sub("  int<lower=0, upper=1> prior_only;", "  vector[G] gate_fixed;\n  int<lower=0, upper=1> prior_only;")
    e.without_gate_parameters()
    e.cut("  real gate_loc;", "\n")
    e.cut("  gate_loc ~ normal(-5, 1);", "\n")
    e.cut("  vector[G] gate_link;", "vector[G] gate = inv_logit(gate_link);\n")
    e.sub("  vector[G] r;\n", "  vector[G] gate = gate_fixed;\n  vector[G] r;\n")
    return e.text


def chain_draws(directory: str) -> pd.DataFrame:
    """The sampling draws of a chain kept by bench/hessian_spectrum.py (its warmup rows dropped)."""
    csv = sampling_csv(directory)
    return pd.read_csv(csv, comment="#").iloc[kept_warmup(csv):].reset_index(drop=True)


def accuracy(counts, directory: str) -> list[dict]:
    """Per gene, the grid's log integral minus a 0.005 grid's, at three sampling draws of a kept chain (a shared p
    or one per gene): session 24's grids, the shipped fine grid alone, and the shipped two-level rule (the coarse
    grid where stan/cpp/gate_quadrature.hpp takes it, with its kink correction: gate_grid.log_gene_integrals)."""
    X = sp.csc_matrix(counts.X)
    C = X.shape[0]
    m = np.diff(X.indptr).astype(float)
    o = chain_draws(directory)
    G = m.size
    out = []
    shipped = gate_grid(C, 1.0)  # tails on both ends, the kink corrected
    for row in sorted({min(r, len(o) - 1) for r in (20, 50, len(o) - 1)}):
        p = o[[f"p.{g}" for g in range(1, G + 1)]].to_numpy()[row] if "p.1" in o else o["p"][row]
        loc = o["gate_loc"][row]
        log0 = o[[f"r.{g}" for g in range(1, G + 1)]].to_numpy()[row] * np.log1p(-p)

        def integral(node, log_w):  # every node of one grid (the shipped rule's fine-only case)
            one = {"gate_nodes": node.size, "gate_node": node, "gate_log_w": log_w, "gate_coarse_nodes": node.size}
            return log_gene_integrals(one, loc, log0, C - m, m)[0]

        ref = integral(*grid(0.005))
        rows = [(h, integral(*grid(h)), None) for h in (0.2, 0.1, 0.05)]
        rows.append(("shipped fine", integral(shipped["gate_node"], shipped["gate_log_w"]), None))
        rows.append(("shipped two-level", *log_gene_integrals(shipped, loc, log0, C - m, m)))
        for h, values, on_coarse in rows:
            d = values - ref
            out.append({"draw": int(row), "gate_loc": round(float(loc), 3), "h": h,
                        "max_abs_err": float(np.abs(d).max()), "total_err": float(d.sum()),
                        "worst_gene": int(np.argmax(np.abs(d)) + 1),
                        **({"coarse_share": round(float(on_coarse.mean()), 3)} if on_coarse is not None else {})})
    return out


def warmup_windows(n: int) -> list[tuple[int, int]]:
    """Stan's warmup stages for n >= 150 iterations: the 75-iteration fast start, the slow windows (25, 50, ...,
    the last stretched to the end) and the final 50-iteration step-size stage."""
    out, start, size, end = [(0, 75)], 75, 25, n - 50
    while start < end:
        stop = end if start + size + 2 * size > end else start + size
        out.append((start, stop))
        start, size = stop, size * 2
    return out + [(end, n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("h5ad", type=Path)
    ap.add_argument("--top-genes", type=int)
    ap.add_argument("--h", type=float, help="grid spacing on logit(gate) (default: scribe_cli/gate_grid.py's)")
    ap.add_argument("--prob-prior", default="none", help="as scribe run's (the CLI's default is gaussian)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--chains", type=int, default=1, help="two at a time, as `scribe run` on two cores")
    ap.add_argument("--diagnose", action="store_true", help="Stan's gradient test instead of a chain")
    ap.add_argument("--accuracy", metavar="DIR", help="the grid's error at a kept baseline chain's draws")
    ap.add_argument("--fixed-gates", metavar="DIR", help="gates fixed at a kept baseline chain's posterior means")
    ap.add_argument("--baseline", metavar="DIR",
                    help="compare the posterior means of the gates and log means with a kept baseline chain's")
    args = ap.parse_args()
    config = validate(ModelConfig(model="zinb", gate_prior="neg", prob_prior=args.prob_prior))
    assert integrates_gate(config)
    counts = read_counts(args.h5ad)
    if args.top_genes:
        counts = select(counts, top_genes=args.top_genes)
    if args.accuracy:
        for row in accuracy(counts, args.accuracy):
            print(json.dumps(row))
        return
    data = stan_data(config, counts)
    if args.fixed_gates:
        o = chain_draws(args.fixed_gates)
        data["gate_fixed"] = o[[f"gate.{g}" for g in range(1, data["G"] + 1)]].to_numpy().mean(axis=0)
        sampled = dataclasses.replace(config, summed_gates=False)
        model = cache.compile_program(fixed_gate_program(render(sampled)), name="zinb_fixed_gate").model
    else:  # the shipped program: the gates summed out (plan.integrates_gate)
        if args.h:
            node, log_w = grid(args.h)
            data.update(gate_nodes=int(node.size), gate_node=node, gate_log_w=log_w)
        model = cache.compile_program(render(config), name="zinb_summed_gate").model
    if args.diagnose:
        print(model.diagnose(data=data, epsilon=1e-6, error=1e-4, require_gradients_ok=False))
        return
    t = time.monotonic()
    with tempfile.TemporaryDirectory() as out:
        fit = model.sample(data=data, chains=args.chains, parallel_chains=min(args.chains, 2), iter_warmup=args.warmup,
                           iter_sampling=args.draws, seed=args.seed, show_progress=False, save_warmup=True,
                           output_dir=out)
        mv = fit.method_variables()
        steps = mv["n_leapfrog__"]  # (draws, chains), warmup included
        summary = fit.summary().drop("lp__", errors="ignore")
        means = {v: fit.stan_variable(v).mean(axis=0) for v in ("gate", "log_mu") if v in fit.stan_variables()}
        elapsed = [[float(x) for x in re.findall(r"([0-9.]+) seconds \((?:Warm-up|Sampling)\)", Path(f).read_text())]
                   for f in fit.runset.csv_files]  # per chain: warmup, sampling
    ess = summary["ESS_bulk"].sort_values().head(4)
    versus = {}
    if args.baseline:
        o = chain_draws(args.baseline)
        for v, ours in means.items():
            theirs = o[[f"{v}.{g}" for g in range(1, ours.size + 1)]].to_numpy().mean(axis=0)
            versus[v] = {"corr": round(float(np.corrcoef(ours, theirs)[0, 1]), 4),
                         "median_abs_diff": round(float(np.median(np.abs(ours - theirs))), 4),
                         "max_abs_diff": round(float(np.abs(ours - theirs).max()), 3)}
    print(json.dumps({"h": args.h, "seed": args.seed, "chains": args.chains, "wall_s": round(time.monotonic() - t, 1),
                      "steps_warmup": int(steps[:args.warmup].sum()),
                      # by Stan's warmup windows (75 iterations, then doubling metric windows from 25, 50 at the end)
                      "steps_warmup_windows": [int(steps[a:b].sum()) for a, b in warmup_windows(args.warmup)],
                      "ms_per_gradient": {"warmup": round(1000 * sum(e[0] for e in elapsed) / steps[:args.warmup].sum(), 2),
                                          "sampling": round(1000 * sum(e[1] for e in elapsed) / steps[args.warmup:].sum(), 2)},
                      "steps_per_draw": round(float(steps[args.warmup:].mean()), 1),
                      "stepsize": [float(x) for x in mv["stepsize__"][-1].ravel()],
                      "divergences": int(mv["divergent__"][args.warmup:].sum()),
                      "max_rhat": round(float(summary["R_hat"].max()), 3),
                      "lowest_bulk_ess": {k: round(float(v), 1) for k, v in ess.items()},
                      **({"versus_baseline": versus} if versus else {})}))


if __name__ == "__main__":
    main()
