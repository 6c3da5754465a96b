"""Shrinkage diagnostics of hierarchical priors (spec: priors.md, "report after every fit").

For each hierarchical target found in a posterior, the posterior mean and 90% interval of its global
scale, and a one-line reading. Variable names follow docs/models.md: a target T in {prob, expression,
gate, overdispersion} has `T_sigma` (Gaussian), `T_tau` and `T_lambda_tilde` (horseshoe) or `T_psi` (NEG).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

TARGETS = ("prob", "expression", "gate", "overdispersion")

# What a small or a large global scale means, per target (priors.md table).
READINGS = {
    "prob": ("one shared p suffices", "p differs between genes"),
    "expression": ("components share expression", "marker genes differ between components"),
    "gate": ("no gene needs zero inflation", "some genes have structural zeros"),
    "overdispersion": ("NB tails suffice", "some genes need heavy tails"),
}

# Scales live on the link scale (logit or log). An upper 90% bound below 0.1 means element values
# within ~±0.2 of the centre (a 20% change in odds or expression): "near zero". A lower bound above 0.3
# rules that out: "large". In between, the data do not decide.
NEAR_ZERO = 0.1
LARGE = 0.3


def _draws(post: xr.Dataset, name: str) -> np.ndarray:
    return post[name].stack(sample=("chain", "draw")).transpose("sample", ...).values


def _interval(x: np.ndarray) -> dict:
    lo, hi = np.quantile(x, [0.05, 0.95])
    return {"mean": float(np.mean(x)), "q05": float(lo), "q95": float(hi)}


def _reading(target: str, stats: dict) -> str:
    small, large = READINGS[target]
    if stats["q95"] < NEAR_ZERO:
        return f"scale near zero: {small}"
    if stats["q05"] > LARGE:
        return f"scale large: {large}"
    return f"scale undecided (90% interval {stats['q05']:.3g} to {stats['q95']:.3g}): between '{small}' and '{large}'"


def shrinkage(post: xr.Dataset) -> dict:
    """Diagnostics for every hierarchical target present in ``post`` (empty when there is none)."""
    out = {}
    for t in TARGETS:
        if f"{t}_sigma" in post:
            stats = _interval(_draws(post, f"{t}_sigma"))
            out[t] = {"family": "gaussian", "scale": f"{t}_sigma", **stats}
        elif f"{t}_tau" in post:
            tau = _draws(post, f"{t}_tau")
            stats = _interval(tau)
            entry = {"family": "horseshoe", "scale": f"{t}_tau", **stats}
            if f"{t}_lambda_tilde" in post:
                lam = _draws(post, f"{t}_lambda_tilde").reshape(tau.size, -1)
                # shrinkage factor per element: 1 -> fully shrunk to the centre, 0 -> free
                kappa = 1.0 / (1.0 + tau[:, None] ** 2 * lam**2)
                entry["fraction_escaping"] = float(np.mean(kappa.mean(axis=0) < 0.5))
            out[t] = entry
        elif f"{t}_psi" in post:
            psi = _draws(post, f"{t}_psi")
            psi = psi.reshape(psi.shape[0], -1)
            stats = _interval(np.sqrt(psi.mean(axis=1)))
            out[t] = {"family": "neg", "scale": f"sqrt(mean({t}_psi))", **stats,
                      "median_psi": float(np.median(psi))}
        else:
            continue
        out[t]["reading"] = _reading(t, out[t])
        if "fraction_escaping" in out[t]:
            out[t]["reading"] += f"; {out[t]['fraction_escaping']:.1%} of elements escape shrinkage"
    return out
