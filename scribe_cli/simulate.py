"""Count matrices simulated from the models with their true (pre-capture, pre-dropout) counts kept: the truth
that `scribe denoise` is checked against (tests/test_denoise.py, bench/denoise_accuracy.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class Simulated:
    """``X`` the observed counts (CSR), ``M`` the true counts (cells x genes), and the parameters: ``mu``, ``r``
    per gene, ``capture`` per cell (None without capture), ``gate`` per gene (None without zero inflation),
    ``p`` the shared success probability."""

    X: sp.csr_matrix
    M: np.ndarray
    mu: np.ndarray
    r: np.ndarray
    p: float
    capture: np.ndarray | None
    gate: np.ndarray | None


def simulate_from_prior(rng: np.random.Generator, cells: int, genes: int, *, capture: bool, gate: bool,
                        p: float | None = None) -> Simulated:
    """Parameters from the default priors of the canonical parameterization (docs/models.md: p ~ Beta(1, 1),
    r ~ LogNormal(0, 1), gate ~ Beta(1, 9), capture ~ Beta(1, 1)), so that a fit's intervals are calibrated on
    average over the simulations; ``p`` fixes the shared p instead. Then the true counts m ~ NB(mean mu = r p /
    (1 - p), size r), the captured u ~ Binomial(m, capture) and, with probability gate, u = 0."""
    p = float(rng.beta(1.0, 1.0)) if p is None else float(p)
    r = rng.lognormal(0.0, 1.0, genes)
    mu = r * p / (1.0 - p)
    nu = rng.beta(1.0, 1.0, cells) if capture else None
    pi = rng.beta(1.0, 9.0, genes) if gate else None
    M = rng.poisson(rng.gamma(r, mu / r, size=(cells, genes)))
    U = rng.binomial(M, nu[:, None]) if capture else M.copy()
    if gate:
        U[rng.random(U.shape) < pi] = 0
    return Simulated(X=sp.csr_matrix(U), M=M, mu=mu, r=r, p=p, capture=nu, gate=pi)
