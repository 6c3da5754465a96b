"""Differential expression from posterior draws (spec: de.md). Pure numpy / xarray; no Stan.

For each posterior draw s a group's gene parameters (mu_g, r_g) give a composition
rho_g = lambda_g / sum_j lambda_j with lambda_g = gamma_g mu_g / r_g, gamma_g ~ Gamma(r_g, 1)
(with a shared p, rho ~ Dirichlet(r) exactly). Two groups A and B at the same draw index give the paired
effect Delta_g = CLR(rho^A)_g - CLR(rho^B)_g, summarised per gene over draws, and genes are called by
controlling the posterior expected false discovery proportion (PEFP).

The normalisation of rho cancels in the CLR, so Delta_g = L_g - mean_j L_j with L_g = log lambda^A_g -
log lambda^B_g: a per-draw centre over all genes plus a per-gene term. That is what bounds the memory: the
draws are processed in blocks of (draws x genes), each with its own seeded generator, so that a first pass
collects the per-draw centres and a second pass, gene block by gene block, regenerates the same gamma draws
and summarises them. No array larger than (draws x samples_per_draw x GENE_BLOCK) is ever built (beyond
the posterior's own mu and r), and the result depends on the seed only, not on the memory available.

Beside this cell-level effect ("clr-draws"), the population-level effects of de.md use the means alone at each
draw: the LFC log(mu_A / mu_B) ("lfc", the default), CLR(mu_A) - CLR(mu_B) ("clr-mu", depth-free) and the LVR;
each gets the same evidence columns
and PEFP calls, after empirical-Bayes shrinkage across genes (ash.py) unless --shrink none.

Groups: two components of a mixture fit, two datasets of a joint fit (several pairs of datasets are
averaged within each draw, after the within-pair Delta), or two separate fits paired by draw index.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import UserInputError

# Fixed block sizes: the random streams are keyed by (seed, pair, side, draw block, gene block), so these
# must not depend on the machine, or the same seed would give different numbers elsewhere.
DRAW_BLOCK = 256
GENE_BLOCK = 256
# Keep all L_g draws from the first pass when they fit in this many float64 elements (64 MB); otherwise
# the second pass regenerates them (same streams, same numbers).
KEEP_ELEMENTS = 8_000_000

DEFAULT_CI = 0.90
DEFAULT_TAU = math.log(1.1)
DEFAULT_TARGET = 0.05

COLUMNS = ["gene", "mean_clr_diff", "sd_clr_diff", "ci_low", "ci_high", "prob_positive", "prob_effect", "lfsr",
           "lfsr_tau", "lfc_mean", "lfc_sd", "called", "rank", "lvr_mean", "lvr_sd"]

SAMPLE_DIMS = ("chain", "draw")


# --- the groups ------------------------------------------------------------------------------------------

@dataclass
class Group:
    """One side of a comparison: gene means and sizes per posterior draw, both (S, G)."""

    label: str
    mu: np.ndarray
    r: np.ndarray


@dataclass
class Comparison:
    """Pairs (A_k, B_k) of groups compared at the same draw index; Delta = sum_k weights[k] Delta_k."""

    kind: str  # "components" | "datasets" | "fits"
    label_a: str
    label_b: str
    pairs: list[tuple[Group, Group]]
    weights: np.ndarray
    genes: list[str]
    notes: list[str] = field(default_factory=list)  # things the user must hear (stderr and metadata)
    n_draws_a: int = 0  # posterior draws before any resampling
    n_draws_b: int = 0

    @property
    def n_draws(self) -> int:
        return self.pairs[0][0].mu.shape[0]

    @property
    def n_genes(self) -> int:
        return len(self.genes)


def gene_parameters(posterior: xr.Dataset, name: str) -> tuple[xr.DataArray, xr.DataArray]:
    """``mu`` and ``r`` of a posterior, or a one-line error."""
    missing = [v for v in ("mu", "r") if v not in posterior.data_vars]
    if missing:
        raise UserInputError(f"{name} has no {' or '.join(repr(m) for m in missing)} in its posterior; "
                             "DE needs the gene means mu and sizes r: pass a posterior written by `scribe run`")
    mu, r = posterior["mu"], posterior["r"]
    for var in (mu, r):
        if "gene" not in var.dims or any(d not in var.dims for d in SAMPLE_DIMS):
            raise UserInputError(f"{var.name} of {name} has dims {tuple(var.dims)}, not (chain, draw, gene, ...); "
                                 "pass a posterior written by `scribe run`")
    return mu, r


def gene_names(posterior: xr.Dataset, name: str) -> list[str]:
    mu, _ = gene_parameters(posterior, name)
    if "gene" in mu.coords:
        return [str(g) for g in mu.coords["gene"].values]
    return [str(i) for i in range(mu.sizes["gene"])]


def _labels(var: xr.DataArray, dim: str) -> list[str]:
    if dim in var.coords:
        return [str(v) for v in var.coords[dim].values]
    return [str(i) for i in range(var.sizes[dim])]


def _take(var: xr.DataArray, dim: str | None, label: str | None) -> xr.DataArray:
    """The slice ``dim = label`` of ``var`` if it has that dim; a shared quantity (no such dim) as it is."""
    if dim is None or dim not in var.dims:
        return var
    return var.isel({dim: _labels(var, dim).index(label)})


def _group(mu: xr.DataArray, r: xr.DataArray, dim: str | None, label: str | None, name: str) -> Group:
    mu_g, r_g = _take(mu, dim, label), _take(r, dim, label)
    for var in (mu_g, r_g):
        extra = [d for d in var.dims if d not in (*SAMPLE_DIMS, "gene")]
        if extra:
            hint = {"component": "this is a mixture fit: compare two of its components with --components K1 K2",
                    "dataset": "this is a joint multi-dataset fit: compare two datasets with --datasets D1 D2"}
            raise UserInputError(f"{var.name} of {name} has the extra dim(s) {', '.join(extra)}; "
                                 + hint.get(extra[0], "DE compares per-gene parameters only"))
    order = (*SAMPLE_DIMS, "gene")
    arrays = []
    for var in (mu_g, r_g):
        a = np.asarray(var.transpose(*order).values, dtype=np.float64)
        arrays.append(a.reshape(-1, a.shape[-1]))
    mu_a, r_a = arrays
    if not (np.all(np.isfinite(mu_a)) and np.all(mu_a > 0) and np.all(np.isfinite(r_a)) and np.all(r_a > 0)):
        raise UserInputError(f"mu or r of {name} (group {label}) has non-positive or non-finite draws; "
                             "check the fit (scribe summary) before DE")
    return Group(label=str(label) if label is not None else name, mu=mu_a, r=r_a)


# Split R-hat above this on some gene's log mu means the chains sampled different things (Vehtari et al. 2021
# use 1.01 for a converged fit; 1.1 flags only chains in different modes, not short chains).
RHAT_WARN = 1.1


def split_rhat(x: np.ndarray) -> np.ndarray:
    """Split R-hat (Gelman et al. 2013, BDA3 11.4) of x (chain, draw, ...) over its trailing dims; NaN when
    there are fewer than 4 draws per chain. The classic form, not rank_diagnostics.diagnose: this only asks
    whether chains sit in different modes (threshold 1.1), and one vectorised expression over thousands of
    genes needs no ranking."""
    x = np.asarray(x, dtype=np.float64)
    half = x.shape[1] // 2
    if half < 2:
        return np.full(x.shape[2:], np.nan)
    parts = np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)
    n = parts.shape[1]
    within = parts.var(axis=1, ddof=1).mean(axis=0)
    between = n * parts.mean(axis=1).var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(((n - 1) / n * within + between / n) / within)


def mixing_note(mu: xr.DataArray, dim: str | None, label: str | None, name: str) -> str | None:
    """A note when the chains of ``name`` disagree on the group's log mu: DE pools the chains and pairs draws
    by index, so chains in different modes (in a mixture: one chain's component 0 being another's
    component 1, or a component left empty) make the effects a blend of different comparisons."""
    var = _take(mu, dim, label)
    if any(d not in var.dims for d in SAMPLE_DIMS) or var.sizes["chain"] * var.sizes["draw"] < 8:
        return None
    x = np.log(np.asarray(var.transpose(*SAMPLE_DIMS, ...).values, dtype=np.float64))
    rhat = split_rhat(x.reshape(x.shape[0], x.shape[1], -1))
    bad = np.isfinite(rhat) & (rhat > RHAT_WARN)
    if not bad.any():
        return None
    where = f"{dim} {label} of {name}" if dim else name
    return (f"the chains of {where} disagree: split R-hat of log mu above {RHAT_WARN} for {int(bad.sum())} of "
            f"{bad.size} genes (up to {np.nanmax(rhat):.2f}); the calls pool chains that describe different "
            "groups (a chain stuck in another mode, or in a mixture a component labelled or emptied differently "
            "per chain), so they mean nothing: refit (longer warmup, --init pathfinder) until R-hat is near 1")


# A component whose weight gives it fewer cells than this has gene parameters drawn from their prior.
EMPTY_CELLS = 2.0


def empty_component_notes(posterior: xr.Dataset, labels: list[str], name: str) -> list[str]:
    """Notes for compared components that hold about no cell (posterior mean weight x cells < EMPTY_CELLS).
    A mixture whose data support fewer components leaves one empty, with every chain agreeing (so R-hat is
    fine); its mu is then the prior's, and calls against it are false."""
    n_cells = posterior.attrs.get("n_cells")
    if "weights" not in posterior.data_vars or "component" not in posterior["weights"].dims or n_cells is None:
        return []
    w = posterior["weights"]
    notes = []
    for lab in dict.fromkeys(labels):
        cells = float(_take(w, "component", lab).mean()) * float(n_cells)
        if cells < EMPTY_CELLS:
            notes.append(f"component {lab} of {name} holds about {cells:.1f} of {int(n_cells)} cells: its gene "
                         "parameters are their prior's, so calls against it mean nothing; the data support fewer "
                         "components (fit fewer, or, if every chain fell into one component from random starts, "
                         "start them at clusters with scribe run --init FILE.json)")
    return notes


