"""`scribe export`: posterior summaries into AnnData's var, obs and uns (names: docs/denoise.md).

var: per gene, for each gene-level parameter (GENE_PARAMS) the posterior mean, sd and the equal-tailed
interval, one column set per component and per dataset where the parameter has those dims. obs: per cell the
capture (VCP models) and, for mixtures, the component probabilities (posterior mean) and the most probable
component. uns['scribe']: the run's configuration and provenance, every parameter without a gene or cell dim
(scalar p, weights, the hierarchical priors' global scales...) summarised the same way, and the shrinkage
report of `scribe summary`.

The summaries are xarray reductions over (chain, draw): nothing here is hand-written statistics.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import xarray as xr

PREFIX = "scribe_"
# Gene-level parameters exported to var (docs/models.md), when present with a gene dim.
GENE_PARAMS = ("mu", "r", "p", "gate", "omega", "kappa", "mu_pop", "r_pop", "omega_pop")
STATS = ("mean", "sd", "lo", "hi")
# Sampler coordinates, not parameters: left out of uns (their transforms are there).
_INTERNAL_SUFFIXES = ("_raw", "_u", "_z")


def summarize(da: xr.DataArray, width: float) -> dict[str, xr.DataArray]:
    """Posterior mean, sd and the equal-tailed ``width`` interval over (chain, draw)."""
    q = da.quantile([(1 - width) / 2, (1 + width) / 2], dim=("chain", "draw"))
    return {"mean": da.mean(("chain", "draw")), "sd": da.std(("chain", "draw"), ddof=1),
            "lo": q.isel(quantile=0, drop=True), "hi": q.isel(quantile=1, drop=True)}


def _label(dim: str, value) -> str:
    return f"c{value}" if dim == "component" else str(value)


def _columns(name: str, stats: dict[str, xr.DataArray], along: str) -> dict[str, np.ndarray]:
    """One column per statistic and per combination of the dims other than ``along``:
    scribe_<name>[_c<component>][_<dataset label>]_<stat>."""
    out = {}
    for stat in STATS:
        da = stats[stat]
        extra = [d for d in da.dims if d != along]
        for key in itertools.product(*(range(da.sizes[d]) for d in extra)):
            sel = dict(zip(extra, key))
            labels = [da.coords[d].values[i] if d in da.coords else i for d, i in sel.items()]
            suffix = "".join(f"_{_label(d, v)}" for d, v in zip(extra, labels))
            out[f"{PREFIX}{name}{suffix}_{stat}"] = np.asarray(da.isel(sel).values, dtype=np.float64)
    return out


def var_table(post: xr.Dataset, width: float) -> pd.DataFrame:
    genes = [str(g) for g in post.coords["gene"].values]
    cols = {}
    for name in GENE_PARAMS:
        if name in post and "gene" in post[name].dims:
            cols.update(_columns(name, summarize(post[name], width), "gene"))
    return pd.DataFrame(cols, index=pd.Index(genes))


def obs_table(post: xr.Dataset, width: float, cells: list[str], component_prob: np.ndarray | None) -> pd.DataFrame:
    cols = {}
    if "capture" in post and "cell" in post["capture"].dims:
        cols.update(_columns("capture", summarize(post["capture"].astype(np.float64), width), "cell"))
    if component_prob is not None:
        for k in range(component_prob.shape[1]):
            cols[f"{PREFIX}component_prob_{k}"] = component_prob[:, k]
        cols[f"{PREFIX}component"] = pd.Categorical(np.argmax(component_prob, axis=1),
                                                    categories=range(component_prob.shape[1]))
    return pd.DataFrame(cols, index=pd.Index(cells))


def global_parameters(post: xr.Dataset, width: float) -> dict:
    """Every parameter without a gene or cell dim: {name: {mean, sd, lo, hi (scalars or arrays), dims}}."""
    out = {}
    for name, da in post.data_vars.items():
        own = [d for d in da.dims if d not in ("chain", "draw")]
        if "gene" in own or "cell" in own or name.endswith(_INTERNAL_SUFFIXES):
            continue
        stats = summarize(da, width)
        entry = {k: (float(v) if v.ndim == 0 else np.asarray(v.values)) for k, v in stats.items()}
        if own:
            entry["dims"] = list(own)
            for d in own:
                if d in da.coords:
                    entry[f"{d}_labels"] = [str(v) for v in da.coords[d].values]
        out[str(name)] = entry
    return out


def column_docs(width: float) -> dict[str, str]:
    lo, hi = (1 - width) / 2, (1 + width) / 2
    return {
        "mean": "posterior mean over all draws",
        "sd": "posterior standard deviation",
        "lo": f"{lo:.3g} quantile (lower end of the central {width:.0%} interval)",
        "hi": f"{hi:.3g} quantile (upper end of the central {width:.0%} interval)",
        "var": f"{PREFIX}<parameter>[_c<component>][_<dataset>]_<mean|sd|lo|hi>",
        "obs": f"{PREFIX}capture_<stat>; {PREFIX}component_prob_<k> (posterior mean of P(cell in component k)), "
               f"{PREFIX}component (the most probable component)",
    }
