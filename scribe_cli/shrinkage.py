"""Shrinkage diagnostics of hierarchical priors (spec: priors.md, "report after every fit"; datasets.md).

For each hierarchical target found in a posterior, the posterior mean and 90% interval of its global
scale, and a one-line reading. Variable names follow docs/models.md: a target T has `T_sigma` (Gaussian),
`T_tau` and `T_lambda_tilde` (horseshoe) or `T_psi` (NEG). Targets: the gene-level priors {prob,
expression, gate, overdispersion} and the dataset-level ones {expression_dataset, prob_dataset,
gate_dataset, overdispersion_dataset} (--dataset-key). Variables are looked up by their full name
(`prob_sigma`, `prob_dataset_sigma`), never by prefix, so `prob` cannot pick up `prob_dataset`'s variables.

Under --prob-dataset-mode two_level `prob_dataset_sigma` has a `dataset` dim (one scale per dataset, whatever
the family: the local scales multiply it): it is reported per dataset (`per_dataset`, with readings about
that dataset's genes), and the headline is `prob_dataset_loc_scale`, the spread of the datasets' centres
(do the datasets differ technically?).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

TARGETS = ("prob", "expression", "gate", "overdispersion")
DATASET_TARGETS = ("expression_dataset", "prob_dataset", "gate_dataset", "overdispersion_dataset")

# What a small or a large global scale means, per target (priors.md table; datasets.md for the dataset level).
READINGS = {
    "prob": ("one shared p suffices", "p differs between genes"),
    "expression": ("components share expression", "marker genes differ between components"),
    "gate": ("no gene needs zero inflation", "some genes have structural zeros"),
    "overdispersion": ("NB tails suffice", "some genes need heavy tails"),
    "expression_dataset": ("identical biology across datasets", "real expression differences between datasets"),
    "prob_dataset": ("same technical characteristics across datasets", "different kit or sequencing profiles"),
    "gate_dataset": ("no gene needs zero inflation in any dataset", "gene-specific zero inflation differs between datasets"),
    "overdispersion_dataset": ("the same tails in every dataset", "gene-specific heavy tails differ between datasets"),
}
# One scale per dataset (two_level mode): the spread of the parameter over genes within that dataset.
PER_DATASET_READINGS = {
    "prob_dataset": ("genes share one p in this dataset", "p differs between genes in this dataset"),
}

# Scales live on the link scale (logit or log). An upper 90% bound below 0.1 means element values
# within ~±0.2 of the centre (a 20% change in odds or expression): "near zero". A lower bound above 0.3
# rules that out: "large". In between, the data do not decide.
NEAR_ZERO = 0.1
LARGE = 0.3


def _interval(x: np.ndarray) -> dict:
    lo, hi = np.quantile(x, [0.05, 0.95])
    return {"mean": float(np.mean(x)), "q05": float(lo), "q95": float(hi)}


def _reading(readings: tuple[str, str], stats: dict) -> str:
    small, large = readings
    if stats["q95"] < NEAR_ZERO:
        return f"scale near zero: {small}"
    if stats["q05"] > LARGE:
        return f"scale large: {large}"
    return f"scale undecided (90% interval {stats['q05']:.3g} to {stats['q95']:.3g}): between '{small}' and '{large}'"


def _dataset_labels(da: xr.DataArray) -> list[str]:
    if "dataset" in da.coords:
        return [str(v) for v in da.coords["dataset"].values]
    return [str(i) for i in range(da.sizes["dataset"])]


def _per_draw(da: xr.DataArray) -> np.ndarray:
    return da.stack(sample=("chain", "draw")).transpose("sample", ...).values


def _fraction_escaping(scale: xr.DataArray, lam: xr.DataArray) -> float:
    """Horseshoe shrinkage factor per element, 1 / (1 + scale^2 lambda_tilde^2) (1: fully shrunk to the centre,
    0: free), averaged over draws; the fraction of elements below 1/2. xarray broadcasts by dim name, so a
    per-dataset scale meets its own dataset's local scales."""
    kappa = (1.0 / (1.0 + scale**2 * lam**2)).mean(("chain", "draw"))
    return float(np.mean(np.asarray(kappa.values).ravel() < 0.5))


