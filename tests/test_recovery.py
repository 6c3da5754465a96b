"""Statistical checks of the rendered models: parameter recovery, prior draws, shrinkage.

Recovery: data simulated with a fixed seed from each model (NBDM, ZINB with a hierarchical gate prior,
NBVCP, ZINBVCP, a 2-component mixture, BNB tails), fitted with NUTS (every model here is small enough);
the 90% posterior intervals must cover the true gene parameters at about their nominal rate.

Why a binomial tolerance: where the truth is drawn from the model's prior, a correct implementation covers
each parameter with probability 0.9 on average, so the number covered out of n is about Binomial(n, 0.9).
Coverage events of different genes are positively correlated (they share p, capture, weights), which
widens the spread, so we only refuse counts outside the binomial's central 99.8% (0.1% in each tail):
what fails that is a real miscalibration (a wrong likelihood term, transform or prior), not bad luck.
Where the truth is not drawn from the prior (shrinkage scenarios) only identified quantities (gene means)
are checked, which the data dominate.

The programs are those of tests/test_likelihoods.py (helpers.reference_program, same text), so the compile
cache serves them to both files.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from scribe_cli.config import ModelConfig, validate
from scribe_cli.render import render
from scribe_cli.standata import stan_data

from helpers import reference_data, reference_program
from test_likelihoods import CASES, DATASET_CASES

pytestmark = pytest.mark.slow

LEVEL = 0.9


def _program(compile_stan, name):
    config = validate(ModelConfig(**CASES[name]))
    return config, compile_stan(reference_program(config), name=f"lik_{name}")


def _nuts(model, config, X, tmp_path, seed=1, warmup=400, draws=400, chains=4, **kw):
    fit = model.sample(data=reference_data(config, sp.csr_matrix(X)), chains=chains, parallel_chains=2,
                       iter_warmup=warmup, iter_sampling=draws, seed=seed, output_dir=str(tmp_path),
                       show_progress=False, **kw)
    divergences = int(np.sum(fit.method_variables()["divergent__"]))
    assert divergences <= 0.01 * chains * draws, f"{divergences} divergent transitions"
    return fit.stan_variables()


def _covered(draws: np.ndarray, truth: np.ndarray) -> np.ndarray:
    draws = draws.reshape(draws.shape[0], -1)
    lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=0)
    truth = np.asarray(truth).reshape(-1)
    return (lo <= truth) & (truth <= hi)


def _assert_coverage(draws, truth, what):
    covered = _covered(draws, truth)
    n, k = covered.size, int(covered.sum())
    low, high = stats.binom.ppf(0.001, n, LEVEL), stats.binom.ppf(0.999, n, LEVEL)
    assert low <= k <= high, f"{what}: {k}/{n} inside the {LEVEL:.0%} intervals, expected {low:.0f}..{high:.0f}"


def _nb(rng, mean, r):
    """NB(mean, size r) draws (numpy's negative_binomial counts failures with success probability r / (r + mean))."""
    return rng.negative_binomial(r, r / (r + mean))


# --- recovery -----------------------------------------------------------------------------------------

def test_recovery_nbdm(compile_stan, tmp_path):
    """Truth from the priors: p ~ Beta(1, 1), r_g ~ LogNormal(0, 1)."""
    rng = np.random.default_rng(101)
    C, G = 300, 40
    p = rng.beta(1, 1)
    r = rng.lognormal(0, 1, G)
    mu = r * p / (1 - p)
    X = _nb(rng, np.broadcast_to(mu, (C, G)), r)
    config, model = _program(compile_stan, "nbdm")
    post = _nuts(model, config, X, tmp_path)
    _assert_coverage(post["mu"], mu, "NBDM mu")
    _assert_coverage(post["r"], r, "NBDM r")
    assert _covered(post["p"][:, None], [p])[0] or abs(post["p"].mean() - p) < 0.05


def test_recovery_zinb_hierarchical_gate(compile_stan, tmp_path):
    """ZINB with the horseshoe gate prior (NUTS): gene means are recovered whatever the gates."""
    rng = np.random.default_rng(102)
    C, G = 300, 40
    p = 0.6
    r = rng.lognormal(0, 1, G)
    mu = r * p / (1 - p)
    gate = np.zeros(G)
    gate[:4] = 0.4
    X = _nb(rng, np.broadcast_to(mu, (C, G)), r) * (rng.uniform(size=(C, G)) >= gate)
    config, model = _program(compile_stan, "zinb_horseshoe")
    post = _nuts(model, config, X, tmp_path, adapt_delta=0.95)
    _assert_coverage(post["mu"], mu, "ZINB mu")


def test_recovery_bnb(compile_stan, tmp_path):
    """BNB tails with the horseshoe on omega: most genes NB, four heavy-tailed ones; the BNB keeps the NB
    mean (mean-preserving alpha), so gene means are recovered for both kinds."""
    rng = np.random.default_rng(103)
    C, G = 300, 30
    p = 0.5
    r = rng.lognormal(0, 0.7, G)
    mu = r * p / (1 - p)
    omega = np.full(G, 1e-4)
    omega[:4] = 1.0
    kappa = 2 + (r + 1) / omega
    alpha = (kappa - 1) * mu / r
    p_cell = rng.beta(kappa, alpha, size=(C, G))  # BNB = NB whose success probability is Beta(kappa, alpha)
    X = rng.negative_binomial(np.broadcast_to(r, (C, G)), p_cell)
    config, model = _program(compile_stan, "bnb")
    # the horseshoe on omega puts a funnel where tau is small: a small step (adapt_delta 0.99) keeps NUTS off
    # divergences there (at 0.95 one chain of four diverged in 74% of its transitions)
    post = _nuts(model, config, X, tmp_path, adapt_delta=0.99)
    _assert_coverage(post["mu"], mu, "BNB mu")
    # the heavy-tailed genes escape the shrinkage towards the NB limit
    assert np.median(post["omega"][:, :4]) > 10 * np.median(post["omega"][:, 4:])


def test_recovery_nbvcp(compile_stan, tmp_path):
    """Truth from the priors. mu and capture are not separately identified (only their product), so the
    identified quantities are checked: r_g and each cell's p_hat = p nu / (1 - p (1 - nu))."""
    rng = np.random.default_rng(104)
    C, G = 200, 30
    p = rng.beta(1, 1)
    r = rng.lognormal(0, 1, G)
    nu = rng.beta(1, 1, C)
    mu = r * p / (1 - p)
    X = _nb(rng, nu[:, None] * mu[None, :], r)
    config, model = _program(compile_stan, "nbvcp")
    post = _nuts(model, config, X, tmp_path)
    _assert_coverage(post["r"], r, "NBVCP r")
    p_d, nu_d = post["p"][:, None], post["capture"]
    p_hat_draws = p_d * nu_d / (1 - p_d * (1 - nu_d))
    _assert_coverage(p_hat_draws, p * nu / (1 - p * (1 - nu)), "NBVCP p_hat")


def test_recovery_capture_prior(compile_stan, tmp_path):
    """--organism with --mean-anchor (the program of the likelihood case nbvcp_meandisp), truth from the story
    of models.md: each cell holds M_0 molecules (sum_g mu_g = M_0) and captures nu_c = exp(-eta_c) of them,
    and the model's prior is eta_c ~ Normal(log(M_0 / L_c), 0.3). M_0 is data, so a smaller one (20000 over 25
    genes, ~500 UMIs per cell) comes from the same compiled program.

    The prior pins the scale that the likelihood leaves free (it sees only mu x capture): the true gene means
    themselves must be covered, and log-capture intervals must be narrower than the prior's 0.99. Per cell,
    the prior's centre uses L_c, which the likelihood also sees: that double use makes per-cell capture
    intervals overconfident where L_c is noisy (few genes, strong overdispersion), so per cell the test checks
    the part the likelihood identifies, capture relative to its geometric mean over cells."""
    rng = np.random.default_rng(106)
    C, G, M0 = 150, 25, 20000.0
    w = rng.lognormal(0, 1, G)
    mu = M0 * w / w.sum()
    r = rng.lognormal(1.5, 0.3, G)
    nu = np.exp(-np.abs(rng.normal(np.log(40), 0.3, C)))
    X = _nb(rng, nu[:, None] * mu[None, :], r)
    config = validate(ModelConfig(**CASES["nbvcp_meandisp"], total_mrna=M0))
    _, model = _program(compile_stan, "nbvcp_meandisp")  # total_mrna is data: the same program
    post = _nuts(model, config, X, tmp_path, warmup=300, draws=300)
    _assert_coverage(post["mu"], mu, "mu under --organism --mean-anchor")
    log_cap = np.log(post["capture"])
    _assert_coverage(log_cap - log_cap.mean(axis=1, keepdims=True), np.log(nu) - np.log(nu).mean(),
                     "log capture relative to its mean over cells")
    width = np.subtract(*np.quantile(log_cap, [0.95, 0.05], axis=0))
    assert np.median(width) < 2 * 1.645 * 0.3, f"log-capture 90% intervals ({np.median(width):.2f}) not narrower than the prior's"


def test_recovery_capture_shift(compile_stan, tmp_path):
    """--organism in canonical log-mu coordinates: cells sampled as a common shift plus zero-sum deviations, log
    mu moving with the shift (params/capture_organism.stan.j2), started by fit.capture_starts. The story of
    test_recovery_capture_prior with one shared p (the program's); two cells hold more than M_0 e^{-1.5}
    molecules, so their prior centre is within SHIFTED_SDS sds of the bound and they keep their own eta: both
    kinds of cell are checked. The same coordinate change must give the same posterior: true gene means and
    relative log captures covered at the nominal rate (binomial bounds above)."""
    from scribe_cli.fit import capture_starts

    rng = np.random.default_rng(107)
    C, G, M0, p = 150, 25, 20000.0, 0.99
    w = rng.lognormal(0, 1, G)
    mu = M0 * w / w.sum()
    r = mu * (1 - p) / p  # one shared p: mean r p / (1 - p) = mu
    nu = np.exp(-np.abs(rng.normal(np.log(40), 0.3, C)))
    nu[:2] = 0.6  # ~12,000 of 20,000 molecules: centres log(M_0 / L_c) ~ 0.5 < 5 x 0.3
    X = _nb(rng, nu[:, None] * mu[None, :], r)
    config = validate(ModelConfig(**CASES["nbvcp_organism"], total_mrna=M0))
    _, model = _program(compile_stan, "nbvcp_organism")  # total_mrna is data: the same program
    data = reference_data(config, sp.csr_matrix(X))
    assert 0 < data["capture_n_shifted"] < C, data["capture_n_shifted"]
    post = _nuts(model, config, X, tmp_path, warmup=300, draws=300, inits=capture_starts(model, data, 4, 1))
    # the CSV holds 6 significant digits: each of the three values is rounded by up to 5e-6
    np.testing.assert_allclose(post["log_mu"], post["log_mu_shifted"] + post["capture_shift"], atol=1e-4)
    _assert_coverage(post["mu"], mu, "mu with the capture shift")
    log_cap = np.log(post["capture"])
    _assert_coverage(log_cap - log_cap.mean(axis=1, keepdims=True), np.log(nu) - np.log(nu).mean(),
                     "log capture relative to its mean over cells (shifted and own)")


def test_recovery_zinbvcp(compile_stan, tmp_path):
    """Truth from the priors (gate ~ Beta(1, 9)); r_g and the gates are identified."""
    rng = np.random.default_rng(105)
    C, G = 200, 25
    p = rng.beta(1, 1)
    r = rng.lognormal(0, 1, G)
    nu = rng.beta(1, 1, C)
    gate = rng.beta(1, 9, G)
    mu = r * p / (1 - p)
    X = _nb(rng, nu[:, None] * mu[None, :], r) * (rng.uniform(size=(C, G)) >= gate)
    config, model = _program(compile_stan, "zinbvcp")
    post = _nuts(model, config, X, tmp_path)
    _assert_coverage(post["r"], r, "ZINBVCP r")
    _assert_coverage(post["gate"], gate, "ZINBVCP gate")


def test_recovery_mixture(compile_stan, tmp_path):
    """Two components, truth from the priors (weights Dirichlet(1, 1), ordered; r_gk ~ LogNormal(0, 1));
    the ordering constraint labels the smaller component 1."""
    rng = np.random.default_rng(106)
    C, G, K = 300, 30, 2
    weights = np.sort(rng.dirichlet([1, 1]))
    p = rng.beta(1, 1)
    r = rng.lognormal(0, 1, (G, K))
    mu = r * p / (1 - p)
    label = rng.choice(K, size=C, p=weights)
    X = _nb(rng, mu.T[label], r.T[label])
    config, model = _program(compile_stan, "mix")
    post = _nuts(model, config, X, tmp_path)
    _assert_coverage(post["mu"], mu, "mixture mu")
    _assert_coverage(post["weights"], weights, "mixture weights")
    assigned = post["assignment_prob"].mean(axis=0).argmax(axis=1)
    assert np.mean(assigned == label) > 0.9


# --- prior checks -------------------------------------------------------------------------------------

# Three programs put every family on every target (overdispersion allows horseshoe and neg only).
PRIOR_PROGRAMS = [
    dict(prob_prior="gaussian", expression_prior="horseshoe", gate_prior="neg", overdispersion_prior="horseshoe"),
    dict(prob_prior="horseshoe", expression_prior="neg", gate_prior="gaussian", overdispersion_prior="neg"),
    dict(prob_prior="neg", expression_prior="gaussian", gate_prior="horseshoe", overdispersion_prior="horseshoe"),
]
# target -> (parameter, link, centre sampler, Gaussian s_raw (mean, sd)) from priors.md
TARGETS = {
    "prob": ("p", "logit", lambda rng, n: rng.normal(0, 1, n), (0, 0.5)),
    "expression": ("r", "log", lambda rng, n: rng.normal(0, 1, n), (-2, 0.5)),  # log r_pop ~ N(0, 1): lognormal(0, 1)
    "gate": ("gate", "logit", lambda rng, n: rng.normal(-5, 1, n), (-2, 0.5)),
    "overdispersion": ("omega", "log", lambda rng, n: rng.normal(-5, 1, n), (-2, 0.5)),
}
HYPER = dict(horseshoe_tau0=1.0, slab_df=4.0, slab_scale=2.0, neg_u=1.0, neg_a=1.0, neg_tau=1.0)


def _spec_draws(family, target, rng, n):
    """The spec's generative process (priors.md) for one element: (link-scale value, scale variable)."""
    centre = TARGETS[target][2](rng, n)
    z = rng.normal(size=n)
    if family == "gaussian":
        m, s = TARGETS[target][3]
        scale = np.log1p(np.exp(rng.normal(m, s, n)))
        return centre + scale * z, scale
    if family == "horseshoe":
        tau = np.abs(stats.cauchy.rvs(scale=HYPER["horseshoe_tau0"], size=n, random_state=rng))
        lam = np.abs(stats.cauchy.rvs(size=n, random_state=rng))
        df, s = HYPER["slab_df"], HYPER["slab_scale"]
        c2 = stats.invgamma.rvs(df / 2, scale=df * s**2 / 2, size=n, random_state=rng)
        lam_tilde = np.sqrt(c2) * lam / np.sqrt(c2 + tau**2 * lam**2)
        return centre + tau * lam_tilde * z, tau
    zeta = rng.gamma(HYPER["neg_a"], 1 / HYPER["neg_tau"], n)  # numpy's gamma takes a scale = 1 / rate
    psi = rng.gamma(HYPER["neg_u"], 1 / zeta)
    return centre + np.sqrt(psi) * z, psi


@pytest.mark.parametrize("priors", PRIOR_PROGRAMS, ids=["program1", "program2", "program3"])
def test_prior_draws_match_spec(priors, compile_stan, tmp_path):
    """Draws of the rendered program with prior_only = 1 (likelihood left out) against numpy draws of the spec's
    process, per target: the link-scale value of one element and the family's scale variable, by a two-sample KS
    test."""
    config = validate(ModelConfig(model="zinb", components=2, bnb=True, **priors))
    program = render(config)
    # `--prior-draws` samples this program with prior_only = 1, which skips the model block's likelihood statement.
    # Compiled without that statement (the same target under prior_only = 1), the three programs cost ~25 CPU-s
    # less each: the mixture BNB likelihood's autodiff is most of a compile, and the suite runs near its budget.
    lik = re.search(r"\n  if \(!prior_only\) \{\n.*?\n  \}\n", program, flags=re.S)
    assert lik and "target +=" in lik.group(0)
    prior_program = program[:lik.start()] + "\n" + program[lik.end():]
    model_block = prior_program[prior_program.index("\nmodel {"):prior_program.index("\ngenerated quantities {")]
    assert "_loglik(" not in model_block  # no likelihood left in it
    model = compile_stan(prior_program, name="prior_check")
    data = stan_data(config, sp.csr_matrix(np.array([[1, 0, 2]])), prior_only=True)
    # 4 x 300 draws thinned by 8 (nearly independent): a two-sample KS against 100,000 spec draws then rejects at
    # p = 1e-3 from a distance of ~1.95 / sqrt(1,200) = 0.056 between the CDFs, which a misplaced scale or a
    # missing Jacobian exceeds many times over (4 x 500 draws cost ~15 s more per program of the suite's budget)
    fit = model.sample(data=data, chains=4, parallel_chains=2, iter_warmup=400, iter_sampling=2400, thin=8, seed=7,
                       adapt_delta=0.99, output_dir=str(tmp_path), show_progress=False)
    post = fit.stan_variables()
    rng = np.random.default_rng(8)
    for target, family in config.hierarchical().items():
        name, link, _, _ = TARGETS[target]
        value = post[name][:, 0, 0]
        with np.errstate(divide="ignore"):  # a gate draw can round to 0 in the CSV: -inf, dropped below
            stan_theta = np.log(value / (1 - value)) if link == "logit" else np.log(value)
        scale_name = {"gaussian": f"{target}_sigma", "horseshoe": f"{target}_tau", "neg": f"{target}_psi"}[family]
        stan_scale = post[scale_name].reshape(post[scale_name].shape[0], -1)[:, 0]
        spec_theta, spec_scale = _spec_draws(family, target, rng, 100_000)
        for what, a, b in ((f"{link}({name})", stan_theta, spec_theta), (scale_name, stan_scale, spec_scale)):
            pval = stats.ks_2samp(a[np.isfinite(a)], b).pvalue
            assert pval > 1e-3, f"{target} ({family}) {what}: KS p = {pval:.2g}"


# --- shrinkage ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["zinb_horseshoe", "zinb_neg"])
def test_gate_shrinkage(name, compile_stan, tmp_path):
    """40 genes, 4 with structural zeros (gate 0.5), 36 without. What we expect, and why: the zeros of a null
    gene are explained by the NB alone, so its gate is pulled to the population centre (sigmoid(-5) ~ 0.7%)
    and the 36 null gates end up together near zero; the 4 ZI genes have far more zeros than their NB can
    produce, which the local scales let them explain by escaping the shrinkage: their gates stay near 0.5.
    The ZI genes get r = 4 (P_NB(0) = 1/16 at p = 1/2): with a small r an NB with a smaller r mimics the
    extra zeros and no prior should then call the gene zero-inflated."""
    rng = np.random.default_rng(107)
    C, G = 400, 40
    p = 0.5
    r = rng.lognormal(0.5, 0.5, G)
    r[:4] = 4.0
    mu = r * p / (1 - p)
    gate = np.zeros(G)
    gate[:4] = 0.5
    X = _nb(rng, np.broadcast_to(mu, (C, G)), r) * (rng.uniform(size=(C, G)) >= gate)
    config, model = _program(compile_stan, name)
    # The 36 null gates shrink hard. When NEG sampled its local scales (psi_raw), the scale sat in a funnel and the
    # NEG program diverged in 0.8-1.8% of its transitions at adapt_delta 0.95 (it ran at 0.99); with psi
    # integrated out (plan.marginal_neg) it had none at 0.95 (measured once, 4 x 400 draws).
    post = _nuts(model, config, X, tmp_path, adapt_delta=0.95)
    g = post["gate"].mean(axis=0)
    # Null genes: with the flat base prior Beta(1, 9) instead (plain zinb), the same data give null gates with
    # posterior means of median 0.047 and 90% quantile 0.09 (measured once); the hierarchies measured 0.012-0.013
    # and 0.020-0.025. A single null gene may keep a few percent (chance excess zeros), hence the quantile.
    assert np.median(g[4:]) < 0.02 and np.quantile(g[4:], 0.9) < 0.04, np.sort(g[4:])
    assert np.all(g[:4] > 0.3), g[:4]
    _assert_coverage(post["gate"][:, :4], gate[:4], "ZI genes' gates")


# --- joint multi-dataset models (--dataset-key, datasets.md) ------------------------------------------------

def _nuts_datasets(compile_stan, config, X, cell_dataset, tmp_path, name, seed=1, warmup=300, draws=300, chains=4,
                   reference=False):
    """NUTS on the plain program (render(config)) of a dataset configuration, or (reference) on the likelihood
    tests' program of the same configuration, which adds generated quantities only (no _rng: the same draws);
    300 + 300 iterations per chain (1,200 draws) are enough for the 90% / 99% intervals below and keep each fit
    under ~30 s on two cores."""
    if reference:
        model = compile_stan(reference_program(config), name=name)
        data = reference_data(config, sp.csr_matrix(X), cell_dataset_override=cell_dataset)
    else:
        model = compile_stan(render(config), name=name)
        data = stan_data(config, sp.csr_matrix(X), cell_dataset_override=cell_dataset)
    fit = model.sample(data=data, chains=chains, parallel_chains=2, iter_warmup=warmup, iter_sampling=draws,
                       seed=seed, output_dir=str(tmp_path), show_progress=False)
    divergences = int(np.sum(fit.method_variables()["divergent__"]))
    assert divergences <= 0.01 * chains * draws, f"{divergences} divergent transitions"
    return fit.stan_variables()


def test_recovery_expression_dataset_prior(compile_stan, tmp_path):
    """Two datasets (150 and 250 cells, interleaved) share the means of 26 genes; 4 genes are 4x higher in
    dataset 2. NBDM with --expression-dataset-prior gaussian (canonical: log r_g^(d) = log r_g + s z_gd, p
    shared, so mu_g^(d) moves with r_g^(d)). The per-dataset means (identified: the data dominate) cover the
    truth at the binomial rate of the recovery tests above; the shifted genes' log-ratio log(mu_g2 / mu_g1)
    is clearly non-zero (its 99% interval excludes 0 and covers log 4) and the unshifted genes' is near zero.

    Tolerances: the sampling sd of an estimated log-ratio is sqrt(sum_d (1/mu_gd + 1/r_gd) / n_d), 0.04-0.19
    here, so log 4 = 1.39 is 7-30 sd from 0: a 99% interval that still reached 0 would be a real failure.
    For the unshifted genes a correct model covers 0 (their true log-ratio) with its 90% intervals at about
    the nominal rate: the same binomial band as _assert_coverage (with the prior's pull towards 0 only helping).
    The horseshoe would shrink the unshifted genes harder but with two datasets per gene its funnel costs
    ~4x the sampling time (measured: 127 s, 1% divergent transitions, vs 38 s for the Gaussian)."""
    rng = np.random.default_rng(108)
    G, shifted = 30, 4
    p = 0.5
    r1 = rng.lognormal(0, 0.7, G)
    r2 = r1.copy()
    r2[:shifted] *= 4
    cell_dataset = rng.permutation(np.repeat([0, 1], [150, 250]))
    R = np.where(cell_dataset[:, None] == 0, r1[None, :], r2[None, :])
    X = _nb(rng, R * p / (1 - p), R)
    config = validate(ModelConfig(model="nbdm", dataset_key="batch", expression_dataset_prior="gaussian"))
    post = _nuts_datasets(compile_stan, config, X, cell_dataset, tmp_path, "rec_expression_dataset")
    mu_true = np.stack([r1, r2], axis=1) * p / (1 - p)
    assert post["mu"].shape[1:] == (G, 2)
    _assert_coverage(post["mu"], mu_true, "per-dataset means")
    log_ratio = np.log(post["mu"][:, :, 1]) - np.log(post["mu"][:, :, 0])
    lo, hi = np.quantile(log_ratio[:, :shifted], [0.005, 0.995], axis=0)
    assert np.all(lo > 0) and np.all((lo <= np.log(4)) & (np.log(4) <= hi)), (lo, hi)
    _assert_coverage(log_ratio[:, shifted:], np.zeros(G - shifted), "unshifted genes' log-ratio")
    assert np.median(np.abs(np.median(log_ratio[:, shifted:], axis=0))) < 0.15  # vs 1.39 for the shifted ones


def test_two_level_differs_from_gene_specific(compile_stan, tmp_path):
    """decisions.md item 3: --prob-dataset-mode two_level gives each dataset its own centre (and scale) of
    logit p; gene_specific has one centre for every (gene, dataset). Two datasets of 200 cells whose 30
    genes' logit p are Normal(logit 0.3, 0.3) and Normal(logit 0.7, 0.3) (r_g shared, canonical), fitted both
    ways with the Gaussian family:

    - two_level has prob_dataset_loc_d (one per dataset): each 99% interval covers its true centre (the data
      are the mode's own generative process, so a correct fit covers with probability ~0.99 each), and the
      second exceeds the first in every draw (true difference 1.69, posterior sd ~0.1);
    - gene_specific has no prob_dataset_loc_d, only the scalar prob_dataset_loc, which lands between the two
      centres (its 90% interval covers neither), and its one scale has to absorb the datasets' difference:
      sqrt(0.3^2 + 0.85^2) = 0.9 against two_level's per-dataset 0.3, so its posterior median must be more
      than twice two_level's larger one (the true ratio is 3);
    - both recover the identified per-dataset means mu_g^(d) at the binomial rate of the tests above."""
    rng = np.random.default_rng(109)
    G = 30
    centres = np.log(np.array([0.3, 0.7]) / np.array([0.7, 0.3]))
    r = rng.lognormal(0.5, 0.5, G)
    theta = centres[None, :] + 0.3 * rng.normal(size=(G, 2))
    P = 1 / (1 + np.exp(-theta))
    cell_dataset = rng.permutation(np.repeat([0, 1], [200, 200]))
    Pc = P[:, cell_dataset].T
    X = _nb(rng, r[None, :] * Pc / (1 - Pc), np.broadcast_to(r, Pc.shape))
    mu_true = r[:, None] * P / (1 - P)
    fits = {}
    for mode in ("two_level", "gene_specific"):
        config = validate(ModelConfig(model="nbdm", dataset_key="ds", prob_dataset_prior="gaussian",
                                      prob_dataset_mode=mode))
        # gene_specific is test_likelihoods' ds_pairs: its compiled program serves here (one compile fewer)
        shared = mode == "gene_specific"
        assert not shared or config == validate(ModelConfig(**DATASET_CASES["ds_pairs"]))
        fits[mode] = _nuts_datasets(compile_stan, config, X, cell_dataset, tmp_path,
                                    "lik_ds_pairs" if shared else f"rec_prob_{mode}", reference=shared)
        _assert_coverage(fits[mode]["mu"], mu_true, f"{mode} per-dataset means")
    two, one = fits["two_level"], fits["gene_specific"]
    assert two["prob_dataset_loc_d"].shape[1:] == (2,) and two["prob_dataset_sigma"].shape[1:] == (2,)
    lo, hi = np.quantile(two["prob_dataset_loc_d"], [0.005, 0.995], axis=0)
    assert np.all((lo <= centres) & (centres <= hi)), (lo, hi, centres)
    assert np.all(two["prob_dataset_loc_d"][:, 1] > two["prob_dataset_loc_d"][:, 0])
    assert "prob_dataset_loc_d" not in one and one["prob_dataset_loc"].ndim == 1  # one scalar per draw
    lo, hi = np.quantile(one["prob_dataset_loc"], [0.05, 0.95])
    assert centres[0] < lo and hi < centres[1], (lo, hi)
    assert np.median(one["prob_dataset_sigma"]) > 2 * np.median(two["prob_dataset_sigma"], axis=0).max()
