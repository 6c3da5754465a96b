"""The data dict of a rendered program: sufficient statistics of the counts, sizes, prior numbers.

Everything is computed from the sparse CSR matrix without densifying it. Which statistics a program
needs depends on its likelihood form (plan.likelihood_form):

| form              | data                                                                  |
|-------------------|-----------------------------------------------------------------------|
| pairs             | J distinct non-zero (gene, count) pairs: pair_gene, pair_count, pair_weight |
| pairs_mixture     | pairs + N non-zeros as pair indices in CSR order: nz_pair, cell_start |
| capture_shared_p  | pairs + cell_total (library sizes) [+ nz_pair, cell_start for mixtures] |
| capture_cells     | the CSR matrix itself: nz_gene, nz_count, cell_start                  |

Multi-dataset programs (a dataset axis): D and cell_dataset; with dataset-specific gene parameters the pairs
are (gene, dataset, count) triples whose pair_gene indexes the genes x datasets matrices column by column.

With ``log_lik`` (the per-cell log likelihood of `scribe run --log-lik`) pairs and capture_shared_p also get
nz_pair and cell_start (the other forms have them, or the CSR matrix, already).

plus C, G (and K for mixtures), the run's switch ``prior_only`` (render: the plain run and --prior-draws share
one program), ``prior_<name>`` (two numbers) for every base prior the program samples
from, and the horseshoe / NEG hyperparameters when a hierarchical prior of that family is used. Indices
are 1-based, as Stan's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .centring import (dataset_gate_split_data, gate_split_data, index_split, log_mean_scales, prob_hyper_scales,
                       prob_split_data)
from .config import ModelConfig
from .gate_grid import gate_grid, loc_scale
from .plan import (dense_reference, integrates_gate, likelihood_form, scales_dataset_log_mean, scales_log_mean, scales_prob_hyper, shifts_capture,
                   splits_dataset_gate, splits_nonzero_terms)


@dataclass
class SparseStats:
    """Sufficient statistics of a cells x genes count matrix (all index arrays 1-based)."""

    pair_gene: np.ndarray  # (J,) gene of each distinct non-zero (gene, count) pair
    pair_count: np.ndarray  # (J,) its count
    pair_weight: np.ndarray  # (J,) number of cells with that count for that gene
    nz_pair: np.ndarray  # (N,) pair index of each non-zero, in CSR (cell-major) order
    nz_gene: np.ndarray  # (N,) gene of each non-zero, CSR order
    nz_count: np.ndarray  # (N,) count of each non-zero, CSR order
    cell_start: np.ndarray  # (C + 1,) CSR row pointer: cell c's non-zeros are cell_start[c]..cell_start[c+1]-1
    cell_total: np.ndarray  # (C,) library size

    @property
    def n_pairs(self) -> int:
        return int(self.pair_gene.size)


# Below this many possible (column, count) keys the pairs are counted in an array indexed by key (O(nnz + keys),
# at most 128 MB) instead of sorted (np.unique, O(nnz log nnz)): 50,000 x 2,000 simulated NBDM, 25M non-zeros,
# 9.8 s in np.unique of its 20 s of data preparation.
COUNTING_KEYS = 1 << 24


def _distinct_keys(keys: np.ndarray, span_keys: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique(keys, return_inverse=True, return_counts=True) for non-negative keys below ``span_keys``."""
    if span_keys > COUNTING_KEYS:
        keys_u, inverse, weight = np.unique(keys, return_inverse=True, return_counts=True)
        return keys_u, inverse.ravel(), weight
    tally = np.bincount(keys, minlength=span_keys)
    present = tally > 0
    rank = np.cumsum(present) - 1  # the rank of each present key among the present keys, in key order
    return np.flatnonzero(present), rank[keys], tally[present]


def sparse_stats(X: sp.csr_matrix, cell_dataset: np.ndarray | None = None) -> SparseStats:
    """The distinct (gene, count) pairs by counting (or one sort, when the keys are too many to count).

    With ``cell_dataset`` (0-based dataset of each cell) the pairs are distinct (gene, dataset, count)
    triples and ``pair_gene`` is the column (d - 1) G + g of the genes x datasets parameter matrices
    (Stan's column-major to_vector order); nz_gene stays the gene.
    """
    X = sp.csr_matrix(X)
    X.sort_indices()
    genes = X.indices.astype(np.int64)
    counts = X.data.astype(np.int64)
    columns = genes
    if cell_dataset is not None:
        per_nz = np.repeat(np.asarray(cell_dataset, dtype=np.int64), np.diff(X.indptr))
        columns = per_nz * X.shape[1] + genes
    span = int(counts.max(initial=0)) + 1
    n_columns = X.shape[1] * (int(np.max(cell_dataset, initial=0)) + 1 if cell_dataset is not None else 1)
    keys, inverse, weight = _distinct_keys(columns * span + counts, n_columns * span)
    return SparseStats(
        pair_gene=keys // span + 1,
        pair_count=keys % span,
        pair_weight=weight.astype(np.int64),
        nz_pair=inverse.astype(np.int64) + 1,
        nz_gene=genes + 1,
        nz_count=counts,
        cell_start=X.indptr.astype(np.int64) + 1,
        cell_total=np.asarray(X.sum(axis=1)).ravel().astype(np.int64),
    )


