"""Pointwise log likelihoods from posterior draws, in numpy: per (cell, gene) and per cell.

The Stan programs can give per-cell log_lik (summed over genes) in generated quantities, but per-gene model
comparison needs each (cell, gene) term, which Stan would have to store as cells x genes x draws. Here the same
formulas (NB mean/size, BNB, zero-inflation gate, capture, mixture components, per-dataset parameters) are
evaluated in numpy with scipy's log pmfs from the posterior draws, block by block, so that memory stays bounded
(about ``budget`` floats per temporary array) whatever the data size. tests/test_compare.py checks the per-cell
sums against Stan's own log_lik.

Hand-written because no library evaluates our model family from ArviZ draws; the parameters come from
reports.ppc.draw_parameters, which already resolves each variable's gene / component / dataset axes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import scipy.sparse as sp
from scipy import stats
from scipy.special import betaln, gammaln, logsumexp

from .data import Counts
from .errors import UserInputError
from .reports.ppc import Draws, draw_parameters

# Floats per temporary (draws x cells x genes x components) array: 4M floats = 32 MB; a block holds a few.
DEFAULT_BUDGET = 4_000_000


def bnb_logpmf(u, r, kappa, alpha):
    """BNB(u | r, kappa, alpha) (docs/models.md): Gamma(r + u) / (u! Gamma(r)) B(alpha + u, kappa + r) / B(alpha, kappa).
    (scipy's betanbinom needs an integer r, hence the formula.)"""
    return gammaln(u + r) - gammaln(u + 1) - gammaln(r) + betaln(alpha + u, kappa + r) - betaln(alpha, kappa)


@dataclass
class Block:
    """One block of the pointwise log likelihood: ``lp`` (S, cells, genes, K) per component (weights not
    included), ``log_w`` (S, cells, K) the mixing weights' logs (zeros when K = 1)."""

    cells: slice
    genes: slice
    lp: np.ndarray
    log_w: np.ndarray


def posterior_draws(post, counts: Counts, n_draws: int | None = None, seed: int = 0) -> tuple[Draws, np.ndarray]:
    """The parameters the likelihood needs (reports.ppc.Draws) and the flat draw indices used: all draws, or
    ``n_draws`` of them evenly spread (chain-major order, as Draws stacks them)."""
    draws = draw_parameters(post, counts)
    S = draws.n_samples
    idx = np.arange(S) if n_draws is None or n_draws >= S else np.unique(np.linspace(0, S - 1, n_draws).round().astype(int))
    return draws, idx


def _at(x: np.ndarray, idx, genes: slice, cells: np.ndarray, cell_dataset: np.ndarray | None) -> np.ndarray:
    """A gene-level parameter (S, G|1, K|1, D|1) at the draws, genes and cells of a block -> (S, cells|1, genes|1, K|1)."""
    x = x[idx]
    x = x[:, genes] if x.shape[1] > 1 else x
    if x.shape[3] > 1:
        x = x[..., cell_dataset[cells]]  # (S, g, K, cells): each cell its dataset's column
        return np.moveaxis(x, 3, 1)
    return x[:, None, :, :, 0]


def block_shape(n_values: int, C: int, G: int, budget: int = DEFAULT_BUDGET) -> tuple[int, int]:
    """(cells, genes) per block so that a block holds about ``budget`` values when each (cell, gene) has
    ``n_values`` (draws x components): whole rows of genes when they fit, else at least 64 cells' worth."""
    n_genes = min(G, max(1, budget // (n_values * min(C, 64))))
    return min(C, max(1, budget // (n_values * n_genes))), n_genes


def iter_blocks(draws: Draws, idx: np.ndarray, counts: Counts, budget: int = DEFAULT_BUDGET,
                shape: tuple[int, int] | None = None) -> Iterator[Block]:
    """Blocks of the (draw, cell, gene, component) log likelihood, genes fastest; each holds about ``budget``
    values (or ``shape`` = (cells, genes) per block)."""
    X: sp.csr_matrix = counts.X
    C, G = X.shape
    K = max(draws[n].shape[2] for n in ("mu", "r"))
    n_cells, n_genes = shape or block_shape(len(idx) * K, C, G, budget)
    cell_dataset = counts.cell_dataset
    if draws.has("dataset") and cell_dataset is None:
        raise UserInputError("the posterior has per-dataset parameters but the data were read without their dataset "
                             "column; read them with the fit's --dataset-key")
    for c0 in range(0, C, n_cells):
        cells = np.arange(c0, min(C, c0 + n_cells))
        rows = X[cells]
        log_w = _log_weights(draws, idx, cells, cell_dataset)
        nu = draws["capture"][idx][:, cells, None, None] if "capture" in draws else 1.0
        for g0 in range(0, G, n_genes):
            genes = slice(g0, min(G, g0 + n_genes))
            u = rows[:, genes].toarray()[None, :, :, None].astype(float)
            yield Block(slice(cells[0], cells[-1] + 1), genes, _logpmf(draws, idx, genes, cells, cell_dataset, nu, u), log_w)


def _logpmf(draws: Draws, idx, genes: slice, cells: np.ndarray, cell_dataset, nu, u: np.ndarray) -> np.ndarray:
    def at(name):
        return _at(draws[name], idx, genes, cells, cell_dataset)

    m = nu * at("mu")
    r = at("r")
    if "kappa" in draws:
        kappa = at("kappa")
        lp = bnb_logpmf(u, r, kappa, (kappa - 1.0) * m / r)
    else:
        lp = stats.nbinom.logpmf(u, r, r / (r + m))
    if "gate" in draws:
        gate = at("gate")
        lp = np.where(u == 0, np.logaddexp(np.log(gate), np.log1p(-gate) + lp), np.log1p(-gate) + lp)
    return lp


def _log_weights(draws: Draws, idx, cells: np.ndarray, cell_dataset) -> np.ndarray:
    dw = draws.get("dataset_weights")
    if dw is not None and cell_dataset is not None:
        return np.log(dw[idx][:, cell_dataset[cells], :])  # (S, cells, K)
    w = draws.get("weights")
    if w is None:
        return np.zeros((len(idx), len(cells), 1))
    return np.broadcast_to(np.log(w[idx])[:, None, :], (len(idx), len(cells), w.shape[1]))


def cell_loglik(post, counts: Counts, n_draws: int | None = None, budget: int = DEFAULT_BUDGET) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's log likelihood at each draw, (S, C): the full log pmf summed over genes, mixture components
    marginalised (what the programs' generated ``log_lik`` holds). Returns it with the flat draw indices."""
    draws, idx = posterior_draws(post, counts, n_draws)
    K = max(draws[n].shape[2] for n in ("mu", "r"))
    total = np.zeros((len(idx), counts.n_cells, K))
    log_w = {}
    for b in iter_blocks(draws, idx, counts, budget):
        total[:, b.cells] += b.lp.sum(axis=2)
        log_w[b.cells.start] = b.log_w
    for start, lw in log_w.items():
        total[:, start:start + lw.shape[1]] += lw
    return logsumexp(total, axis=2), idx


def _waic_terms(lp: np.ndarray) -> np.ndarray:
    """elpd_waic of each element from its draws on axis 0: log mean exp - variance (ddof 0, as ArviZ's waic)."""
    S = lp.shape[0]
    return logsumexp(lp, axis=0) - np.log(S) - lp.var(axis=0)


def gene_elpd_difference(post_a, post_b, counts: Counts, n_draws: int | None = None,
                         budget: int = DEFAULT_BUDGET) -> dict[str, np.ndarray]:
    """Per-gene elpd (WAIC, each (cell, gene) count a pointwise term) of two fits of the same data, and the
    paired difference a - b with its standard error over cells: se_g = sqrt(C var_c(d_cg)), d_cg the pointwise
    difference (the usual LOO/WAIC standard error, Vehtari et al. 2017, restricted to gene g).

    WAIC rather than PSIS-LOO per element: PSIS costs a Pareto fit per (cell, gene), tens of millions on real
    data, while WAIC's terms are closed form; the fit-level comparison (compare_fits) uses PSIS-LOO.
    Mixtures are refused: their components are marginalised per cell, so a gene's terms do not separate."""
    pieces = {}
    for label, post in (("a", post_a), ("b", post_b)):
        draws, idx = posterior_draws(post, counts, n_draws)
        if draws.has("component"):
            raise UserInputError("--by gene needs fits without mixture components (a mixture's cell terms do not "
                                 "split by gene); compare mixtures with the fit-level table (no --by gene)")
        pieces[label] = (draws, idx)
    C, G = counts.X.shape
    out = {k: np.zeros(G) for k in ("elpd_a", "elpd_b", "p_waic_a", "p_waic_b", "sum_d", "sum_d2")}
    # Walk both fits over the same blocks (cell and gene ranges), sized for the fit with more draws.
    shape = block_shape(max(len(p[1]) for p in pieces.values()), C, G, budget)
    blocks = zip(iter_blocks(*pieces["a"], counts, shape=shape), iter_blocks(*pieces["b"], counts, shape=shape))
    for ba, bb in blocks:
        assert (ba.cells, ba.genes) == (bb.cells, bb.genes)
        terms = {}
        for label, b in (("a", ba), ("b", bb)):
            lp = b.lp[..., 0]
            terms[label] = _waic_terms(lp)
            out[f"elpd_{label}"][b.genes] += terms[label].sum(axis=0)
            out[f"p_waic_{label}"][b.genes] += lp.var(axis=0).sum(axis=0)
        d = terms["a"] - terms["b"]
        out["sum_d"][ba.genes] += d.sum(axis=0)
        out["sum_d2"][ba.genes] += (d**2).sum(axis=0)
    diff = out.pop("sum_d")
    var = np.maximum(out.pop("sum_d2") / C - (diff / C) ** 2, 0.0)
    out["elpd_diff"] = diff
    out["se"] = np.sqrt(C * var)
    return out
