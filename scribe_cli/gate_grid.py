"""The grid on which the likelihood sums each gene's zero-inflation gate out (plan.integrates_gate): nodes of
d = logit(gate) - gate_loc and the log NEG(u = a = 1) prior mass of each node's cell, passed to the program as data
(stan/cpp/gate_quadrature.hpp computes the sum, priors/neg.stan.j2 draws the gates from it).

The trapezoid rule on equally spaced nodes converges geometrically for smooth integrands, the error on a
Gaussian-shaped one of sd s being about 2 exp(-2 pi^2 s^2 / h^2) of its integral. The narrowest conditional a
gate can have is the binomial one of a gene whose counts' own zeros are negligible: sd 1 / sqrt(C gate (1 - gate))
>= 2 / sqrt(C) in logit units, so h = 1.6 x that (capped at 0.1) bounds that error near 2e-3 of the integral
on any number of cells. On PBMC (906 cells, top 1,500 genes, h = 0.1) at three posterior draws: at most 2.4e-4
nat per gene and -0.006 nat over the 1,500 against a 0.005 grid (bench/gate_quadrature.py --accuracy; without the
kink's correction below, 0.0024 and 2.27). The grid spans 15 logit units either side of the centre, and the prior mass
beyond each end is lumped onto the end node: there the gate is 0 or 1 to within inv_logit(-15) ~ 3e-7.
"""

from __future__ import annotations

import numpy as np
from scipy import integrate, special

HALF_WIDTH = 15.0  # logit units either side of gate_loc
MAX_SPACING = 0.1
STRIDE = 4  # the coarse grid takes every 4th node
# The coarse grid's kink error grows as (H^2 / tau)^2: at most 0.4 sqrt(tau), where it is ~1e-4 nat on PBMC
COARSE_MAX_SPACING = 0.4
KINK_OK = 0.5  # the C++'s kink_ok bound on h^2 (|l''| + l'^2) at d = 0 (stan/cpp/gate_quadrature.hpp)


