"""An experiment (session 24, not shipped): `--model zinb --gate-prior neg` with each gene's gate integrated out
of the likelihood instead of sampled.

Under zinb (no capture) the gate of gene g enters only through its zero and non-zero cell counts,
(C - m_g) log(pi + (1 - pi) f0_g) + m_g log(1 - pi), so its integral against the gate prior is one dimension per
gene: here a trapezoid on a fixed grid of logit(pi) - gate_loc (`--h` apart over [-15, 15], the NEG marginal
density's weights as data, the prior mass left of the grid lumped at its first node), value and gradient in C++
(bench/native/gate_quadrature.hpp, one pass over genes x nodes). NUTS then samples log mu, p and gate_loc only.
The one-sided gate posteriors that bench/hessian_spectrum.py found bounding the step size are gone from the
sampler's coordinates. One chain, seed and lengths as that script's baseline; one JSON line. `--diagnose` runs
Stan's gradient test on the program instead. With a baseline chain of the shipped program kept by
bench/hessian_spectrum.py (`--keep DIR`): `--accuracy DIR` compares the grid's per-gene integrals with a 0.005 grid
at three of its draws (numpy, no sampling), and `--fixed-gates DIR` runs the shipped program with every gate fixed
at its posterior mean there (the bound on what removing the gates from the sampler can give).

    python bench/gate_quadrature.py ../shared/data/pbmc_1k_v3.h5ad --top-genes 1500 --seed 1
    python bench/gate_quadrature.py ../shared/data/pbmc_1k_v3.h5ad --top-genes 1500 --accuracy /tmp/hess_zinb
    python bench/gate_quadrature.py ../shared/data/pbmc_1k_v3.h5ad --top-genes 1500 --fixed-gates /tmp/hess_zinb

Not done: draws of the gates (each gene's grid posterior, in generated quantities), the tests against the
sampled-gate program's density, a template. See docs/performance.md, session 24.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import special

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

from hessian_spectrum import kept_warmup, sampling_csv  # noqa: E402

import scribe_cli.cache as cache  # noqa: E402
from scribe_cli.config import ModelConfig, validate  # noqa: E402
from scribe_cli.data import read_counts, select  # noqa: E402
from scribe_cli.render import render  # noqa: E402
from scribe_cli.standata import stan_data  # noqa: E402

HEADER = ROOT / "bench" / "native" / "gate_quadrature.hpp"
LO, HI = -15.0, 15.0


def neg_logpdf(d: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """log density of the NEG marginal (u = a = 1) at d, as the template's neg_marginal_lpdf (its asymptotic
    series beyond 25 scale units, where the closed form cancels)."""
    x = np.abs(np.asarray(d, float)) / np.sqrt(tau)
    xs, xl = np.minimum(x, 25.0), np.maximum(x, 25.0)
    near = np.log((1 + xs**2) * np.sqrt(np.pi / 2) * special.erfcx(xs / np.sqrt(2)) - xs)
    y = 1.0 / xl**2
    far = np.log(2) - 3 * np.log(xl) + np.log1p(
        y * (-6 + y * (45 + y * (-420 + y * (4725 + y * (-62370 + y * 945945))))))
    return np.where(x < 25, near, far) - np.log(2 * np.sqrt(tau))


def grid(h: float) -> tuple[np.ndarray, np.ndarray]:
    node = np.arange(LO, HI + h / 2, h)
    log_w = neg_logpdf(node) + np.log(h)
    z = np.linspace(np.arcsinh(-1e6), np.arcsinh(LO - h / 2), 200001)  # the left tail's mass, on the asinh scale
    left = np.trapezoid(np.exp(neg_logpdf(np.sinh(z))) * np.cosh(z), z)
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


def program(text: str) -> str:
    """The rendered zinb + NEG gate program with the gate integrated out."""
    e = Edit(text)
    e.sub("functions {\n", "functions {\n  real zinb_gate_quadrature(int C, data vector gene_nonzero, vector log0, "
          "real gate_loc, data vector node, data vector log_w);\n")
    e.sub("  int<lower=0, upper=1> prior_only;", "  int<lower=1> K;\n  vector[K] gate_node;\n  vector[K] gate_log_w;\n"
          "  int<lower=0, upper=1> prior_only;")
    e.without_gate_parameters()
    e.cut("  vector[G] gate_link;", "vector[G] gate = inv_logit(gate_link);\n")
    i = e.text.index("    target += zinb_pairs_loglik(")
    j = e.text.index(";\n", i) + 2
    e.text = e.text[:i] + """    vector[G] log0 = r * log1m(p);
    target += zinb_gate_quadrature(C, gene_nonzero, log0, gate_loc, gate_node, gate_log_w)
              + rise_sum(r, rise_gene, rise_k, rise_weight, tail_gene, tail_count, tail_weight, rise_limit)
              + log(p) * sum(gene_total) + dot_product(gene_nonzero, log0) - log_factorial_sum;
