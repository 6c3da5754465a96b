"""`scribe denoise`: the posterior of each cell's true (pre-capture, pre-dropout) counts (docs/denoise.md).

For one posterior draw theta and one cell c and gene g, the true count m given the observed u is known in
closed form (derivations in docs/denoise.md; symbols: mean mu, size r, capture nu (1 without capture), gate
pi, BNB concentration kappa with alpha = (kappa - 1) nu mu / r):

- NB:  m - u | u ~ NB(size r + u, odds a),  a = (1 - nu) mu / (r + nu mu);  E[m | u] = u + (r + u) a.
- BNB: the NB success probability q | u ~ Beta(kappa + r, alpha + u) (conjugate), and given q,
  m - u | u, q ~ Poisson((1 - nu) / nu * lambda), lambda ~ Gamma(r + u, scale 1 - q);
  E[m | u] = u + (1 - nu) / nu * (r + u) (alpha + u) / (kappa + r + alpha + u).
- zero inflation: at u = 0 the zero is structural with probability w = pi / (pi + (1 - pi) P(u = 0)); then m
  follows the prior (mean mu), else the formula above at u = 0. At u > 0 the gate played no part.
- mixtures: the components weighted by the cell's component probabilities at that draw (from all its genes).
- datasets: each cell uses its dataset's column of per-dataset parameters (as ppc does).

The posterior of m averages these over posterior draws. The mean is exact per draw (Rao-Blackwellised);
intervals and the ``--draws`` layers come from one simulated m per draw and cell-gene. Work is done over
blocks of cells with all the used draws at once, so memory is bounded by ``block_elements`` (draws x cells x
genes per block), whatever the data size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.special import betaln, gammaln, logsumexp

from .ppc import Draws

# numpy's Poisson refuses rates above ~1e19; a BNB odds draw in the far tail can exceed that (as in ppc).
_MAX_RATE = 1e15


@dataclass
class Component:
    """One mixture component's parameters at a block of cells, each broadcastable to (draws, cells, genes).
    ``nu`` is the capture (1.0 without one); ``kappa`` and ``gate`` are None when the model lacks them."""

    mu: np.ndarray
    r: np.ndarray
    nu: np.ndarray | float = 1.0
    kappa: np.ndarray | None = None
    gate: np.ndarray | None = None

    def _alpha(self):
        return (self.kappa - 1.0) * self.nu * self.mu / self.r


def log_pmf(u: np.ndarray, c: Component) -> np.ndarray:
    """log P(u | theta) without the -log(u!) term (the same for every component: it cancels in the
    component probabilities, the only place this is used)."""
    if c.kappa is None:
        m = c.nu * c.mu
        lp = gammaln(u + c.r) - gammaln(c.r) - c.r * np.log1p(m / c.r) + u * (np.log(m) - np.log(c.r + m))
    else:
        alpha = c._alpha()
        lp = gammaln(u + c.r) - gammaln(c.r) + betaln(alpha + u, c.kappa + c.r) - betaln(alpha, c.kappa)
    if c.gate is not None:
        lp = np.where(u == 0, np.logaddexp(np.log(c.gate), np.log1p(-c.gate) + lp), np.log1p(-c.gate) + lp)
    return lp


def structural_zero_prob(u: np.ndarray, c: Component) -> np.ndarray | float:
    """P(the observation is a structural (gate) zero | u): pi / (pi + (1 - pi) P_base(0)) at u = 0, 0 at u > 0."""
    if c.gate is None:
        return 0.0
    if c.kappa is None:
        log_p0 = -c.r * np.log1p(c.nu * c.mu / c.r)
    else:
        alpha = c._alpha()
        log_p0 = betaln(alpha, c.kappa + c.r) - betaln(alpha, c.kappa)
    w = c.gate / (c.gate + (1.0 - c.gate) * np.exp(log_p0))
    return np.where(u == 0, w, 0.0)


def conditional_mean(u: np.ndarray, c: Component) -> np.ndarray:
    """E[m | u, theta] (module docstring)."""
    if c.kappa is None:
        base = u + (c.r + u) * (1.0 - c.nu) * c.mu / (c.r + c.nu * c.mu)
    else:
        alpha = c._alpha()
        base = u + (1.0 - c.nu) / c.nu * (c.r + u) * (alpha + u) / (c.kappa + c.r + alpha + u)
    if c.gate is None:
        return base
    w = structural_zero_prob(u, c)
    return w * c.mu + (1.0 - w) * base


def conditional_sample(u: np.ndarray, c: Component, rng: np.random.Generator) -> np.ndarray:
    """One draw of m | u, theta per element (module docstring), as int64."""
    shape = np.broadcast_shapes(np.shape(u), *(np.shape(x) for x in (c.mu, c.r, c.nu)))
    u = np.broadcast_to(u, shape)
    r = np.broadcast_to(c.r, shape)
    mu = np.broadcast_to(c.mu, shape)
    nu = np.broadcast_to(c.nu, shape)
    if c.kappa is None:
        lam = rng.gamma(r + u) * ((1.0 - nu) * mu / (r + nu * mu))
    else:
        kappa = np.broadcast_to(c.kappa, shape)
        alpha = (kappa - 1.0) * nu * mu / r
        one_minus_q = rng.beta(alpha + u, kappa + r)  # 1 - q, q ~ Beta(kappa + r, alpha + u)
        lam = (1.0 - nu) / nu * rng.gamma(r + u) * one_minus_q
    m = u + rng.poisson(np.minimum(lam, _MAX_RATE))
    if c.gate is None:
        return m
    structural = rng.random(shape) < structural_zero_prob(u, c)
    return np.where(structural, prior_sample(c, shape, rng), m)


def prior_sample(c: Component, shape, rng: np.random.Generator) -> np.ndarray:
    """m from its prior (the gate pathway: a structural zero says nothing about m). NB: Poisson(Gamma(r,
    scale mu / r)); BNB: Poisson(Gamma(r) O / nu) with odds O ~ BetaPrime(alpha, kappa), drawn as a ratio of
    Gammas (mean mu in both cases)."""
    r = np.broadcast_to(c.r, shape)
    mu = np.broadcast_to(c.mu, shape)
    if c.kappa is None:
        lam = rng.gamma(r) * mu / r
    else:
        nu = np.broadcast_to(c.nu, shape)
        kappa = np.broadcast_to(c.kappa, shape)
        alpha = (kappa - 1.0) * nu * mu / r
        with np.errstate(divide="ignore", invalid="ignore"):
            odds = rng.gamma(np.maximum(alpha, 1e-300)) / rng.gamma(kappa)
        lam = rng.gamma(r) * odds / nu
    return rng.poisson(np.minimum(lam, _MAX_RATE))


@dataclass
class BlockResult:
    """Denoising of the cells c0:c1: ``mean`` (cells, genes); ``samples`` (draws, cells, genes) or None;
    ``component_prob`` (cells, K), the component probabilities averaged over draws, or None."""

    mean: np.ndarray
    samples: np.ndarray | None = None
    component_prob: np.ndarray | None = None


@dataclass
class Denoiser:
    """Per-block denoising at the posterior draws ``idx`` of ``draws`` (ppc.draw_parameters)."""

    draws: Draws
    X: sp.csr_matrix
    idx: np.ndarray
    cell_dataset: np.ndarray | None = None
    values: dict = field(init=False)

    def __post_init__(self):
        self.values = {k: np.asarray(v[self.idx], dtype=np.float64) for k, v in self.draws.values.items()}
        self.n_components = max(self.values[n].shape[2] for n in ("mu", "r", "gate", "kappa") if n in self.values)

    @property
    def identity(self) -> bool:
        """Without capture and zero inflation the model says the counts are the true counts."""
        return "capture" not in self.values and "gate" not in self.values

    def block_cells(self, block_elements: int) -> int:
        return max(1, int(block_elements) // (len(self.idx) * self.X.shape[1]))

    def _at_cells(self, name: str, k: int, rows: slice) -> np.ndarray | None:
        """A gene-level parameter at component k for the cells ``rows``: (draws, cells or 1, genes or 1)."""
        x = self.values.get(name)
        if x is None:
            return None
        x = x[:, :, k if x.shape[2] > 1 else 0, :]  # (S, G|1, D|1)
        if x.shape[2] > 1:
            x = x[:, :, self.cell_dataset[rows]]
        return x.transpose(0, 2, 1)

    def component(self, k: int, rows: slice) -> Component:
        capture = self.values.get("capture")
        return Component(mu=self._at_cells("mu", k, rows), r=self._at_cells("r", k, rows),
                         nu=capture[:, rows, None] if capture is not None else 1.0,
                         kappa=self._at_cells("kappa", k, rows), gate=self._at_cells("gate", k, rows))

    def _log_weights(self, rows: slice) -> np.ndarray:
        """(draws, cells, K): each cell's dataset's weights when per dataset, else the population weights."""
        dw = self.values.get("dataset_weights")
        if dw is not None and self.cell_dataset is not None:
            return np.log(dw[:, self.cell_dataset[rows], :])
        return np.log(self.values["weights"])[:, None, :]

    def component_probabilities(self, U: np.ndarray, rows: slice) -> np.ndarray:
        """(draws, cells, K): P(cell in component k | its counts, theta) at each draw."""
        terms = np.stack([log_pmf(U, self.component(k, rows)).sum(axis=-1) for k in range(self.n_components)], -1)
        terms = terms + self._log_weights(rows)
        return np.exp(terms - logsumexp(terms, axis=-1, keepdims=True))

    def block(self, c0: int, c1: int, rng: np.random.Generator, *, sample: bool = False) -> BlockResult:
        rows = slice(c0, c1)
        U = self.X[rows].toarray().astype(np.float64)[None]  # (1, B, G)
        K = self.n_components
        prob = self.component_probabilities(U, rows) if K > 1 else None
        mean = np.zeros(U.shape[1:])
        samples = None
        if sample:
            samples = np.zeros((len(self.idx),) + U.shape[1:], dtype=np.int64)
            z = None
            if K > 1:  # each cell's component at each draw
                z = (rng.random(prob.shape[:2])[..., None] > np.cumsum(prob, axis=-1)).sum(axis=-1)
                z = np.minimum(z, K - 1)
        for k in range(K):
            comp = self.component(k, rows)
            weight = prob[..., k, None] if K > 1 else 1.0
            mean += (weight * conditional_mean(U, comp)).mean(axis=0)
            if sample:
                draw = conditional_sample(U, comp, rng)
                samples = draw if K == 1 else np.where((z == k)[..., None], draw, samples)
        return BlockResult(mean=mean, samples=samples, component_prob=None if prob is None else prob.mean(axis=0))


def interval_bounds(samples: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed interval of integer draws along axis 0: the lower bound is the smallest value whose
    empirical CDF reaches (1 - width) / 2, the upper the smallest reaching (1 + width) / 2 (numpy's
    'inverted_cdf'): always observed values, and for a discrete posterior the interval covers at least
    ``width`` of it."""
    lo, hi = np.quantile(samples, [(1 - width) / 2, (1 + width) / 2], axis=0, method="inverted_cdf")
    return lo, hi


