"""Shrinkage readings from synthetic posteriors (the arithmetic, independent of any fit)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from scribe_cli.shrinkage import shrinkage


def _post(**arrays):
    ds = {}
    for name, a in arrays.items():
        dims = ("chain", "draw") + tuple(f"{name}_d{i}" for i in range(a.ndim - 2))
        ds[name] = xr.DataArray(a, dims=dims)
    return xr.Dataset(ds)


def test_gaussian_scale_near_zero_and_large():
    rng = np.random.default_rng(0)
    small = _post(gate_sigma=np.abs(rng.normal(0.02, 0.01, size=(2, 200))))
    out = shrinkage(small)["gate"]
    assert out["family"] == "gaussian" and out["q95"] < 0.1
    assert out["reading"].startswith("scale near zero: no gene needs zero inflation")
    large = _post(prob_sigma=rng.normal(1.0, 0.05, size=(2, 200)))
    assert shrinkage(large)["prob"]["reading"].startswith("scale large: p differs between genes")


def test_horseshoe_fraction_escaping():
    # tau = 0.1; 3 of 20 genes have lambda_tilde = 50 (tau * lambda = 5: kappa ~ 0.04), the rest 0.5 (kappa ~ 1).
    tau = np.full((1, 100), 0.1)
    lam = np.full((1, 100, 20), 0.5)
    lam[..., :3] = 50.0
    out = shrinkage(_post(expression_tau=tau, expression_lambda_tilde=lam))["expression"]
    assert out["family"] == "horseshoe"
    assert out["fraction_escaping"] == 3 / 20
    assert "15.0% of elements escape" in out["reading"]


def test_neg_global_scale_is_root_mean_psi():
    psi = np.full((2, 50, 10), 0.04)
    out = shrinkage(_post(overdispersion_psi=psi))["overdispersion"]
    assert np.isclose(out["mean"], 0.2) and np.isclose(out["median_psi"], 0.04)
    assert out["reading"].startswith("scale undecided")


def test_no_hierarchy_no_entries():
    assert shrinkage(_post(r=np.ones((1, 5, 3)))) == {}