""" + e.text[j:]
    # each gene's gate from its grid posterior: a node by its weight, then uniform within the node's cell
    e.sub("generated quantities {\n", """generated quantities {
  vector[G] gate;
  {
    vector[K] x = gate_loc + gate_node;
    vector[K] b = log1m_inv_logit(x);
    vector[K] s = inv_logit(x);
    real half = (gate_node[2] - gate_node[1]) / 2;
    vector[G] f0 = exp(r * log1m(p));
    for (g in 1:G) {
      int k = categorical_logit_rng(gate_log_w + (C - gene_nonzero[g]) * log(s + (1 - s) * f0[g])
                                    + gene_nonzero[g] * b);
      gate[g] = inv_logit(x[k] + uniform_rng(-half, half));
    }
  }
""")
    return e.text


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
    """Per gene, the grid's log integral minus a 0.005 grid's, at three sampling draws of the kept chain."""
    X = sp.csc_matrix(counts.X)
    C = X.shape[0]
    m = np.diff(X.indptr).astype(float)
    o = chain_draws(directory)
    G = m.size
    out = []
    for row in (20, 50, len(o) - 1):
        p, loc = o["p"][row], o["gate_loc"][row]
        log0 = o[[f"r.{g}" for g in range(1, G + 1)]].to_numpy()[row] * np.log1p(-p)

        def integral(h):
            node, log_w = grid(h)
            x = loc + node
            a, b = -np.logaddexp(0, -x), -np.logaddexp(0, x)
            e = np.logaddexp(a[None, :], b[None, :] + log0[:, None])
            return special.logsumexp(log_w[None, :] + (C - m)[:, None] * e + m[:, None] * b[None, :], axis=1)

        ref = integral(0.005)
        for h in (0.2, 0.1, 0.05):
            d = integral(h) - ref
            out.append({"draw": int(row), "h": h, "max_abs_err": float(np.abs(d).max()), "total_err": float(d.sum()),
                        "worst_gene": int(np.argmax(np.abs(d)) + 1)})
    return out


def compile_with_header(text: str):
    """compile_program, with the prototype's function declared native and its header beside the pair forms'."""
    with tempfile.TemporaryDirectory(prefix="gate-quadrature-") as tmp:  # the cache entry keeps its own copies
        top = Path(tmp) / "pairs_gate_quadrature.hpp"
        top.write_text('#include "pairs.hpp"\n#include "gate_quadrature.hpp"\n')
        cache.NATIVE_FUNCTIONS = cache.NATIVE_FUNCTIONS + ("zinb_gate_quadrature",)
        cache._NATIVE_DECLARATION = re.compile(rf"\b(real|int) ({'|'.join(cache.NATIVE_FUNCTIONS)})\([^{{}};]*\);")
        cache.PAIR_FUNCTIONS = cache.PAIR_FUNCTIONS | {"zinb_gate_quadrature"}
        cache.PAIRS_SOURCES = [top, *cache.PAIRS_SOURCES, HEADER]
        cache.PAIRS_HEADER = top
        return cache.compile_program(text, name="zinb_gate_quadrature").model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("h5ad", type=Path)
    ap.add_argument("--top-genes", type=int)
    ap.add_argument("--h", type=float, default=0.1, help="grid spacing on logit(gate)")
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
    config = validate(ModelConfig(model="zinb", gate_prior="neg"))
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
        model = cache.compile_program(fixed_gate_program(render(config)), name="zinb_fixed_gate").model
    else:
        node, log_w = grid(args.h)
        data.update(K=int(node.size), gate_node=node, gate_log_w=log_w)
        model = compile_with_header(program(render(config)))
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
                      "steps_per_draw": round(float(steps[args.warmup:].mean()), 1),
                      "stepsize": [float(x) for x in mv["stepsize__"][-1].ravel()],
                      "divergences": int(mv["divergent__"][args.warmup:].sum()),
                      "max_rhat": round(float(summary["R_hat"].max()), 3),
                      "lowest_bulk_ess": {k: round(float(v), 1) for k, v in ess.items()},
                      **({"versus_baseline": versus} if versus else {})}))


if __name__ == "__main__":
    main()
