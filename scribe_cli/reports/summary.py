"""`scribe summary`: parameter table (ArviZ's columns), convergence verdict and run provenance of a posterior file."""

from __future__ import annotations

import json
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd

from .. import rank_diagnostics
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


# Rounding of az.summary's table.
DECIMALS = {"ess_bulk": 0, "ess_tail": 0, "r_hat": 2}  # the rest: 3


def parameter_table(idata: az.InferenceData, var_names: list[str] | None = None, rounded: bool = True) -> pd.DataFrame:
    """az.summary(idata, var_names, kind, hdi_prob=0.9), the same rows, labels, columns and numbers, with array
    operations over each variable's scalars at once: ArviZ computes its diagnostics one scalar at a time in Python
    (11 s of a 14 s `scribe summary` on the 500-gene demo, minutes on a full-gene posterior).
    tests/test_rank_diagnostics.py holds it to az.summary. Approximate methods get the stats only: R-hat and ESS
    of their draws mean nothing."""
    post = idata.posterior
    method = run_attrs(idata).get("method", "nuts")
    names = list(post.data_vars) if var_names is None else list(var_names)
    unknown = [n for n in names if n not in post.data_vars]
    if unknown:
        raise UserInputError(f"unknown variable {unknown[0]!r} in --var; use names from the posterior group")
    tables = []
    for name in names:  # one variable at a time: no second copy of the whole posterior
        var = post[name].transpose("chain", "draw", ...)
        x = var.values.reshape(var.shape[0], var.shape[1], -1)
        labels = rank_diagnostics.scalar_labels(name, var)
        flat = x.reshape(-1, x.shape[2])
        lower, upper = rank_diagnostics.hdi(x, 0.9)
        columns = {"mean": flat.mean(axis=0), "sd": flat.std(axis=0, ddof=1), "hdi_5%": lower, "hdi_95%": upper}
        if method == "nuts":
            columns["mcse_mean"], columns["mcse_sd"] = rank_diagnostics.mcse(x)
            r_hat, columns["ess_bulk"], columns["ess_tail"] = rank_diagnostics.diagnose(x)
            columns["r_hat"] = r_hat
        tables.append(pd.DataFrame(columns, index=labels))
    table = pd.concat(tables)
    return round_table(table) if rounded else table


def round_table(table: pd.DataFrame) -> pd.DataFrame:
    """az.summary's rounding of each column."""
    return table.round({c: DECIMALS.get(c, 3) for c in table.columns})


def summarize(idata: az.InferenceData, var_names: list[str] | None = None) -> dict:
    attrs = run_attrs(idata)
    method = attrs.get("method", "nuts")
    run_options = attrs.get("run_options") if isinstance(attrs.get("run_options"), dict) else {}
    config = attrs.get("config") if isinstance(attrs.get("config"), dict) else None
    table = parameter_table(idata, var_names, rounded=False)
    figures = None
    if var_names is None and method == "nuts":  # the table covers every variable: its R-hat and ESS serve the verdict
        figures = (*(table[c].to_numpy() for c in ("r_hat", "ess_bulk", "ess_tail")), list(table.index))
    report = {
        "method": method,
        "seed": attrs.get("seed"),
        "config": attrs.get("config"),
        "dims": {k: int(v) for k, v in idata.posterior.sizes.items()},
        "diagnostics": convergence(idata, method, run_options.get("max_treedepth"), config=config,
                                   paths=run_options.get("chains"), rank_figures=figures),
        "shrinkage": shrinkage(idata.posterior),
        "parameters": round_table(table),
    }
    if attrs.get("dataset_key"):
        report["dataset_key"] = attrs["dataset_key"]
        report["cells_per_dataset"] = attrs.get("cells_per_dataset")
    return report
