"""zinb --gate-prior neg with each gene's gate summed out of the likelihood (plan.integrates_gate).

One compiled program serves every check here. The likelihood it adds to target is tested against a dense
reference that shares no code with it: the per-cell ZINB log pmf (scipy) summed over the cells, exp'd and
integrated over logit(gate) against the NEG marginal density by adaptive quadrature (scipy.integrate.quad), to the
infinite tails. Its gradient is Stan's finite-difference test; its gate draws (generated quantities) are checked
against each gene's conditional mean given the draw, and under prior_only against the NEG prior itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import integrate, special, stats

from helpers import small_counts
from scribe_cli.config import ModelConfig, validate
from scribe_cli.gate_grid import log_gene_integrals, neg_marginal_logpdf
from scribe_cli.plan import integrates_gate
from scribe_cli.render import render
from scribe_cli.standata import stan_data

CONFIG = validate(ModelConfig(model="zinb", gate_prior="neg"))


@pytest.fixture(scope="module")
def counts() -> sp.csr_matrix:
    """helpers.small_counts (40 cells x 15 genes, gene 5 without counts) and a 16th gene without zeros, whose
    gate the counts push to 0 from one side."""
    U = small_counts(4).toarray()
    full = np.random.default_rng(4).poisson(30.0, size=(U.shape[0], 1)) + 1
    return sp.csr_matrix(np.hstack([U, full]))


@pytest.fixture(scope="module")
def model(compile_stan):
    text = render(CONFIG)
    assert integrates_gate(CONFIG) and "gate_z" not in text and "zinb_gate_quadrature(C, gene_nonzero" in text
    return compile_stan(text, name="zinb_summed_gate")


def _log_dense_integral(u: np.ndarray, r: float, p: float, loc: float, tau: float) -> float:
    """log of the integral over d = logit(gate) - loc of NEG(d) prod_c ZINB(u_c | r, p, gate), independently of
    the grid: quad on [-60, 60] (breaks at the prior's kink and the likelihood's peak) and the exact limits
    beyond, where the gate is 0 (the NB alone) or 1 (all-zero counts only), times the prior mass there."""
    nb = stats.nbinom.logpmf(u, r, 1 - p)  # NumPyro's NB(r, p): scipy's success probability is 1 - p

    def loglik(d):
        g = special.expit(loc + d)
        with np.errstate(divide="ignore"):  # a gate that rounds to 1: log(1 - gate) = -inf, exp'd to 0
            zero = np.logaddexp(np.log(g), np.log1p(-g) + nb)
            return float(np.sum(np.where(u == 0, zero, np.log1p(-g) + nb)))

    grid = np.linspace(-60, 60, 2401)
    values = np.array([loglik(d) + neg_marginal_logpdf(d, tau) for d in grid])
    peak, top = grid[np.argmax(values)], values.max()
    body, _ = integrate.quad(lambda d: np.exp(loglik(d) + neg_marginal_logpdf(d, tau) - top), -60, 60,
                             points=sorted({0.0, float(peak)}), limit=400, epsabs=0, epsrel=1e-10)
    tail, _ = integrate.quad(lambda d: np.exp(neg_marginal_logpdf(d, tau)), 60, np.inf, epsrel=1e-10)
    gate0 = tail * np.exp(np.sum(nb) - top)
    gate1 = tail * np.exp(-top) if np.all(u == 0) else 0.0
    return top + np.log(body + gate0 + gate1)


def test_summed_likelihood_matches_dense_integral(model, counts):
    """The likelihood term (log density with prior_only = 0 minus with 1: the priors cancel exactly) against the
    dense integral, at three points: near the data, a high gate centre and a low one with a small p."""
    U = counts.toarray()
    G = U.shape[1]
    data = stan_data(CONFIG, counts)
    # 40 cells: the grid's 0.1 cap (152 nodes a side, a multiple of the coarse grid's stride 4)
    assert (data["gate_nodes"], data["gate_coarse_nodes"]) == (305, 77)
    rng = np.random.default_rng(11)
    means = U.mean(axis=0) + 0.05
    for p, loc in ((0.6, -3.0), (0.35, 0.5), (0.05, -7.0)):
        log_mu = np.log(means * rng.uniform(0.7, 1.4, size=G))
        params = {"log_mu": log_mu.tolist(), "p": p, "gate_loc": loc}
        lp = [model.log_prob(params=params, data={**data, "prior_only": k}, sig_figs=18).iloc[0, 0] for k in (0, 1)]
        r = np.exp(log_mu) * (1 - p) / p
        reference = sum(_log_dense_integral(U[:, g], r[g], p, loc, CONFIG.neg_tau) for g in range(G))
        # The grid's error: a gene's conditional here is >= 2 / sqrt(40) = 0.3 logit units wide against spacing
        # 0.1, so the trapezoid's geometric error (exp(-2 pi^2 (0.3 / 0.1)^2)) is nil; what is left is the
        # O(h^2) of the prior's kink after its correction: measured 1e-6 to 2.3e-5 nat over the 16 genes. Without
        # the kink's correction a gene whose counts barely move its gate is off by h^2 / 6 = 1.7e-3 nat.
        assert abs((lp[0] - lp[1]) - reference) < 5e-4, (p, loc, lp[0] - lp[1], reference)


def test_summed_gradient_passes_stans_test(model, counts):
    """Stan's finite-difference test of the gradient (the C++ partials d/dlog0, d/dgate_loc) at two inits; again
    with the coarse grid's kink coefficient 3,000 times its value, so that the correction's own partials (a
    ~1e-5 share of the shipped sum) move the gradient by whole units and an error in them fails."""
    data = stan_data(CONFIG, counts)
    G = counts.shape[1]
    for kink in (1.0, 3000.0):
        for p, loc in ((0.5, -2.0), (0.2, 1.0)):
            inits = {"log_mu": np.linspace(-1, 3, G).tolist(), "p": p, "gate_loc": loc}
            out = model.diagnose(inits=inits, data={**data, "gate_coarse_kink": kink * data["gate_coarse_kink"]},
                                 epsilon=1e-6, error=1e-5, require_gradients_ok=True)
            assert len(out) == G + 2  # every coordinate was tested (and passed: require_gradients_ok)


def test_gate_draws_follow_their_conditional(model, counts, tmp_path):
    """The generated gates: given each draw, gene g's gate has the grid's conditional; its mean over the chain
    equals the mean of the conditional means (numpy, on a 0.005 grid) up to the draws' own noise. And under
    prior_only the deviations follow the NEG prior: P(|d| < 1) against its integral."""
    data = stan_data(CONFIG, counts)
    U = counts.toarray()
    C, G = U.shape
    fit = model.sample(data=data, chains=1, iter_warmup=300, iter_sampling=400, seed=3, show_progress=False,
                       output_dir=str(tmp_path))
    gate, log_mu = fit.stan_variable("gate"), fit.stan_variable("log_mu")
    p, loc = fit.stan_variable("p"), fit.stan_variable("gate_loc")
    m = (U > 0).sum(axis=0)
    d = np.arange(-15, 15.0001, 0.005)
    cond_mean, cond_var = np.zeros(G), np.zeros(G)
    for i in range(len(p)):
        r = np.exp(log_mu[i]) * (1 - p[i]) / p[i]
        f0 = np.exp(r * np.log1p(-p[i]))
        s = special.expit(loc[i] + d)
        lw = (neg_marginal_logpdf(d)[None, :] + (C - m)[:, None] * np.log(s + (1 - s) * f0[:, None])
              + m[:, None] * np.log1p(-s)[None, :])
        w = np.exp(lw - lw.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        e = w @ s
        cond_mean += e / len(p)
        cond_var += (w @ s**2 - e**2) / len(p)
    # given the draws of (mu, p, gate_loc) the gates are independent draws: their mean's sd is
    # sqrt(E[Var(gate | draw)] / N); 4.5 sd leaves a 1-in-150,000 chance per gene of a false alarm
    sd = np.sqrt(cond_var / len(p))
    assert np.all(np.abs(gate.mean(axis=0) - cond_mean) <= 4.5 * sd + 1e-4), (gate.mean(axis=0), cond_mean, sd)
    assert gate[:, 15].mean() < 0.05 and gate[:, 5].mean() > 0.3  # no zeros: no gate; no counts: a large one

    prior = model.sample(data={**data, "prior_only": 1}, chains=1, iter_warmup=100, iter_sampling=400, seed=4,
                         show_progress=False, output_dir=str(tmp_path))
    dev = prior.stan_variable("gate_link") - prior.stan_variable("gate_loc")[:, None]
    inside, _ = integrate.quad(lambda x: np.exp(neg_marginal_logpdf(x)), -1, 1, points=[0.0])
    # 400 x 16 draws independent given gate_loc (the prior's weights do not depend on it): binomial sd
    n = dev.size
    assert abs(np.mean(np.abs(dev) < 1) - inside) < 4.5 * np.sqrt(inside * (1 - inside) / n)


def test_shortcuts_match_every_node(model):
    """The C++ skips nodes (walks that stop 36 nats down, a power series on the left) and sums a gene on the
    coarse grid (every 4th node) where its conditional is broad: on 1,000 cells with genes of every kind (no zero
    inflation, strong inflation, sparse, all zeros, no zeros) its sum equals numpy's sum over every node of the
    grid that numpy's copy of the rule chooses, at gate centres from -9 to 3 and p from 0.02 to 0.9. With the
    coarse grid replaced by the fine one (as gate_grid passes it where the prior is too narrow), numpy's sum over
    every fine node. (numpy's copy of the rule: gate_grid.log_gene_integrals.)"""
    rng = np.random.default_rng(8)
    C, G = 1000, 40
    mean = np.exp(rng.uniform(-4, 4, G))
    gate = np.where(rng.uniform(size=G) < 0.5, rng.uniform(0, 0.9, G), 0.0)
    U = rng.negative_binomial(2.0, 2.0 / (2.0 + mean), size=(C, G)) * (rng.uniform(size=(C, G)) >= gate)
    U[:, 0], U[:, 1] = 0, rng.poisson(50, C) + 1
    U[:3, 2], U[3:, 2] = 1, 0  # three counts in 1,000 cells
    counts = sp.csr_matrix(U)
    data = stan_data(CONFIG, counts)
    one_grid = {**data, "gate_coarse_nodes": data["gate_nodes"], "gate_coarse_node": data["gate_node"],
                "gate_coarse_log_w": data["gate_log_w"]}
    Z, N = C - (U > 0).sum(axis=0), (U > 0).sum(axis=0)
    chosen = []
    for p, loc, spread in ((0.5, -5.0, 1.0), (0.9, -9.0, 3.0), (0.02, 3.0, 0.3), (0.3, -1.0, 2.0)):
        log_mu = np.log(U.mean(axis=0) + 0.01) + rng.normal(0, spread, G)
        params = {"log_mu": log_mu.tolist(), "p": p, "gate_loc": loc}
        r = np.exp(log_mu) * (1 - p) / p
        log0 = r * np.log1p(-p)
        two_level, on_coarse = log_gene_integrals(data, loc, log0, Z, N)
        fine, _ = log_gene_integrals(one_grid, loc, log0, Z, N)
        chosen.append(on_coarse.mean())
        nb = stats.nbinom.logpmf(U, r, 1 - p)
        # what a count adds over a zero for the NB itself (log P(u) - log P(0)), and the zeros' log0
        rest = np.sum(np.where(U > 0, nb - log0, 0.0)) + N @ log0
        for grid_data, gene_sums in ((data, two_level), (one_grid, fine)):
            lp = [model.log_prob(params=params, data={**grid_data, "prior_only": k}, sig_figs=18).iloc[0, 0]
                  for k in (0, 1)]
            reference = gene_sums.sum() + rest
            # the shortcuts' error is ~1e-8 nat per gene (the series' relative error) and e^-36 (the walks): 4e-7
            # over 40 genes; the totals (~1e5 nat) summed in another order round at ~1e-8. The two grids differ
            # by 2e-6 to 4.6e-5 nat in all over the genes that take the coarse one (2.9e-5 or more at three of the
            # four points: every gene on the fine grid fails there) and by up to 2.9 nat on a gene that does not
            # (one coarse gene too many fails).
            assert abs((lp[0] - lp[1]) - reference) < 1e-5, (p, loc, lp[0] - lp[1], reference)
    assert 0.2 < np.mean(chosen) < 0.8  # both grids were exercised