@dataclass
class DenoiseResult:
    """Layers over all cells (cells x genes, float32; CSR where sparse): ``mean`` always, ``lo`` / ``hi`` with an
    interval, ``draws`` (a list) with draw layers; ``component_prob`` (cells x K) for mixtures."""

    mean: np.ndarray | sp.csr_matrix
    lo: np.ndarray | sp.csr_matrix | None = None
    hi: np.ndarray | sp.csr_matrix | None = None
    draws: list = field(default_factory=list)
    component_prob: np.ndarray | None = None
    n_posterior_draws: int = 0
    block_cells: int = 0
    identity: bool = False


# A layer with fewer non-zeros than this fraction is stored sparse (CSR costs ~12 bytes per non-zero, a dense
# float32 entry 4: below a third CSR is smaller).
SPARSE_BELOW = 1 / 3


def _maybe_sparse(layer: np.ndarray):
    nnz = np.count_nonzero(layer)
    return sp.csr_matrix(layer) if nnz < SPARSE_BELOW * layer.size else layer


def pick_draws(n_samples: int, n: int) -> np.ndarray:
    """n posterior draws (flattened chain-major) evenly spread over all of them (all when n >= n_samples)."""
    from .ppc import thinned_draws

    return thinned_draws(n_samples, n)


def denoise(draws: Draws, X: sp.csr_matrix, cell_dataset: np.ndarray | None = None, *, n_posterior: int = 100,
            interval: float | None = None, n_draw_layers: int = 0, seed: int = 0,
            block_elements: int = 2_000_000) -> DenoiseResult:
    """Denoised layers from ``n_posterior`` evenly spaced posterior draws (see the module docstring)."""
    idx = pick_draws(draws.n_samples, n_posterior)
    den = Denoiser(draws, X, idx, cell_dataset)
    C, G = X.shape
    B = den.block_cells(block_elements)
    out = DenoiseResult(mean=None, n_posterior_draws=len(idx), block_cells=B, identity=den.identity)
    if den.identity:  # the model says the counts are the true counts (every component): keep them sparse
        same = sp.csr_matrix(X, dtype=np.float32)
        out.mean = same
        if interval is not None:
            out.lo, out.hi = same, same.copy()
        out.draws = [same.copy() for _ in range(n_draw_layers)]
        if den.n_components > 1:
            out.component_prob = mean_component_probabilities(draws, X, cell_dataset, n_posterior=n_posterior,
                                                              block_elements=block_elements)
        return out
    sample = interval is not None or n_draw_layers > 0
    keep = pick_draws(len(idx), n_draw_layers) if n_draw_layers else np.array([], dtype=int)
    mean = np.empty((C, G), dtype=np.float32)
    lo = np.empty((C, G), dtype=np.float32) if interval is not None else None
    hi = np.empty((C, G), dtype=np.float32) if interval is not None else None
    layers = [np.empty((C, G), dtype=np.float32) for _ in keep]
    prob = np.empty((C, den.n_components)) if den.n_components > 1 else None
    rng = np.random.default_rng(seed)
    for c0 in range(0, C, B):
        c1 = min(C, c0 + B)
        res = den.block(c0, c1, rng, sample=sample)
        mean[c0:c1] = res.mean
        if prob is not None:
            prob[c0:c1] = res.component_prob
        if interval is not None:
            lo[c0:c1], hi[c0:c1] = interval_bounds(res.samples, interval)
        for layer, j in zip(layers, keep):
            layer[c0:c1] = res.samples[j]
    out.mean = _maybe_sparse(mean)
    out.lo = None if lo is None else _maybe_sparse(lo)
    out.hi = None if hi is None else _maybe_sparse(hi)
    out.draws = [_maybe_sparse(layer) for layer in layers]
    out.component_prob = prob
    return out


def mean_component_probabilities(draws: Draws, X: sp.csr_matrix, cell_dataset: np.ndarray | None = None, *,
                                 n_posterior: int = 100, block_elements: int = 2_000_000) -> np.ndarray:
    """(cells, K): each cell's component probabilities averaged over ``n_posterior`` evenly spaced draws."""
    den = Denoiser(draws, X, pick_draws(draws.n_samples, n_posterior), cell_dataset)
    C = X.shape[0]
    B = den.block_cells(block_elements)
    prob = np.empty((C, den.n_components))
    for c0 in range(0, C, B):
        c1 = min(C, c0 + B)
        U = X[c0:c1].toarray().astype(np.float64)[None]
        prob[c0:c1] = den.component_probabilities(U, slice(c0, c1)).mean(axis=0)
    return prob
