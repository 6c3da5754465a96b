"""Each fast likelihood form against a direct dense log density.

A program rendered with ``check_loglik=True`` adds two generated quantities: ``log_lik_fast``, the very
expression the model block adds to target (sufficient statistics / per-cell marginalisation /
reduce_sum), and ``log_lik_dense``, a plain loop of Stan's built-in lpmfs (neg_binomial_2,
beta_neg_binomial, log_sum_exp for zero inflation and mixtures) over the full matrix. Both are evaluated
at random parameter points (fixed_param, random inits: uniform(-2, 2) on the unconstrained scale) on a
small random sparse matrix with many zeros, an all-zero cell and an all-zero gene; they must agree to
1e-8 relative. scipy (nbinom, betanbinom) recomputes the dense value from the printed parameters as an
independent third check, and each cell's log_lik (for LOO) against it cell by cell.

Compiling costs ~10-20 s per program, so the configurations below are chosen to cover every likelihood
form and every branch of its template (NB / BNB, zero inflation, scalar / gene-specific p, K = 1 / 2,
capture via probability / odds) in a dozen programs, not the whole matrix. Every program is rendered by
helpers.reference_program (the checks and log_lik in one program), and tests/test_recovery.py,
test_output_groups.py and test_compare.py use the same programs (same text, so the compile cache serves them).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (assert_cell_loglik_matches_scipy, bnb_logpmf, dense_cell_loglik, reference_data,
                     reference_program, small_counts)
import scipy.sparse as sp
from scipy.special import logsumexp

from scribe_cli.cache import check_program
from scribe_cli.config import ModelConfig, validate
from scribe_cli.plan import gates_log_mean, likelihood_form, samples_dataset_log_mean, samples_dataset_r_mean
from scribe_cli.standata import RISE_LIMIT, rise_table, sparse_stats, stan_data

CASES = {
    # form: pairs
    "nbdm": dict(model="nbdm"),
    "zinb_horseshoe": dict(model="zinb", gate_prior="horseshoe"),
    "zinb_neg": dict(model="zinb", gate_prior="neg"),
    "zinb_prob_horseshoe": dict(model="zinb", prob_prior="horseshoe"),  # log p from logit p (prob_link)
    "bnb": dict(model="nbdm", bnb=True, overdispersion_prior="horseshoe"),
    "zinb_bnb_meandisp": dict(model="zinb", parameterization="mean-disp", bnb=True, overdispersion_prior="neg",
                              gate_prior="gaussian"),
    # form: pairs_mixture
    "mix": dict(model="nbdm", components=2, assignments=True),
    "zinb_mix_bnb": dict(model="zinb", parameterization="mean-prob", components=2, prob_prior="neg", bnb=True,
                         overdispersion_prior="horseshoe", expression_prior="horseshoe", unconstrained=True),
    # form: capture_shared_p
    "nbvcp": dict(model="nbvcp"),
    "nbvcp_odds_mix": dict(model="nbvcp", parameterization="mean-odds", components=2, assignments=True,
                           organism="mouse"),  # capture and its odds from the biology-informed eta
    "nbvcp_organism": dict(model="nbvcp", organism="human"),  # eta through the common shift (plan.shifts_capture)
    # form: capture_cells
    "nbvcp_meandisp": dict(model="nbvcp", parameterization="mean-disp", organism="human", mean_anchor=True),
    "zinbvcp": dict(model="zinbvcp"),
    # Without assignment_prob, a capture_cells mixture's generated quantities compute the components' terms for
    # log_lik alone: the branch this case covers (ds_mix_cells below covers the one with assignment_prob).
    "zinbvcp_mix_bnb": dict(model="zinbvcp", components=2, bnb=True, overdispersion_prior="horseshoe",
                            gate_prior="neg"),
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
    model = compile_stan(reference_program(config), name=f"lik_{name.replace('-', '_')}")
    data = reference_data(config, counts)
    U = data["counts_dense"]
    points = []
    for seed in range(N_POINTS):
        fit = model.sample(data=data, fixed_param=True, chains=1, iter_sampling=1, seed=seed + 1, sig_figs=18,
                           output_dir=str(tmp_path), show_progress=False)
        points += _point_values(fit)
    assert len(points) == N_POINTS
    values = []
    for v in points:
        fast, dense = float(v["log_lik_fast"]), float(v["log_lik_dense"])
        assert np.isfinite(fast) and np.isfinite(dense)
        if gates_log_mean(config):  # the dense terms read log mu: it must be the sampled mean before the gate
            sampled = v["log_mu_shifted"] + v["capture_shift"] if "log_mu_shifted" in v else v["log_mu_gated"]
            np.testing.assert_allclose(v["log_mu"], sampled - np.log1p(-v["gate"]), rtol=1e-12, atol=1e-12)
        assert fast == pytest.approx(dense, rel=REL_TOL), (name, fast, dense)
        # each cell's log_lik (the all-zero cell 3 and the cells with the large counts among them) against scipy
        assert v["log_lik"].shape == (U.shape[0],)
        assert_cell_loglik_matches_scipy(config, v, U, REL_TOL, f"{name} ({likelihood_form(config)})")
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


@pytest.mark.parametrize("counting", [True, False], ids=["counted", "sorted"])
def test_sparse_stats_against_dense(counts, counting, monkeypatch):
    """Both ways to the pairs (counting keys, or np.unique's sort where there are too many keys to count)."""
    import scribe_cli.standata as standata

    monkeypatch.setattr(standata, "COUNTING_KEYS", 1 << 24 if counting else 0)
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


# --- counts above the rising-factorial table's limit (standata.RISE_LIMIT) ----------------------------------
# The table stops at RISE_LIMIT terms per column; pairs counting more add lgamma(x + u) - lgamma(x + limit).
# One program per template function that reads the tail: rise_sum (NB pairs, BNB pairs, capture_shared_p) and
# rise_at_pairs (NB and BNB deltas in the mixtures, capture_shared_p's mixture). The same programs as
# test_fast_likelihood_matches_dense: the compile cache serves them.
TAIL_CASES = ["nbdm", "bnb", "zinb_mix_bnb", "nbvcp", "nbvcp_odds_mix"]
INT32_MAX = 2**31 - 1


def _with_tail(counts: sp.csr_matrix, extreme: bool) -> sp.csr_matrix:
    """The small matrix with counts at and above the limit: exactly RISE_LIMIT (the last table term), one
    above it, two cells sharing a tail count, a column whose only non-zero is in the tail, and (extreme)
    the largest count Stan holds. Moderate tail counts keep the log likelihood small enough (~1e5) that
    REL_TOL detects a single misplaced log term (~7); the extreme matrix checks 2^31 - 1 stays exact."""
    U = counts.toarray()
    U[1, 0], U[2, 0], U[4, 0] = RISE_LIMIT, RISE_LIMIT + 1, 3000
    U[5, 2] = U[6, 2] = 2000
    U[:, 5] = 0
    U[9, 5] = 5000  # gene 5: its only pair is in the tail
    if extreme:
        U[10, 1] = INT32_MAX
    return sp.csr_matrix(U)


def test_rise_table_with_tail_against_lgamma():
    """The table plus the tail give, per column summed over cells and per pair, lgamma(x + u) - lgamma(x)
    (scipy), with a small limit so that most pairs are in the tail; its size is bounded by the limit."""
    from scipy.special import gammaln

    rng = np.random.default_rng(5)
    U = rng.negative_binomial(0.7, 0.05, size=(60, 9))
    U[0, 3] = 40_000
    X = sp.csr_matrix(U)
    s = sparse_stats(X)
    limit = 8
    t = rise_table(s.pair_gene, s.pair_count, s.pair_weight, limit=limit)
    assert 0 < t["H"] < s.n_pairs and t["T"] <= X.shape[1] * limit
    x = rng.uniform(0.05, 5.0, size=X.shape[1])
    xg = x[t["rise_gene"] - 1]
    xt = x[t["tail_gene"] - 1]
    tail = gammaln(xt + t["tail_count"]) - gammaln(xt + t["rise_limit"])
    rise_sum = np.dot(t["rise_weight"], np.log(xg + t["rise_k"])) + np.dot(t["tail_weight"], tail)
    nz = U > 0
    expected = np.sum((gammaln(x[None, :] + U) - gammaln(x[None, :]))[nz])
    # sums of ~10^3 terms of size <= 4e5 in float64: agreement to 1e-11 relative
    assert rise_sum == pytest.approx(expected, rel=1e-11)
    cum = np.r_[0.0, np.cumsum(np.log(xg + t["rise_k"]))]
    per_pair = cum[t["pair_to"] - 1] - cum[t["pair_from"] - 1]
    per_pair[t["tail_pair"] - 1] += tail
    xp = x[s.pair_gene - 1]
    np.testing.assert_allclose(per_pair, gammaln(xp + s.pair_count) - gammaln(xp), rtol=1e-11)
    # the default limit: one count of 10^8 adds one tail pair, not 10^8 table terms
    U[1, 1] = 10**8
    s = sparse_stats(sp.csr_matrix(U))
    t = rise_table(s.pair_gene, s.pair_count, s.pair_weight)
    assert t["T"] <= U.shape[1] * RISE_LIMIT and 10**8 in t["tail_count"]


@pytest.mark.parametrize("name", TAIL_CASES)
def test_counts_above_the_table_limit_match_dense(name, compile_stan, counts, tmp_path):
    config = validate(ModelConfig(**CASES[name]))
    model = compile_stan(reference_program(config), name=f"lik_{name.replace('-', '_')}")
    for extreme in (False, True):
        data = reference_data(config, _with_tail(counts, extreme))
        assert data["H"] >= 4 + extreme and data["T"] <= data["G"] * RISE_LIMIT
        for seed in (1, 2):
            fit = model.sample(data=data, fixed_param=True, chains=1, iter_sampling=1, seed=seed, sig_figs=18,
                               output_dir=str(tmp_path), show_progress=False)
            (v,) = _point_values(fit)
            fast, dense = float(v["log_lik_fast"]), float(v["log_lik_dense"])
            if config.bnb and extreme:
                # Stan's built-in beta_neg_binomial_lpmf gives -inf at counts near 2^31 (its own limit), so the
                # reference there is scipy's gammaln / betaln, entry by entry, at the same parameter values.
                # lgamma(2^31) ~ 4.4e10 carries an absolute rounding error ~1e-5 in float64, and the BNB pmf has
                # six lgamma terms: 1e-4 absolute is that floor, far below one misplaced log term (~7).
                dense = float(dense_cell_loglik(config, v, _with_tail(counts, extreme).toarray())[0].sum())
                assert np.isfinite(fast) and fast == pytest.approx(dense, abs=1e-4), (name, fast, dense)
                continue
            assert np.isfinite(fast) and np.isfinite(dense)
            assert fast == pytest.approx(dense, rel=REL_TOL), (name, extreme, fast, dense)


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


def test_bnb_tends_to_nb_as_omega_vanishes(compile_stan, counts, tmp_path):
    """As omega -> 0 (kappa -> inf, where the shrinkage prior sends most genes) the BNB log likelihood must
    tend to the NB one smoothly, in value and gradient. Written with lgamma / lbeta differences it did not:
    at kappa ~ 1e17 both terms are ~ kappa log kappa, their rounding error (~10) made a false mode that froze
    NUTS in the SBC of bnb_overdispersion_neg (docs/validation.md), and lbeta's gradient (a difference of
    digammas) was off by ~ eps kappa log kappa. The dense reference (Stan's beta_neg_binomial_lpmf) has the
    same flaw, so the reference here is the NB limit itself, via its first-order approach: with every gene at
    the same omega (z = 0), L_BNB(omega) - L_NB = c omega + O(omega^2)."""
    bnb = validate(ModelConfig(**CASES["bnb"]))
    nb = validate(ModelConfig(**CASES["nbdm"]))
    bnb_model = compile_stan(reference_program(bnb), name="lik_bnb")
    nb_model = compile_stan(reference_program(nb), name="lik_nbdm")
    data = reference_data(bnb, counts)
    G = data["G"]
    log_mu = np.random.default_rng(3).normal(0.5, 1.0, size=G).tolist()
    shared = {"log_mu": log_mu, "p": 0.3}
    hyper = {"overdispersion_z": [0.0] * G, "overdispersion_tau_u": 0.5, "overdispersion_lambda_u": [0.5] * G,
             "overdispersion_c2": 1.0}

    def loglik(model, inits):
        fit = model.sample(data=data, fixed_param=True, chains=1, iter_sampling=1, seed=1, sig_figs=18,
                           inits=inits, output_dir=str(tmp_path), show_progress=False)
        return float(fit.stan_variable("log_lik_fast")[0])

    nb_value = loglik(nb_model, shared)
    excess = {}
    for log10_omega in (-4, -5, -6, -7, -8, -16):
        loc = log10_omega * np.log(10)
        excess[log10_omega] = loglik(bnb_model, {**shared, **hyper, "overdispersion_loc": loc}) - nb_value
    # |L| ~ 400 here, so rounding in float64 leaves ~1e-12 absolute: at omega = 1e-16 the excess (~1e-14 exact)
    # is that; the old code's was ~1e2.
    assert abs(excess[-16]) < 1e-9, excess
    # c omega dominates down to omega = 1e-8, where it is ~1e-6 against rounding ~1e-12: the slopes agree to 1e-3
    # (the O(omega^2) term moves the slope at 1e-4 by ~omega relative, and the rest by less).
    slopes = {k: v / 10.0**k for k, v in excess.items() if k > -16}
    c = slopes[-8]
    assert all(s == pytest.approx(c, rel=1e-3) for s in slopes.values()), slopes

    # The gradient along log omega's centre: the prior's -(loc + 5) plus the likelihood's d L / d loc = c omega
    # (every gene's log omega moves with loc when z = 0). At omega = 1e-16 the likelihood part is ~1e-14.
    for log10_omega in (-6, -8, -16):
        loc = log10_omega * np.log(10)
        out = bnb_model.log_prob({**shared, **hyper, "overdispersion_loc": loc}, data, sig_figs=16)
        gradient = float(out["overdispersion_loc"].iloc[0]) + (loc + 5)
        want = c * 10.0**log10_omega
        assert gradient == pytest.approx(want, rel=1e-2, abs=1e-9), (log10_omega, gradient, want)


# --- multi-dataset programs (--dataset-key, datasets.md) ---------------------------------------------------
# Each program below covers new template branches; together: every likelihood form with dataset-specific
# parameters (pairs with NB / ZI + BNB, capture_shared_p, capture_cells with ZI / BNB), every dataset-level
# target (expression, prob in its three modes, gate, overdispersion), every family on some target (gaussian,
# horseshoe, NEG; two_level with horseshoe and NEG), every parameterization's broadcast of derived
# quantities (real / vector[G] / vector[D] / matrix[G, D]), a gene-level prior next to dataset-level ones
# (gate, overdispersion on omega_pop), and the per-dataset mixture weights in the three mixture forms.
DATASET_CASES = {
    # form: pairs
    # ds_pairs is also the gene_specific program of tests/test_recovery.py (one compile for both)
    "ds_pairs": dict(model="nbdm", dataset_key="ds", prob_dataset_prior="gaussian",
                     prob_dataset_mode="gene_specific"),  # r per gene, p and mu genes x datasets
    "ds_zinb_bnb": dict(model="zinb", bnb=True, overdispersion_prior="neg", dataset_key="ds",
                        expression_dataset_prior="horseshoe", zero_inflation_dataset_prior="neg",
                        overdispersion_dataset_prior="horseshoe", prob_dataset_prior="neg",
                        prob_dataset_mode="two_level"),  # r, p, mu, gate, omega all genes x datasets
    "ds_odds_scalar": dict(model="nbdm", parameterization="mean-odds", dataset_key="ds",
                           expression_dataset_prior="gaussian", prob_dataset_prior="horseshoe",
                           prob_dataset_mode="scalar"),  # phi, p per dataset: vector[D]
    "ds_two_level_hs": dict(model="zinb", parameterization="mean-prob", gate_prior="gaussian", dataset_key="ds",
                            prob_dataset_prior="horseshoe", prob_dataset_mode="two_level", unconstrained=True),
    # form: capture_shared_p (p per dataset)
    "ds_nbvcp_shared": dict(model="nbvcp", dataset_key="ds", expression_dataset_prior="gaussian",
                            prob_dataset_prior="neg", prob_dataset_mode="scalar"),
    "ds_nbvcp_odds": dict(model="nbvcp", parameterization="mean-odds", dataset_key="ds",
                          expression_dataset_prior="horseshoe"),  # p shared (real)
    # form: capture_cells
    # log mu per (gene, dataset) with the capture shift (plan.samples_dataset_log_mean), as the seed's joint model
    # and r's mean over datasets through p's, r_pop integrated out (plan.samples_dataset_r_mean)
    "ds_zinbvcp_gate": dict(model="zinbvcp", dataset_key="ds", zero_inflation_dataset_prior="horseshoe",
                            prob_dataset_prior="gaussian", organism="human", expression_dataset_prior="neg"),
    "ds_nbvcp_meandisp_bnb": dict(model="nbvcp", parameterization="mean-disp", bnb=True,
                                  overdispersion_prior="horseshoe", dataset_key="ds", expression_dataset_prior="neg"),
    # mixtures with --dataset-key alone: per-dataset weights
    "ds_mix_pairs": dict(model="nbdm", components=2, assignments=True, dataset_key="ds"),
    "ds_mix_cells": dict(model="zinbvcp", components=2, assignments=True, dataset_key="ds"),
    "ds_mix_shared": dict(model="nbvcp", components=2, assignments=True, dataset_key="ds"),  # capture_shared_p
}


def test_dataset_cases_cover_every_form():
    forms = {likelihood_form(validate(ModelConfig(**kw))) for kw in DATASET_CASES.values()}
    assert forms == {"pairs", "pairs_mixture", "capture_shared_p", "capture_cells"}
    configs = [validate(ModelConfig(**kw)) for kw in DATASET_CASES.values()]
    used = {(t, f) for c in configs for t, f in c.dataset_priors().items()}
    assert {t for t, _ in used} == {"expression", "prob", "gate", "overdispersion"}
    assert {f for _, f in used} == {"gaussian", "horseshoe", "neg"}
    assert {c.prob_dataset_mode for c in configs if c.prob_dataset_prior != "none"} == {"scalar", "gene_specific",
                                                                                          "two_level"}
    assert {c.parameterization for c in configs if c.dataset_params} == {"canonical", "mean-prob", "mean-odds",
                                                                         "mean-disp"}
    assert {likelihood_form(c) for c in configs if c.mixture and c.dataset_key} == {"pairs_mixture",
                                                                                     "capture_shared_p", "capture_cells"}


@pytest.fixture(scope="module")
def dataset_counts() -> tuple[sp.csr_matrix, np.ndarray]:
    """The 40 x 15 matrix above split into 3 datasets of 7, 21 and 12 cells, interleaved (not in blocks);
    gene 9 is all zero in dataset 0 only (and gene 5 everywhere, cell 3 entirely)."""
    rng = np.random.default_rng(31)
    U = small_counts(20240611).toarray()
    cell_dataset = rng.permutation(np.repeat([0, 1, 2], [7, 21, 12]))
    U[cell_dataset == 0, 9] = 0
    assert U[cell_dataset != 0, 9].sum() > 0 and U[cell_dataset == 0].sum() > 0
    return sp.csr_matrix(U), cell_dataset


def _gd(x, G, D):
    """A printed quantity (scalar, per gene (G,), per dataset (D,), or (G, D)) as a genes x datasets array."""
    x = np.asarray(x, dtype=float)
    if x.shape == (G,):
        x = x[:, None]
    return np.broadcast_to(x, (G, D))


def _logit(x):
    return np.log(x) - np.log1p(-x)


def _flat_split(centred: np.ndarray, G: int, name: str = "gate_dataset") -> dict:
    """The data of a split over (gene, dataset) columns numbered (d - 1) G + g (centring.dataset_gate_split_data)."""
    genes = np.tile(np.arange(1, G + 1), centred.size // G)
    return {f"{name}_n_centred": int(centred.sum()), f"{name}_centred_idx": np.flatnonzero(centred) + 1,
            f"{name}_noncentred_idx": np.flatnonzero(~centred) + 1, f"{name}_centred_gene": genes[centred],
            f"{name}_noncentred_gene": genes[~centred]}


def _family_scale(v, T, family):
    """The elements' scale of a family's hierarchy (one sigma, or per gene), from the printed sampled variables."""
    if family == "gaussian":
        return np.logaddexp(0.0, float(v[f"{T}_sigma_raw"]))
    if family == "horseshoe":
        lam, c2, tau = np.asarray(v[f"{T}_lambda"]), float(v[f"{T}_c2"]), float(v[f"{T}_tau"])
        lt = np.sqrt(c2) * lam / np.sqrt(c2 + tau**2 * lam**2)
        np.testing.assert_allclose(v[f"{T}_lambda_tilde"], lt, rtol=1e-9)
        return tau * lt
    return np.sqrt(np.asarray(v[f"{T}_psi"], dtype=float))


def _helmert(D):
    """The D - 1 Helmert contrasts between D datasets: column k is (1, .., 1, -k, 0, ..) / sqrt(k (k + 1)),
    orthonormal and orthogonal to the constant vector (asserted here, so the densities' decomposition holds)."""
    H = np.zeros((D, D - 1))
    for k in range(1, D):
        H[:k, k - 1] = 1.0
        H[k, k - 1] = -k
        H[:, k - 1] /= np.sqrt(k * (k + 1.0))
    np.testing.assert_allclose(H.T @ H, np.eye(D - 1), atol=1e-12)
    np.testing.assert_allclose(H.sum(axis=0), 0.0, atol=1e-12)
    return H


def _log_r_gene_mean(v, D):
    """log r's mean over the datasets of plan.samples_dataset_r_mean, recomputed from the log means and p's
    non-centred gene mean w: mean_d log mu - prob_loc - prob_sigma / sqrt(D) w."""
    sigma_p = np.logaddexp(0.0, float(v["prob_dataset_sigma_raw"]))
    log_mu = np.asarray(v["log_mu"], dtype=float)
    return log_mu.mean(axis=1) - float(v["prob_dataset_loc"]) - sigma_p / np.sqrt(D) * np.asarray(v["log_r_mean_w"])


def _check_dataset_transforms(config, v, G, D, data):
    """numpy recomputation of what the transformed parameters of a dataset program define, from the printed
    sampled variables: each dataset-level target's non-centred hierarchy (datasets.md), then the
    parameterization's derived quantities broadcast over genes x datasets. (The dense reference takes mu, r,
    kappa and gate from the program, so it could not see a wrong broadcast there.)"""
    par = config.parameterization
    shapes = {"real": (), "vector[G]": (G,), "vector[D]": (D,), "matrix[G, D]": (G, D)}

    def softplus(x):
        return np.logaddexp(0.0, np.asarray(x, dtype=float))

    for target, family in config.dataset_priors().items():
        T = f"{target}_dataset"
        q = {"expression": "r" if par == "canonical" else "mu", "prob": "phi" if par == "mean-odds" else "p",
             "gate": "gate", "overdispersion": "omega"}[target]
        value = np.asarray(v[q], dtype=float)
        spec_shape = (D,) if target == "prob" and config.prob_dataset_mode == "scalar" else (G, D)
        assert value.shape == spec_shape, (target, q, value.shape)
        theta = np.log(value) if q in ("r", "mu", "phi", "omega") else _logit(value)
        if target == "expression" and samples_dataset_r_mean(config):
            # log r's mean over the datasets from the log means and p's w; its contrasts s_g z (D - 1 per gene)
            mean = _log_r_gene_mean(v, D)
            np.testing.assert_allclose(v["log_r_mean"], mean, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(theta.mean(axis=1), mean, rtol=1e-9, atol=1e-9)
            z = np.asarray(v[f"{T}_z"], dtype=float)
            assert z.shape == (G, D - 1) and f"{q}_pop" in v  # r_pop: drawn in generated quantities
            scale = np.broadcast_to(np.asarray(_family_scale(v, T, family), dtype=float), (G,))
            np.testing.assert_allclose(theta - mean[:, None], (scale[:, None] * z) @ _helmert(D).T, rtol=1e-8, atol=1e-9)
            continue
        if target == "prob" and samples_dataset_log_mean(config):  # centred: logit p from the sampled log mean
            assert f"{T}_z" not in v
            np.testing.assert_allclose(theta, v["log_mu"] - np.log(_gd(v["r"], G, D)), rtol=1e-8, atol=1e-8)
            np.testing.assert_allclose(v["mu"], np.exp(v["log_mu"]), rtol=1e-9)
            if "log_mu_shifted" in v:
                np.testing.assert_allclose(v["log_mu"], v["log_mu_shifted"] + v["capture_shift"], rtol=1e-9)
            continue
        if f"{T}_n_centred" in data:  # split columns: centred ones are the link itself, the rest centre + scale z
            flat = np.zeros(G * D)
            flat[np.asarray(data[f"{T}_centred_idx"]) - 1] = v[f"{T}_centred"]
            flat[np.asarray(data[f"{T}_noncentred_idx"]) - 1] = v[f"{T}_z"]
            z = flat.reshape((G, D), order="F")  # Stan's to_matrix / to_vector: column-major
            centred = np.zeros(G * D, dtype=bool)
            centred[np.asarray(data[f"{T}_centred_idx"]) - 1] = True
            centred = centred.reshape((G, D), order="F")
            assert 0 < centred.sum() < G * D
            np.testing.assert_allclose(theta[centred], z[centred], rtol=1e-9, err_msg=f"{target}: centred columns")
        else:
            z = np.asarray(v[f"{T}_z"], dtype=float)
            centred = np.zeros(spec_shape, dtype=bool)
        assert z.shape == spec_shape
        if target in ("expression", "overdispersion"):
            centre = np.log(np.asarray(v[f"{q}_pop"], dtype=float))[:, None]
        elif target == "prob" and config.prob_dataset_mode == "two_level":
            loc_d = v[f"{T}_loc"] + softplus(v[f"{T}_loc_scale_raw"]) * np.asarray(v[f"{T}_loc_z"])
            np.testing.assert_allclose(v[f"{T}_loc_d"], loc_d, rtol=1e-9, atol=1e-12)
            centre = loc_d[None, :]
        else:
            centre = float(v[f"{T}_loc"])
        two_level = target == "prob" and config.prob_dataset_mode == "two_level"
        if two_level:
            sigma_d = softplus(v[f"{T}_sigma_raw"])
            np.testing.assert_allclose(v[f"{T}_sigma"], sigma_d, rtol=1e-9)
            if family == "horseshoe":
                lam, c2 = np.asarray(v[f"{T}_lambda"]), float(v[f"{T}_c2"])
                lt = np.sqrt(c2) * lam / np.sqrt(c2 + sigma_d[None, :] ** 2 * lam**2)
                np.testing.assert_allclose(v[f"{T}_lambda_tilde"], lt, rtol=1e-9)
                scale = sigma_d[None, :] * lt
            elif family == "neg":
                scale = sigma_d[None, :] * np.sqrt(np.asarray(v[f"{T}_psi"]))
            else:
                scale = sigma_d[None, :]
        else:
            scale = np.asarray(_family_scale(v, T, family), dtype=float)
        if scale.shape == (G,):  # local scales per gene, shared by the datasets (datasets.md)
            scale = scale[:, None]
        expected = np.broadcast_to(centre + scale * z, spec_shape)
        np.testing.assert_allclose(theta[~centred], expected[~centred], rtol=1e-8, atol=1e-8,
                                   err_msg=f"{target} ({family})")
    for name, shape in render_shapes(config).items():
        assert np.shape(v[name]) == shapes[shape], (name, np.shape(v[name]), shape)
    p, mu, r = _gd(v["p"], G, D), _gd(v["mu"], G, D), _gd(v["r"], G, D)
    if par == "canonical":
        np.testing.assert_allclose(mu, r * p / (1 - p), rtol=1e-9)
    elif par == "mean-prob":
        np.testing.assert_allclose(r, mu * (1 - p) / p, rtol=1e-9)
    elif par == "mean-odds":
        phi = _gd(v["phi"], G, D)
        np.testing.assert_allclose(p, 1 / (1 + phi), rtol=1e-9)
        np.testing.assert_allclose(r, mu * phi, rtol=1e-9)
    else:
        np.testing.assert_allclose(p, mu / (mu + r), rtol=1e-9)
    if config.bnb:
        np.testing.assert_allclose(_gd(v["kappa"], G, D), 2 + (r + 1) / _gd(v["omega"], G, D), rtol=1e-9)


def render_shapes(config):
    from scribe_cli.plan import dataset_shapes

    return dataset_shapes(config) if config.dataset_params else {}


@pytest.mark.parametrize("name", list(DATASET_CASES))
def test_dataset_fast_likelihood_matches_dense(name, compile_stan, dataset_counts, tmp_path):
    """As test_fast_likelihood_matches_dense, on 3 datasets: the fast form (pairs per (gene, dataset) column,
    per-dataset sums of r, each cell's dataset column, per-dataset weights) against the dense loop of built-in
    lpmfs at [g, cell_dataset[c]] and against scipy at each cell's dataset's parameters."""
    X, cell_dataset = dataset_counts
    config = validate(ModelConfig(**DATASET_CASES[name]))
    model = compile_stan(reference_program(config), name=f"lik_{name}")
    data = reference_data(config, X, cell_dataset_override=cell_dataset)
    assert data["D"] == 3 and list(data["cell_dataset"]) == list(cell_dataset + 1)
    if "gate_dataset_n_centred" in data:
        # the columns of a split dataset-level gate (plan.splits_dataset_gate) are the data's choice, and any
        # choice is the same model: every third column centred, so that both kinds are indexed here
        data.update(_flat_split(np.arange(45) % 3 == 1, 15))
    U = data["counts_dense"]
    C, G = U.shape
    values = []
    for seed in range(N_POINTS):
        fit = model.sample(data=data, fixed_param=True, chains=1, iter_sampling=1, seed=seed + 1, sig_figs=18,
                           output_dir=str(tmp_path), show_progress=False)
        (v,) = _point_values(fit)
        fast, dense = float(v["log_lik_fast"]), float(v["log_lik_dense"])
        assert np.isfinite(fast) and np.isfinite(dense)
        assert fast == pytest.approx(dense, rel=REL_TOL), (name, fast, dense)
        # each cell's log_lik at its dataset's parameters (and weights), every cell against scipy
        assert v["log_lik"].shape == (C,)
        assert_cell_loglik_matches_scipy(config, v, U, REL_TOL, f"{name} ({likelihood_form(config)})", cell_dataset)
        per_cell, cell_lp = dense_cell_loglik(config, v, U, cell_dataset)
        assert float(per_cell.sum()) == pytest.approx(dense, rel=1e-7), (name, float(per_cell.sum()), dense)
        if config.dataset_params:
            _check_dataset_transforms(config, v, G, 3, data)
            # every dataset-specific quantity differs between datasets (else a wrong column could go unseen)
            for q, shape in render_shapes(config).items():
                if shape in ("vector[D]", "matrix[G, D]"):
                    assert np.all(np.ptp(np.asarray(v[q]).reshape(-1, 3), axis=1) > 0), q
        if config.mixture:
            w = np.asarray(v["dataset_weights"])
            assert w.shape == (3, config.components) and np.allclose(w.sum(axis=1), 1)
            assert np.ptp(w[:, 0]) > 1e-3, "the datasets' weights did not differ"
        if config.assignments:
            expected = np.exp(cell_lp - logsumexp(cell_lp, axis=1, keepdims=True))
            np.testing.assert_allclose(v["assignment_prob"], expected, atol=1e-7)
        values.append(dense)
    assert len(set(values)) == N_POINTS, "the parameter points did not differ"


def test_sparse_stats_with_datasets(dataset_counts):
    """With the cells' datasets the pairs are distinct (gene, dataset, count) triples, pair_gene the column
    (d - 1) G + g of a genes x datasets matrix, weighted by the cells of that dataset; the CSR still maps
    each non-zero to its triple."""
    X, cell_dataset = dataset_counts
    U = X.toarray()
    C, G = U.shape
    s = sparse_stats(X, cell_dataset)
    keys = set()
    for col, u, w in zip(s.pair_gene, s.pair_count, s.pair_weight):
        d, g = divmod(int(col) - 1, G)
        assert u > 0 and w == np.sum(U[cell_dataset == d, g] == u)
        keys.add((d, g, int(u)))
    assert len(keys) == s.n_pairs and s.pair_weight.sum() == np.count_nonzero(U)
    assert not any(d == 0 and g == 9 for d, g, _ in keys)  # dataset 0's all-zero gene has no pair
    for c in range(C):
        idx = np.arange(s.cell_start[c], s.cell_start[c + 1]) - 1
        genes = np.flatnonzero(U[c])
        np.testing.assert_array_equal(s.pair_gene[s.nz_pair[idx] - 1] - 1, cell_dataset[c] * G + genes)
        np.testing.assert_array_equal(s.pair_count[s.nz_pair[idx] - 1], U[c, genes])
        np.testing.assert_array_equal(s.nz_gene[idx] - 1, genes)  # nz_gene stays the gene


# --- the hand-written C++ terms (stan/cpp/capture_cells.hpp, rise_sum.hpp) against their Stan-language reference
# rise_table_sum (rise_sum.hpp) is called by every pair and capture program; these two programs check it too, with
# tail counts in the data (a program of its own for it, BNB's, cost a compile for the same C++).
# The value at 40 cells is checked above (the native programs are the defaults the dense tests render; below 64
# cells per dataset the C++ sums cell by cell). Here 200 cells, so that the zero terms go through the Chebyshev
# interpolation: the same program text but for --stan-gradients, log density and gradient at the same points.
# Two programs cover the C++ branches: NB without datasets (one column via to_matrix) and ZINB over 2 datasets
# of 150 cells (interpolated) and 50 (cell by cell). The last point of the ZINB case puts every gate near 1e-300
# and gene 1's r at 1e3: f = log(pi + (1 - pi) P(0)) then bends sharply in log capture (interpolation refused at
# 32 and 128 nodes: that gene is summed cell by cell) and underflows on the natural scale (the log-scale branch).
NATIVE_CASES = {"nbvcp_meandisp": (CASES["nbvcp_meandisp"], False),
                "ds_zinbvcp_gate": (DATASET_CASES["ds_zinbvcp_gate"], True)}


def _native_counts() -> tuple[sp.csr_matrix, np.ndarray]:
    rng = np.random.default_rng(7)
    C, G = 200, 12
    capture = rng.lognormal(np.log(0.3), 0.5, size=C)  # a wide capture range: the interpolant spans it
    mean = rng.lognormal(0.5, 1.2, size=G)[None, :] * capture[:, None]
    U = rng.negative_binomial(2.0, 2.0 / (2.0 + mean))
    U[rng.uniform(size=U.shape) < 0.3] = 0
    U[:, 4] = 0  # a gene without counts
    # with the tail counts of the dense tests (_with_tail): the tables then hold ~3,000 terms and the tail's
    # lgamma_ratio terms, so rise_table_sum's C++ sees real sizes too
    return _with_tail(sp.csr_matrix(U), False), rng.permutation(np.repeat([0, 1], [150, 50]))


def _wide_counts() -> tuple[sp.csr_matrix, np.ndarray]:
    """70 cells x 300 genes, ~95% non-zero: every cell has more non-zeros than two of the C++ terms' chunks (2 x 128),
    so their arrays grow for it (Chunk::resize in capture_cells.hpp); datasets of 64 cells (interpolated) and 6."""
    rng = np.random.default_rng(11)
    C, G = 70, 300
    capture = rng.lognormal(np.log(0.3), 0.5, size=C)
    mean = rng.lognormal(1.5, 0.8, size=G)[None, :] * capture[:, None]
    U = rng.negative_binomial(2.0, 2.0 / (2.0 + mean)) + (rng.uniform(size=mean.shape) > 0.05)  # ~95% non-zero
    return sp.csr_matrix(U), np.repeat([0, 1], [64, 6])


@pytest.mark.parametrize("name", list(NATIVE_CASES))
def test_native_gradient_matches_stan(name, compile_stan, tmp_path):
    options, datasets = NATIVE_CASES[name]
    native = validate(ModelConfig(**options))
    reference = validate(ModelConfig(**options, native_gradients=False))
    # the native program is the dense tests' (lik_<name>): one compile fewer
    native_text, reference_text = reference_program(native), reference_program(reference)
    assert "_zero_terms(" in native_text and "_nonzero_terms(" in native_text and "rise_table_sum(x" in native_text
    assert "_zero_terms(" not in reference_text and "rise_table_sum" not in reference_text
    X, cell_dataset = _native_counts()
    data = reference_data(native, X, cell_dataset_override=cell_dataset if datasets else None)
    assert 0.15 < X.nnz / np.prod(X.shape) < 0.5  # zeros and non-zeros both common
    model = compile_stan(native_text, name=f"lik_{name}")
    ref_model = compile_stan(reference_text, name=f"ref_{name}")
    points = []
    for seed in range(N_POINTS):
        fit = model.sample(data=data, fixed_param=True, chains=1, iter_sampling=1, seed=seed + 11, sig_figs=18,
                           output_dir=str(tmp_path), show_progress=False)
        (v,) = _point_values(fit)
        points.append(v)
    if native.zero_inflated:  # every gate near 1e-300 (logit -690), gene 1's r at 1e3
        extreme = dict(points[-1], gate_dataset_loc=np.asarray(-690.0))
        extreme["r"] = extreme["r"].copy()
        if "gate_dataset_centred" in extreme:  # the split's centred columns are their own logit(gate)
            extreme["gate_dataset_centred"] = np.full_like(extreme["gate_dataset_centred"], -690.0)
        if "log_mu_shifted" in extreme:  # r through log mu: at the same p, log mu moves with log r
            extreme["log_mu_shifted"] = extreme["log_mu_shifted"].copy()
            extreme["log_mu_shifted"][0] += np.log(1e3) - np.log(extreme["r"][0])
        extreme["r"][0] = 1e3
        points.append(extreme)
    for v in points:
        params = {k: x.tolist() for k, x in v.items()}
        a = model.log_prob(params=params, data=data, sig_figs=18).to_numpy().ravel()
        b = ref_model.log_prob(params=params, data=data, sig_figs=18).to_numpy().ravel()
        assert a.shape == b.shape and np.all(np.isfinite(a))
        # The interpolated sums are accepted at <= 1e-9 absolute error per (gene, dataset) (TAIL_TOLERANCE),
        # 24 of them here; the gradient is the exact gradient of that approximation, whose derivative error
        # is of the same order times the polynomial degree. Against lp ~ -1e3 and gradients up to ~1e2, the
        # bound below is far above both (and far below any wrong term: one misplaced log is ~1).
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-6)
    # Cells wider than the buffers (the same programs: their sizes are data), one point: the same bound.
    X, cell_dataset = _wide_counts()
    assert np.diff(X.indptr).min() > 256
    data = reference_data(native, X, cell_dataset_override=cell_dataset if datasets else None)
    fit = model.sample(data=data, fixed_param=True, chains=1, iter_sampling=1, seed=5, sig_figs=18,
                       output_dir=str(tmp_path), show_progress=False)
    params = {k: x.tolist() for k, x in _point_values(fit)[0].items()}
    a = model.log_prob(params=params, data=data, sig_figs=18).to_numpy().ravel()
    b = ref_model.log_prob(params=params, data=data, sig_figs=18).to_numpy().ravel()
    assert a.shape == b.shape and np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-6)


# nb_logit_gene_sum / zinb_logit_gene_sum (stan/cpp/logit_gene_sum.hpp): the per-gene terms of the NB and ZINB
# pair likelihoods from logit p, against the Stan-language form of pairs.stan.j2's --stan-gradients branch
# (log_inv_logit, log1m_inv_logit, zi_log0's scalar log_sum_exp), value and gradient. One small program with a
# data switch holds both forms (~15 s to compile, against ~70 s for a second copy of a rendered program); the
# rendered programs' use of them is checked by the dense tests (zinb_prob_horseshoe: ZINB with prob_link) and
# the recovery tests (the CLI default NBDM).
LOGIT_GENE_SUM_PROGRAM = """
functions {
  real nb_logit_gene_sum(int C, data vector gene_total, vector r, vector prob_link);
  real zinb_logit_gene_sum(int C, data vector gene_nonzero, data vector gene_total, vector r, vector prob_link,
                           vector gate);
}
data {
  int<lower=1> C;
  int<lower=1> G;
  vector[G] gene_nonzero;
  vector[G] gene_total;
  int<lower=0, upper=1> native;
  int<lower=0, upper=1> zi;
}
parameters {
  vector<lower=0>[G] r;
  vector[G] prob_link;
  vector<lower=0, upper=1>[G] gate;
}
model {
  if (native) {
    target += zi ? zinb_logit_gene_sum(C, gene_nonzero, gene_total, r, prob_link, gate)
                 : nb_logit_gene_sum(C, gene_total, r, prob_link);
  } else {
    vector[G] log0 = r .* log1m_inv_logit(prob_link);
    real lp = dot_product(gene_total, log_inv_logit(prob_link));
    if (zi) {
      for (g in 1:G) {
        real z = log_sum_exp(log(gate[g]), log1m(gate[g]) + log0[g]);
        lp += C * z + gene_nonzero[g] * (log1m(gate[g]) + log0[g] - z);
      }
    } else {
      lp += C * sum(log0);
    }
    target += lp;
  }
}
"""


def test_native_logit_gene_sum_matches_stan(compile_stan):
    from scribe_cli.cache import PAIRS_HEADER, native_header

    assert native_header(LOGIT_GENE_SUM_PROGRAM) == PAIRS_HEADER  # the pair programs' header, not the capture terms'
    model = compile_stan(LOGIT_GENE_SUM_PROGRAM, name="lik_logit_terms")
    rng = np.random.default_rng(5)
    G, C = 8, 300
    nonzero = rng.integers(0, C, size=G).astype(float)
    nonzero[0] = 0.0  # a gene without counts
    total = nonzero * rng.uniform(1, 20, size=G)
    # logit p across its range (|eta| = 40: p and 1 - p at 4e-18), r from 1e-3 to 1e3, gates from 1e-300 to
    # 1 - 1e-6: every branch of the C++ taken (eta's sign; P(0) on the natural scale, with 1 - exp(A) near A = 0
    # for gene 1; the log scale for gene 8, whose gate 1e-300 and NB zero exp(-4e4) underflow)
    points = [dict(r=rng.lognormal(0, 1, G), prob_link=rng.normal(0, 2, G), gate=rng.uniform(0.01, 0.9, G))
              for _ in range(2)]
    points.append(dict(r=np.geomspace(1e-3, 1e3, G), prob_link=np.linspace(-40, 40, G),
                       gate=np.array([0.2, 1e-12, 1e-3, 0.5, 0.9, 1 - 1e-6, 0.3, 1e-300])))
    for zi in (0, 1):
        for point in points:
            params = {k: v.tolist() for k, v in point.items()}
            out = {}
            for native in (1, 0):
                data = dict(C=C, G=G, gene_nonzero=nonzero.tolist(), gene_total=total.tolist(), native=native, zi=zi)
                out[native] = model.log_prob(params=params, data=data, sig_figs=18).to_numpy().ravel()
            assert np.all(np.isfinite(out[1])), (zi, out[1])
            # Both forms evaluate the same expressions in a different order: rounding differs at ~1e-15
            # relative per term, with terms up to ~1e4 here and gradients up to ~1e7 (a gate at 1 - 1e-6).
            np.testing.assert_allclose(out[1], out[0], rtol=1e-9, atol=1e-7)


def test_log_mean_coordinates_leave_the_density_unchanged(compile_stan, counts, tmp_path):
    """Canonical programs sample log mu in place of r (plan.samples_log_mean): the same model in other
    coordinates. At the same (r, p, ...) the log density must agree with the r-sampling program both without
    the Jacobian (the model itself) and with it (Stan's log r Jacobian of r's lower bound against the
    `jacobian += sum(log r)` of the change): any slip in the Jacobian or the derived r shows up here.
    The log-mu program is zinb_prob_horseshoe's (p per gene; the gate exercises r in log0 too), compiled once
    for the likelihood tests above. Its log mu is also in units of the data's scales (plan.scales_log_mean):
    Stan's affine Jacobian then adds the constant sum(log log_mu_scale), and r's prior, written on log r, drops
    lognormal_lpdf's constant: nothing else may differ. Under the gate the sampled coordinate is the mean after
    it, log_mu_gated = log mu + log1m(gate) (plan.gates_log_mean), whose Jacobian at fixed gate is 1.
    (prob_loc is scaled in both programs: the same term on both sides.)"""
    config = validate(ModelConfig(**CASES["zinb_prob_horseshoe"]))
    old = validate(ModelConfig(**CASES["zinb_prob_horseshoe"], mean_coordinates=False))
    new_text, old_text = reference_program(config), reference_program(old)
    assert "multiplier=log_mu_scale>[G] log_mu_gated;" in new_text and "jacobian += sum(log_r)" in new_text
    assert "log_mu = log_mu_gated - log1m(gate);" in new_text
    assert "normal_lupdf(log_r | prior_r[1], prior_r[2]) - sum(log_r)" in new_text and "r ~ lognormal" in old_text
    assert "log_mu" not in old_text and "multiplier=prob_loc_scale> prob_loc;" in old_text
    # prior draws (prior_only) span hundreds of the data's scales: the same program, in plain coordinates there
    prior = stan_data(config, counts, prior_only=True)
    assert prior["prior_only"] == 1 and not np.any(prior["log_mu_offset"]) and np.all(prior["log_mu_scale"] == 1)
    assert (prior["prob_loc_offset"], prior["prob_loc_scale"]) == (0.0, 1.0)
    model = compile_stan(new_text, name="lik_zinb_prob_horseshoe")
    old_model = compile_stan(old_text, name="lik_zinb_prob_horseshoe_logr")
    data, old_data = reference_data(config, counts), reference_data(old, counts)
    assert data.keys() - old_data.keys() == {"log_mu_offset", "log_mu_scale"} and old_data.keys() <= data.keys()
    assert all(np.array_equal(data[k], old_data[k]) for k in old_data)
    affine = float(np.sum(np.log(data["log_mu_scale"])))
    assert affine < -1.0  # the genes' scales are well below 1 here, so a dropped term would show
    new_names, old_names = (set(check_program(text)["parameters"]) for text in (new_text, old_text))
    assert new_names - old_names == {"log_mu_gated"} and old_names - new_names == {"r"}
    sampled = new_names - {"log_mu_gated"}
    for seed in range(N_POINTS):
        fit = model.sample(data=data, fixed_param=True, chains=1, iter_sampling=1, seed=seed + 31, sig_figs=18,
                           output_dir=str(tmp_path), show_progress=False)
        (v,) = _point_values(fit)
        new_params = {k: np.asarray(v[k]).tolist() for k in sampled | {"log_mu_gated"}}
        np.testing.assert_allclose(v["log_mu"], v["log_mu_gated"] - np.log1p(-v["gate"]), rtol=1e-12)
        old_params = {**{k: np.asarray(v[k]).tolist() for k in sampled}, "r": v["r"].tolist()}
        np.testing.assert_allclose(np.log(v["r"]), v["log_mu"] - np.log(v["p"] / (1 - v["p"])), rtol=1e-12)
        for jacobian in (True, False):
            a = model.log_prob(params=new_params, data=data, jacobian=jacobian, sig_figs=18).to_numpy().ravel()[0]
            b = old_model.log_prob(params=old_params, data=data, jacobian=jacobian, sig_figs=18).to_numpy().ravel()[0]
            a -= affine if jacobian else 0.0
            # r's prior is written on log r there (normal_lupdf(log r) - sum(log r)): Stan's lognormal_lpdf keeps
            # its -log(sqrt(2 pi)) per element even when dropping constants, normal_lupdf does not
            a -= 0.5 * np.log(2 * np.pi) * len(v["r"])
            # lp ~ -1e3 summed in a different order from different inputs (r from exp(log_mu - logit p)):
            # agreement to ~1e-12 relative is rounding; a missing Jacobian term is of order 1 per gene
            assert np.isfinite(a) and abs(a - b) <= 1e-8 * max(1.0, abs(b)), (jacobian, a, b)


def test_dataset_r_mean_density_is_the_model(compile_stan, dataset_counts, tmp_path):
    """r's gene mean over the datasets sampled through p's, r_pop integrated out (plan.samples_dataset_r_mean).
    At fixed log means, captures and gates, Stan's log density over (w, r's contrasts z, its NEG local scales,
    p's centre and scale) must be the model's over (log r, logit p): log r[g, .] ~ N(m0 1, s_g^2 I + s0^2 1 1^T),
    r_pop integrated out (scipy's multivariate normal: an independent check of the mean / contrast split), and
    logit p[g, d] ~ N(loc, sigma), times the Jacobian sigma s_g^(D - 1) per gene of (w, z) -> log r, up to one
    constant. prior_only = 1 leaves the likelihood out (the dense test checks it). The program is
    ds_zinbvcp_gate's, compiled for the dense test above."""
    from scipy import special, stats

    X, cell_dataset = dataset_counts
    config = validate(ModelConfig(**DATASET_CASES["ds_zinbvcp_gate"]))
    assert samples_dataset_r_mean(config) and config.dataset_priors()["expression"] == "neg"
    model = compile_stan(reference_program(config), name="lik_ds_zinbvcp_gate")
    data = {**reference_data(config, X, cell_dataset_override=cell_dataset), "prior_only": 1}
    data.update(_flat_split(np.arange(45) % 3 == 1, 15))
    G, D = 15, 3
    fit = model.sample(data=data, fixed_param=True, chains=1, iter_sampling=1, seed=5, sig_figs=18,
                       output_dir=str(tmp_path), show_progress=False)
    (v,) = _point_values(fit)
    names = list(check_program(model.code())["parameters"])
    assert "r_pop" not in names and "log_r_mean_w" in names
    m0, s0 = data["prior_r"]
    u, a, neg_tau = data["neg_u"], data["neg_a"], data["neg_tau"]
    H = _helmert(D)
    T = "expression_dataset"
    rng = np.random.default_rng(11)
    gaps = []
    for _ in range(N_POINTS + 1):
        point = {k: np.asarray(v.get(k, []), dtype=float) for k in names}  # empty ones are not printed
        point.update({"log_r_mean_w": rng.normal(size=G), f"{T}_z": rng.normal(size=(G, D - 1)),
                      f"{T}_psi_raw": rng.normal(-2.0, 1.5, size=G), "prob_dataset_loc": rng.normal(),
                      "prob_dataset_sigma_raw": rng.normal(0.0, 0.5)})
        lp = model.log_prob(params={k: np.asarray(x).tolist() for k, x in point.items()}, data=data, jacobian=False,
                            sig_figs=18).to_numpy().ravel()[0]
        s = np.sqrt(neg_tau * np.exp(point[f"{T}_psi_raw"]))
        sigma = np.logaddexp(0.0, point["prob_dataset_sigma_raw"])
        log_mu = np.asarray(v["log_mu"], dtype=float)
        log_r = _log_r_gene_mean({**v, **point}, D)[:, None] + (s[:, None] * point[f"{T}_z"]) @ H.T
        model_lp = sum(stats.multivariate_normal.logpdf(log_r[g], np.full(D, m0), s[g] ** 2 * np.eye(D) + s0 ** 2)
                       for g in range(G))
        model_lp += (stats.norm.logpdf(log_mu - log_r, point["prob_dataset_loc"], sigma).sum()
                     + G * np.log(sigma) + (D - 1) * np.log(s).sum()  # the Jacobian of (w, z) -> log r
                     + stats.norm.logpdf(point["prob_dataset_loc"], 0, 1)
                     + stats.norm.logpdf(point["prob_dataset_sigma_raw"], 0, 0.5)
                     + np.sum(u * special.log_expit(point[f"{T}_psi_raw"]) + a * special.log_expit(-point[f"{T}_psi_raw"])))
        gaps.append(lp - model_lp)
    # lp ~ -1e3 printed to 18 digits; a missing Jacobian or a wrong marginal variance moves the gap by ~1 or more
    assert np.ptp(gaps) < 1e-7 * max(1.0, abs(gaps[0])), gaps


def test_dataset_log_mean_density_is_the_model(compile_stan, dataset_counts, tmp_path):
    """A joint canonical program samples log mu per (gene, dataset) in place of p's deviations, with logit p =
    log mu - log r and p's Gaussian hierarchy centred (plan.samples_dataset_log_mean). (r, log mu) -> (r, logit p)
    has Jacobian 1, so Stan's log density must be the model's density over (r, logit p), recomputed here with
    scipy, up to the constants that `~` drops: the same constant at every point. With the Jacobian, Stan adds
    log r (r's lower bound) and the constant sum(log log_mu_scale) of the offset/multiplier, and nothing else.
    The program is ds_pairs's, compiled for the dense test above."""
    from scipy import stats

    X, cell_dataset = dataset_counts
    config = validate(ModelConfig(**DATASET_CASES["ds_pairs"]))
    assert samples_dataset_log_mean(config)
    assert not samples_dataset_log_mean(validate(ModelConfig(**DATASET_CASES["ds_pairs"], mean_coordinates=False)))
    text = reference_program(config)
    assert "to_vector(logit_p) ~ normal(prob_dataset_loc, prob_dataset_sigma);" in text and "prob_dataset_z" not in text
    model = compile_stan(text, name="lik_ds_pairs")
    data = reference_data(config, X, cell_dataset_override=cell_dataset)
    assert np.shape(data["log_mu_offset"]) == (15, 3) and np.ptp(data["log_mu_offset"][:, 0]) > 0
    affine = float(np.sum(np.log(data["log_mu_scale"])))
    assert affine < -1.0  # well away from 0: a dropped or doubled term would show
    gaps = []
    for seed in range(N_POINTS):
        fit = model.sample(data=data, fixed_param=True, chains=1, iter_sampling=1, seed=seed + 41, sig_figs=18,
                           output_dir=str(tmp_path), show_progress=False)
        (v,) = _point_values(fit)
        params = {k: np.asarray(v[k]).tolist() for k in ("r", "log_mu", "prob_dataset_loc", "prob_dataset_sigma_raw")}
        lp, lp_jac = (model.log_prob(params=params, data=data, jacobian=j, sig_figs=18).to_numpy().ravel()[0]
                      for j in (False, True))
        sigma = float(v["prob_dataset_sigma"])
        model_lp = (float(v["log_lik_fast"])  # the likelihood term itself, checked against the dense loop above
                    + stats.lognorm.logpdf(v["r"], s=data["prior_r"][1], scale=np.exp(data["prior_r"][0])).sum()
                    + stats.norm.logpdf(v["log_mu"] - np.log(v["r"])[:, None], float(v["prob_dataset_loc"]), sigma).sum()
                    + stats.norm.logpdf(float(v["prob_dataset_loc"]), 0, 1)
                    + stats.norm.logpdf(float(v["prob_dataset_sigma_raw"]), 0, 0.5))
        gaps.append(lp - model_lp)
        # lp ~ -1e3: rounding of the printed values is ~1e-12 relative; a Jacobian term is of order 1
        assert lp_jac - lp == pytest.approx(np.sum(np.log(v["r"])) + affine, abs=1e-8)
    assert np.ptp(gaps) < 1e-8 * max(1.0, abs(gaps[0])), gaps
