"""cmdstanpy fit -> ArviZ InferenceData with named dims and provenance attrs; atomic NetCDF write."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import arviz as az
import numpy as np

from .errors import UserInputError

# The attribute every posterior file carries about the p convention (spec: decisions.md item 1).
P_CONVENTION = "NB(r, p): mean = r p / (1 - p), P(0) = (1 - p)^r (NumPyro convention); Stan neg_binomial_2(mean, r)"

# cmdstanpy column -> ArviZ sample_stats name, for the non-MCMC methods (MCMC goes through from_cmdstanpy).
_APPROX_STATS = {"lp__": "lp", "lp_approx__": "lp_approx", "log_p__": "lp", "log_g__": "lp_approx"}


def to_inference_data(fit, method: str, dims: dict[str, list[str]], coords: dict[str, list]) -> az.InferenceData:
    if method == "nuts":
        return az.from_cmdstanpy(posterior=fit, coords=coords, dims=dims)
    # Pathfinder and ADVI return one set of approximate draws: stored as a single chain, with the
    # target and approximation log densities (the Pareto-k diagnostic needs both) as sample_stats.
    variables = fit.stan_variables()
    posterior = {name: np.asarray(v)[None, ...] for name, v in variables.items()}
    columns = list(fit.column_names)
    draws = _draws_matrix(fit)
    stats = {}
    for col, name in _APPROX_STATS.items():
        if col in columns:
            stats[name] = draws[:, columns.index(col)][None, :]
    return az.from_dict(posterior=posterior, sample_stats=stats, coords=coords, dims=dims)


def _draws_matrix(fit) -> np.ndarray:
    draws = fit.draws()
    if draws.ndim == 3:  # (draws, chains, columns)
        draws = draws.reshape(-1, draws.shape[-1])
    if hasattr(fit, "variational_sample"):  # ADVI: row 0 of the CSV is the mean, draws() omits it
        draws = np.asarray(fit.variational_sample)
    return np.asarray(draws)


def attach_attrs(idata: az.InferenceData, attrs: dict) -> None:
    """NetCDF attributes must be strings or numbers: nested values are stored as JSON text."""
    flat = {k: (v if isinstance(v, (str, int, float)) else json.dumps(v, default=str)) for k, v in attrs.items()}
    flat["p_convention"] = P_CONVENTION
    for group in idata.groups():
        getattr(idata, group).attrs.update(flat if group == "posterior" else {"scribe_version": flat.get("scribe_version", "")})


def check_output_path(path: Path, overwrite: bool) -> None:
    """Fail before any sampling if the output cannot be written."""
    if path.exists() and not overwrite:
        raise UserInputError(f"output {path} already exists; pass --overwrite or choose another -o path")
    parent = path.parent
    if not parent.is_dir():
        raise UserInputError(f"output directory {parent} does not exist; create it or choose another -o path")
    if not os.access(parent, os.W_OK):
        raise UserInputError(f"output directory {parent} is not writable; choose another -o path")


def write_netcdf(idata: az.InferenceData, path: Path) -> None:
    """Write to a temporary file beside the target, then rename: readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        idata.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
