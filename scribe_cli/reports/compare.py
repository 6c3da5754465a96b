"""`scribe compare`: PSIS-LOO and WAIC of several fits of the same data (ArviZ), and per-gene elpd differences.

Fit level: each fit's per-cell log likelihood (the ``log_likelihood`` group of `scribe run --log-lik`, computed in
Stan; or the same quantity computed here in numpy from the draws and the data, scribe_cli.pointwise) goes to
``arviz.loo`` / ``arviz.waic`` / ``arviz.compare`` (stacking weights). A cell is the unit left out.

Gene level (two fits): each (cell, gene) count is a pointwise term (pointwise.gene_elpd_difference); a gene's
elpd is the sum over its cells, the difference a - b has a standard error over cells and a z-score.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from ..data import Counts, read_counts, select
from ..errors import UserInputError
from .summary import load_posterior, run_attrs

# What must agree between fits for their elpds to be comparable (the posterior attrs `scribe run` writes).
SAME_DATA_ATTRS = ("input_sha256", "input_layer", "selection", "n_cells", "n_genes", "dataset_key")

# Pareto k bands (Vehtari et al. 2024, "Pareto smoothed importance sampling"): above 0.7 the importance-sampling
# estimate of that cell's elpd is unreliable; above 1 its variance is infinite.
K_GOOD, K_BAD = 0.7, 1.0


@dataclass
class Fit:
    path: Path
    label: str
    idata: az.InferenceData
    attrs: dict
    notes: list[str] = field(default_factory=list)


def load_fits(paths: list[Path]) -> list[Fit]:
    """Read the posteriors; labels are the file names without .nc (the full paths when names repeat)."""
    stems = [Path(p).name.removesuffix(".nc") for p in paths]
    labels = stems if len(set(stems)) == len(stems) else [str(p) for p in paths]
    if len(set(labels)) != len(labels):
        raise UserInputError("the same posterior file is given twice; pass each fit once")
    fits = []
    for path, label in zip(paths, labels):
        idata = load_posterior(path)
        attrs = run_attrs(idata)
        n = idata.posterior.sizes.get("chain", 1) * idata.posterior.sizes.get("draw", 1)
        if attrs.get("method") == "optimize" or n < 2:
            raise UserInputError(f"{path} holds a single point (the posterior mode); LOO and WAIC need posterior draws: "
                                 "refit with --method nuts or pathfinder")
        fits.append(Fit(Path(path), label, idata, attrs))
    return fits


def check_same_data(fits: list[Fit]) -> None:
    """One-line error when two fits were not fitted to the same data (input file hash, layer, selection, size,
    dataset key): their elpds would not be comparable."""
    ref = fits[0]
    for other in fits[1:]:
        for key in SAME_DATA_ATTRS:
            a, b = ref.attrs.get(key), other.attrs.get(key)
            if key == "input_sha256" and (not a or not b):
                raise UserInputError(f"{ref.path if not a else other.path} has no input_sha256 attribute; compare "
                                     "posteriors written by `scribe run`")
            if a != b:
                what = {"input_sha256": "input files (SHA-256)", "input_layer": "layers", "selection": "cell/gene selections",
                        "n_cells": "numbers of cells", "n_genes": "numbers of genes", "dataset_key": "dataset keys"}[key]
                raise UserInputError(f"{ref.path} and {other.path} were fitted to different data ({what} differ: "
                                     f"{_short(a)} vs {_short(b)}); compare fits of the same data and selection")


def _short(v) -> str:
    text = json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v)
    return text[:12] if len(text) == 64 else text  # a SHA-256: its first characters say enough


def fit_counts(fit: Fit, data: Path | None) -> Counts:
    """The counts a fit used: ``data`` (or the input_file attribute) read with the fit's layer, dataset key and
    selection; refused when its SHA-256 differs from the fit's input_sha256."""
    attrs = fit.attrs
    path = Path(data) if data is not None else Path(str(attrs.get("input_file", "")))
    if not str(path) or not path.exists():
        raise UserInputError(f"the data of {fit.path} ({path}) are not found; pass them with --data PATH")
    layer = attrs.get("input_layer", "X")
    config = attrs.get("config") if isinstance(attrs.get("config"), dict) else {}
    counts = read_counts(path, layer=None if layer == "X" else layer,
                         dataset_key=attrs.get("dataset_key") or config.get("dataset_key"))
    if counts.sha256 != attrs.get("input_sha256"):
        raise UserInputError(f"{path} is not the file {fit.path} was fitted to (SHA-256 {counts.sha256[:12]} vs "
                             f"{str(attrs.get('input_sha256'))[:12]}); pass that file with --data")
    sel = attrs.get("selection") or {}
    counts = select(counts, genes_file=sel.get("genes_file"), min_cells=sel.get("min_cells", 0),
                    top_genes=sel.get("top_genes"), min_counts=sel.get("min_counts", 0))
    if "gene" in fit.idata.posterior.coords and [str(g) for g in fit.idata.posterior.coords["gene"].values] != counts.genes:
        raise UserInputError(f"the genes of {path} after the selection differ from {fit.path}'s; pass the data the fit used")
    return counts


