"""Count matrices simulated from the models with their true (pre-capture, pre-dropout) counts kept: the truth
that `scribe denoise` is checked against (tests/test_denoise.py, bench/denoise_accuracy.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp


@dataclass
class Simulated:
    """``X`` the observed counts (CSR), ``M`` the true counts (cells x genes), and the parameters: ``mu``, ``r``
    per gene, ``capture`` per cell (None without capture), ``gate`` per gene (None without zero inflation),
    ``p`` the shared success probability."""

    X: sp.csr_matrix
    M: np.ndarray
    mu: np.ndarray
    r: np.ndarray
    p: float
    capture: np.ndarray | None
    gate: np.ndarray | None


def simulate_from_prior(rng: np.random.Generator, cells: int, genes: int, *, capture: bool, gate: bool,
                        p: float | None = None) -> Simulated:
    """Parameters from the default priors of the canonical parameterization (docs/models.md: p ~ Beta(1, 1),
    r ~ LogNormal(0, 1), gate ~ Beta(1, 9), capture ~ Beta(1, 1)), so that a fit's intervals are calibrated on
    average over the simulations; ``p`` fixes the shared p instead. Then the true counts m ~ NB(mean mu = r p /
    (1 - p), size r), the captured u ~ Binomial(m, capture) and, with probability gate, u = 0."""
    p = float(rng.beta(1.0, 1.0)) if p is None else float(p)
    r = rng.lognormal(0.0, 1.0, genes)
    mu = r * p / (1.0 - p)
    nu = rng.beta(1.0, 1.0, cells) if capture else None
    pi = rng.beta(1.0, 9.0, genes) if gate else None
    M = rng.poisson(rng.gamma(r, mu / r, size=(cells, genes)))
    U = rng.binomial(M, nu[:, None]) if capture else M.copy()
    if gate:
        U[rng.random(U.shape) < pi] = 0
    return Simulated(X=sp.csr_matrix(U), M=M, mu=mu, r=r, p=p, capture=nu, gate=pi)


def at_truth(sim: Simulated, S: int = 40, chains: int = 2) -> dict:
    """Posterior variables (for write_posterior) whose every draw is the simulated truth: the denoising
    posterior is then exactly the conditional law of the true counts (an oracle fit)."""
    def rep(x):
        return np.broadcast_to(x, (chains, S) + np.shape(x)).copy()

    out = {"mu": (("gene",), rep(sim.mu)), "r": (("gene",), rep(sim.r))}
    if sim.capture is not None:
        out["capture"] = (("cell",), rep(sim.capture))
    if sim.gate is not None:
        out["gate"] = (("gene",), rep(sim.gate))
    return out


def write_posterior(path: Path, data: Path, genes, cells, variables: dict, *, method: str = "nuts",
                    config: dict | None = None, **attrs) -> Path:
    """A posterior NetCDF as `scribe run` writes it (attrs included) from variables built in numpy:
    name -> (dims after (chain, draw), array (chains, draws, ...)); ``datasets=[...]`` sets the dataset coords."""
    import arviz as az
    import xarray as xr

    from .data import file_sha256
    from .idata import attach_attrs

    coords = {"gene": list(genes), "cell": list(cells), "dataset": attrs.get("datasets")}
    used = {d for dims, _ in variables.values() for d in dims}
    ds = xr.Dataset({k: (("chain", "draw") + dims, a) for k, (dims, a) in variables.items()},
                    coords={k: v for k, v in coords.items() if k in used or k == "gene"})
    idata = az.InferenceData(posterior=ds)
    attach_attrs(idata, {"method": method, "seed": 1, "config": config or {"model": "nbvcp"}, "input_file": str(data),
                         "input_sha256": file_sha256(data), "input_layer": "X", "n_cells": len(cells),
                         "n_genes": len(genes), "selection": {}, **attrs})
    idata.to_netcdf(path, engine="h5netcdf")
    return path