# The rising-factorial table stops at this count: a column's terms are k = 0 .. min(largest count,
# RISE_LIMIT) - 1, and a pair counting more adds lgamma(x + u) - lgamma(x + RISE_LIMIT). The table then
# holds at most RISE_LIMIT terms per column whatever the counts (one count of 10^8 made 10^8 terms and
# 12 GB), while UMI counts below it, nearly all of them, keep the cheap logs. 1024: above the largest
# count of most genes in UMI data, so the lgamma pairs are few; the table stays below 8 MB per 1000 columns.
RISE_LIMIT = 1024


def rise_table(pair_gene: np.ndarray, pair_count: np.ndarray, pair_weight: np.ndarray,
               limit: int = RISE_LIMIT) -> dict:
    """The rising-factorial table of the pairs (templates: rise_sum, rise_at_pairs), 1-based.

    lgamma(x + u) - lgamma(x) = sum_{k < u} log(x + k), so over all cells of a column (gene, or gene and
    dataset) the ratios sum to sum_k N(> k) log(x + k), N(> k) the cells counting more than k: one term per
    k below the column's largest count, up to ``limit``. The pairs counting more than ``limit`` (the tail:
    tail_pair, their column, count and weight) add lgamma(x + u) - lgamma(x + limit) each. Pairs must be
    sorted by (column, count), as sparse_stats makes them.
    """
    col = np.asarray(pair_gene, dtype=np.int64)
    u_all = np.asarray(pair_count, dtype=np.int64)
    w = np.asarray(pair_weight, dtype=np.float64)
    big = np.flatnonzero(u_all > limit)
    tail = dict(rise_limit=int(limit), H=int(big.size), tail_pair=big + 1, tail_gene=col[big],
                tail_count=u_all[big].astype(np.float64), tail_weight=w[big])
    if col.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return dict(T=0, rise_gene=empty, rise_k=np.zeros(0), rise_weight=np.zeros(0), pair_from=empty,
                    pair_to=empty, **tail)
    u = np.minimum(u_all, limit)  # the table's reach; still sorted within a column
    first = np.r_[True, col[1:] != col[:-1]]  # first pair of each column
    last = np.r_[col[1:] != col[:-1], True]
    prev_u = np.where(first, 0, np.r_[0, u[:-1]])  # count of the previous pair in the column (0 at its start)
    span = u - prev_u  # k = prev_u .. u - 1 have the same N(> k): the weight of this pair and the later ones
    # N(> k) on the span of pair j = sum of the weights of pairs j.. to the column's end (a reversed cumsum)
    group = np.cumsum(first) - 1  # column number of each pair
    after = np.append(np.cumsum(w[::-1])[::-1], 0.0)  # after[j]: weights of pairs j.. to the very end
    suffix = after[:-1] - after[np.flatnonzero(last) + 1][group]  # ... to the end of the column
    starts = np.cumsum(span) - span  # 0-based first term of each pair's span
    rise_k = np.arange(span.sum()) - np.repeat(starts - prev_u, span)
    col_start = starts[first][group]  # 0-based first term of each pair's column
    return dict(
        T=int(span.sum()),
        rise_gene=np.repeat(col, span),
        rise_k=rise_k.astype(np.float64),
        rise_weight=np.repeat(suffix, span),
        pair_from=col_start + 1,
        pair_to=col_start + 1 + u,
        **tail,
    )