def ensure_log_likelihood(fit: Fit, counts_of) -> str:
    """Give the fit a per-cell ``log_likelihood`` group: Stan's (--log-lik), else computed in numpy from the draws
    (pointwise.cell_loglik; ``counts_of()`` reads the data). Returns where it came from."""
    if "log_likelihood" in fit.idata.groups() and "log_lik" in fit.idata.log_likelihood:
        return "stan"
    from ..pointwise import cell_loglik

    post = fit.idata.posterior
    ll, _ = cell_loglik(post, counts_of())
    counts_cells = post.coords["cell"].values if "cell" in post.coords else np.arange(ll.shape[1])
    shape = (post.sizes["chain"], post.sizes["draw"], ll.shape[1])
    ds = xr.Dataset({"log_lik": (("chain", "draw", "cell"), ll.reshape(shape))},
                    coords={"chain": post.coords["chain"].values, "draw": post.coords["draw"].values,
                            "cell": counts_cells if len(counts_cells) == ll.shape[1] else np.arange(ll.shape[1])})
    fit.idata.add_groups(log_likelihood=ds)
    return "numpy"


def pareto_k_report(loo: az.ELPDData) -> dict:
    """How many cells fall in each Pareto k band, and what to do when some are bad."""
    k = np.asarray(loo.pareto_k).ravel()
    good = float(getattr(loo, "good_k", K_GOOD) or K_GOOD)
    n_bad = int(((k > good) & (k <= K_BAD)).sum())
    n_very_bad = int((k > K_BAD).sum())
    report = {"good_k": round(good, 3), "k_max": float(np.nanmax(k)), "n_ok": int((k <= good).sum()),
              "n_bad": n_bad, "n_very_bad": n_very_bad}
    if n_bad + n_very_bad:
        report["advice"] = (f"{n_bad + n_very_bad} of {k.size} cells have Pareto k > {good:.2f}: their PSIS-LOO terms are "
                            "unreliable (each cell carries many genes, so one cell can move the posterior). Check that "
                            "the elpd differences are large against their SE; otherwise run more draws, prefer a model "
                            "that fits those cells (see the WAIC column, and `scribe ppc`), or use K-fold cross-validation.")
    return report