def _check_labels(var: xr.DataArray, dim: str, labels: list[str], name: str, option: str) -> None:
    available = _labels(var, dim)
    for lab in labels:
        if lab not in available:
            raise UserInputError(f"{dim} {lab!r} is not in {name} ({dim}s: {', '.join(available)}); "
                                 f"pass labels from that list to {option}")


def _check_pairs(a: list[str], b: list[str], option: str) -> None:
    if len(a) != len(b) or not a:
        raise UserInputError(f"{option} needs the same number of labels on both sides ({len(a)} vs {len(b)}); "
                             f"pair them in order, e.g. {option} a1,a2 b1,b2")
    if len(set(a)) != len(a) or len(set(b)) != len(b):
        raise UserInputError(f"{option} lists a label twice on one side; give each label once")
    same = [x for x, y in zip(a, b) if x == y]
    if same:
        raise UserInputError(f"{option} compares {same[0]!r} with itself; pass two different labels")


def _uniform(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


def _paired_groups(posterior: xr.Dataset, a: list[str], b: list[str], dim: str, name: str, missing: str) -> list:
    """The (a[k], b[k]) groups along ``dim`` (component or dataset) of one fit; ``missing``: the error when
    neither mu nor r has that dim."""
    mu, r = gene_parameters(posterior, name)
    if dim not in mu.dims and dim not in r.dims:
        raise UserInputError(missing)
    option = f"--{dim}s"
    _check_pairs(a, b, option)
    _check_labels(mu if dim in mu.dims else r, dim, a + b, name, option)
    return [(_group(mu, r, dim, x, name), _group(mu, r, dim, y, name)) for x, y in zip(a, b)]


def components_comparison(posterior: xr.Dataset, a: list[str], b: list[str], name: str = "the posterior") -> Comparison:
    """Components a[k] vs b[k] of one mixture fit (labels as in the ``component`` coords), draws paired by index."""
    a, b = [str(x) for x in a], [str(x) for x in b]
    pairs = _paired_groups(posterior, a, b, "component", name,
                           f"{name} is not a mixture fit (mu and r have no component dim); use --components "
                           "on a fit with --components K >= 2, or compare two fits: scribe de A.nc B.nc")
    S = pairs[0][0].mu.shape[0]
    mu = posterior["mu"]
    notes = [n for lab in dict.fromkeys(a + b) if (n := mixing_note(mu, "component", lab, name))]
    notes += empty_component_notes(posterior, a + b, name)
    return Comparison("components", ",".join(a), ",".join(b), pairs, _uniform(len(pairs)), gene_names(posterior, name),
                      notes=notes, n_draws_a=S, n_draws_b=S)


def datasets_comparison(posterior: xr.Dataset, a: list[str], b: list[str], name: str = "the posterior",
                        weights: str = "uniform", cells_per_dataset: dict | None = None) -> Comparison:
    """Datasets a[k] vs b[k] of one joint fit, draws paired by index. A quantity without the dataset dim is
    shared by the datasets. Several pairs: the within-pair Deltas are averaged at each draw, with uniform
    weights or weights proportional to the pair's cells (``cells_per_dataset``)."""
    a, b = [str(x) for x in a], [str(x) for x in b]
    pairs = _paired_groups(posterior, a, b, "dataset", name,
                           f"{name} has no dataset-specific mu or r (the datasets share every gene parameter); "
                           "refit with --dataset-key and --expression-dataset-prior (or --prob-dataset-prior)")
    if weights == "uniform":
        w = _uniform(len(pairs))
    elif weights == "cells":
        if not cells_per_dataset:
            raise UserInputError(f"{name} does not record cells per dataset; use --pair-weights uniform")
        missing = [d for d in a + b if d not in cells_per_dataset]
        if missing:
            raise UserInputError(f"{name} records no cell count for dataset {missing[0]!r}; use --pair-weights uniform")
        w = np.array([cells_per_dataset[x] + cells_per_dataset[y] for x, y in zip(a, b)], dtype=float)
        w = w / w.sum()
    else:
        raise UserInputError(f"unknown pair weights {weights!r}; use uniform or cells")
    S = pairs[0][0].mu.shape[0]
    mu = posterior["mu"]
    dim = "dataset" if "dataset" in mu.dims else None
    notes = [n for lab in dict.fromkeys(a + b) if (n := mixing_note(mu, dim, lab, name))]
    return Comparison("datasets", ",".join(a), ",".join(b), pairs, w, gene_names(posterior, name),
                      notes=list(dict.fromkeys(notes)), n_draws_a=S, n_draws_b=S)


def fits_comparison(post_a: xr.Dataset, post_b: xr.Dataset, name_a: str = "A", name_b: str = "B",
                    seed: int = 0) -> Comparison:
    """Two separate fits, draws paired by index. Unequal draw counts: the larger is subsampled without
    replacement (seeded) to the smaller's count. The fits are independent, so the comparison ignores any
    technical structure the groups share (a note says so)."""
    genes_a, genes_b = gene_names(post_a, name_a), gene_names(post_b, name_b)
    if genes_a != genes_b:
        if len(genes_a) != len(genes_b):
            what = f"{len(genes_a)} vs {len(genes_b)} genes"
        else:
            i = next(i for i, (x, y) in enumerate(zip(genes_a, genes_b)) if x != y)
            what = f"gene {i + 1} is {genes_a[i]!r} vs {genes_b[i]!r}"
        raise UserInputError(f"the genes of {name_a} and {name_b} differ ({what}); fit both on the same genes "
                             "in the same order (e.g. scribe run --genes FILE)")
    ga = _group(*gene_parameters(post_a, name_a), None, None, name_a)
    gb = _group(*gene_parameters(post_b, name_b), None, None, name_b)
    notes = [f"{name_a} and {name_b} are separate fits: their draws are independent and the comparison ignores any "
             "technical structure the groups share (a joint fit with --dataset-key pairs them properly)"]
    notes += [n for post, nm in ((post_a, name_a), (post_b, name_b)) if (n := mixing_note(post["mu"], None, None, nm))]
    sa, sb = ga.mu.shape[0], gb.mu.shape[0]
    if sa != sb:
        n = min(sa, sb)
        rng = np.random.default_rng([seed, 7919])
        big = ga if sa > sb else gb
        idx = np.sort(rng.choice(big.mu.shape[0], size=n, replace=False))
        big.mu, big.r = big.mu[idx], big.r[idx]
        notes.append(f"unequal draw counts ({sa} in {name_a}, {sb} in {name_b}): "
                     f"{(name_a if sa > sb else name_b)} was subsampled to {n} draws (seed {seed}) to pair them by index")
    return Comparison("fits", name_a, name_b, [(ga, gb)], np.ones(1), genes_a, notes=notes, n_draws_a=sa, n_draws_b=sb)


# --- compositions and effects (small, direct forms; the block machinery below uses the same pieces) -------

def log_gamma(rng: np.random.Generator, shape: np.ndarray) -> np.ndarray:
    """log of Gamma(shape, 1) draws, one per element of ``shape``, accurate for small shapes too:
    Gamma(a) = Gamma(a + 1) U^(1/a) (a direct draw underflows to 0 for a << 1)."""
    shape = np.asarray(shape, dtype=np.float64)
    g = rng.standard_gamma(shape + 1.0)
    u = 1.0 - rng.random(shape.shape)  # in (0, 1]
    return np.log(g) + np.log(u) / shape


def log_rates(mu: np.ndarray, r: np.ndarray, rng: np.random.Generator, samples_per_draw: int = 1) -> np.ndarray:
    """log lambda, lambda_g = gamma_g mu_g / r_g, for mu, r of shape (S, G): returns (S, m, G)."""
    mu, r = np.asarray(mu, float), np.asarray(r, float)
    shape = np.broadcast_to(r[:, None, :], (r.shape[0], samples_per_draw, r.shape[1]))
    return log_gamma(rng, shape) + (np.log(mu) - np.log(r))[:, None, :]


def compositions(mu: np.ndarray, r: np.ndarray, rng: np.random.Generator, samples_per_draw: int = 1) -> np.ndarray:
    """Compositions rho (S, m, G), each row on the simplex."""
    lam = log_rates(mu, r, rng, samples_per_draw)
    lam -= lam.max(axis=-1, keepdims=True)
    rho = np.exp(lam)
    return rho / rho.sum(axis=-1, keepdims=True)


def clr(rho: np.ndarray) -> np.ndarray:
    """Centred log-ratio over the last axis."""
    lr = np.log(rho)
    return lr - lr.mean(axis=-1, keepdims=True)


def lfc(mu_a: np.ndarray, mu_b: np.ndarray) -> np.ndarray:
    """Closure-free log fold change log(mu_A / mu_B) per draw."""
    return np.log(mu_a) - np.log(mu_b)


def nb_variance(mu: np.ndarray, r: np.ndarray) -> np.ndarray:
    return mu + mu * mu / r


def lvr(mu_a: np.ndarray, r_a: np.ndarray, mu_b: np.ndarray, r_b: np.ndarray) -> np.ndarray:
    """Log variance ratio log(Var_A / Var_B), Var = mu + mu^2 / r (the NB variance)."""
    return np.log(nb_variance(mu_a, r_a)) - np.log(nb_variance(mu_b, r_b))


# --- evidence ----------------------------------------------------------------------------------------------

def gene_evidence(delta: np.ndarray, ci: float = DEFAULT_CI, tau: float = DEFAULT_TAU) -> dict[str, np.ndarray]:
    """Per-gene summaries of effect draws ``delta`` (N draws x G genes), all empirical over the draws."""
    delta = np.asarray(delta, dtype=np.float64)
    n = delta.shape[0]
    lo, hi = np.quantile(delta, [(1 - ci) / 2, (1 + ci) / 2], axis=0)
    pos = (delta > 0).mean(axis=0)
    neg = (delta < 0).mean(axis=0)
    effect = np.maximum((delta > tau).mean(axis=0), (delta < -tau).mean(axis=0))
    return {
        "mean_clr_diff": delta.mean(axis=0),
        "sd_clr_diff": delta.std(axis=0, ddof=1) if n > 1 else np.zeros(delta.shape[1]),
        "ci_low": lo,
        "ci_high": hi,
        "prob_positive": pos,
        "prob_effect": effect,
        "lfsr": np.minimum(pos, neg),
        "lfsr_tau": 1.0 - effect,
    }


def table_order(lfsr_tau: np.ndarray, mean_clr_diff: np.ndarray, masked: np.ndarray | None = None) -> np.ndarray:
    """Indices sorting genes by lfsr_tau ascending, then |mean_clr_diff| descending (stable); masked genes last."""
    keys = (-np.abs(mean_clr_diff), lfsr_tau)
    return np.lexsort(keys if masked is None else (*keys, np.asarray(masked, bool)))


def pefp_calls(lfsr_tau: np.ndarray, target: float = DEFAULT_TARGET, order: np.ndarray | None = None) -> np.ndarray:
    """Call the largest n genes (in ``order``, default lfsr_tau ascending) whose mean lfsr_tau, the posterior
    expected false discovery proportion, is at most ``target``. Returns a boolean mask in gene order."""
    lfsr_tau = np.asarray(lfsr_tau, dtype=np.float64)
    if order is None:
        order = np.argsort(lfsr_tau, kind="stable")
    pefp = np.cumsum(lfsr_tau[order]) / np.arange(1, lfsr_tau.size + 1)
    # Sorted ascending, the running mean never decreases: the calls are a prefix. The small slack absorbs
    # rounding in the cumulative sum (lfsr_tau are multiples of 1 / draws).
    n = int(np.sum(pefp <= target + 1e-12))
    called = np.zeros(lfsr_tau.size, dtype=bool)
    called[order[:n]] = True
    return called


# --- the block machinery -------------------------------------------------------------------------------------

def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def _pair_diff(comp: Comparison, seed: int, m: int, i: int, s: tuple[int, int], j: int, g: tuple[int, int]) -> np.ndarray:
    """L = sum_k w_k (log lambda^A_k - log lambda^B_k) on draw block i (rows s0:s1), gene block j
    (genes g0:g1): shape (s1 - s0, m, g1 - g0). Each (pair, side, draw block, gene block) has its own stream."""
    (s0, s1), (g0, g1) = s, g
    out = np.zeros((s1 - s0, m, g1 - g0))
    for k, (ga, gb) in enumerate(comp.pairs):
        for side, grp in ((0, ga), (1, gb)):
            rng = np.random.default_rng([seed, k, side, i, j])
            ll = log_rates(grp.mu[s0:s1, g0:g1], grp.r[s0:s1, g0:g1], rng, m)
            if side == 0:
                out += comp.weights[k] * ll
            else:
                out -= comp.weights[k] * ll
    return out


def delta_blocks(comp: Comparison, seed: int = 0, samples_per_draw: int = 1):
    """Yield (gene slice, Delta block of shape (S * m, genes in block)) over the gene blocks, in order."""
    if seed < 0:
        raise UserInputError("--seed must be 0 or more")
    m = int(samples_per_draw)
    S, G = comp.n_draws, comp.n_genes
    dblocks, gblocks = _blocks(S, DRAW_BLOCK), _blocks(G, GENE_BLOCK)
    keep = S * m * G <= KEEP_ELEMENTS
    kept = np.empty((S, m, G)) if keep else None
    centre = np.zeros((S, m))
    for i, s in enumerate(dblocks):  # pass 1: the per-draw centres mean_j L_j
        for j, g in enumerate(gblocks):
            L = _pair_diff(comp, seed, m, i, s, j, g)
            centre[s[0]:s[1]] += L.sum(axis=-1)
            if keep:
                kept[s[0]:s[1], :, g[0]:g[1]] = L
    centre /= G
    for j, g in enumerate(gblocks):  # pass 2: Delta_g = L_g - centre, gene block by gene block
        if keep:
            L = kept[:, :, g[0]:g[1]]
        else:
            L = np.empty((S, m, g[1] - g[0]))
            for i, s in enumerate(dblocks):
                L[s[0]:s[1]] = _pair_diff(comp, seed, m, i, s, j, g)
        yield slice(*g), (L - centre[:, :, None]).reshape(S * m, g[1] - g[0])


# --- population-level effects and the table ------------------------------------------------------------------

# --effect: name -> (column prefix, what it means). "clr-draws" keeps the original column names (no prefix).
EFFECTS = {
    "clr-mu": ("clr_mu_", "CLR difference of the population means: CLR(mu_A) - CLR(mu_B), the change of each gene's "
                          "share of the expected expression (depth-free, no cell-to-cell noise)"),
    "lfc": ("lfc_", "log fold change of the means log(mu_A / mu_B) (not depth-free: a global depth difference "
                    "between the groups shifts every gene)"),
    "lvr": ("lvr_", "log variance ratio log(Var_A / Var_B), Var = mu + mu^2 / r (a change of noise, not of level)"),
    "clr-draws": ("", "CLR difference of compositions drawn with Gamma(r) noise: do two random cells differ "
                      "(includes cell-to-cell dispersion, so it stays uncertain however many cells)"),
}
# lfc: the best power at the promised error rate in every grouping of the benchmarks (docs/de.md); clr-mu
# overshoots when the changed genes move the CLR centre (a mixture's components), but is the depth-free choice.
DEFAULT_EFFECT = "lfc"
# Per-gene posteriors from independent flat-ish priors overstate how many genes differ when most do not
# (bench/de_fdr.py: FDP ~0.4 at target 0.05 without shrinkage); empirical Bayes learns the null share across
# genes. The NPMLE keeps the target where ash's unimodal g overshoots it (docs/de.md).
SHRINK = ("npmle", "ash", "none")
DEFAULT_SHRINK = "npmle"
FIELDS = ("mean", "sd", "ci_low", "ci_high", "prob_positive", "lfsr", "lfsr_tau", "called")
_LEGACY = {"mean": "mean_clr_diff", "sd": "sd_clr_diff", "called": "clr_draws_called"}


def column(effect: str, field: str) -> str:
    """The table column of ``field`` for ``effect`` (clr-draws keeps the original names)."""
    prefix = EFFECTS[effect][0]
    return prefix + field if prefix else _LEGACY.get(field, field)


COLUMNS = (COLUMNS + ["mean_expr", "masked", "clr_draws_called"]
           + [column(e, f) for e in ("clr-mu", "lfc", "lvr") for f in FIELDS if column(e, f) not in COLUMNS])


@dataclass
class DEResult:
    table: pd.DataFrame
    sets: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


def _generic(ev: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """gene_evidence's keys under the effect-neutral field names."""
    return {"mean": ev["mean_clr_diff"], "sd": ev["sd_clr_diff"], **{k: ev[k] for k in FIELDS[2:7]}}


def _weighted(comp: Comparison, fn, gs: slice) -> np.ndarray:
    return sum(w * fn(a, b, gs) for w, (a, b) in zip(comp.weights, comp.pairs))


def _lfc_draws(comp: Comparison, gs: slice) -> np.ndarray:
    return _weighted(comp, lambda a, b, s: lfc(a.mu[:, s], b.mu[:, s]), gs)


def _lvr_draws(comp: Comparison, gs: slice) -> np.ndarray:
    return _weighted(comp, lambda a, b, s: lvr(a.mu[:, s], a.r[:, s], b.mu[:, s], b.r[:, s]), gs)


def effect_blocks(comp: Comparison, effect: str, seed: int = 0, samples_per_draw: int = 1):
    """Yield (gene slice, draws of ``effect`` for the genes of the block, shape (N, genes in block))."""
    if effect == "clr-draws":
        yield from delta_blocks(comp, seed=seed, samples_per_draw=samples_per_draw)
        return
    gblocks = [slice(*g) for g in _blocks(comp.n_genes, GENE_BLOCK)]
    if effect == "clr-mu":  # CLR(mu_A) - CLR(mu_B) = LFC_g - mean_j LFC_j: the centre is over all genes
        centre = sum(_lfc_draws(comp, gs).sum(axis=1) for gs in gblocks) / comp.n_genes
    for gs in gblocks:
        if effect == "clr-mu":
            yield gs, _lfc_draws(comp, gs) - centre[:, None]
        elif effect == "lfc":
            yield gs, _lfc_draws(comp, gs)
        else:
            yield gs, _lvr_draws(comp, gs)


def centre_notes(comp: Comparison, tau: float) -> list[str]:
    """A note when the CLR centre (mean LFC over all genes, posterior mean) is beyond tau / 2. The CLR effect of
    an unchanged gene is minus the centre, so changed genes whose log fold changes do not cancel (many, of one
    sign) move every unchanged gene's share towards tau: clr-mu then calls unchanged genes, rightly for their
    share, wrongly if the question is which genes changed (the simulations of docs/de.md, 30% of genes changed)."""
    centre = float(np.mean(sum(_lfc_draws(comp, slice(*g)).sum(axis=1) for g in _blocks(comp.n_genes, GENE_BLOCK))
                           / comp.n_genes))
    if abs(centre) <= tau / 2:
        return []
    return [f"the mean log fold change over all genes is {centre:+.3f}: the CLR effects measure each gene against "
            f"that centre, so an unchanged gene has a CLR effect of {-centre:+.3f} ({abs(centre) / tau:.0%} of "
            f"tau = {tau:.3f}) and can be called; to ask which genes changed, use --effect lfc (the default) when the "
            f"groups' depths are equal (e.g. components of one mixture fit), or a --tau of at least "
            f"{2 * abs(centre):.2f}"]


def mean_expression(comp: Comparison) -> np.ndarray:
    """Posterior mean of (mu_A + mu_B) / 2 per gene (pairs weighted): the x axis of an MA plot, and the
    quantity --min-mean masks on (in the fits' units: mean count per cell)."""
    return _weighted(comp, lambda a, b, s: 0.5 * (a.mu[:, s] + b.mu[:, s]), slice(None)).mean(axis=0)


def run_de(comp: Comparison, *, effect: str = DEFAULT_EFFECT, ci: float = DEFAULT_CI, tau: float = DEFAULT_TAU,
           target: float = DEFAULT_TARGET, samples_per_draw: int = 1, seed: int = 0, shrink: str = DEFAULT_SHRINK,
           min_mean: float = 0.0, gene_sets: dict[str, list[str]] | None = None) -> DEResult:
    """Every effect's evidence and PEFP calls per gene; ``called`` and ``rank`` follow ``effect``.

    ``shrink`` ("npmle" or "ash") replaces each effect's evidence by its empirical-Bayes posterior (ash.py)
    from the per-gene posterior mean and sd; "none" keeps each gene's own posterior. Genes whose mean expression is below ``min_mean`` are reported but never
    called (``masked``), and are left out of the shrinkage fit. ``gene_sets`` (name -> genes): per set, the
    posterior of the mean of ``effect`` over the set's genes, with its evidence and PEFP calls across sets."""
    from . import ash

    check_settings(ci=ci, tau=tau, target=target, samples_per_draw=samples_per_draw, seed=seed)
    if effect not in EFFECTS:
        raise UserInputError(f"unknown effect {effect!r}; use one of {', '.join(EFFECTS)}")
    if shrink not in SHRINK:
        raise UserInputError(f"unknown shrinkage {shrink!r}; use one of {', '.join(SHRINK)}")
    if not (min_mean >= 0 and math.isfinite(min_mean)):
        raise UserInputError(f"--min-mean {min_mean} is negative; pass a mean count per cell >= 0 such as 0.1")
    G = comp.n_genes
    expr = mean_expression(comp)
    masked = expr < min_mean
    membership, set_names, notes = (None, [], []) if gene_sets is None else set_membership(gene_sets, comp.genes)
    cols: dict[str, np.ndarray] = {"mean_expr": expr, "masked": masked}
    if effect in ("clr-mu", "clr-draws"):  # only the CLR effects are measured against the centre
        notes += centre_notes(comp, tau)
    set_table = None
    for eff in EFFECTS:
        ev = {f: np.empty(G) for f in FIELDS[:7]}
        legacy_effect = np.empty(G)
        set_draws = None
        for gs, draws in effect_blocks(comp, eff, seed=seed, samples_per_draw=samples_per_draw):
            full = gene_evidence(draws, ci=ci, tau=tau)
            for f, val in _generic(full).items():
                ev[f][gs] = val
            legacy_effect[gs] = full["prob_effect"]
            if membership is not None and eff == effect:
                part = draws @ membership[gs]
                set_draws = part if set_draws is None else set_draws + part
        if shrink != "none":
            ev = ash.shrink(ev["mean"], ev["sd"], ci=ci, tau=tau, fit_mask=~masked, family=shrink)
            legacy_effect = 1.0 - ev["lfsr_tau"]
        ev["called"] = pefp_calls(np.where(masked, np.inf, ev["lfsr_tau"]), target,
                                  table_order(ev["lfsr_tau"], ev["mean"], masked))
        for f, val in ev.items():
            cols[column(eff, f)] = val
        if eff == "clr-draws":
            cols["prob_effect"] = legacy_effect
        if set_draws is not None:
            set_table = set_evidence(set_draws, set_names, membership, ci=ci, tau=tau, target=target)
    order = table_order(cols[column(effect, "lfsr_tau")], cols[column(effect, "mean")], masked)
    rank = np.empty(G, dtype=int)
    rank[order] = np.arange(1, G + 1)
    table = pd.DataFrame({"gene": comp.genes, **cols, "called": cols[column(effect, "called")], "rank": rank})
    table = table[COLUMNS].iloc[order].reset_index(drop=True)
    return DEResult(table, set_table, notes)


def de_table(comp: Comparison, *, ci: float = DEFAULT_CI, tau: float = DEFAULT_TAU, target: float = DEFAULT_TARGET,
             samples_per_draw: int = 1, seed: int = 0, effect: str = DEFAULT_EFFECT, **kwargs) -> pd.DataFrame:
    """The DE table of de.md (one row per gene, sorted, ranked, PEFP calls on ``effect``), every effect's columns."""
    return run_de(comp, effect=effect, ci=ci, tau=tau, target=target, samples_per_draw=samples_per_draw,
                  seed=seed, **kwargs).table


# --- gene sets -------------------------------------------------------------------------------------------------

def read_gmt(path) -> dict[str, list[str]]:
    """A GMT file: one set per line, ``name <TAB> description <TAB> gene <TAB> gene ...``."""
    sets: dict[str, list[str]] = {}
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read the gene sets {path}: {exc}; pass a GMT text file") from None
    for i, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\r\n").split("\t")
        if len(parts) < 3:
            raise UserInputError(f"{path} line {i} has {len(parts)} tab-separated field(s); a GMT line is "
                                 "name, description, then the genes, separated by tabs")
        if parts[0] in sets:
            raise UserInputError(f"{path} line {i} repeats the set name {parts[0]!r}; give each set a unique name")
        sets[parts[0]] = [g.strip() for g in parts[2:] if g.strip()]
    if not sets:
        raise UserInputError(f"{path} holds no gene sets; a GMT line is name, description, then the genes (tabs)")
    return sets


def set_membership(gene_sets: dict[str, list[str]], genes: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """(genes x sets) averaging weights 1 / size over the set's genes present in the fit, the kept set names, and
    notes on sets left out (no gene of the fit)."""
    index = {g: i for i, g in enumerate(genes)}
    cols, names, empty = [], [], []
    for name, members in gene_sets.items():
        idx = sorted({index[g] for g in members if g in index})
        if not idx:
            empty.append(name)
            continue
        col = np.zeros(len(genes))
        col[idx] = 1.0 / len(idx)
        cols.append(col)
        names.append(name)
    if not names:
        raise UserInputError("no gene set shares a gene with the fit; the GMT must use the fit's gene names "
                             f"(e.g. {genes[0]!r})")
    notes = [f"{len(empty)} gene set(s) share no gene with the fit and are left out (e.g. {empty[0]!r})"] if empty else []
    return np.column_stack(cols), names, notes


def set_evidence(draws: np.ndarray, names: list[str], membership: np.ndarray, *, ci: float, tau: float,
                 target: float) -> pd.DataFrame:
    """Per set: evidence of the set's mean effect (draws: N x sets) and PEFP calls across sets."""
    ev = _generic(gene_evidence(draws, ci=ci, tau=tau))
    order = table_order(ev["lfsr_tau"], ev["mean"])
    called = pefp_calls(ev["lfsr_tau"], target, order)
    table = pd.DataFrame({"set": names, "genes_in_fit": (membership > 0).sum(axis=0), **ev, "called": called})
    return table.iloc[order].reset_index(drop=True)


def check_settings(*, ci: float, tau: float, target: float, samples_per_draw: int, seed: int) -> None:
    if not 0 < ci < 1:
        raise UserInputError(f"--ci {ci} is outside (0, 1); pass a probability such as 0.9")
    if not (tau >= 0 and math.isfinite(tau)):
        raise UserInputError(f"--tau {tau} is negative; pass a log-scale threshold >= 0 such as 0.0953 (= log 1.1)")
    if not 0 <= target <= 1:
        raise UserInputError(f"--target {target} is outside [0, 1]; pass a false discovery proportion such as 0.05")
    if samples_per_draw < 1:
        raise UserInputError("--samples-per-draw must be at least 1")
    if seed < 0:
        raise UserInputError("--seed must be 0 or more")


def summary(table: pd.DataFrame, effect: str = DEFAULT_EFFECT, n_top: int = 10) -> dict:
    """Counts and the top genes of a DE table, for the CLI's JSON."""
    mean = column(effect, "mean")
    called = table[table["called"]]
    top = (called if len(called) else table).head(n_top)
    return {
        "genes": int(len(table)),
        "effect": effect,
        "called": int(len(called)),
        "called_up": int((called[mean] > 0).sum()),
        "called_down": int((called[mean] < 0).sum()),
        "masked": int(table["masked"].sum()),
        "called_by_effect": {e: int(table[column(e, "called")].sum()) for e in EFFECTS},
        "top": [{"gene": row["gene"], "effect": round(float(row[mean]), 4),
                 "lfsr_tau": round(float(row[column(effect, "lfsr_tau")]), 4),
                 "lfc_mean": round(float(row["lfc_mean"]), 4), "called": bool(row["called"])}
                for _, row in top.iterrows()],
    }


def safe_label(text: str) -> str:
    """A label usable in a file name."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "group"