def stan_data(config: ModelConfig, counts, dense: bool = False, log_lik: bool = False, prior_only: bool = False,
              cell_dataset_override: np.ndarray | None = None) -> dict:
    """The data dict for the program ``render(config)`` (``counts``: a data.Counts or a CSR matrix).

    ``log_lik`` adds what the per-cell log likelihood of render(log_lik=True) needs: the cells x pairs CSR
    (nz_pair, cell_start) for the pair forms that do not have it already (the mixtures and capture_cells do).
    ``prior_only`` sets prior_only: the program leaves the likelihood out (prior draws), and the coordinates that
    plan.scales_log_mean / scales_prob_hyper scale by the posterior's standard errors get offset 0 and
    multiplier 1, i.e. plain coordinates: the prior is hundreds of those units wide, and NUTS would have to
    adapt its metric to that. ``dense`` adds the full matrix ``counts_dense`` for the reference programs of
    render(check_loglik=True or dense=True); only for tests and benchmarks on small matrices.

    Programs with a dataset axis (config.dataset_axis) also get D and cell_dataset (1-based); with
    dataset-specific gene parameters (config.dataset_params) their pairs are per (gene, dataset). The datasets come from ``counts.cell_dataset`` (0-based codes) or,
    for a bare CSR matrix in tests, ``cell_dataset_override``.
    """
    X = counts.X if hasattr(counts, "X") else counts
    C, G = X.shape
    summed = integrates_gate(config)
    if dense:  # the reference program's data (plan.dense_reference), and the summed program's grid below
        config = dense_reference(config)
    cell_dataset = None
    if config.dataset_axis:
        cell_dataset = getattr(counts, "cell_dataset", None) if cell_dataset_override is None else cell_dataset_override
        if cell_dataset is None:
            raise ValueError("stan_data: a multi-dataset program needs the cells' datasets (Counts.cell_dataset)")
        cell_dataset = np.asarray(cell_dataset, dtype=np.int64)
    stats = sparse_stats(X, cell_dataset if config.dataset_params else None)
    form = likelihood_form(config)
    data: dict = {"C": int(C), "G": int(G), "prior_only": int(prior_only)}
    if config.mixture:
        data["K"] = int(config.components)
    if cell_dataset is not None:
        data.update(D=int(cell_dataset.max()) + 1, cell_dataset=cell_dataset + 1)
    split_nonzero = splits_nonzero_terms(config)
    if form != "capture_cells" or split_nonzero:
        data.update(J=stats.n_pairs, pair_gene=stats.pair_gene, pair_count=stats.pair_count,
                    pair_weight=stats.pair_weight.astype(float))
        data.update(rise_table(stats.pair_gene, stats.pair_count, stats.pair_weight))
    if form == "capture_shared_p" or split_nonzero:
        data["cell_total"] = stats.cell_total.astype(float)
    if form in ("pairs", "pairs_mixture", "capture_shared_p") and (config.mixture or log_lik):
        data.update(N=int(stats.nz_pair.size), nz_pair=stats.nz_pair, cell_start=stats.cell_start)
    if form == "capture_cells":
        data.update(N=int(stats.nz_gene.size), nz_gene=stats.nz_gene, nz_count=stats.nz_count,
                    cell_start=stats.cell_start)
    for name in config.used_priors():
        data[f"prior_{name}"] = [float(x) for x in config.base_prior(name)[1]]
    families = set(config.hierarchical().values()) | set(config.dataset_priors().values())
    if "horseshoe" in families:
        data.update(horseshoe_tau0=config.horseshoe_tau0, slab_df=config.slab_df, slab_scale=config.slab_scale)
    if "neg" in families:
        data.update(neg_u=config.neg_u, neg_a=config.neg_a, neg_tau=config.neg_tau)
    data.update(capture_prior_data(config, X, getattr(counts, "library_size", None)))
    if summed:
        data.update(gate_grid(int(C), config.neg_tau))
        data["gate_loc_scale"] = 1.0 if prior_only else loc_scale(int(G))  # prior draws: plain coordinates (below)
    if config.gate_split:
        data.update(gate_split_data(X, shared_p=not config.gene_specific_p))
    if config.prob_split:
        data.update(prob_split_data(X, config.prob_prior))
    if splits_dataset_gate(config):
        data.update(dataset_gate_split_data(X, cell_dataset, shared_p=not config.gene_specific_p))
    # Prior draws move in plain coordinates (offset 0, multiplier 1): the prior is hundreds of the posterior's
    # standard errors wide, which NUTS would have to learn through its metric.
    if scales_prob_hyper(config):
        hyper = prob_hyper_scales(X, config.prob_prior)
        data.update({k: np.full(np.shape(v), 0.0 if k.endswith("_offset") else 1.0).tolist() for k, v in hyper.items()}
                    if prior_only else hyper)
    if scales_log_mean(config):
        scales = log_mean_scales(X)
        if prior_only:
            scales = {"log_mu_offset": np.zeros(G), "log_mu_scale": np.ones(G)}
        elif shifts_capture(config):  # log mu - shift sits near the mean count over the prior's mean capture
            scales["log_mu_offset"] = scales["log_mu_offset"] - np.log(prior_mean_capture(data))
        data.update(scales)
    if scales_dataset_log_mean(config):
        data.update(dataset_log_mean_scales(X, cell_dataset, data, prior_only))
    if dense:
        data["counts_dense"] = np.asarray(X.todense(), dtype=np.int64)
    return data


