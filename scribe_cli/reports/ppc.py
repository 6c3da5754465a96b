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


def replicate_stats(post: xr.Dataset, counts: Counts, n_draws: int = 100, seed: int = 0,
                    block_cells_genes: int = 5_000_000) -> dict[str, np.ndarray]:
    """Replicated per-gene statistics: arrays (n_draws, G) for each of STATS."""
    mu, r = _flat(post, "mu"), _flat(post, "r")
    if mu is None or r is None:
        raise UserInputError("the posterior has no 'mu' and 'r' variables; ppc needs a posterior from `scribe run`")
    if mu.ndim != 2:
        raise UserInputError("ppc of mixture or multi-dataset posteriors is not supported yet; run it on a single-component fit")
    gate = _flat(post, "gate")
    capture = _flat(post, "capture")
    S, G = mu.shape
    if G != counts.n_genes:
        raise UserInputError(f"the posterior has {G} genes but the data {counts.n_genes}; pass the data (and selection) the fit used")
    C = counts.n_cells
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(S, size=min(n_draws, S), replace=False))
    out = {k: np.empty((idx.size, G)) for k in STATS}
    block = max(1, block_cells_genes // C)
    for i, s in enumerate(idx):
        nu = capture[s][:, None] if capture is not None else 1.0
        for g0 in range(0, G, block):
            g1 = min(G, g0 + block)
            mean = nu * mu[s, g0:g1][None, :] * np.ones((C, 1))
            y = _nb_sample(rng, mean, np.broadcast_to(r[s, g0:g1], mean.shape))
            if gate is not None:
                y = np.where(rng.random(y.shape) < gate[s, g0:g1], 0, y)
            out["mean"][i, g0:g1] = y.mean(axis=0)
            out["var"][i, g0:g1] = y.var(axis=0, ddof=1) if C > 1 else 0.0
            out["zero_frac"][i, g0:g1] = (y == 0).mean(axis=0)
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
