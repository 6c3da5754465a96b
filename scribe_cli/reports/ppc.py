"""`scribe ppc`: posterior predictive checks per gene (mean, variance, fraction of zeros).

For a subset of posterior draws we simulate a replicate count matrix of the observed size from the
model and compute each gene's statistics; a gene passes a check when its observed statistic lies inside
the central 90% interval of the replicated ones. Replicates are simulated gene block by gene block so
memory stays bounded whatever the data size.
"""

from __future__ import annotations

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


def _flat(post: xr.Dataset, name: str) -> np.ndarray | None:
    if name not in post:
        return None
    da = post[name].stack(sample=("chain", "draw")).transpose("sample", ...)
    return da.values


def _nb_sample(rng, mean, r):
    """NB(mean, size r) draws via the gamma-Poisson mixture (numpy has no mean/size parameterization)."""
    lam = rng.gamma(shape=r, scale=mean / r)
    return rng.poisson(lam)


def draw_parameters(post: xr.Dataset, counts: Counts) -> dict[str, np.ndarray]:
    """The parameters replication needs, flattened over (chain, draw) (chain-major): mu, r (S, G) or
    (S, G, K) for mixtures, and gate, capture (S, C), weights (S, K) when present."""
    params = {k: _flat(post, k) for k in ("mu", "r", "gate", "capture", "weights")}
    mu, r = params["mu"], params["r"]
    if mu is None or r is None:
        raise UserInputError("the posterior has no 'mu' and 'r' variables; ppc needs a posterior from `scribe run`")
    if mu.ndim == 3 and params["weights"] is None:
        raise UserInputError("the posterior has per-component 'mu' but no 'weights'; ppc needs a posterior from `scribe run`")
    if mu.ndim not in (2, 3) or r.shape != mu.shape:
        raise UserInputError("ppc of multi-dataset posteriors is not supported yet; run it on a single-dataset fit")
    if mu.shape[1] != counts.n_genes:
        raise UserInputError(f"the posterior has {mu.shape[1]} genes but the data {counts.n_genes}; pass the data (and selection) the fit used")
    return {k: v for k, v in params.items() if v is not None}


def simulate_stats(params: dict[str, np.ndarray], idx: np.ndarray, n_cells: int, rng: np.random.Generator,
                   block_cells_genes: int = 5_000_000) -> dict[str, np.ndarray]:
    """Replicated per-gene statistics at the draws ``idx`` of ``params`` (from draw_parameters): for each
    draw a replicate count matrix of n_cells cells (a mixture component drawn per cell from the weights,
    then NB with capture, then the zero-inflation gate), simulated gene block by gene block.
    Returns arrays (len(idx), G) for each of STATS."""
    mu, r = params["mu"], params["r"]
    gate, capture, weights = params.get("gate"), params.get("capture"), params.get("weights")
    C, G = n_cells, mu.shape[1]
    mixture = mu.ndim == 3
    out = {k: np.empty((len(idx), G)) for k in STATS}
    block = max(1, block_cells_genes // C)
    for i, s in enumerate(idx):
        nu = capture[s][:, None] if capture is not None else np.ones((C, 1))
        z = rng.choice(weights.shape[1], size=C, p=weights[s] / weights[s].sum()) if mixture else None
        for g0 in range(0, G, block):
            g1 = min(G, g0 + block)

            def per_cell(x):  # (C, g1 - g0): a gene-level parameter at each cell's component
                return x[s, g0:g1][:, z].T if mixture else np.broadcast_to(x[s, g0:g1][None, :], (C, g1 - g0))

            mean = nu * per_cell(mu)
            y = _nb_sample(rng, mean, per_cell(r))
            if gate is not None:
                y = np.where(rng.random(y.shape) < per_cell(gate), 0, y)
            out["mean"][i, g0:g1] = y.mean(axis=0)
            out["var"][i, g0:g1] = y.var(axis=0, ddof=1) if C > 1 else 0.0
            out["zero_frac"][i, g0:g1] = (y == 0).mean(axis=0)
    return out


def replicate_stats(post: xr.Dataset, counts: Counts, n_draws: int = 100, seed: int = 0,
                    block_cells_genes: int = 5_000_000) -> dict[str, np.ndarray]:
    """Replicated per-gene statistics at n_draws posterior draws picked at random: arrays (n_draws, G)."""
    params = draw_parameters(post, counts)
    S = params["mu"].shape[0]
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(S, size=min(n_draws, S), replace=False))
    return simulate_stats(params, idx, counts.n_cells, rng, block_cells_genes)


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
    rep = simulate_stats(params, idx, counts.n_cells, np.random.default_rng(seed), block_cells_genes)
    return {k: v.reshape(n_chain, draws.size, -1) for k, v in rep.items()}, draws


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
