"""cmdstanpy fit -> ArviZ InferenceData with named dims and provenance attrs; atomic NetCDF write."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import arviz as az
import numpy as np

from . import csv_draws, psis
from .atomic import atomic_write
from .config import ModelConfig
from .errors import UserInputError

# The attribute every posterior file carries about the p convention (spec: decisions.md item 1).
P_CONVENTION = "NB(r, p): mean = r p / (1 - p), P(0) = (1 - p)^r (NumPyro convention); Stan neg_binomial_2(mean, r)"

# sample_stats.attrs["draws_kind"] of a pathfinder posterior whose PSIS resample collapsed (psis.py).
RAW_DRAWS_NOTE = ("draws of pathfinder's approximation, NOT PSIS-resampled (the resample held too few distinct draws): "
                  "not a posterior sample; sample_stats.log_weight holds each draw's PSIS-smoothed log importance weight")

# cmdstanpy column -> ArviZ sample_stats name, for the non-MCMC methods (MCMC goes through from_cmdstanpy).
_APPROX_STATS = {"lp__": "lp", "lp_approx__": "lp_approx", "log_p__": "lp", "log_g__": "lp_approx", "log_q__": "lp_approx"}


def posterior_arrays(fit, method: str) -> dict[str, np.ndarray]:
    """Every Stan variable as an array (chain, draw, ...)."""
    if method == "nuts":
        csv_draws.assemble(fit)  # the chains' CSVs parsed in parallel (cmdstanpy's loadtxt uses one core)
    # ADVI: stan_variables() defaults to the variational mean; we want the draws.
    variables = fit.stan_variables(mean=False) if method.startswith("advi") else fit.stan_variables()
    if method == "nuts":
        n_chains = fit.chains
        return {k: np.asarray(v).reshape(n_chains, -1, *np.shape(v)[1:]) for k, v in variables.items()}
    if method == "optimize":  # one point: the mode
        return {k: np.asarray(v)[None, None, ...] for k, v in variables.items()}
    return {k: np.asarray(v)[None, ...] for k, v in variables.items()}


def to_inference_data(fit, method: str, dims_of, coords: dict[str, list], *, n_draws: int | None = None,
                      seed: int = 0, log_likelihood: str | None = None) -> az.InferenceData:
    """Build InferenceData; ``dims_of(arrays)`` names each variable's non-(chain, draw) axes.

    Pathfinder's raw draws come from the approximation: they are PSIS-resampled here to ``n_draws``
    draws of the target (as Stan's own psis_resample does); the Pareto k of the raw importance ratios,
    their PSIS ESS and the number of distinct resampled draws are kept in ``sample_stats.attrs``. When the
    resample holds too few distinct draws (psis.min_distinct), ``n_draws`` distinct raw draws are written
    instead, with ``sample_stats.log_weight`` and ``attrs["draws_kind"]`` saying what they are.

    ``log_likelihood``: the name of a Stan variable (``log_lik``) moved from the posterior to a
    ``log_likelihood`` group (for arviz.loo), when the program has it.
    """
    idata = _to_inference_data(fit, method, dims_of, coords, n_draws=n_draws, seed=seed)
    if log_likelihood and log_likelihood in idata.posterior:
        ll = idata.posterior[[log_likelihood]]
        idata.posterior = idata.posterior.drop_vars(log_likelihood)
        idata.add_groups(log_likelihood=ll)
    return idata


def prior_inference_data(fit, dims_of, coords: dict[str, list]) -> az.InferenceData:
    """NUTS draws of the prior (the program with prior_only = 1) as groups ``prior`` and ``sample_stats_prior``,
    with the posterior's dims and coords."""
    arrays = posterior_arrays(fit, "nuts")
    dims = dims_of(arrays)
    used = {d for ds in dims.values() for d in ds}
    prior = az.from_cmdstanpy(prior=fit, coords={k: v for k, v in coords.items() if k in used}, dims=dims)
    if "log_lik" in prior.prior:  # a --log-lik program's per-cell likelihood: of the data, not of the prior
        prior.prior = prior.prior.drop_vars("log_lik")
    return prior


def _to_inference_data(fit, method: str, dims_of, coords: dict[str, list], *, n_draws: int | None = None,
                       seed: int = 0) -> az.InferenceData:
    arrays = posterior_arrays(fit, method)
    dims = dims_of(arrays)
    if method == "nuts":
        return az.from_cmdstanpy(posterior=fit, coords=coords, dims=dims)
    # Pathfinder, ADVI and Laplace return one set of approximate draws: stored as a single chain, with the
    # target and approximation log densities (the Pareto-k diagnostic needs both) as sample_stats.
    columns = list(fit.column_names)
    draws = _draws_matrix(fit, method)
    stats = {}
    for col, name in _APPROX_STATS.items():
        if col in columns and name not in stats:
            stats[name] = draws[:, columns.index(col)][None, :]
    resampled = None
    if method == "pathfinder" and n_draws is not None:
        resampled = psis.resample(stats["lp"] - stats["lp_approx"], n_draws, seed)
        arrays = {k: v[:, resampled.pick] for k, v in arrays.items()}
        stats = {k: v[:, resampled.pick] for k, v in stats.items()}
        if not resampled.resampled:  # raw draws of the approximation: their weights go with them
            stats["log_weight"] = resampled.log_weight[None, :]
    used = {d for ds in dims.values() for d in ds}
    idata = az.from_dict(posterior=arrays, sample_stats=stats, coords={k: v for k, v in coords.items() if k in used}, dims=dims)
    if resampled is not None:
        idata.sample_stats.attrs.update(resampled.attrs())
        if not resampled.resampled:
            idata.sample_stats.attrs["draws_kind"] = RAW_DRAWS_NOTE
    return idata


def _draws_matrix(fit, method: str) -> np.ndarray:
    if method == "optimize":
        return np.asarray(fit.optimized_params_np)[None, :]
    if method.startswith("advi"):
        return np.asarray(fit.variational_sample)  # row 0 of the CSV, the mean, is not a draw
    draws = np.asarray(fit.draws())
    if draws.ndim == 3:  # (draws, chains, columns)
        draws = draws.reshape(-1, draws.shape[-1])
    return draws


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
    # Probe by creating a file: os.access says yes to root even on read-only mounts.
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserInputError(f"output directory {parent} is not writable ({exc.strerror}); choose another -o path") from None


def write_netcdf(idata: az.InferenceData, path: Path, float32: bool = False) -> None:
    """Write to a temporary file beside the target, then rename: readers never see a partial file, and Ctrl-C
    leaves only the temporary file's removal to do. Uncompressed: posterior draws are noise to zlib (it saved
    21% of a 2000 x 1000 NBDM posterior's 192 MB and took 7.7 s against 0.8 s), and the write is in the way
    of every run."""
    if float32:
        for group in idata.groups():
            ds = getattr(idata, group)
            for name, da in list(ds.data_vars.items()):
                if "cell" in da.dims and da.dtype == np.float64:
                    ds[name] = da.astype(np.float32)
    atomic_write(path, lambda tmp: idata.to_netcdf(tmp, engine="h5netcdf", compress=False))


# Variables whose axes are known by name (docs/models.md), used when their sizes match the data's.
_KNOWN_DIMS = {
    "log_lik": ("cell",),
    "capture": ("cell",),
    "capture_odds": ("cell",),
    "capture_eta": ("cell",),
    "capture_raw": ("cell",),
    "capture_odds_raw": ("cell",),
    "assignment_prob": ("cell", "component"),
    "weights": ("component",),
    "weights_raw": ("component",),
    "dataset_weights": ("dataset", "component"),
}

# Coordinates over a data-chosen subset of the cells (params/capture_organism.stan.j2): their length is not an
# axis of the data even when it happens to equal C or G, so they keep numbered axes.
_SUBSET_AXES = {"capture_shift", "capture_dev", "capture_eta_own"}

# The D - 1 orthonormal (Helmert) contrasts between the datasets that a dataset-level mean hierarchy samples
# (priors/_target.stan.j2's <target>_z of `mean_contrast`; docs/models.md): contrast k sets the mean of
# datasets 1..k against dataset k + 1.
CONTRAST_DIM = "dataset_contrast"


def contrast_labels(datasets: list[str]) -> list[str]:
    """Coordinates of the contrast axis, in the datasets' names: "A vs B", "mean(A, B) vs C", ..."""
    return [f"{datasets[0] if k == 1 else 'mean(' + ', '.join(datasets[:k]) + ')'} vs {datasets[k]}"
            for k in range(1, len(datasets))]


def data_coords(counts, data: dict) -> dict:
    """The coordinates of the named axes of ``counts`` (data.Counts) fitted with Stan data ``data``: gene, cell,
    and where the program has them component, dataset and dataset_contrast."""
    coords = {"gene": counts.genes, "cell": counts.cells}
    datasets = counts.datasets
    if "K" in data:
        coords["component"] = list(range(data["K"]))
    if "D" in data:
        if datasets is None or len(datasets) != data["D"]:
            raise ValueError(f"the data have D = {data['D']} datasets but the counts name {len(datasets or [])}")
        coords["dataset"] = list(datasets)
        coords[CONTRAST_DIM] = contrast_labels([str(d) for d in datasets])
    return coords


def variable_dims(config: ModelConfig, arrays: dict, data: dict) -> dict[str, list[str]]:
    """Named dims of each Stan variable, from the sizes the data fix (gene = G, cell = C, component = K).

    Works for rendered programs and for edited ones (``--stan-file``) alike. When sizes coincide the
    axis is ambiguous; gene wins over cell over component (every model here is indexed by gene first,
    and K is small), and each name is used once per variable.
    """
    sizes = [("gene", data["G"]), ("cell", data["C"])]
    if "K" in data:
        sizes.append(("component", data["K"]))
    if "D" in data:  # multi-dataset programs (one axis per dataset)
        sizes.append(("dataset", data["D"]))
    size_of = dict(sizes)
    contrast_shape = (data["G"], data["D"] - 1) if "D" in data else None
    dims: dict[str, list[str]] = {}
    for name, value in arrays.items():
        shape = np.shape(value)[2:]  # drop the chain and draw axes
        if name in _SUBSET_AXES:
            if shape:
                dims[name] = [f"{name}_dim_{i}" for i in range(len(shape))]
            continue
        if name.endswith("_dataset_z") and shape == contrast_shape:
            dims[name] = ["gene", CONTRAST_DIM]  # the contrasts' axis, even when D - 1 equals C or K
            continue
        known = _KNOWN_DIMS.get(name)
        if known and len(known) == len(shape) and all(size_of.get(d) == n for d, n in zip(known, shape)):
            dims[name] = list(known)  # per-cell quantities stay on `cell` even when C == G
            continue
        names: list[str] = []
        for i, size in enumerate(shape):
            for dim, n in sizes:
                if size == n and dim not in names:
                    names.append(dim)
                    break
            else:
                names.append(f"{name}_dim_{i}")
        if names:
            dims[name] = names
    return dims