# A cell whose capture centre log(M_0 / L_c) is at least this many prior sds above the bound eta = 0 is sampled
# through the common capture shift (params/capture_organism.stan.j2): there the prior leaves ~3e-7 of its mass
# beyond the bound, so a draw that reaches it is a conflict between data and prior, not the posterior's edge.
SHIFTED_SDS = 5.0


def prior_mean_capture(data: dict, cells: np.ndarray | None = None) -> float:
    """The mean over cells (or the ``cells`` mask: one dataset's) of the capture prior's centre,
    exp(-capture_eta_loc): nubar of observed_log_mean."""
    loc = np.asarray(data["capture_eta_loc"], float)
    return float(np.mean(np.exp(-(loc if cells is None else loc[cells]))))


def observed_log_mean(gene_total: np.ndarray, C: int, mean_capture: float) -> np.ndarray:
    """log((ubar_g + eps) / nubar): each gene's log mean before capture as its counts put it (ubar_g its mean
    count, eps = 0.5 / C, nubar the mean capture). The mean anchor's centre, and where fit.capture_starts
    starts log mu."""
    return np.log((np.asarray(gene_total, float) / C + 0.5 / C) / mean_capture)


def dataset_log_mean_scales(X: sp.csr_matrix, cell_dataset: np.ndarray, data: dict, prior_only: bool) -> dict:
    """log mu's offset and multiplier per (gene, dataset) (plan.scales_dataset_log_mean): centring.log_mean_scales
    of each dataset's cells; under the capture shift each offset moves by the log of that dataset's mean prior
    capture (datasets from different protocols capture differently). Prior draws: offset 0, multiplier 1."""
    G, D = X.shape[1], int(data["D"])
    if prior_only:
        return {"log_mu_offset": np.zeros((G, D)), "log_mu_scale": np.ones((G, D))}
    X = sp.csr_matrix(X)
    offset, scale = np.empty((G, D)), np.empty((G, D))
    for d in range(D):
        cells = cell_dataset == d
        s = log_mean_scales(X[cells])
        offset[:, d], scale[:, d] = s["log_mu_offset"], s["log_mu_scale"]
        if "capture_n_shifted" in data:
            offset[:, d] -= np.log(prior_mean_capture(data, cells))
    return {"log_mu_offset": offset, "log_mu_scale": scale}


def capture_prior_data(config: ModelConfig, X: sp.csr_matrix, library_size: np.ndarray | None) -> dict:
    """Data of the biology-informed capture prior and the mean anchor (models.md), when configured.

    capture_eta_loc[c] = log(M_0 / L_c) with L_c the cell's library size over every input gene, floored at 0
    (a cell cannot hold more molecules than M_0 says it captured; such cells get a prior at full capture).
    With the capture shift (plan.shifts_capture), the cells whose centre is at least SHIFTED_SDS sds above 0.
    mean_anchor_loc[g] = log((ubar_g + eps) / nubar): ubar_g the gene's mean count, eps = 0.5 / C (half a
    UMI over all cells, so that a gene seen once stays finite), nubar the prior mean capture: mean_c L_c / M_0
    under --organism, else the mean of capture's base prior (Beta(a, b): a / (a + b); capture odds
    BetaPrime(a, b): 1 / (1 + odds) ~ Beta(b, a), mean b / (a + b)).
    """
    out: dict = {}
    C = X.shape[0]
    lib = np.asarray(X.sum(axis=1), dtype=np.float64).ravel() if library_size is None else np.asarray(library_size, float)
    if config.capture_prior is not None:
        m0, sd = config.capture_prior
        loc = np.maximum(np.log(m0) - np.log(np.maximum(lib, 1.0)), 0.0)
        out.update(capture_eta_loc=loc, capture_eta_sd=float(sd))
        if shifts_capture(config):
            out.update(index_split(loc >= SHIFTED_SDS * sd, "capture_n_shifted", "capture_shifted_idx",
                                   "capture_own_idx"))
    if config.mean_anchor:
        if config.capture_prior is not None:
            nubar = float(np.mean(np.minimum(lib / config.capture_prior[0], 1.0)))
        elif config.parameterization == "mean-odds":
            a, b = config.base_prior("capture_odds")[1]
            nubar = b / (a + b)
        else:
            a, b = config.base_prior("capture")[1]
            nubar = a / (a + b)
        out.update(mean_anchor_loc=observed_log_mean(np.asarray(X.sum(axis=0), dtype=np.float64).ravel(), C, nubar),
                   mean_anchor_sd=float(config.mean_anchor_sd))
    return out
