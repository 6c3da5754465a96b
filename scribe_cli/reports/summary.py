"""`scribe summary`: parameter table (ArviZ), convergence verdict and run provenance of a posterior file."""

from __future__ import annotations

import json
from pathlib import Path

import arviz as az
import pandas as pd

from ..diagnostics import convergence
from ..errors import UserInputError
from ..shrinkage import shrinkage


def load_posterior(path: Path) -> az.InferenceData:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"posterior file {path} does not exist; pass the .nc written by `scribe run`")
    try:
        idata = az.from_netcdf(path)
    except Exception as exc:  # netCDF/HDF5 raise several types for a foreign file
        raise UserInputError(f"{path} is not an ArviZ NetCDF posterior ({type(exc).__name__}); pass a file written by `scribe run`") from None
    if "posterior" not in idata.groups():
        raise UserInputError(f"{path} has no posterior group; pass a file written by `scribe run`")
    return idata


def run_attrs(idata: az.InferenceData) -> dict:
    attrs = dict(idata.posterior.attrs)
    for key in ("config", "run_options", "selection", "datasets", "cells_per_dataset"):
        if isinstance(attrs.get(key), str):
            try:
                attrs[key] = json.loads(attrs[key])
            except json.JSONDecodeError:
                pass
    return attrs


def parameter_table(idata: az.InferenceData, var_names: list[str] | None = None) -> pd.DataFrame:
    method = run_attrs(idata).get("method", "nuts")
    kind = "all" if method == "nuts" else "stats"  # R-hat / ESS mean nothing for a single approximate chain
    try:
        return az.summary(idata, var_names=var_names, kind=kind, hdi_prob=0.9)
    except KeyError as exc:
        raise UserInputError(f"unknown variable {exc} in --var; use names from the posterior group") from None


def summarize(idata: az.InferenceData, var_names: list[str] | None = None) -> dict:
    attrs = run_attrs(idata)
    method = attrs.get("method", "nuts")
    run_options = attrs.get("run_options") if isinstance(attrs.get("run_options"), dict) else {}
    config = attrs.get("config") if isinstance(attrs.get("config"), dict) else None
    report = {
        "method": method,
        "seed": attrs.get("seed"),
        "config": attrs.get("config"),
        "dims": {k: int(v) for k, v in idata.posterior.sizes.items()},
        "diagnostics": convergence(idata, method, run_options.get("max_treedepth"), config=config,
                                   paths=run_options.get("chains")),
        "shrinkage": shrinkage(idata.posterior),
        "parameters": parameter_table(idata, var_names),
    }
    if attrs.get("dataset_key"):
        report["dataset_key"] = attrs["dataset_key"]
        report["cells_per_dataset"] = attrs.get("cells_per_dataset")
    return report