def compare_fits(fits: list[Fit]) -> dict:
    """PSIS-LOO and WAIC per fit, and arviz.compare's table (elpd differences with SE, stacking weights)."""
    per_fit, loos = {}, {}
    for fit in fits:
        with warnings.catch_warnings():  # ArviZ warns about high k; the report below says it in full
            warnings.simplefilter("ignore")
            loo = az.loo(fit.idata, pointwise=True)
            waic = az.waic(fit.idata)
        loos[fit.label] = loo
        per_fit[fit.label] = {
            "path": str(fit.path), "method": fit.attrs.get("method"),
            "config": fit.attrs.get("config", {}).get("model") if isinstance(fit.attrs.get("config"), dict) else None,
            "elpd_loo": float(loo.elpd_loo), "se_loo": float(loo.se), "p_loo": float(loo.p_loo),
            "elpd_waic": float(waic.elpd_waic), "se_waic": float(waic.se), "p_waic": float(waic.p_waic),
            "pareto_k": pareto_k_report(loo),
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare(loos, ic="loo", method="stacking")
    table = table.rename(columns={"elpd_diff": "elpd_diff", "dse": "se_diff"})
    table.index.name = "fit"
    return {"fits": per_fit, "table": table}


def table_records(table: pd.DataFrame) -> list[dict]:
    cols = ["rank", "elpd_loo", "p_loo", "elpd_diff", "weight", "se", "se_diff", "warning"]
    out = []
    for label, row in table.iterrows():
        out.append({"fit": label, **{c: (row[c].item() if hasattr(row[c], "item") else row[c]) for c in cols if c in row}})
    return out


def gene_table(fit_a: Fit, fit_b: Fit, counts: Counts, n_draws: int | None) -> pd.DataFrame:
    """Per gene: elpd of each fit, the difference a - b with its SE over cells, the z-score, p_waic of each,
    the observed mean; sorted by z (genes preferring a first)."""
    from ..pointwise import gene_elpd_difference

    res = gene_elpd_difference(fit_a.idata.posterior, fit_b.idata.posterior, counts, n_draws=n_draws)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(res["se"] > 0, res["elpd_diff"] / res["se"], 0.0)
    table = pd.DataFrame({
        "elpd_a": res["elpd_a"], "elpd_b": res["elpd_b"], "elpd_diff": res["elpd_diff"], "se": res["se"], "z": z,
        "p_waic_a": res["p_waic_a"], "p_waic_b": res["p_waic_b"],
        "obs_mean": np.asarray(counts.X.mean(axis=0)).ravel(),
        "obs_zero_frac": 1.0 - np.diff(counts.X.tocsc().indptr) / counts.n_cells,
    }, index=pd.Index(counts.genes, name="gene"))
    return table.sort_values("z", ascending=False)


def top_genes(table: pd.DataFrame, n: int, z_min: float = 2.0) -> dict[str, list[dict]]:
    """The n genes with the largest |z| favouring each fit (only |z| > z_min)."""
    def rows(df):
        return [{"gene": g, "elpd_diff": round(float(r.elpd_diff), 4), "se": round(float(r.se), 4), "z": round(float(r.z), 3)}
                for g, r in df.head(n).iterrows()]

    return {"a": rows(table[table.z > z_min].sort_values("z", ascending=False)),
            "b": rows(table[table.z < -z_min].sort_values("z", ascending=True))}


def plot_genes(table: pd.DataFrame, path, label_a: str, label_b: str, n_label: int = 8) -> None:
    """Left: per-gene elpd difference against the observed mean (log x), +-2 SE bars; right: z-scores ranked.
    Genes beyond |z| = 2 are coloured by the fit they favour; the top ones are named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12.5, 4.6), constrained_layout=True)
    colour = np.where(table.z > 2, "tab:blue", np.where(table.z < -2, "tab:red", "0.6"))
    x = np.maximum(table.obs_mean.values, 1e-3)
    ax1.errorbar(x, table.elpd_diff.values, yerr=2 * table.se.values, fmt="none", ecolor="0.8", lw=0.6, zorder=1)
    ax1.scatter(x, table.elpd_diff.values, c=colour, s=8, zorder=2)
    ax1.axhline(0, color="0.3", lw=0.8, ls="--")
    ax1.set_xscale("log")
    ax1.set_yscale("symlog", linthresh=1.0)
    ax1.set_xlabel("observed mean count")
    ax1.set_ylabel(f"elpd difference ({label_a} - {label_b}), +-2 SE")
    ranked = table.sort_values("z", ascending=False)
    ax2.scatter(np.arange(len(ranked)), ranked.z.values, c=np.asarray(colour)[table.index.get_indexer(ranked.index)], s=8)
    for lim in (2, -2):
        ax2.axhline(lim, color="0.3", lw=0.8, ls="--")
    for i, (g, r) in enumerate(list(ranked.head(n_label).iterrows())):
        if r.z > 2:
            ax2.annotate(str(g), (i, r.z), fontsize=7, xytext=(4, 0), textcoords="offset points")
    tail = ranked.tail(n_label)
    for i, (g, r) in zip(range(len(ranked) - len(tail), len(ranked)), tail.iterrows()):
        if r.z < -2:
            ax2.annotate(str(g), (i, r.z), fontsize=7, xytext=(-4, 0), textcoords="offset points", ha="right")
    ax2.set_yscale("symlog", linthresh=2.0)
    ax2.set_xlabel("genes ranked by z")
    ax2.set_ylabel("z = elpd difference / SE")
    ax2.set_title(f"blue: favours {label_a} ({(table.z > 2).sum()}), red: favours {label_b} ({(table.z < -2).sum()})",
                  fontsize=9)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