def _with_escaping(entry: dict, readings: tuple[str, str]) -> dict:
    entry["reading"] = _reading(readings, entry)
    if "fraction_escaping" in entry:
        entry["reading"] += f"; {entry['fraction_escaping']:.1%} of elements escape shrinkage"
    return entry


def _two_level(post: xr.Dataset, t: str, family: str) -> dict:
    """--prob-dataset-mode two_level: each dataset has its own scale T_sigma[d] (with the family's local scales
    lambda_tilde or psi per element) and its own centre, spread by T_loc_scale around the population centre.
    Headline: the spread of the datasets' centres (do the datasets differ?); per dataset: that dataset's scale
    (do its genes differ?)."""
    sigma, psi, lam, loc_scale = (f"{t}_{v}" for v in ("sigma", "psi", "lambda_tilde", "loc_scale"))
    if loc_scale in post:
        entry = {"family": family, "scale": loc_scale, **_interval(_per_draw(post[loc_scale]))}
    else:
        x = _per_draw(post[sigma])
        entry = {"family": family, "scale": f"max over datasets of {sigma}", **_interval(x.reshape(x.shape[0], -1).max(axis=1))}
    _with_escaping(entry, READINGS[t])
    per, label = {}, sigma
    for i, name in enumerate(_dataset_labels(post[sigma])):
        s_d = post[sigma].isel(dataset=i)
        item: dict = {}
        if family == "neg" and psi in post:
            psi_d = post[psi].isel(dataset=i) if "dataset" in post[psi].dims else post[psi]
            x = _per_draw(psi_d)
            scale = _per_draw(s_d) * np.sqrt(x.reshape(x.shape[0], -1).mean(axis=1))
            label = f"{sigma} * sqrt(mean({psi}))"
        else:
            scale = _per_draw(s_d)
        item.update(_interval(scale))
        if family == "horseshoe" and lam in post:
            lam_d = post[lam].isel(dataset=i) if "dataset" in post[lam].dims else post[lam]
            item["fraction_escaping"] = _fraction_escaping(s_d, lam_d)
        per[name] = _with_escaping(item, PER_DATASET_READINGS.get(t, READINGS[t]))
    entry["per_dataset"], entry["per_dataset_scale"] = per, label
    return entry


def _target(post: xr.Dataset, t: str) -> dict | None:
    sigma, tau, psi, lam = f"{t}_sigma", f"{t}_tau", f"{t}_psi", f"{t}_lambda_tilde"
    if tau in post or lam in post:
        family = "horseshoe"
    elif psi in post:
        family = "neg"
    elif sigma in post:
        family = "gaussian"
    else:
        return None
    if sigma in post and "dataset" in post[sigma].dims:
        return _two_level(post, t, family)
    if family == "horseshoe" and tau in post:
        x = _per_draw(post[tau])
        entry = {"family": family, "scale": tau, **_interval(x.reshape(x.shape[0], -1).max(axis=1))}
        if lam in post:
            entry["fraction_escaping"] = _fraction_escaping(post[tau], post[lam])
    elif family == "neg":
        x = _per_draw(post[psi])
        x = x.reshape(x.shape[0], -1)
        entry = {"family": family, "scale": f"sqrt(mean({psi}))", **_interval(np.sqrt(x.mean(axis=1))),
                 "median_psi": float(np.median(x))}
    elif sigma in post:
        x = _per_draw(post[sigma])
        entry = {"family": "gaussian", "scale": sigma, **_interval(x.reshape(x.shape[0], -1).max(axis=1))}
    else:
        return None
    return _with_escaping(entry, READINGS[t])


def shrinkage(post: xr.Dataset) -> dict:
    """Diagnostics for every hierarchical target present in ``post`` (empty when there is none)."""
    out = {}
    for t in TARGETS + DATASET_TARGETS:
        entry = _target(post, t)
        if entry is not None:
            out[t] = entry
    return out
