"""Each fast likelihood form against a direct dense log density.

A program rendered with ``check_loglik=True`` adds two generated quantities: ``log_lik``, the very
expression the model block adds to target (sufficient statistics / per-cell marginalisation /
reduce_sum), and ``log_lik_dense``, a plain loop of Stan's built-in lpmfs (neg_binomial_2,
beta_neg_binomial, log_sum_exp for zero inflation and mixtures) over the full matrix. Both are evaluated
at random parameter points (fixed_param, random inits: uniform(-2, 2) on the unconstrained scale) on a
small random sparse matrix with many zeros, an all-zero cell and an all-zero gene; they must agree to
1e-8 relative. scipy (nbinom, betanbinom) recomputes the dense value from the printed parameters as an
independent third check.

Compiling costs ~10-20 s per program, so the configurations below are chosen to cover every likelihood
form and every branch of its template (NB / BNB, zero inflation, scalar / gene-specific p, K = 1 / 2,
capture via probability / odds) in a dozen programs, not the whole matrix. tests/test_recovery.py fits
some of the same programs (same text, so the compile cache serves them).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import bnb_logpmf, dense_cell_loglik, small_counts
import scipy.sparse as sp
from scipy.special import logsumexp

from scribe_cli.config import ModelConfig, validate
from scribe_cli.render import likelihood_form, render
from scribe_cli.standata import sparse_stats, stan_data

CASES = {
    # form: pairs
    "nbdm": dict(model="nbdm"),
    "zinb_horseshoe": dict(model="zinb", gate_prior="horseshoe"),
    "zinb_neg": dict(model="zinb", gate_prior="neg"),
    "bnb": dict(model="nbdm", bnb=True, overdispersion_prior="horseshoe"),
    "zinb_bnb_meandisp": dict(model="zinb", parameterization="mean-disp", bnb=True, overdispersion_prior="neg",
                              gate_prior="gaussian"),
    # form: pairs_mixture
    "mix": dict(model="nbdm", components=2, assignments=True),
    "zinb_mix_bnb": dict(model="zinb", parameterization="mean-prob", components=2, prob_prior="neg", bnb=True,
                         overdispersion_prior="horseshoe", expression_prior="horseshoe", unconstrained=True),
    # form: capture_shared_p
    "nbvcp": dict(model="nbvcp"),
    "nbvcp_odds_mix": dict(model="nbvcp", parameterization="mean-odds", components=2, assignments=True),
    # form: capture_cells
    "nbvcp_meandisp": dict(model="nbvcp", parameterization="mean-disp"),
    "zinbvcp": dict(model="zinbvcp"),
    "zinbvcp_mix_bnb": dict(model="zinbvcp", components=2, bnb=True, overdispersion_prior="horseshoe",
                            gate_prior="neg", assignments=True),
}

REL_TOL = 1e-8
N_POINTS = 3


def test_cases_cover_every_form():
    forms = {likelihood_form(validate(ModelConfig(**kw))) for kw in CASES.values()}
    assert forms == {"pairs", "pairs_mixture", "capture_shared_p", "capture_cells"}


@pytest.fixture(scope="module")
def counts() -> sp.csr_matrix:
    return small_counts(20240611)


def _point_values(fit) -> list[dict]:
    variables = fit.stan_variables()
    n = next(iter(variables.values())).shape[0]
    return [{k: np.asarray(v[i]) for k, v in variables.items()} for i in range(n)]


@pytest.mark.parametrize("name", list(CASES))
def test_fast_likelihood_matches_dense(name, compile_stan, counts, tmp_path):
    config = validate(ModelConfig(**CASES[name]))
    model = compile_stan(render(config, check_loglik=True), name=f"lik_{name.replace('-', '_')}")
    data = stan_data(config, counts, dense=True)
    U = data["counts_dense"]
    points = []
    for seed in range(N_POINTS):
        fit = model.sample(data=data, fixed_param=True, chains=1, iter_sampling=1, seed=seed + 1, sig_figs=18,
                           output_dir=str(tmp_path), show_progress=False)
        points += _point_values(fit)
    assert len(points) == N_POINTS
    values = []
    for v in points:
        fast, dense = float(v["log_lik"]), float(v["log_lik_dense"])
        assert np.isfinite(fast) and np.isfinite(dense)
        assert fast == pytest.approx(dense, rel=REL_TOL), (name, fast, dense)
        per_cell, cell_lp = dense_cell_loglik(config, v, U)
        reference = float(per_cell.sum())
        # scipy from printed values: parameters pass through text, and scipy's own rounding differs
        assert reference == pytest.approx(dense, rel=1e-7), (name, reference, dense)
        if config.assignments:
            expected = np.exp(cell_lp - logsumexp(cell_lp, axis=1, keepdims=True))
            np.testing.assert_allclose(v["assignment_prob"], expected, atol=1e-7)
            np.testing.assert_allclose(v["assignment_prob"].sum(axis=1), 1.0, atol=1e-12)
        values.append(dense)
    assert len(set(values)) == N_POINTS, "the parameter points did not differ"


def test_sparse_stats_against_dense(counts):
    U = counts.toarray()
    s = sparse_stats(counts)
    C, G = U.shape
    # pairs: every distinct non-zero (gene, count) with its number of cells
    for g, u, w in zip(s.pair_gene, s.pair_count, s.pair_weight):
        assert u > 0 and w == np.sum(U[:, g - 1] == u)
    assert s.pair_weight.sum() == np.count_nonzero(U)
    # CSR: each cell's non-zeros in gene order, and each maps to its pair
    for c in range(C):
        idx = np.arange(s.cell_start[c], s.cell_start[c + 1]) - 1
        genes = s.nz_gene[idx] - 1
        np.testing.assert_array_equal(genes, np.flatnonzero(U[c]))
        np.testing.assert_array_equal(s.nz_count[idx], U[c, genes])
        np.testing.assert_array_equal(s.pair_gene[s.nz_pair[idx] - 1] - 1, genes)
        np.testing.assert_array_equal(s.pair_count[s.nz_pair[idx] - 1], U[c, genes])
    np.testing.assert_array_equal(s.cell_total, U.sum(axis=1))


def test_bnb_mean_preserving_alpha():
    """models.md: alpha = (kappa - 1) m / r keeps the NB mean m and multiplies the NB variance m + m^2 / r by
    (r + kappa - 1) / (kappa - 2). Checked on the pmf (summed over its support) and by simulating the BNB as
    a negative binomial whose p is Beta(kappa, alpha): the mixture Stan's beta_neg_binomial(r, kappa, alpha) is."""
    rng = np.random.default_rng(1)
    support = np.arange(2_000_000, dtype=float)
    for m, r, kappa in [(0.3, 0.8, 6.0), (12.0, 2.5, 40.0), (3.0, 1.0, 8.0)]:
        alpha = (kappa - 1) * m / r
        pmf = np.exp(bnb_logpmf(support, r, kappa, alpha))
        mean = np.sum(support * pmf)
        var = np.sum(support**2 * pmf) - mean**2
        nb_var = m + m * m / r
        assert pmf.sum() == pytest.approx(1.0, abs=1e-9)
        assert mean == pytest.approx(m, rel=1e-6)
        assert var == pytest.approx(nb_var * (r + kappa - 1) / (kappa - 2), rel=1e-4)
        p = rng.beta(kappa, alpha, size=400_000)
        draws = rng.negative_binomial(r, p)
        assert abs(draws.mean() - m) < 5 * np.sqrt(var / draws.size)
