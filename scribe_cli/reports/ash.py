"""Adaptive shrinkage (Stephens 2017, "False discovery rates: a new deal") of per-gene effects.

Each gene's effect has a posterior mean b_g and sd s_g (from the posterior draws, a normal approximation of
what the data say about it). The effects of all genes are taken to come from one distribution
g = pi_0 delta_0 + sum_k pi_k N(0, sigma_k^2) on a fixed grid of scales; the weights pi are fitted by
maximum likelihood (EM) from b_g ~ N(0, s_g^2 + sigma_k^2), and each gene's effect is then read from its
posterior under g: a mixture of a point mass at zero and normals. Genes whose effects look like the bulk are
pulled to zero, so that the lfsr learns from all genes how rare large effects are.

Why hand-written: the reference implementation (R's ashr) has no maintained Python port; the one PyPI package
that offers it (``ashrink``) is a single 0.1.0 release weeks old. The normal-mixture case used here is about
60 lines of numpy / scipy: the grid as in ashr (sqrt(2) steps from min(s) / 10 to 2 sqrt(max(b^2 - s^2))),
EM with ashr's null-biased Dirichlet(10, 1, ..., 1) penalty on the weights (it keeps the fitted g from
over-weighting non-null scales, which is what makes the lfsr conservative), and posterior mixture moments,
tail probabilities and quantiles computed exactly (quantiles by bisection of the mixture CDF).
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

NULL_PENALTY = 10.0  # ashr's default prior weight on the null component (nullweight = 10)
EM_ITER = 500
EM_TOL = 1e-8


def grid(b: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Scales sigma_k of the non-null components (ashr's automatic grid, multiplier sqrt(2))."""
    lo = max(float(np.min(s)) / 10.0, 1e-6)
    hi = 2.0 * np.sqrt(max(float(np.max(b * b - s * s)), 0.0))
    hi = max(hi, 8.0 * lo)
    n = int(np.ceil(np.log(hi / lo) / np.log(np.sqrt(2.0)))) + 1
    return lo * np.sqrt(2.0) ** np.arange(n)


def _log_lik(b: np.ndarray, s: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """log N(b_g; 0, s_g^2 + sigma_k^2), shape (G, K); sigma_0 = 0 is the point mass."""
    sd = np.sqrt(s[:, None] ** 2 + sigma[None, :] ** 2)
    return stats.norm.logpdf(b[:, None], scale=sd)


def fit(b: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fitted (sigma, pi): sigma[0] = 0 is the null point mass."""
    b, s = np.asarray(b, float), np.maximum(np.asarray(s, float), 1e-8)
    sigma = np.concatenate([[0.0], grid(b, s)])
    ll = _log_lik(b, s, sigma)
    # EM on the likelihoods scaled per gene (the scale cancels in the responsibilities): plain matrix products
    lik = np.exp(ll - ll.max(axis=1, keepdims=True))
    penalty = np.zeros(sigma.size)
    penalty[0] = NULL_PENALTY - 1.0
    pi = np.full(sigma.size, 1.0 / sigma.size)
    prev = -np.inf
    for _ in range(EM_ITER):
        marginal = lik @ pi
        pi = (pi * (lik / marginal[:, None]).sum(axis=0) + penalty) / (b.size + penalty.sum())
        obj = float(np.log(marginal).sum() + penalty @ np.log(np.maximum(pi, 1e-300)))
        if obj - prev < EM_TOL * max(1.0, abs(obj)):
            break
        prev = obj
    return sigma, pi


class Posterior:
    """Per-gene posterior under the fitted g: weights w (G, K), component means m and sds v^(1/2)."""

    def __init__(self, b, s, sigma, pi):
        b, s = np.asarray(b, float), np.maximum(np.asarray(s, float), 1e-8)
        lw = _log_lik(b, s, sigma) + np.log(np.maximum(pi, 1e-300))
        self.w = np.exp(lw - special.logsumexp(lw, axis=1, keepdims=True))
        s2, sig2 = s[:, None] ** 2, sigma[None, :] ** 2
        var = np.where(sig2 > 0, s2 * sig2 / (s2 + sig2), 0.0)
        self.m = np.where(sig2 > 0, b[:, None] * sig2 / (s2 + sig2), 0.0)
        self.sd = np.sqrt(var)

    def mean(self) -> np.ndarray:
        return (self.w * self.m).sum(axis=1)

    def std(self) -> np.ndarray:
        second = (self.w * (self.m**2 + self.sd**2)).sum(axis=1)
        return np.sqrt(np.maximum(second - self.mean() ** 2, 0.0))

    def cdf(self, t) -> np.ndarray:
        """P(effect <= t) per gene; t scalar or (G,)."""
        t = np.broadcast_to(np.asarray(t, float), (self.w.shape[0],))[:, None]
        point = self.sd == 0  # the null component, and any grid scale that underflowed
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(point, (t >= self.m).astype(float), special.ndtr((t - self.m) / np.where(point, 1, self.sd)))
        return (self.w * c).sum(axis=1)

    def prob_greater(self, t: float) -> np.ndarray:
        """P(effect > t)."""
        return 1.0 - self.cdf(t)

    def prob_less(self, t: float) -> np.ndarray:
        """P(effect < t) = P(<= t) minus the point mass at t (only t = 0 carries one)."""
        mass = self.w[:, self.sd[0] == 0].sum(axis=1) if t == 0 else 0.0
        return self.cdf(t) - mass

    def quantile(self, q: float, iters: int = 60) -> np.ndarray:
        """The q-quantile per gene, by bisection of the mixture CDF (monotone; 60 halvings reach 1e-15 relative)."""
        lo = (self.m - 10 * self.sd).min(axis=1) - 1e-9
        hi = (self.m + 10 * self.sd).max(axis=1) + 1e-9
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            below = self.cdf(mid) < q
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        # a quantile on the atom at zero ends within rounding of it: report it as 0
        return np.where(np.abs(hi) <= 1e-12 * np.maximum(np.abs(lo), 1.0) + 1e-15, 0.0, hi)


def shrink(b, s, *, ci: float, tau: float, fit_mask=None) -> dict[str, np.ndarray]:
    """Shrunk evidence per gene (mean, sd, ci_low, ci_high, prob_positive, lfsr, lfsr_tau), g fitted on the
    genes in ``fit_mask`` (default all) and applied to every gene."""
    b, s = np.asarray(b, float), np.asarray(s, float)
    sel = np.ones(b.size, bool) if fit_mask is None else np.asarray(fit_mask, bool)
    sigma, pi = fit(b[sel], s[sel])
    post = Posterior(b, s, sigma, pi)
    pos, neg = post.prob_greater(0.0), post.prob_less(0.0)
    effect = np.maximum(post.prob_greater(tau), post.prob_less(-tau))
    return {
        "mean": post.mean(), "sd": post.std(),
        "ci_low": post.quantile((1 - ci) / 2), "ci_high": post.quantile((1 + ci) / 2),
        "prob_positive": pos, "lfsr": np.clip(np.minimum(1 - pos, 1 - neg), 0.0, 1.0),
        "lfsr_tau": np.clip(1.0 - effect, 0.0, 1.0),
    }