def neg_marginal_logpdf(d: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """log density of the NEG(u = 1, a = 1, tau) marginal at d, as the template's neg_marginal_lpdf (its asymptotic
    series from 25 scale units on, where the closed form cancels). numpy's, not the program's: the weights are
    data."""
    x = np.abs(np.asarray(d, float)) / np.sqrt(tau)
    xs, xl = np.minimum(x, 25.0), np.maximum(x, 25.0)
    near = np.log((1 + xs**2) * np.sqrt(np.pi / 2) * special.erfcx(xs / np.sqrt(2)) - xs)
    y = 1.0 / xl**2
    far = np.log(2) - 3 * np.log(xl) + np.log1p(
        y * (-6 + y * (45 + y * (-420 + y * (4725 + y * (-62370 + y * 945945))))))
    return np.where(x < 25, near, far) - np.log(2 * np.sqrt(tau))


def spacing(cells: int) -> float:
    return min(MAX_SPACING, 3.2 / np.sqrt(max(cells, 1)))


def _log_weights(node: np.ndarray, h: float, neg_tau: float) -> np.ndarray:
    """log NEG(neg_tau) mass of each node's cell on equally spaced nodes symmetric about 0 (spacing h)."""
    log_w = neg_marginal_logpdf(node, neg_tau) + np.log(h)
    # the mass beyond the end node's cell (the density falls as |d|^-3)
    tail, _ = integrate.quad(lambda d: np.exp(neg_marginal_logpdf(d, neg_tau)), HALF_WIDTH + h / 2, np.inf,
                             epsabs=0, epsrel=1e-10)
    for end in (0, -1):
        log_w[end] = np.logaddexp(log_w[end], np.log(tail))
    # The density's kink at d = 0 (its slope jumps from +1 to -1 in units of tau) is the trapezoid's one O(h^2)
    # error: the weights would sum to 1 + h^2 / (6 tau) (1.0017 at h = 0.1). Taken off the centre node, the
    # kink's Euler-Maclaurin correction, so the weights are a probability distribution.
    w = np.exp(log_w)
    centre = (node.size - 1) // 2
    log_w[centre] = np.log(w[centre] - (w.sum() - 1.0))
    return log_w


def gate_grid(cells: int, neg_tau: float) -> dict:
    """The program's data: gate_nodes, gate_node (equally spaced, symmetric about 0) and gate_log_w, and the
    coarse grid of every STRIDE-th node with its own weights and kink coefficient (gate_coarse_nodes,
    gate_coarse_node, gate_coarse_log_w, gate_coarse_kink; the fine grid itself where COARSE_MAX_SPACING rules a
    coarse one out).

    Why a coarse grid: most genes' conditional of d is broad (no sign of zero inflation, or few cells), and the
    trapezoid converges geometrically: on a peak of sd sigma its error is ~2 exp(-2 pi^2 sigma^2 / H^2), nil at
    H <= sigma. The C++ sums each gene on the coarse grid and falls back to the fine one where the curvature of
    its counts' log likelihood l says the peak is narrower than that (|l''| H^2 >= 1 at the largest node), or
    where l is too steep at the prior's kink at 0 for the kink's H^4 correction, which it adds, to leave a small
    error (H^2 (|l''| + l'^2) >= 0.5 there; stan/cpp/gate_quadrature.hpp). On PBMC's top 1,500 genes (906 cells,
    H = 0.39) at posterior draws, 75-85% of the genes take the coarse grid, every gene within 3e-4 nat of a 0.005
    grid as on the fine grid (bench/gate_quadrature.py --accuracy)."""
    n = STRIDE * int(np.ceil(HALF_WIDTH / (STRIDE * spacing(cells))))
    h = HALF_WIDTH / n
    node = np.linspace(-HALF_WIDTH, HALF_WIDTH, 2 * n + 1)
    out = {"gate_nodes": int(node.size), "gate_node": node, "gate_log_w": _log_weights(node, h, neg_tau)}
    if STRIDE * h <= COARSE_MAX_SPACING * np.sqrt(neg_tau):
        coarse = node[::STRIDE]
        # the kink's h^4 Euler-Maclaurin term: the NEG density's slope jumps by -2 / tau at 0, so the trapezoid
        # exceeds the integral by (h^4 / 720) x 3 x (2 / tau) x lik''(0); the C++ adds this coefficient x lik''(0)
        out.update(gate_coarse_nodes=int(coarse.size), gate_coarse_node=coarse,
                   gate_coarse_log_w=_log_weights(coarse, STRIDE * h, neg_tau),
                   gate_coarse_kink=(STRIDE * h) ** 4 / (120 * neg_tau))
    else:  # the prior itself is too narrow for the coarse spacing: one grid (the C++ then skips the coarse pass)
        out.update(gate_coarse_nodes=out["gate_nodes"], gate_coarse_node=node, gate_coarse_log_w=out["gate_log_w"],
                   gate_coarse_kink=0.0)
    return out


def loc_scale(genes: int) -> float:
    """gate_loc's multiplier in the summed program: ~its posterior sd, so that warmup's first 100 iterations, on the
    unit metric, do not take their step size from it. Every gene's gate informs the centre, so its sd falls as
    1 / sqrt(G): 0.07 on PBMC's top 1,500 genes (bench/warmup_metric.py), 3 / sqrt(G) here. With it (offset at its
    prior's mean), those iterations took 3,600 leapfrog steps instead of 9,200-10,400, the warmup 37,000 instead of
    41,000-44,000 (one chain per seed, seeds 1 and 2). Capped at 1, the prior's own sd."""
    return float(min(1.0, 3.0 / np.sqrt(max(genes, 1))))


def _node_terms(loc: float, node: np.ndarray, log_w: np.ndarray, log0: np.ndarray, Z: np.ndarray, N: np.ndarray):
    """Per gene and node: the log summand L = log_w + Z log P + N log(1 - s), P = s + (1 - s) f0, and the counts'
    log likelihood's first two derivatives in d, l' and l''."""
    f0 = np.exp(log0)[:, None]
    s = special.expit(loc + node)[None, :]
    P = s + (1 - s) * f0
    L = log_w[None, :] + Z[:, None] * np.log(P) + N[:, None] * np.log1p(-s)
    dP = s * (1 - s) * (1 - f0) / P
    return L, Z[:, None] * dP - N[:, None] * s, Z[:, None] * (dP * (1 - 2 * s) - dP**2) - N[:, None] * s * (1 - s)


def log_gene_integrals(grid: dict, loc: float, log0: np.ndarray, Z: np.ndarray, N: np.ndarray) -> tuple:
    """numpy's copy of what stan/cpp/gate_quadrature.hpp sums per gene, over every node of the grid its rule chooses
    (no shortcuts): (log integrals, which genes took the coarse grid). For tests and bench/gate_quadrature.py; the
    program computes its own."""
    fine = special.logsumexp(_node_terms(loc, grid["gate_node"], grid["gate_log_w"], log0, Z, N)[0], axis=1)
    if grid["gate_coarse_nodes"] == grid["gate_nodes"]:
        return fine, np.zeros(fine.shape, dtype=bool)
    Lc, l1, l2 = _node_terms(loc, grid["gate_coarse_node"], grid["gate_coarse_log_w"], log0, Z, N)
    H = grid["gate_coarse_node"][1] - grid["gate_coarse_node"][0]
    mid = (Lc.shape[1] - 1) // 2
    Q = l2[:, mid] + l1[:, mid] ** 2  # lik''(0) / lik(0)
    total = special.logsumexp(Lc, axis=1)
    coarse = total + np.log1p(grid["gate_coarse_kink"] * Q * np.exp(Lc[:, mid] - grid["gate_coarse_log_w"][mid] - total))
    # the C++'s kink_ok and peak_ok (the largest node over all nodes here, over the explicit ones there: the same
    # node unless the largest is in the power series' flat left part, where l'' is ~0 either way)
    on_coarse = ((H**2 * (np.abs(l2[:, mid]) + l1[:, mid] ** 2) < KINK_OK)
                 & (np.abs(l2[np.arange(len(Z)), Lc.argmax(axis=1)]) * H**2 < 1))
    return np.where(on_coarse, coarse, fine), on_coarse
