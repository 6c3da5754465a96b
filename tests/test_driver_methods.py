"""Correctness of our CmdStan-compatible driver, checked through UNMODIFIED cmdstanpy.

Every statistical check compares against an analytic posterior. Tolerances come from Monte Carlo
error, not guesswork:

* MCSE of a posterior mean = sd / sqrt(ESS_mean), with ESS_mean the "mean" ESS of the draws (ArviZ,
  Geyer's initial-monotone-sequence estimator over all chains).
* MCSE of a posterior sd: with d = (x - mean)^2, sd^2 is estimated by mean(d), whose MCSE is
  sqrt(var(d) / ESS(d)); by the delta method (sd = sqrt(E d)) MCSE(sd) = MCSE(mean d) / (2 sd).
  This is the estimator of posterior::mcse_sd. For iid Gaussian draws it reduces to
  sd / sqrt(2 N), the textbook standard error of a sample sd.
  (Checked on synthetic AR(1) chains with known variance: the resulting z-scores have sd ~= 1.)
* |estimate - truth| / MCSE is approximately N(0, 1) for a correct sampler, so one 4-MCSE check
  fails spuriously with probability 2 * (1 - Phi(4)) = 6.3e-5. Seeds are fixed, so the outcome is
  deterministic anyway; the probability says how unlucky a seed would have to be.
* A 4-MCSE check is vacuous if the sampler mixes badly (huge MCSE). Each sampler check therefore
  also requires a minimum ESS: for these Gaussian-like targets a correct NUTS gives ESS_mean of the
  order of the number of draws N (often more) and ESS((x-m)^2) of order N/3 .. N; we require
  ESS_mean > N/4 and ESS((x-m)^2) > N/10, far inside the healthy range, far above a broken sampler.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # ArviZ announces its refactor on import
    import arviz as az

import cmdstanpy

pytestmark = pytest.mark.slow

# --------------------------------------------------------------------------------------------
# Stan programs (each compiled once per toolchain through the content-hash cache)
# --------------------------------------------------------------------------------------------

# One program, two targets (one compile): the conjugate normal-normal, and with bimodal = 1 two modes at
# +-50 with sd 1, where the log density at 0 is 1250 below the modes, so neither an optimiser nor a NUTS
# chain (step sizes ~1, even the 10x probes of early dual averaging) can cross.
NORMAL_PROGRAM = """
data {
  int<lower=0> N;
  vector[N] y;
  real<lower=0> sigma;
  real mu0;
  real<lower=0> tau0;
  int<lower=0, upper=1> bimodal;
}
parameters {
  real mu;
}
model {
  if (bimodal) {
    target += log_mix(0.5, normal_lpdf(mu | -50, 1), normal_lpdf(mu | 50, 1));
  } else {
    mu ~ normal(mu0, tau0);
    y ~ normal(mu, sigma);
  }
}
generated quantities {
  real y2 = 2 * mu + 1;
}
"""

BETA_BINOMIAL_PROGRAM = """
data {
  int<lower=0> n;
  int<lower=0, upper=n> y;
  real<lower=0> a;
  real<lower=0> b;
}
parameters {
  real<lower=0, upper=1> theta;
}
model {
  theta ~ beta(a, b);
  y ~ binomial(n, theta);
}
"""

# `target += log_z` only shifts the log density by a constant (NUTS, optimisation, Laplace and
# pathfinder are unaffected). It is there for ADVI: its convergence test is on the RELATIVE change
# of the ELBO, and for a normalised target the ELBO at the optimum is log Z = 0, so relative
# changes never get small and ADVI stops at its iteration limit ("may not have converged"; real
# CmdStan behaves the same). With log_z = 100 the ELBO is ~100.
# One program for independent (correlated = 0: sds s) and correlated (correlated = 1: covariance S)
# Gaussian targets, so the two compile once.
IID_PROGRAM = """
data {
  int<lower=1> K;
  vector[K] m;
  int<lower=0, upper=1> correlated;
  vector<lower=0>[correlated ? 0 : K] s;
  matrix[correlated ? K : 0, correlated ? K : 0] S;
  real log_z;
}
parameters {
  vector[K] theta;
}
model {
  if (correlated) {
    theta ~ multi_normal(m, S);
  } else {
    theta ~ normal(m, s);
  }
  target += log_z;
}
"""

NO_PARAMS_PROGRAM = """
data {
  real<lower=0> lambda;
}
generated quantities {
  real z = normal_rng(0, 1);
  int k = poisson_rng(lambda);
}
"""

# --------------------------------------------------------------------------------------------
# Data and analytic posteriors
# --------------------------------------------------------------------------------------------

_rng = np.random.default_rng(20261125)
NORMAL_DATA = {
    "N": 20,
    "y": np.round(_rng.normal(1.7, 2.0, size=20), 3).tolist(),
    "sigma": 2.0,
    "mu0": 1.0,
    "tau0": 3.0,
    "bimodal": 0,
}
_prec = 1 / NORMAL_DATA["tau0"] ** 2 + NORMAL_DATA["N"] / NORMAL_DATA["sigma"] ** 2
NORMAL_POST_SD = math.sqrt(1 / _prec)
NORMAL_POST_MEAN = (
    NORMAL_DATA["mu0"] / NORMAL_DATA["tau0"] ** 2 + sum(NORMAL_DATA["y"]) / NORMAL_DATA["sigma"] ** 2
) / _prec

BIMODAL_DATA = {"N": 0, "y": [], "sigma": 1.0, "mu0": 0.0, "tau0": 1.0, "bimodal": 1}

BB_DATA = {"n": 20, "y": 7, "a": 2.0, "b": 3.0}
BB_A = BB_DATA["a"] + BB_DATA["y"]  # posterior Beta(A, B)
BB_B = BB_DATA["b"] + BB_DATA["n"] - BB_DATA["y"]
BB_MEAN = BB_A / (BB_A + BB_B)
BB_SD = math.sqrt(BB_A * BB_B / ((BB_A + BB_B) ** 2 * (BB_A + BB_B + 1)))
# jacobian=False: the mode of the density of theta itself, (a+y-1)/(a+b+n-2).
BB_MAP = (BB_A - 1) / (BB_A + BB_B - 2)
# jacobian=True: Stan maximises the density of u = logit(theta), which is
#   p(theta(u)) |dtheta/du| = theta^(A-1) (1-theta)^(B-1) * theta (1-theta) = theta^A (1-theta)^B,
# whose derivative in u is A (1-theta) - B theta = 0  =>  theta = A / (A+B), i.e. u = log(A/B).
BB_MODE_JACOBIAN = BB_A / (BB_A + BB_B)

K_IID = 100
_rng = np.random.default_rng(7)
IID_M = np.round(np.linspace(-10.0, 10.0, K_IID), 6)[_rng.permutation(K_IID)]  # distinct, shuffled
IID_S = np.round(np.linspace(0.5, 3.0, K_IID), 6)[_rng.permutation(K_IID)]
NOT_CORRELATED = {"correlated": 0, "S": np.zeros((0, 0)).tolist(), "log_z": 100.0}
IID_DATA = {"K": K_IID, "m": IID_M.tolist(), "s": IID_S.tolist(), **NOT_CORRELATED}

K_SMALL = 5
SMALL_DATA = {"K": K_SMALL, "m": IID_M[:K_SMALL].tolist(), "s": IID_S[:K_SMALL].tolist(), **NOT_CORRELATED}

MVN_M = np.array([1.0, -2.0, 3.0])
_sd = np.array([1.0, 2.0, 0.5])
_corr = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.1], [0.3, 0.1, 1.0]])
MVN_S = _corr * np.outer(_sd, _sd)
MVN_DATA = {"K": 3, "m": MVN_M.tolist(), "correlated": 1, "s": [], "S": MVN_S.tolist(), "log_z": 100.0}

# --------------------------------------------------------------------------------------------
# Monte Carlo error helpers
# --------------------------------------------------------------------------------------------


def ess_mean(x: np.ndarray) -> float:
    """ESS for the mean of draws laid out as (chains, draws)."""
    return float(az.ess(np.asarray(x, dtype=float), method="mean"))


def mcse_mean(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    ess = ess_mean(x)
    return x.std(ddof=1) / math.sqrt(ess), ess


def mcse_sd(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    d = (x - x.mean()) ** 2
    ess = ess_mean(d)
    return math.sqrt(d.var(ddof=1) / ess) / (2 * x.std(ddof=1)), ess


def moment_problems(x: np.ndarray, mean: float, sd: float, label: str, n_mcse: float = 4.0) -> list[str]:
    """Problems with draws x (chains, draws) of a target with known mean and sd ([] if none)."""
    x = np.asarray(x, dtype=float)
    n = x.size
    problems = []
    se_m, ess_m = mcse_mean(x)
    se_s, ess_s = mcse_sd(x)
    zm = (x.mean() - mean) / se_m
    zs = (x.std(ddof=1) - sd) / se_s
    if abs(zm) > n_mcse:
        problems.append(f"{label}: mean {x.mean():.5g} vs {mean:.5g} is {zm:+.2f} MCSE (MCSE {se_m:.3g})")
    if abs(zs) > n_mcse:
        problems.append(f"{label}: sd {x.std(ddof=1):.5g} vs {sd:.5g} is {zs:+.2f} MCSE (MCSE {se_s:.3g})")
    if ess_m < n / 4:
        problems.append(f"{label}: ESS of the mean {ess_m:.0f} < N/4 = {n / 4:.0f} (sampler mixes badly)")
    if ess_s < n / 10:
        problems.append(f"{label}: ESS of (x-m)^2 {ess_s:.0f} < N/10 = {n / 10:.0f} (sampler mixes badly)")
    return problems


def chains_of(fit, column: str, inc_warmup: bool = False) -> np.ndarray:
    """Draws of one CSV column as (chains, draws)."""
    draws = fit.draws(inc_warmup=inc_warmup, concat_chains=False)  # (draws, chains, columns)
    return draws[:, :, list(fit.column_names).index(column)].T


def csv_draw_rows(path: str) -> int:
    """Number of draw rows in a Stan CSV file, counted independently of cmdstanpy."""
    rows = [ln for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return len(rows) - 1  # minus the header row


def print_tol(v: np.ndarray, sig: int = 6) -> np.ndarray:
    """Largest rounding error of printing v with `sig` significant digits: half a unit in the last place."""
    v = np.maximum(np.abs(np.asarray(v, dtype=float)), 1e-300)
    return 0.5 * 10.0 ** (np.floor(np.log10(v)) - (sig - 1))


# --------------------------------------------------------------------------------------------
# Compiled models and shared fits (compiled once each through the cache)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def normal_model(compile_stan):
    return compile_stan(NORMAL_PROGRAM, "normal_normal")


@pytest.fixture(scope="module")
def bb_model(compile_stan):
    return compile_stan(BETA_BINOMIAL_PROGRAM, "beta_binomial")


@pytest.fixture(scope="module")
def iid_model(compile_stan):
    return compile_stan(IID_PROGRAM, "iid_normal")


@pytest.fixture(scope="module")
def no_params_model(compile_stan):
    return compile_stan(NO_PARAMS_PROGRAM, "no_params")


SAMPLE_ARGS = dict(chains=4, parallel_chains=4, iter_warmup=1000, iter_sampling=1000, show_progress=False)


@pytest.fixture(scope="module")
def normal_fit(normal_model):
    return normal_model.sample(data=NORMAL_DATA, seed=1234, **SAMPLE_ARGS)


@pytest.fixture(scope="module")
def iid_fit(iid_model):
    return iid_model.sample(data=IID_DATA, seed=4321, **SAMPLE_ARGS)


# --------------------------------------------------------------------------------------------
# 1. Conjugate normal-normal
# --------------------------------------------------------------------------------------------


def test_normal_normal_nuts_matches_analytic_posterior(normal_fit):
    mu = chains_of(normal_fit, "mu")
    assert mu.shape == (4, 1000)
    assert moment_problems(mu, NORMAL_POST_MEAN, NORMAL_POST_SD, "mu") == []
    # The four chains must be four different streams (one RNG per chain, not one shared seed).
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(mu[i], mu[j]), f"chains {i + 1} and {j + 1} have identical draws"


# --------------------------------------------------------------------------------------------
# 2. Beta-binomial: NUTS and the three optimisers, with and without the Jacobian
# --------------------------------------------------------------------------------------------


def test_beta_binomial_nuts_matches_analytic_posterior(bb_model):
    fit = bb_model.sample(data=BB_DATA, seed=99, **SAMPLE_ARGS)
    theta = chains_of(fit, "theta")
    assert ((theta > 0) & (theta < 1)).all()
    assert moment_problems(theta, BB_MEAN, BB_SD, "theta") == []


# Optimiser accuracy: the default L-BFGS/BFGS tolerances stop when the relative change of the
# objective is below 1e4 * 2.2e-16, i.e. ~2e-12 of an objective of order 10; with a curvature of
# order A*B/(A+B) ~ 6 on the unconstrained scale that leaves the argmax within ~1e-5, and the CSV
# prints 6 significant digits (resolution 1e-6 at theta ~ 0.35). 1e-4 is well above both and far
# below the difference between the two modes tested here (0.0122).
OPT_TOL = 1e-4


@pytest.mark.parametrize("algorithm", ["lbfgs", "bfgs", "newton"])
@pytest.mark.parametrize("jacobian", [False, True])
def test_beta_binomial_optimize_finds_exact_mode(bb_model, algorithm, jacobian):
    mle = bb_model.optimize(
        data=BB_DATA, algorithm=algorithm, jacobian=jacobian, seed=5, inits={"theta": 0.9}
    )
    expected = BB_MODE_JACOBIAN if jacobian else BB_MAP
    theta = float(mle.stan_variable("theta"))
    assert abs(theta - expected) < OPT_TOL, (
        f"{algorithm} jacobian={jacobian}: theta={theta}, expected {expected} "
        f"(the other mode is {BB_MAP if jacobian else BB_MODE_JACOBIAN})"
    )
    config = mle.metadata.cmdstan_config
    assert config["algorithm"] == algorithm
    assert int(config["jacobian"]) == int(jacobian)


# --------------------------------------------------------------------------------------------
# 3. 100-dimensional independent normal: NUTS (diag_e, dense_e), Laplace, Pathfinder, ADVI
# --------------------------------------------------------------------------------------------

# 200 checks (100 means + 100 sds) at 4 MCSE each: the expected number of spurious exceedances is
# 200 * 6.3e-5 = 0.013, so we allow none. A real bias (wrong metric, wrong jacobian, draws written
# to the wrong column) shows in many coordinates at many MCSE: m spans +-10 with sds 0.5..3,
# shuffled independently, so any mix-up of coordinates is off by several posterior sds.


def _iid_problems(fit) -> list[str]:
    problems = []
    for i in range(K_IID):
        problems += moment_problems(chains_of(fit, f"theta[{i + 1}]"), IID_M[i], IID_S[i], f"theta[{i + 1}]")
    return problems


def test_iid_normal_nuts_diag(iid_fit):
    assert iid_fit.metric_type == "diag_e"
    assert _iid_problems(iid_fit) == []
    # Chains agree: rank-normalised split R-hat below 1.01 (Vehtari et al. 2021) everywhere.
    draws = iid_fit.draws(concat_chains=False)
    idx = [list(iid_fit.column_names).index(f"theta[{i + 1}]") for i in range(K_IID)]
    rhat = np.array([float(az.rhat(draws[:, :, j].T)) for j in idx])
    assert rhat.max() < 1.01, f"max R-hat {rhat.max():.4f}"
    # The adapted inverse metric is the posterior variance: estimated from the last slow window
    # (500 correlated warmup draws, ESS of squares >~ 200 -> relative sd ~ sqrt(2/200) = 0.1), so
    # every one of the 400 entries is within a factor 2 (>5 sd) of s_i^2; a unit, missing or
    # permuted metric is off by up to a factor 36.
    inv_metric = iid_fit.inv_metric  # (chains, K)
    assert inv_metric.shape == (4, K_IID)
    ratio = inv_metric / IID_S**2
    assert np.abs(np.log(ratio)).max() < math.log(2), f"inv_metric/s^2 range {ratio.min():.3f}..{ratio.max():.3f}"


def test_iid_normal_nuts_dense(iid_model):
    fit = iid_model.sample(data=IID_DATA, seed=2468, metric="dense_e", **SAMPLE_ARGS)
    assert fit.metric_type == "dense_e"
    assert fit.inv_metric.shape == (4, K_IID, K_IID)
    assert _iid_problems(fit) == []
    # Diagonal of the dense estimate: same factor-2 argument as for diag_e.
    diag = np.stack([np.diag(m) for m in fit.inv_metric])
    ratio = diag / IID_S**2
    assert np.abs(np.log(ratio)).max() < math.log(2), f"diag(inv_metric)/s^2 range {ratio.min():.3f}..{ratio.max():.3f}"


LAPLACE_DRAWS = 4000


def test_iid_normal_laplace_is_exact(iid_model):
    """For a Gaussian target the Laplace approximation is the target itself."""
    fit = iid_model.laplace_sample(data=IID_DATA, draws=LAPLACE_DRAWS, seed=11, sig_figs=12)
    theta = fit.stan_variable("theta")
    assert theta.shape == (LAPLACE_DRAWS, K_IID)
    n = LAPLACE_DRAWS
    # The mode found by the optimiser (lbfgs, jacobian=True): exact up to optimiser tolerance.
    mode = fit.mode.stan_variable("theta")
    assert np.abs((mode - IID_M) / IID_S).max() < 1e-3
    # Standardise with the true mean and sd: Z = (theta - m) / s has iid N(0, 1) rows, so
    # C = Z'Z / n ~ Wishart(I, n) / n: sd(C_ii) = sqrt(2/n), sd(C_ij) = sqrt(1/n); and
    # sd(mean Z_i) = 1/sqrt(n). With 100 + 4950 covariance entries and 100 means, a 5-sd bound per
    # entry gives 5150 * 5.7e-7 = 0.003 expected spurious exceedances (normal approximation; the
    # entries are averages of 4000 terms).
    z = (theta - IID_M) / IID_S
    zbar = z.mean(axis=0) * math.sqrt(n)
    assert np.abs(zbar).max() < 5, f"worst standardised mean error {np.abs(zbar).max():.2f}"
    c = z.T @ z / n
    diag_z = (np.diag(c) - 1) / math.sqrt(2 / n)
    off = c[np.triu_indices(K_IID, 1)] / math.sqrt(1 / n)
    assert np.abs(diag_z).max() < 5, f"worst variance error {np.abs(diag_z).max():.2f} sd"
    assert np.abs(off).max() < 5, f"worst covariance error {np.abs(off).max():.2f} sd"
    # The two log densities written per draw, each checked up to an additive constant:
    # log_p__ is the model's log density, -0.5 sum(((theta - m) / s)^2) + const; log_q__ is the
    # normal approximation's, -0.5 sum(((theta - mode) / s)^2) + const iff the Hessian at the mode
    # is exactly diag(1/s^2). The Hessian comes from finite differences of autodiff gradients,
    # exact for a quadratic up to rounding (measured spread 7e-10), values are printed with 12
    # significant digits (1e-10 at ~100): 1e-6 is generous, and a 1e-6 relative error in the
    # Hessian would already show (x 0.5 sum z^2 ~ 50 -> spread ~1e-4).
    # (Stan 2.39's laplace_sample names the approximation's column log_q__; older CmdStan
    # documentation says log_g__.) We do not test log_p__ - log_q__ = const directly: the optimiser
    # stops ~1e-4 sd from the exact mode, which adds a linear term (spread ~6e-3) to that difference.
    lp = fit.method_variables()
    log_q = np.asarray(lp["log_q__"] if "log_q__" in lp else lp["log_g__"])
    log_p = np.asarray(lp["log_p__"])
    log_p_exact = -0.5 * (((theta - IID_M) / IID_S) ** 2).sum(axis=1)
    log_q_exact = -0.5 * (((theta - mode) / IID_S) ** 2).sum(axis=1)
    assert np.ptp(log_p - log_p_exact) < 1e-6, f"log_p__ - exact varies by {np.ptp(log_p - log_p_exact):.3g}"
    assert np.ptp(log_q - log_q_exact) < 1e-6, f"log_q__ - exact varies by {np.ptp(log_q - log_q_exact):.3g}"


# Pathfinder and ADVI are approximate methods: besides Monte Carlo error they carry an
# approximation / optimisation error that does not shrink with the number of draws, and there is
# no MCSE for that part. Each tolerance below says what it is made of.


def test_iid_normal_pathfinder_means(iid_model):
    """100 dimensions, 4 paths, draws straight from the paths' normal approximations.

    Pathfinder's approximation is N(x_k + Sigma_k g_k, Sigma_k) at the best-ELBO iterate of each
    L-BFGS path, Sigma_k built from a history of 5 updates: with 100 distinct scales its sds are off
    by up to a factor ~2 (measured 0.5..2.4), but its mean is the (nearly converged) mode. So the
    draws are iid from a distribution centred within a small bias of m: we allow 4.5 MCSE
    (MCSE = the draws' own sd / sqrt(4000); 100 checks * 6.8e-6 = 7e-4 expected spurious
    exceedances) plus 0.05 posterior sd for the best iterate not being exactly the mode.
    (Measured on 10 seeds: worst |z| 2.9, worst error 0.084 sd.)

    Not tested here: the default PSIS-resampled output on this target. The approximation is
    poor enough (ELBO ~ -11, Pareto k ~ 1.9, and Stan itself prints "the approximation itself is
    poor") that resampling collapses to ~50-100 distinct draws, and means then scatter by up
    to ~1.3 sd for any correct implementation.
    """
    fit = iid_model.pathfinder(data=IID_DATA, seed=13, psis_resample=False)
    theta = fit.stan_variable("theta")
    assert theta.shape == (4000, K_IID)
    mcse = theta.std(axis=0, ddof=1) / math.sqrt(theta.shape[0])
    tol = 4.5 * mcse + 0.05 * IID_S
    err = theta.mean(axis=0) - IID_M
    bad = np.flatnonzero(np.abs(err) > tol)
    assert bad.size == 0, [f"theta[{i + 1}]: err {err[i] / IID_S[i]:+.3f} sd, tol {tol[i] / IID_S[i]:.3f} sd" for i in bad]


def test_small_normal_pathfinder_default_resampled(iid_model):
    """5 dimensions, cmdstanpy's defaults (4 paths, PSIS resampling to 1000 draws).

    With 5 dimensions and a history of 5 the L-BFGS approximation is nearly exact, so importance
    resampling keeps ~850 distinct draws of 1000: MC error ~ 1/sqrt(800) = 0.035 sd for a mean and
    ~1/sqrt(1600) = 0.025 relative for an sd. Tolerances: 0.2 sd for means and 15% for sds
    (about 5-6 of those errors; measured on 10 seeds: worst 0.096 sd and 9%).
    """
    fit = iid_model.pathfinder(data=SMALL_DATA, seed=13)
    theta = fit.stan_variable("theta")
    assert theta.shape == (1000, K_SMALL)
    m, s = np.array(SMALL_DATA["m"]), np.array(SMALL_DATA["s"])
    err = (theta.mean(axis=0) - m) / s
    assert np.abs(err).max() < 0.2, f"standardised mean errors {np.round(err, 3)}"
    ratio = theta.std(axis=0, ddof=1) / s
    assert np.abs(ratio - 1).max() < 0.15, f"sd ratios {np.round(ratio, 3)}"


def test_iid_normal_meanfield_advi_means(iid_model):
    """ADVI's answer is a stochastic-gradient iterate (one gradient draw per step, adaptive step
    size) stopped once the relative ELBO change is below 1%; the family contains the target, so
    there is no approximation bias, only optimisation noise, which no MCSE describes. Measured on 8
    seeds: worst coordinate 0.19..0.38 sd, RMS over the 100 coordinates 0.07..0.095 sd. Tolerances:
    worst coordinate < 0.5 sd, RMS < 0.15 sd (the RMS is the stabler statistic). A driver bug
    (wrong gradient, jacobian or column order; m spans 20 sds) fails by an order of magnitude.
    """
    fit = iid_model.variational(data=IID_DATA, algorithm="meanfield", seed=17, draws=1000)
    mean = np.asarray(fit.stan_variable("theta", mean=True))
    assert mean.shape == (K_IID,)
    err = (mean - IID_M) / IID_S
    worst = int(np.abs(err).argmax())
    assert np.abs(err).max() < 0.5, f"theta[{worst + 1}] off by {err[worst]:+.3f} posterior sd"
    assert math.sqrt(np.mean(err**2)) < 0.15, f"RMS error {math.sqrt(np.mean(err**2)):.3f} sd"
    assert fit.variational_sample.shape[0] == 1000


def test_correlated_normal_fullrank_advi(iid_model):
    """Same kind of tolerance as meanfield (optimisation noise, measured worst 0.07..0.29 sd on 8 seeds)."""
    fit = iid_model.variational(data=MVN_DATA, algorithm="fullrank", seed=19, draws=2000)
    mean = np.asarray(fit.stan_variable("theta", mean=True))
    sd = np.sqrt(np.diag(MVN_S))
    err = (mean - MVN_M) / sd
    assert np.abs(err).max() < 0.5, f"standardised mean errors {np.round(err, 3)}"
    # Fullrank can represent the 0.8 correlation of theta[1], theta[2]; a meanfield (diagonal)
    # approximation would give 0 +- 0.02 over 2000 draws, so > 0.5 separates the two by >20 sd
    # (measured 0.73..0.86 on 8 seeds).
    theta = fit.stan_variable("theta", mean=False)
    r = np.corrcoef(theta[:, 0], theta[:, 1])[0, 1]
    assert r > 0.5, f"fullrank draws have corr(theta1, theta2) = {r:.3f}; target 0.8"


# --------------------------------------------------------------------------------------------
# 4. Reproducibility
# --------------------------------------------------------------------------------------------

SMALL_SAMPLE = dict(chains=2, parallel_chains=2, iter_warmup=200, iter_sampling=200, show_progress=False)


def test_sample_same_seed_same_draws(normal_model):
    a = normal_model.sample(data=NORMAL_DATA, seed=42, **SMALL_SAMPLE)
    b = normal_model.sample(data=NORMAL_DATA, seed=42, **SMALL_SAMPLE)
    c = normal_model.sample(data=NORMAL_DATA, seed=43, **SMALL_SAMPLE)
    assert np.array_equal(a.draws(), b.draws())
    assert not np.array_equal(chains_of(a, "mu"), chains_of(c, "mu"))


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])]


def test_pathfinder_same_seed_same_draws(iid_model):
    # One thread: bit-for-bit identical output.
    a = iid_model.pathfinder(data=SMALL_DATA, seed=42, num_threads=1)
    b = iid_model.pathfinder(data=SMALL_DATA, seed=42, num_threads=1)
    c = iid_model.pathfinder(data=SMALL_DATA, seed=43, num_threads=1)
    assert np.array_equal(a.draws(), b.draws())
    assert not np.array_equal(a.stan_variable("theta"), c.stan_variable("theta"))
    # Several threads: the same draws, but Stan 2.39's multi-path service writes the resampled
    # draws from a tbb::parallel_for over paths through a concurrent_writer, so their ROW ORDER
    # follows thread scheduling (upstream behaviour, the same in real CmdStan). Compare as sets of
    # rows, over several runs so that a seed-dependence that only shows with threads is caught.
    ref = _sorted_rows(a.draws())
    for _ in range(3):
        d = iid_model.pathfinder(data=SMALL_DATA, seed=42, num_threads=4).draws()
        assert np.array_equal(_sorted_rows(d), ref)


# --------------------------------------------------------------------------------------------
# 5. Standalone generated quantities
# --------------------------------------------------------------------------------------------


def test_generate_quantities_is_a_function_of_the_draws(normal_model, normal_fit):
    mu = normal_fit.stan_variable("mu")
    # In the sampling run y2 was computed from the unrounded mu: both are printed with 6
    # significant digits, so |y2 - (2 mu + 1)| <= tol(y2) + 2 tol(mu).
    y2_fit = normal_fit.stan_variable("y2")
    assert np.all(np.abs(y2_fit - (2 * mu + 1)) <= print_tol(y2_fit) + 2 * print_tol(mu) + 1e-12)
    # Standalone GQ reads mu back from the CSV (the printed value), so y2 = 2 mu + 1 holds up to
    # the rounding of y2 alone.
    gq = normal_model.generate_quantities(data=NORMAL_DATA, previous_fit=normal_fit, seed=7)
    y2 = gq.stan_variable("y2")
    assert y2.shape == mu.shape
    assert np.all(np.abs(y2 - (2 * mu + 1)) <= print_tol(y2) * (1 + 1e-9) + 1e-12)


# --------------------------------------------------------------------------------------------
# 6. Sampler options are honoured
# --------------------------------------------------------------------------------------------


def test_thin_and_save_warmup_draw_counts(normal_model):
    fit = normal_model.sample(
        data=NORMAL_DATA, seed=3, chains=2, parallel_chains=2, iter_warmup=100, iter_sampling=200,
        thin=3, save_warmup=True, show_progress=False,
    )
    # Stan keeps iterations 0, thin, 2 thin, ...: ceil(100/3) = 34 warmup and ceil(200/3) = 67 draws.
    assert fit.draws(inc_warmup=True).shape[:2] == (34 + 67, 2)
    assert fit.draws().shape[:2] == (67, 2)
    for path in fit.runset.csv_files:
        assert csv_draw_rows(path) == 34 + 67, path
    config = fit.metadata.cmdstan_config
    assert int(config["thin"]) == 3
    assert int(config["save_warmup"]) == 1
    # scribe reads a NUTS fit's CSVs one process per chain (scribe_cli/csv_draws.py) into cmdstanpy's arrays:
    # the same draws (warmup included), step sizes and metric as cmdstanpy's own reading of the same files
    from cmdstanpy import CmdStanMCMC

    from scribe_cli import csv_draws

    ours = CmdStanMCMC(fit.runset)
    assert not csv_draws.assemble(CmdStanMCMC(fit.runset), workers=2)  # small files: cmdstanpy reads them
    assert csv_draws.assemble(ours, workers=2, min_bytes=0)
    assert not csv_draws.assemble(ours, workers=2, min_bytes=0)  # read once
    np.testing.assert_array_equal(ours.draws(inc_warmup=True), fit.draws(inc_warmup=True))
    np.testing.assert_array_equal(ours.step_size, fit.step_size)
    np.testing.assert_array_equal(ours.inv_metric, fit.inv_metric)
    assert not list(Path(fit.runset.csv_files[0]).parent.glob("*.npy"))  # its scratch files removed


def test_max_treedepth_is_honoured(iid_model):
    fit = iid_model.sample(
        data=IID_DATA, seed=8, chains=1, iter_warmup=300, iter_sampling=300, max_treedepth=2, show_progress=False
    )
    depth = chains_of(fit, "treedepth__")
    n_leapfrog = chains_of(fit, "n_leapfrog__")
    assert depth.max() == 2  # a 100-dimensional NUTS trajectory wants depth 3-4, so the cap is hit
    assert n_leapfrog.max() <= 2**2 - 1  # a tree of depth d takes at most 2^d - 1 leapfrog steps
    assert int(fit.metadata.cmdstan_config["max_depth"]) == 2


def test_adapt_delta_is_recorded_and_used(normal_model):
    fits = {
        delta: normal_model.sample(data=NORMAL_DATA, seed=21, adapt_delta=delta, **SMALL_SAMPLE)
        for delta in (0.6, 0.95)
    }
    for delta, fit in fits.items():
        assert float(fit.metadata.cmdstan_config["delta"]) == pytest.approx(delta)
    # A higher target acceptance rate must adapt a smaller step size (for a 1-d Gaussian the
    # step sizes differ by a factor ~2, far beyond the run-to-run noise of dual averaging).
    assert fits[0.95].step_size.max() < fits[0.6].step_size.min()
    assert chains_of(fits[0.95], "accept_stat__").mean() > chains_of(fits[0.6], "accept_stat__").mean()


def test_chains_count(normal_model):
    fit = normal_model.sample(
        data=NORMAL_DATA, seed=4, chains=3, parallel_chains=3, iter_warmup=100, iter_sampling=150, show_progress=False
    )
    assert fit.chains == 3
    assert fit.chain_ids == [1, 2, 3]
    assert len(fit.runset.csv_files) == 3
    assert fit.draws().shape[:2] == (150, 3)


def test_fixed_param_for_model_without_parameters(no_params_model):
    n_chains, n_draws = 2, 2000
    for explicit in (False, True):
        fit = no_params_model.sample(
            data={"lambda": 3.5}, seed=31 + explicit, chains=n_chains, iter_sampling=n_draws,
            fixed_param=explicit, show_progress=False,
            # cmdstanpy 1.3.2 drops num_chains=N from the command line when fixed_param=True (it
            # returns before appending it) and then expects N files: one process per chain avoids it.
            force_one_process_per_chain=explicit or None,
        )
        assert fit.draws().shape[:2] == (n_draws, n_chains)
        assert "treedepth__" not in fit.column_names and "stepsize__" not in fit.column_names
        assert np.all(chains_of(fit, "lp__") == 0)
        # The draws are iid (each iteration calls the RNGs afresh), so ESS = N and the MCSEs are
        # exact: mean(z) has sd 1/sqrt(N), sd(z) has sd ~ 1/sqrt(2N), mean(k) has sd sqrt(3.5/N).
        n = n_chains * n_draws
        z = fit.stan_variable("z")
        k = fit.stan_variable("k")
        assert abs(z.mean()) < 4 / math.sqrt(n)
        assert abs(z.std(ddof=1) - 1) < 4 / math.sqrt(2 * n)
        assert abs(k.mean() - 3.5) < 4 * math.sqrt(3.5 / n)
        assert np.all(k == np.round(k)) and k.min() >= 0
        # Chains are different RNG streams.
        assert not np.array_equal(chains_of(fit, "z")[0], chains_of(fit, "z")[1])


def test_inits_are_used_by_the_optimizer(normal_model):
    # Both modes are equally high; which one L-BFGS reaches is decided by the initial value.
    for start, mode in ((20.0, 50.0), (-20.0, -50.0)):
        mle = normal_model.optimize(data=BIMODAL_DATA, inits={"mu": start}, seed=1)
        assert float(mle.stan_variable("mu")) == pytest.approx(mode, abs=OPT_TOL), f"start {start}"


def test_per_chain_inits_are_used_by_the_sampler(normal_model):
    # fixed_param keeps the parameters at their initial values: each chain's draws equal its init.
    inits = [{"mu": 1.25}, {"mu": -3.5}, {"mu": 7.0}]
    # (one process per chain: cmdstanpy 1.3.2 cannot run fixed_param as one multi-chain process,
    # see test_fixed_param_for_model_without_parameters; each process gets its own init file)
    fit = normal_model.sample(
        data=NORMAL_DATA, seed=5, chains=3, iter_sampling=20, fixed_param=True, inits=inits, show_progress=False,
        force_one_process_per_chain=True,
    )
    mu = chains_of(fit, "mu")
    for c, init in enumerate(inits):
        assert np.all(mu[c] == init["mu"]), f"chain {c + 1}: {np.unique(mu[c])} != {init['mu']}"
    # NUTS, one process running both chains: cmdstanpy passes init=<f>.json with per-chain files
    # <f>_1.json, <f>_2.json, which the driver must find (CmdStan's convention). A chain started
    # in one mode of the bimodal target cannot leave it (1250 nats barrier).
    fit = normal_model.sample(
        data=BIMODAL_DATA, seed=6, chains=2, parallel_chains=2, iter_warmup=200, iter_sampling=200,
        inits=[{"mu": 50.0}, {"mu": -50.0}], show_progress=False,
    )
    mu = chains_of(fit, "mu")
    assert (mu[0] > 0).all() and (mu[1] < 0).all()
    # ...and then the summary must flag the disagreement between chains (R-hat is not hard-coded).
    assert float(fit.summary().loc["mu", "R_hat"]) > 1.5


# --------------------------------------------------------------------------------------------
# 7. cmdstanpy conveniences
# --------------------------------------------------------------------------------------------


def test_summary(normal_fit):
    summary = normal_fit.summary()
    assert "Mean" in summary.columns and "R_hat" in summary.columns
    ess_cols = [c for c in summary.columns if c.startswith("ESS")]
    assert ess_cols, f"no ESS column in {list(summary.columns)}"
    assert list(summary.index) == ["lp__", "mu", "y2"]
    for name in ("mu", "y2"):
        x = normal_fit.stan_variable(name)
        # summary prints 6 significant digits by default
        assert float(summary.loc[name, "Mean"]) == pytest.approx(x.mean(), rel=1e-5, abs=1e-9)
    assert 0.99 < float(summary.loc["mu", "R_hat"]) < 1.01
    # ESS of the stansummary replacement agrees with ArviZ's bulk ESS on the same draws (10%:
    # room for a different but equally valid estimator; a hard-coded or per-chain ESS is off by 4x).
    ess_bulk = float(az.ess(chains_of(normal_fit, "mu"), method="bulk"))
    col = "ESS_bulk" if "ESS_bulk" in summary.columns else ess_cols[0]
    assert float(summary.loc["mu", col]) == pytest.approx(ess_bulk, rel=0.10)
    # Custom percentiles are honoured, and agree with the draws' quantiles (the quantile
    # definitions differ by at most about one order-statistic gap, ~1e-3 sd here).
    summary = normal_fit.summary(percentiles=(10, 90))
    assert {"10%", "90%"} <= set(summary.columns)
    mu = normal_fit.stan_variable("mu")
    for q in (10, 90):
        assert float(summary.loc["mu", f"{q}%"]) == pytest.approx(np.percentile(mu, q), abs=0.01 * NORMAL_POST_SD)


def test_draws_pd(normal_fit):
    df = normal_fit.draws_pd()
    assert len(df) == 4 * 1000
    for col in ("chain__", "iter__", "draw__", "lp__", "accept_stat__", "stepsize__", "mu", "y2"):
        assert col in df.columns, col
    assert np.array_equal(df["mu"].to_numpy(), normal_fit.stan_variable("mu"))
    assert sorted(df["chain__"].unique().tolist()) == [1, 2, 3, 4]


def test_from_csv_round_trip(normal_fit, bb_model):
    again = cmdstanpy.from_csv(normal_fit.runset.csv_files)
    assert isinstance(again, cmdstanpy.CmdStanMCMC)
    assert np.array_equal(again.draws(), normal_fit.draws())
    assert again.column_names == normal_fit.column_names
    np.testing.assert_array_equal(again.step_size, normal_fit.step_size)
    mle = bb_model.optimize(data=BB_DATA, seed=1)
    mle2 = cmdstanpy.from_csv(mle.runset.csv_files)
    assert isinstance(mle2, cmdstanpy.CmdStanMLE)
    assert float(mle2.stan_variable("theta")) == float(mle.stan_variable("theta"))


def test_log_prob(normal_model, bb_model):
    # Normal model, no constraint: lp differences and the gradient are analytic (differences
    # cancel whatever constants the driver drops). 12 significant digits make 1e-7 safe.
    y = np.array(NORMAL_DATA["y"])
    s, mu0, tau0 = NORMAL_DATA["sigma"], NORMAL_DATA["mu0"], NORMAL_DATA["tau0"]

    def lp(mu):
        return -0.5 * np.sum(((y - mu) / s) ** 2) - 0.5 * ((mu - mu0) / tau0) ** 2

    def grad(mu):
        return np.sum(y - mu) / s**2 - (mu - mu0) / tau0**2

    r1 = normal_model.log_prob({"mu": 0.5}, NORMAL_DATA, sig_figs=12)
    r2 = normal_model.log_prob({"mu": 2.25}, NORMAL_DATA, sig_figs=12)
    assert r1.columns[0] == "lp__" and r1.shape == (1, 2)
    assert r1.iloc[0, 0] - r2.iloc[0, 0] == pytest.approx(lp(0.5) - lp(2.25), abs=1e-7)
    assert r1.iloc[0, 1] == pytest.approx(grad(0.5), abs=1e-7)
    # Beta-binomial: jacobian=True adds log(theta (1 - theta)); gradients are with respect to
    # u = logit(theta): d/du [alpha log theta + beta log(1-theta)] = alpha (1-theta) - beta theta.
    for jac, (alpha, beta) in ((False, (BB_A - 1, BB_B - 1)), (True, (BB_A, BB_B))):
        t1, t2 = 0.2, 0.6
        a = bb_model.log_prob({"theta": t1}, BB_DATA, jacobian=jac, sig_figs=12)
        b = bb_model.log_prob({"theta": t2}, BB_DATA, jacobian=jac, sig_figs=12)
        want = alpha * math.log(t1 / t2) + beta * math.log((1 - t1) / (1 - t2))
        assert a.iloc[0, 0] - b.iloc[0, 0] == pytest.approx(want, abs=1e-7), f"jacobian={jac}"
        assert a.iloc[0, 1] == pytest.approx(alpha * (1 - t1) - beta * t1, abs=1e-7), f"jacobian={jac}"


# --------------------------------------------------------------------------------------------
# 8. Errors
# --------------------------------------------------------------------------------------------


def test_missing_data_variable_is_reported(bb_model):
    data = {k: v for k, v in BB_DATA.items() if k != "y"}
    with pytest.raises(RuntimeError) as info:
        bb_model.sample(data=data, chains=2, seed=1, show_progress=False)
    msg = str(info.value)
    assert "variable does not exist" in msg and "variable name=y" in msg, msg


def test_constraint_violation_in_data_is_reported(bb_model, normal_model):
    with pytest.raises(RuntimeError) as info:
        bb_model.sample(data={**BB_DATA, "y": 25}, chains=2, seed=1, show_progress=False)
    msg = str(info.value)
    assert re.search(r"y is 25, but must be less than or equal to 20", msg), msg
    with pytest.raises(RuntimeError) as info:
        normal_model.optimize(data={**NORMAL_DATA, "sigma": -1.0}, seed=1)
    msg = str(info.value)
    assert re.search(r"sigma is -1, but must be greater than or equal to 0", msg), msg


def _run_exe(model, args, cwd):
    return subprocess.run([model.exe_file, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_executable_rejects_bad_arguments(bb_model, tmp_path):
    data = tmp_path / "data.json"
    data.write_text(json.dumps(BB_DATA))
    out = f"file={tmp_path / 'out.csv'}"
    # A clean failure: positive exit code (not a crash by signal, which Python reports as < 0) and
    # a message naming the offending argument.
    res = _run_exe(bb_model, ["method=sample", "num_samples=-5", "data", f"file={data}", "output", out], tmp_path)
    text = res.stdout + res.stderr
    assert res.returncode > 0, (res.returncode, text)
    assert "num_samples" in text, text
    res = _run_exe(bb_model, ["method=sample", "bogus_keyword=3", "data", f"file={data}", "output", out], tmp_path)
    text = res.stdout + res.stderr
    assert res.returncode > 0, (res.returncode, text)
    assert "bogus_keyword" in text, text
    # Sanity check of the same command line without the bad argument: it works.
    res = _run_exe(bb_model, ["method=sample", "num_samples=10", "num_warmup=10", "data", f"file={data}", "output", out], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert csv_draw_rows(str(tmp_path / "out.csv")) == 10


def test_executable_info(bb_model, tmp_path):
    from scribe_cli.toolchain import STAN_VERSION

    res = _run_exe(bb_model, ["info"], tmp_path)
    assert res.returncode == 0, res.stderr
    info = dict(
        (k.strip(), v.strip()) for k, v in (ln.split("=", 1) for ln in res.stdout.splitlines() if "=" in ln)
    )
    major, minor, patch = STAN_VERSION.split(".")
    assert info.get("stan_version_major") == major == "2"
    assert info.get("stan_version_minor") == minor
    assert info.get("stan_version_patch") == patch
    assert info.get("STAN_THREADS", "").lower() == "true"
