"""The main job, one straight line: counts -> program -> compiled model -> fit -> InferenceData -> NetCDF."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import xarray as xr

from . import __version__
from .cache import compile_program
from .config import ModelConfig, check_datasets
from .data import Counts, assign_datasets
from .diagnostics import convergence
from .shrinkage import shrinkage
from .fit import RunOptions, check_method_size, run_method
from .errors import UserInputError
from .idata import attach_attrs, check_output_path, prior_inference_data, to_inference_data, write_netcdf
from .idata import data_coords, variable_dims
from .render import render
from .standata import stan_data
from .toolchain import STAN_VERSION, stanc_version, use_toolchain

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    output: str
    method: str
    seed: int
    cached_model: bool
    timings: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)
    shrinkage: dict = field(default_factory=dict)
    groups: list = field(default_factory=list)

    def summary(self) -> dict:
        d = asdict(self)
        d["wall_time_s"] = round(sum(self.timings.values()), 3)
        return d


def run(counts: Counts, config: ModelConfig, opts: RunOptions, output: Path, *, overwrite: bool = False,
        program: str | None = None, command_line: str = "", float32: bool = False, log_lik: bool = False,
        prior_draws: int = 0, ppc_draws: int = 0) -> RunResult:
    """With ``config.dataset_key`` the cells' datasets come from ``counts`` (read_counts(..., dataset_key=...));
    they add the ``dataset`` coordinate (programs with a dataset axis), a ``constant_data`` group with each
    cell's dataset label and the attrs dataset_key, datasets, cells_per_dataset.

    Optional groups: ``log_lik`` adds ``log_likelihood`` (per-cell log likelihood computed in Stan's
    generated quantities); ``prior_draws`` N > 0 adds ``prior`` and ``sample_stats_prior`` (NUTS on the same
    program with its data switch prior_only, N draws per chain); ``ppc_draws`` N > 0 adds
    ``posterior_predictive`` (replicated per-gene statistics at N draws per chain, evenly thinned) and
    ``observed_data``. The prior draws are a data switch of the run's program (render): they compile nothing
    more; --log-lik renders its generated quantity into the program (one more program per configuration,
    compiled once: the cache keeps both)."""
    check_output_path(output, overwrite)
    _check_groups(program, log_lik, prior_draws, ppc_draws)
    if config.dataset_key is not None:
        if counts.dataset_key != config.dataset_key:  # counts read without the key (API use): map the cells now
            counts = assign_datasets(counts, config.dataset_key)
        check_datasets(config, counts.datasets)
    timings: dict[str, float] = {}

    t = time.monotonic()
    user_program = program is not None
    config = config.for_method(opts.method)
    program = program if user_program else render(config, log_lik=log_lik)
    data = stan_data(config, counts, log_lik=log_lik)
    check_method_size(opts.method, program, data)  # before the compile: refuse in a second, not after minutes
    timings["render"] = time.monotonic() - t

    t = time.monotonic()
    toolchain = use_toolchain()
    compiled = compile_program(program, name=config.model)
    timings["compile"] = time.monotonic() - t
    log.info("model %s (%s)", compiled.key, "cached, not recompiled" if compiled.cached else f"compiled in {compiled.seconds:.1f} s")

    workdir = Path(tempfile.mkdtemp(prefix="scribe-run-"))
    try:
        t = time.monotonic()
        log.info("running %s", opts.method)
        fit = run_method(compiled.model, data, opts, workdir)
        timings["sample"] = time.monotonic() - t

        coords = data_coords(counts, data)
        dims_of = lambda arrays: variable_dims(config, arrays, data)  # noqa: E731
        prior = None
        if prior_draws > 0:
            t = time.monotonic()
            prior = sample_prior(compiled.model, config, counts, opts, prior_draws, workdir / "prior", dims_of, coords,
                                 log_lik=log_lik)
            timings["prior"] = time.monotonic() - t

        t = time.monotonic()
        idata = to_inference_data(fit, opts.method, dims_of, coords, n_draws=opts.draws, seed=opts.seed,
                                  log_likelihood="log_lik" if log_lik else None)
        if log_lik and "log_likelihood" not in idata.groups():
            raise UserInputError("the program has no generated quantity 'log_lik'; --log-lik needs a vector[C] "
                                 "log_lik in generated quantities")
        diagnostics = convergence(idata, opts.method, opts.max_treedepth, config=config.to_dict(), paths=opts.chains)
        if prior is not None:
            idata.extend(prior)
        if counts.dataset_key is not None:
            idata.add_groups(constant_data=dataset_constant_data(counts))
        build_s = time.monotonic() - t
        if ppc_draws > 0:
            t = time.monotonic()
            _add_ppc(idata, counts, ppc_draws, opts.seed)
            timings["ppc"] = time.monotonic() - t
        t = time.monotonic() - build_s  # "write" = building the InferenceData + writing it
        shrink = shrinkage(idata.posterior)
        dataset_attrs = {} if counts.dataset_key is None else {
            "dataset_key": counts.dataset_key,
            "datasets": list(counts.datasets),
            "cells_per_dataset": counts.cells_per_dataset(),
        }
        attach_attrs(idata, {
            "scribe_version": __version__,
            "stan_version": STAN_VERSION,
            "stanc_version": stanc_version(toolchain),
            "toolchain": str(toolchain),
            "command_line": command_line,
            "config": config.to_dict(),
            "run_options": asdict(opts),
            "method": opts.method,
            "seed": opts.seed,
            **({"method_seed": fit.scribe_seed} if hasattr(fit, "scribe_seed") else {}),  # after ADVI's retries (fit.py)
            "stan_program": program,
            "input_file": str(counts.source),
            "input_sha256": counts.sha256,
            "input_layer": counts.layer or "X",
            "n_cells": counts.n_cells,
            "n_genes": counts.n_genes,
            "selection": counts.selection,
            **dataset_attrs,
            "output_groups": {"log_likelihood": bool(log_lik), "prior_draws": int(prior_draws),
                              "ppc_draws": int(ppc_draws), "groups": list(idata.groups())},
        })
        write_netcdf(idata, output, float32=float32)
        timings["write"] = time.monotonic() - t
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return RunResult(
        output=str(output),
        method=opts.method,
        seed=opts.seed,
        cached_model=compiled.cached,
        timings={k: round(v, 3) for k, v in timings.items()},
        diagnostics=diagnostics,
        shrinkage=shrink,
        groups=list(idata.groups()),
    )


def _check_groups(program: str | None, log_lik: bool, prior_draws: int, ppc_draws: int) -> None:
    """Refuse requests that could only fail after sampling."""
    if prior_draws < 0 or ppc_draws < 0:
        raise UserInputError("--prior-draws and --ppc-draws must be 0 (off) or more")
    if program is None:
        return
    if prior_draws > 0:
        raise UserInputError("--prior-draws needs a rendered program (it samples the program with its data switch "
                             "prior_only); drop --stan-file or --prior-draws")
    if log_lik and not re.search(r"\blog_lik\b", program):
        raise UserInputError("--log-lik with --stan-file needs a generated quantity 'vector[C] log_lik' in the "
                             "program; add it or drop --log-lik")


def sample_prior(model, config: ModelConfig, counts: Counts, opts: RunOptions, n_draws: int, workdir: Path,
                 dims_of, coords: dict, log_lik: bool = False):
    """NUTS on ``model``, the compiled render(config, log_lik=log_lik), with prior_only = 1 (the likelihood left
    out; same chains and seed): ``n_draws`` draws per chain of the prior, as InferenceData groups prior and
    sample_stats_prior (without log_lik, which is the posterior's)."""
    log.info("sampling %d prior draws per chain (the same program, prior_only = 1)", n_draws)
    workdir.mkdir(parents=True, exist_ok=True)
    prior_opts = replace(opts, method="nuts", draws=n_draws, init="random")
    fit = run_method(model, stan_data(config, counts, log_lik=log_lik, prior_only=True), prior_opts, workdir)
    return prior_inference_data(fit, dims_of, coords)


def dataset_constant_data(counts: Counts) -> xr.Dataset:
    """constant_data: each cell's dataset label (``cell_dataset``, dim cell), written whenever --dataset-key is
    set, also for programs without a dataset axis (the map is what paired comparisons between datasets need)."""
    labels = counts.cell_dataset_labels()
    ds = xr.Dataset({"cell_dataset": (("cell",), labels.astype(str))}, coords={"cell": counts.cells})
    ds["cell_dataset"].attrs["description"] = f"each cell's dataset: obs['{counts.dataset_key}']"
    ds.attrs["dataset_key"] = counts.dataset_key
    return ds


def _add_ppc(idata, counts: Counts, n_draws: int, seed: int) -> None:
    """posterior_predictive: replicated per-gene statistics at n_draws draws per chain (evenly thinned;
    the draw coordinate is the posterior draw used); observed_data: the observed statistics."""
    from .reports.ppc import STATS, observed_stats, replicate_by_chain

    rep, draws = replicate_by_chain(idata.posterior, counts, n_draws, seed=seed)
    coords = {"chain": idata.posterior.coords["chain"].values, "draw": idata.posterior.coords["draw"].values[draws],
              "gene": counts.genes}
    pp = xr.Dataset({f"rep_{k}": (("chain", "draw", "gene"), rep[k]) for k in STATS}, coords=coords)
    pp.attrs["draws"] = "posterior draws evenly thinned within each chain; draw = the posterior draw index"
    obs = observed_stats(counts)
    od = xr.Dataset({f"obs_{k}": (("gene",), np.asarray(obs[k].values, dtype=float)) for k in STATS},
                    coords={"gene": counts.genes})
    idata.add_groups(posterior_predictive=pp, observed_data=od)
