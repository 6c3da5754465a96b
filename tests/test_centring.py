"""The data-driven choice of centred gate genes (scribe_cli/centring.py): no Stan needed."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from scribe_cli import centring


def _zinb(rng, C, mu, r, gate):
    u = rng.negative_binomial(r, r / (r + mu), size=(C, mu.size))
    return sp.csr_matrix(u * (rng.random((C, mu.size)) >= gate))


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    X = _zinb(rng, 200, rng.lognormal(1, 1, 8), rng.lognormal(0, 0.5, 8), np.full(8, 0.2))
    coo = X.tocoo()
    keys, w = np.unique(coo.col.astype(np.int64) * 1000 + coo.data, return_counts=True)
    gene, count, w = keys // 1000, (keys % 1000).astype(float), w.astype(float)
    nnz = np.bincount(gene, w, minlength=8)
    args = (200 - nnz, gene, count, w, nnz, 8)
    for shared_p, n in ((False, 24), (True, 17)):
        x = rng.normal(0, 0.5, n)
        f, g = centring._neg_log_post(x, *args, shared_p=shared_p)
        for k in range(n):
            e = np.zeros(n)
            e[k] = 1e-6
            num = (centring._neg_log_post(x + e, *args, shared_p=shared_p)[0]
                   - centring._neg_log_post(x - e, *args, shared_p=shared_p)[0]) / 2e-6
            assert abs(num - g[k]) < 1e-4 * max(1.0, abs(g[k])), (shared_p, k, num, g[k])


def test_strongly_inflated_genes_are_centred_and_plain_nb_genes_are_not():
    """Genes 0-9: gate 0.4 on well-expressed genes (the data pin the gate: centred); genes 10-29: no zero
    inflation (the gate's posterior is one-sided towards 0: non-centred). 600 cells make both unambiguous:
    at gate 0.4 the 2 log LR is in the hundreds, at gate 0 it is chi-square(1)-small."""
    rng = np.random.default_rng(1)
    G = 30
    gate = np.r_[np.full(10, 0.4), np.zeros(20)]
    for shared_p in (False, True):
        mu = rng.lognormal(1.5, 0.5, G)
        r = mu * 0.5 if shared_p else rng.lognormal(0.5, 0.3, G)  # shared p: mu / r constant
        X = _zinb(rng, 600, mu, r, gate)
        data = centring.gate_split_data(X, shared_p=shared_p)
        centred = set(data["gate_centred_idx"] - 1)
        assert set(range(10)) <= centred, (shared_p, sorted(centred))
        assert not centred & set(range(10, G)), (shared_p, sorted(centred))
        assert data["gate_n_centred"] + len(data["gate_noncentred_idx"]) == G


def test_split_data_is_computed_once_per_matrix(monkeypatch):
    """stan_data runs twice for --prior-draws: the per-gene fits are reused for the same matrix (not for another)."""
    from scribe_cli import centring

    calls = []
    real = centring.gate_evidence
    monkeypatch.setattr(centring, "gate_evidence", lambda X, shared_p: calls.append(1) or real(X, shared_p=shared_p))
    monkeypatch.setattr(centring, "_EVIDENCE", {})
    rng = np.random.default_rng(5)
    X = sp.csr_matrix(rng.negative_binomial(2, 0.5, size=(60, 8)))
    first = centring.gate_split_data(X, shared_p=True)
    second = centring.gate_split_data(sp.csr_matrix(X.toarray()), shared_p=True)
    assert len(calls) == 1
    assert all(np.array_equal(first[k], second[k]) for k in first)
    X2 = X.copy()
    X2[0, 0] += 1
    centring.gate_split_data(X2, shared_p=True)
    centring.gate_split_data(X, shared_p=False)
    assert len(calls) == 3


def _nb_logit_p(rng, C, mu, theta):
    """NB counts with mean mu and logit(p) = theta per gene (NumPyro's convention: r = mu exp(-theta))."""
    r = mu * np.exp(-theta)
    return sp.csr_matrix(rng.negative_binomial(r, 1 / (1 + np.exp(theta)), size=(C, mu.size)))


def test_p_genes_are_centred_only_where_the_population_is_wider_than_their_error():
    """One p for all genes: the population scale is ~0, so no gene is centred under the Gaussian family,
    however many counts it has (centring them sent prob_sigma into its funnel). logit(p) spread with sd 1.5:
    the scale is recovered and the genes the data pin are centred. 300 genes: the sd of 300 normal draws has
    sampling error 1.5 / sqrt(600) ~ 0.06, the per-gene fits' penalty shrinks a little: tolerance 0.3.
    Horseshoe / NEG also centre genes far (> 2 SE) from the centre: the 10 genes at logit(p) = 3."""
    rng = np.random.default_rng(11)
    mu = rng.lognormal(1.0, 0.8, 300)
    theta, se = centring.prob_evidence(_nb_logit_p(rng, 800, mu, np.full(300, -0.85)))
    m, sigma = centring.population_scale(theta, se)
    assert abs(m + 0.85) < 0.1 and sigma < 0.1, (m, sigma)
    assert not centring.prob_centred(theta, se, "gaussian").any()

    true = rng.normal(-0.8, 1.5, 300)
    X = _nb_logit_p(rng, 800, mu, true)
    theta, se = centring.prob_evidence(X)
    m, sigma = centring.population_scale(theta, se)
    assert abs(sigma - 1.5) < 0.3, sigma
    centred = centring.prob_centred(theta, se, "gaussian")
    assert np.array_equal(centred, se < sigma) and centred.mean() > 0.5
    # the centred genes' coordinates (plan.scales_prob_hyper): their own estimates and standard errors, in the
    # order of prob_centred_idx, as the program's offset and multiplier of prob_centred
    split, hyper = centring.prob_split_data(X, "gaussian"), centring.prob_hyper_scales(X, "gaussian")
    idx = split["prob_centred_idx"] - 1
    assert np.array_equal(idx, np.flatnonzero(centred))
    np.testing.assert_allclose(hyper["prob_centred_offset"], theta[idx])
    np.testing.assert_allclose(hyper["prob_centred_scale"], np.clip(se[idx], 1e-3, 1.0))
    assert np.all(hyper["prob_centred_scale"] > 0) and np.abs(theta[idx] - true[idx]).max() < 5 * se[idx].max()

    true = np.r_[np.full(290, -0.85), np.full(10, 3.0)]
    theta, se = centring.prob_evidence(_nb_logit_p(rng, 800, mu, true))
    centred = centring.prob_centred(theta, se, "horseshoe")
    assert centred[290:].all() and centred[:290].mean() < 0.1, (centred[290:], centred[:290].mean())
