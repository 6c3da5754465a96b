"""`scribe ppc`: posterior predictive checks per gene (mean, variance, fraction of zeros).

For a subset of posterior draws we simulate a replicate count matrix of the observed size from the
model and compute each gene's statistics; a gene passes a check when its observed statistic lies inside
the central 90% interval of the replicated ones. Replicates are simulated gene block by gene block so
memory stays bounded whatever the data size.

Joint multi-dataset posteriors (--dataset-key): a gene-level parameter with a ``dataset`` dim is used at
each cell's dataset, one without it is shared; mixtures draw each cell's component from its dataset's
weights (``dataset_weights``). Coverage is also reported over each dataset's cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import xarray as xr

from ..data import Counts
from ..errors import UserInputError

STATS = ("mean", "var", "zero_frac")


def observed_stats(counts: Counts) -> pd.DataFrame:
    X = counts.X
    n = X.shape[0]
    mean = np.asarray(X.mean(axis=0)).ravel()
    sq = np.asarray(X.multiply(X).mean(axis=0)).ravel()
    var = (sq - mean**2) * n / max(n - 1, 1)
    zero = 1.0 - np.diff(X.tocsc().indptr) / n
    return pd.DataFrame({"mean": mean, "var": var, "zero_frac": zero}, index=pd.Index(counts.genes, name="gene"))


# Gene-level parameters replication uses, and the named axes they may carry (docs/models.md, datasets.md).
GENE_PARAMS = ("mu", "r", "gate", "kappa")
GENE_AXES = ("gene", "component", "dataset")


@dataclass
class Draws:
    """Posterior draws flattened over (chain, draw) (chain-major) with their named axes.

    ``values[name]``: gene-level parameters (GENE_PARAMS) as (S, G or 1, K or 1, D or 1) arrays, a size-1
    axis meaning "shared" (absent from the variable's dims); ``capture`` (S, C); ``weights`` (S, K);
    ``dataset_weights`` (S, D, K). ``dims[name]``: the variable's own dims in the posterior.
    """

    values: dict[str, np.ndarray]
    dims: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __getitem__(self, name):
        return self.values[name]

    def __contains__(self, name):
        return name in self.values

    def get(self, name, default=None):
        return self.values.get(name, default)

    @property
    def n_samples(self) -> int:
        return self.values["mu"].shape[0]

    def has(self, dim: str) -> bool:
        return any(dim in d for d in self.dims.values())


def _flat(post: xr.Dataset, name: str, order: tuple[str, ...]) -> np.ndarray:
    """post[name] as (sample, *order), with the axes of ``order`` the variable lacks inserted with size 1;
    any other dim is an error (ppc would not know what it indexes)."""
    da = post[name]
    own = [d for d in da.dims if d not in ("chain", "draw")]
    unknown = [d for d in own if d not in order]
    if unknown:
        raise UserInputError(f"the posterior's '{name}' has dims {tuple(own)}; ppc knows {', '.join(order)} only: "
                             "pass a posterior from `scribe run`")
    da = da.stack(sample=("chain", "draw")).transpose("sample", *[d for d in order if d in own])
    values = da.values
    for i, d in enumerate(order):
        if d not in own:
            values = np.expand_dims(values, axis=i + 1)
    return values


def _legacy_draws(params: dict) -> Draws:
    """A hand-built dict of flat arrays (tests): gene-level (S, G) or (S, G, K), capture (S, C), weights (S, K)."""
    values, dims = {}, {}
    for name, x in params.items():
        x = np.asarray(x)
        if name in GENE_PARAMS:
            gene_dims = ("gene", "component")[: x.ndim - 1]
            dims[name] = gene_dims
            values[name] = x.reshape(x.shape[0], x.shape[1], x.shape[2] if x.ndim == 3 else 1, 1)
        else:
            values[name] = x
            dims[name] = {"capture": ("cell",), "weights": ("component",),
                          "dataset_weights": ("dataset", "component")}.get(name, ())
    return Draws(values, dims)


def _nb_sample(rng, mean, r):
    """NB(mean, size r) draws via the gamma-Poisson mixture (numpy has no mean/size parameterization)."""
    lam = rng.gamma(shape=r, scale=mean / r)
    return rng.poisson(lam)


# numpy's Poisson refuses rates above ~1e19; a BNB odds draw in the far tail can exceed that.
_MAX_RATE = 1e15


def _bnb_sample(rng, mean, r, kappa):
    """BNB draws with the mean-preserving alpha = (kappa - 1) mean / r (docs/models.md; Stan's
    beta_neg_binomial(u | r, kappa, alpha)): the NB success probability q ~ Beta(kappa, alpha), then
    u ~ NB(r, q) counting failures, i.e. Poisson(Gamma(r, scale = (1 - q) / q)). The odds (1 - q) / q =
    Gamma(alpha) / Gamma(kappa) in distribution, which is how it is drawn (no underflow of q near 0 or 1).
    E[u] = r alpha / (kappa - 1) = mean."""
    alpha = (kappa - 1.0) * mean / r
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = rng.gamma(shape=np.maximum(alpha, 1e-300)) / rng.gamma(shape=kappa)
    odds = np.where(alpha > 0, odds, 0.0)
    lam = np.minimum(rng.gamma(shape=r) * odds, _MAX_RATE)
    return rng.poisson(lam)


def draw_parameters(post: xr.Dataset, counts: Counts) -> Draws:
    """The parameters replication needs (see Draws). Which axis is which comes from the posterior's dims:
    a gene-level parameter with a ``dataset`` dim is per dataset (each cell uses its dataset's column), one
    without it is shared by the datasets; the same for ``component``."""
    if "mu" not in post or "r" not in post:
        raise UserInputError("the posterior has no 'mu' and 'r' variables; ppc needs a posterior from `scribe run`")
    values, dims = {}, {}
    for name in GENE_PARAMS:
        if name in post:
            values[name] = _flat(post, name, GENE_AXES)
            dims[name] = tuple(d for d in post[name].dims if d not in ("chain", "draw"))
    if "capture" in post:
        values["capture"] = _flat(post, "capture", ("cell",))
        dims["capture"] = ("cell",)
    for name, order in (("weights", ("component",)), ("dataset_weights", ("dataset", "component"))):
        if name in post:
            values[name] = _flat(post, name, order)
            dims[name] = tuple(d for d in post[name].dims if d not in ("chain", "draw"))
    draws = Draws(values, dims)
    _check_draws(draws, post, counts)
    return draws


def _check_draws(draws: Draws, post: xr.Dataset, counts: Counts) -> None:
    for name in GENE_PARAMS:
        if name in draws and "gene" in draws.dims[name] and draws[name].shape[1] != counts.n_genes:
            raise UserInputError(f"the posterior has {draws[name].shape[1]} genes but the data {counts.n_genes}; "
                                 "pass the data (and selection) the fit used")
    if "capture" in draws and draws["capture"].shape[1] != counts.n_cells:
        raise UserInputError(f"the posterior has {draws['capture'].shape[1]} cells but the data {counts.n_cells}; "
                             "pass the data (and selection) the fit used")
    if draws.has("component") and "weights" not in draws and "dataset_weights" not in draws:
        raise UserInputError("the posterior has per-component parameters but no 'weights'; ppc needs a posterior from `scribe run`")
    if draws.has("dataset"):
        if counts.cell_dataset is None:
            raise UserInputError("the posterior has per-dataset parameters but the data were read without their "
                                 "dataset column; read them with the fit's --dataset-key")
        n = post.sizes["dataset"]
        if n != len(counts.datasets):
            raise UserInputError(f"the posterior has {n} datasets but obs['{counts.dataset_key}'] {len(counts.datasets)}; "
                                 "pass the data the fit used")
        if "dataset" in post.coords and [str(v) for v in post.coords["dataset"].values] != list(counts.datasets):
            raise UserInputError(f"the posterior's datasets {[str(v) for v in post.coords['dataset'].values]} differ "
                                 f"from obs['{counts.dataset_key}'] {list(counts.datasets)}; pass the data the fit used")


def _components(draws: Draws, s: int, C: int, cell_dataset: np.ndarray | None, rng) -> np.ndarray | None:
    """Each cell's mixture component at draw s: from its dataset's weights (dataset_weights, D x K) when the
    posterior has them and the cells' datasets are known, else from the population weights."""
    if not draws.has("component"):
        return None
    dw = draws.get("dataset_weights")
    if dw is not None and cell_dataset is not None:
        z = np.empty(C, dtype=np.int64)
        for d in range(dw.shape[1]):
            cells = np.flatnonzero(cell_dataset == d)
            w = dw[s, d]
            z[cells] = rng.choice(w.size, size=cells.size, p=w / w.sum())
        return z
    w = draws.get("weights")
    if w is None:
        raise UserInputError("the posterior has per-component parameters but no population 'weights' and the "
                             "cells' datasets are unknown; read the data with the fit's --dataset-key")
    return rng.choice(w.shape[1], size=C, p=w[s] / w[s].sum())


def simulate_stats(params, idx: np.ndarray, n_cells: int, rng: np.random.Generator,
                   block_cells_genes: int = 5_000_000, cell_dataset: np.ndarray | None = None,
                   n_datasets: int | None = None, by_dataset: bool = False) -> dict[str, np.ndarray]:
    """Replicated per-gene statistics at the draws ``idx`` of ``params`` (a Draws from draw_parameters, or a
    dict of flat arrays): for each draw a replicate count matrix of n_cells cells (a mixture component drawn
    per cell from the weights, its dataset's when per dataset; then NB or BNB with capture, each cell using
    its dataset's column of per-dataset parameters; then the zero-inflation gate), simulated gene block by
    gene block. Returns arrays (len(idx), G) for each of STATS, over all cells; with ``by_dataset`` (needs
    ``cell_dataset``) also ``<stat>_by_dataset`` arrays (len(idx), D, G) over each dataset's cells."""
    draws = params if isinstance(params, Draws) else _legacy_draws(params)
    capture = draws.get("capture")
    C = n_cells
    G = max(draws[n].shape[1] for n in GENE_PARAMS if n in draws)
    if cell_dataset is not None:
        cell_dataset = np.asarray(cell_dataset, dtype=np.int64)
        if cell_dataset.shape != (C,):
            raise ValueError(f"cell_dataset has shape {cell_dataset.shape}, expected ({C},)")
    if draws.has("dataset") and cell_dataset is None:
        raise ValueError("per-dataset parameters need each cell's dataset (cell_dataset)")
    D = 0
    if by_dataset:
        if cell_dataset is None:
            raise ValueError("by_dataset needs cell_dataset")
        D = n_datasets if n_datasets is not None else int(cell_dataset.max()) + 1
        members = [np.flatnonzero(cell_dataset == d) for d in range(D)]
    ds_index = cell_dataset if cell_dataset is not None else np.zeros(C, dtype=np.int64)
    out = {k: np.empty((len(idx), G)) for k in STATS}
    out.update({f"{k}_by_dataset": np.full((len(idx), D, G), np.nan) for k in STATS} if by_dataset else {})
    block = max(1, block_cells_genes // C)
    for i, s in enumerate(idx):
        nu = capture[s][:, None] if capture is not None else 1.0
        z = _components(draws, s, C, cell_dataset, rng)
        for g0 in range(0, G, block):
            g1 = min(G, g0 + block)
            y = _simulate_block(draws, s, nu, z, ds_index, g0, g1, rng)
            _stats_into(out, "", i, slice(g0, g1), y)
            for d in range(D):
                if members[d].size:
                    _stats_into(out, "_by_dataset", (i, d), slice(g0, g1), y[members[d]])
    return out


def _simulate_block(draws: Draws, s: int, nu, z: np.ndarray | None, ds_index: np.ndarray, g0: int, g1: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Counts (C, g1 - g0) of genes g0..g1-1 at draw s: NB or BNB with mean nu_c mu_g, each cell using its
    component ``z`` and dataset ``ds_index`` column, then the zero-inflation gate. The one simulator of the
    models (ppc and bench/sbc.py use it; tests/test_sbc.py checks it against the likelihood)."""
    C = ds_index.size
    zeros = np.zeros(C, dtype=np.int64)

    def per_cell(name):  # (C, g1 - g0) or (C, 1): a gene-level parameter at each cell's component and dataset
        x = draws[name][s]  # (G or 1, K or 1, D or 1)
        x = x[g0:g1] if x.shape[0] > 1 else x
        k = z if x.shape[1] > 1 else zeros
        d = ds_index if x.shape[2] > 1 else zeros
        return x[:, k, d].T

    shape = (C, g1 - g0)
    mean = np.broadcast_to(nu * per_cell("mu"), shape)
    r = np.broadcast_to(per_cell("r"), shape)
    if "kappa" in draws:
        y = _bnb_sample(rng, mean, r, np.broadcast_to(per_cell("kappa"), shape))
    else:
        y = _nb_sample(rng, mean, r)
    if "gate" in draws:
        y = np.where(rng.random(y.shape) < per_cell("gate"), 0, y)
    return y


def simulate_counts(draws: Draws, s: int, n_cells: int, rng: np.random.Generator,
                    cell_dataset: np.ndarray | None = None) -> np.ndarray:
    """One replicate count matrix (n_cells x G, int64) from draw s of ``draws`` (draw_parameters): the same
    generative steps as simulate_stats, whole matrix at once (for small simulations: SBC, coverage)."""
    G = max(draws[n].shape[1] for n in GENE_PARAMS if n in draws)
    if draws.has("dataset") and cell_dataset is None:
        raise ValueError("per-dataset parameters need each cell's dataset (cell_dataset)")
    ds_index = np.zeros(n_cells, dtype=np.int64) if cell_dataset is None else np.asarray(cell_dataset, dtype=np.int64)
    capture = draws.get("capture")
    nu = capture[s][:, None] if capture is not None else 1.0
    z = _components(draws, s, n_cells, cell_dataset, rng)
    return np.asarray(_simulate_block(draws, s, nu, z, ds_index, 0, G, rng), dtype=np.int64)


def _stats_into(out: dict, suffix: str, at, genes: slice, y: np.ndarray) -> None:
    at = at if isinstance(at, tuple) else (at,)
    n = y.shape[0]
    out[f"mean{suffix}"][(*at, genes)] = y.mean(axis=0)
    out[f"var{suffix}"][(*at, genes)] = y.var(axis=0, ddof=1) if n > 1 else 0.0
    out[f"zero_frac{suffix}"][(*at, genes)] = (y == 0).mean(axis=0)


def biological(draws: Draws) -> Draws:
    """The draws without the technical parameters: capture (so nu = 1) and the zero-inflation gate. What is left
    replicates the true (pre-capture, pre-dropout) counts of docs/denoise.md: NB, or BNB where the model has
    BNB tails (its prior of the true counts at capture 1), per mixture component and dataset."""
    drop = ("capture", "gate")
    return Draws({k: v for k, v in draws.values.items() if k not in drop},
                 {k: v for k, v in draws.dims.items() if k not in drop})


def replicate_stats(post: xr.Dataset, counts: Counts, n_draws: int = 100, seed: int = 0,
                    block_cells_genes: int = 5_000_000, by_dataset: bool | None = None,
                    biological_only: bool = False) -> dict[str, np.ndarray]:
    """Replicated per-gene statistics at n_draws posterior draws picked at random: arrays (n_draws, G); with a
    dataset key on ``counts`` (``by_dataset`` default) also per dataset, (n_draws, D, G) (simulate_stats).
    ``biological_only``: replicate the biological distribution alone (see biological)."""
    params = draw_parameters(post, counts)
    if biological_only:
        params = biological(params)
    S = params.n_samples
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(S, size=min(n_draws, S), replace=False))
    if by_dataset is None:
        by_dataset = counts.cell_dataset is not None
    return simulate_stats(params, idx, counts.n_cells, rng, block_cells_genes, cell_dataset=counts.cell_dataset,
                          n_datasets=len(counts.datasets) or None, by_dataset=by_dataset)


def thinned_draws(n_draw: int, n: int) -> np.ndarray:
    """n draw indices evenly spread over 0..n_draw-1 (all of them when n >= n_draw)."""
    if n >= n_draw:
        return np.arange(n_draw)
    return np.unique(np.round(np.linspace(0, n_draw - 1, n)).astype(int))


def replicate_by_chain(post: xr.Dataset, counts: Counts, n_per_chain: int, seed: int = 0,
                       block_cells_genes: int = 5_000_000) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Replicated per-gene statistics at n_per_chain draws evenly thinned within each chain.

    Returns (arrays (chain, n, G) for each of STATS, the posterior draw indices used), so that the result
    keeps the posterior's (chain, draw) layout (the posterior_predictive group of `scribe run --ppc-draws`).
    """
    params = draw_parameters(post, counts)
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    draws = thinned_draws(n_draw, n_per_chain)
    idx = (np.arange(n_chain)[:, None] * n_draw + draws[None, :]).ravel()  # _flat stacks chain-major
    rep = simulate_stats(params, idx, counts.n_cells, np.random.default_rng(seed), block_cells_genes,
                         cell_dataset=counts.cell_dataset)
    return {k: rep[k].reshape(n_chain, draws.size, -1) for k in STATS}, draws


def observed_stats_by_dataset(counts: Counts) -> dict[str, pd.DataFrame]:
    """observed_stats over each dataset's cells: dataset label -> table (needs a dataset key)."""
    out = {}
    for d, label in enumerate(counts.datasets):
        rows = np.flatnonzero(counts.cell_dataset == d)
        out[label] = observed_stats(replace(counts, X=counts.X[rows], cells=[counts.cells[i] for i in rows]))
    return out


def coverage_by_dataset(counts: Counts, rep: dict[str, np.ndarray], level: float = 0.9) -> dict[str, dict[str, float]]:
    """Per dataset, the fraction of genes whose observed statistic over the dataset's cells lies inside the
    central ``level`` interval of the replicated ones (rep from replicate_stats with by_dataset)."""
    out = {}
    for d, (label, obs) in enumerate(observed_stats_by_dataset(counts).items()):
        rep_d = {k: rep[f"{k}_by_dataset"][:, d, :] for k in STATS}
        out[label] = coverage(ppc_table(obs, rep_d, level))
    return out


def ppc_table(obs: pd.DataFrame, rep: dict[str, np.ndarray], level: float = 0.9) -> pd.DataFrame:
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    table = pd.DataFrame(index=obs.index)
    for k in STATS:
        lo, med, hi = np.quantile(rep[k], [lo_q, 0.5, hi_q], axis=0)
        table[f"obs_{k}"] = obs[k].values
        table[f"rep_{k}_median"] = med
        table[f"rep_{k}_lo"] = lo
        table[f"rep_{k}_hi"] = hi
        table[f"{k}_ok"] = (obs[k].values >= lo) & (obs[k].values <= hi)
    return table


def coverage(table: pd.DataFrame) -> dict[str, float]:
    return {k: float(table[f"{k}_ok"].mean()) for k in STATS}


def plot(table: pd.DataFrame, path, title: str = "") -> None:
    """Three panels (mean, variance, zero fraction): observed against replicated, one point per gene."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"mean": "mean count", "var": "variance of count", "zero_frac": "fraction of zeros"}
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.6), constrained_layout=True)
    for ax, k in zip(axes, STATS):
        obs = table[f"obs_{k}"].values
        med = table[f"rep_{k}_median"].values
        err = np.vstack([med - table[f"rep_{k}_lo"].values, table[f"rep_{k}_hi"].values - med])
        ok = table[f"{k}_ok"].values
        ax.errorbar(obs[ok], med[ok], yerr=err[:, ok], fmt="o", ms=2.5, lw=0.6, alpha=0.6, color="tab:blue",
                    label=f"inside 90% interval ({ok.mean():.0%})")
        ax.errorbar(obs[~ok], med[~ok], yerr=err[:, ~ok], fmt="o", ms=3, lw=0.6, alpha=0.8, color="tab:red",
                    label="outside")
        lims = [max(min(obs.min(), med.min()), 1e-4) if k != "zero_frac" else 0, max(obs.max(), med.max()) * 1.05]
        ax.plot(lims, lims, color="0.3", lw=0.8, ls="--")
        if k != "zero_frac":
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(f"observed {labels[k]}")
        ax.set_ylabel(f"replicated {labels[k]} (median, 90% interval)")
        ax.set_title(labels[k])
        ax.legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110, format="png")  # the path may be a temporary name without .png
    plt.close(fig)
