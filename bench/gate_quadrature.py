"""An experiment (session 24, not shipped): `--model zinb --gate-prior neg` with each gene's gate integrated out
of the likelihood instead of sampled.

Under zinb (no capture) the gate of gene g enters only through its zero and non-zero cell counts,
(C - m_g) log(pi + (1 - pi) f0_g) + m_g log(1 - pi), so its integral against the gate prior is one dimension per
gene: here a trapezoid on a fixed grid of logit(pi) - gate_loc (`--h` apart over [-15, 15], the NEG marginal
density's weights as data, the prior mass left of the grid lumped at its first node), value and gradient in C++
(bench/native/gate_quadrature.hpp, one pass over genes x nodes). NUTS then samples log mu, p and gate_loc only.
The one-sided gate posteriors that bench/hessian_spectrum.py found bounding the step size are gone from the
sampler's coordinates. One chain, seed and lengths as that script's baseline; one JSON line. `--diagnose` runs
Stan's gradient test on the program instead.

    python bench/gate_quadrature.py ../shared/data/pbmc_1k_v3.h5ad --top-genes 1500 --seed 1

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
from scipy import special

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def program(text: str) -> str:
    """The rendered zinb + NEG gate program with the gate integrated out (text edits; each must match once)."""
    def sub(old: str, new: str) -> None:
        nonlocal text
        assert text.count(old) == 1, old
        text = text.replace(old, new)

    def cut(start: str, end: str) -> None:
        nonlocal text
        i = text.index(start)
        j = text.index(end, i) + len(end)
        text = text[:i] + text[j:]

    sub("functions {\n", "functions {\n  real zinb_gate_quadrature(int C, data vector gene_nonzero, vector log0, "
        "real gate_loc, data vector node, data vector log_w);\n")
    sub("  int<lower=0, upper=1> prior_only;", "  int<lower=1> K;\n  vector[K] gate_node;\n  vector[K] gate_log_w;\n"
        "  int<lower=0, upper=1> prior_only;")
    cut("  vector[G - gate_n_centred] gate_z;", "\n")
    cut("  vector[gate_n_centred] gate_centred;", "\n")
    cut("  vector[G] gate_link;", "vector[G] gate = inv_logit(gate_link);\n")
    cut("  gate_link - gate_loc ~ neg_marginal(neg_tau);", "\n")
    cut("  target += sum(abs(gate_z)", "\n")
    i = text.index("    target += zinb_pairs_loglik(")
    j = text.index(";\n", i) + 2
    text = text[:i] + """    vector[G] log0 = r * log1m(p);
    target += zinb_gate_quadrature(C, gene_nonzero, log0, gate_loc, gate_node, gate_log_w)
              + rise_sum(r, rise_gene, rise_k, rise_weight, tail_gene, tail_count, tail_weight, rise_limit)
              + log(p) * sum(gene_total) + dot_product(gene_nonzero, log0) - log_factorial_sum;
""" + text[j:]
    cut("  vector[G] gate_psi", "\n")
    return text


def compile_with_header(text: str):
    """compile_program, with the prototype's function declared native and its header beside the pair forms'."""
    tmp = Path(tempfile.mkdtemp(prefix="gate-quadrature-"))
    top = tmp / "pairs_gate_quadrature.hpp"
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
    args = ap.parse_args()
    config = validate(ModelConfig(model="zinb", gate_prior="neg"))
    counts = read_counts(args.h5ad)
    if args.top_genes:
        counts = select(counts, top_genes=args.top_genes)
    data = stan_data(config, counts)
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
    ess = summary["ESS_bulk"].sort_values().head(4)
    print(json.dumps({"h": args.h, "seed": args.seed, "chains": args.chains, "wall_s": round(time.monotonic() - t, 1),
                      "steps_warmup": int(steps[:args.warmup].sum()),
                      "steps_per_draw": round(float(steps[args.warmup:].mean()), 1),
                      "stepsize": [float(x) for x in mv["stepsize__"][-1].ravel()],
                      "divergences": int(mv["divergent__"][args.warmup:].sum()),
                      "max_rhat": round(float(summary["R_hat"].max()), 3),
                      "lowest_bulk_ess": {k: round(float(v), 1) for k, v in ess.items()}}))


if __name__ == "__main__":
    main()
