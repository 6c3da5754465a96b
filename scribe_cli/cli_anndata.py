"""`scribe denoise` and `scribe export`: results back into AnnData (docs/denoise.md).

Registered on the main group by cli.py; usable on their own too. Both read the posterior and the data it was
fitted to (fit_data.fit_counts: same layer, dataset key and selection, genes and cells checked), refuse a
posterior without draws, and write the input restricted to the fitted cells and genes with everything else in
it kept, atomically.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from .errors import ScribeError, UserInputError


def _fail(exc: ScribeError) -> None:
    # Same message and exit code as cli._fail (not imported: cli.py imports this module).
    click.echo(f"scribe: error: {exc}", err=True)
    sys.exit(exc.exit_code)


def _warn(text: str) -> None:
    click.echo(f"scribe: warning: {text}", err=True)


def _load(posterior: Path, data: Path, layer: str | None, output: Path, overwrite: bool, what: str):
    """Posterior, fitted counts and parameter draws, every check done before any work."""
    from .fit_data import fit_counts, require_draws
    from .idata import check_output_path
    from .reports.ppc import draw_parameters
    from .reports.summary import load_posterior

    check_output_path(output, overwrite)
    idata = load_posterior(posterior)
    require_draws(idata, what)
    counts, notes = fit_counts(idata, data, layer)
    for note in notes:
        _warn(note)
    return idata, counts, draw_parameters(idata.posterior, counts)


def _provenance(idata, posterior: Path) -> dict:
    from .data import file_sha256
    from .reports.summary import run_attrs

    attrs = run_attrs(idata)
    keep = ("method", "seed", "config", "command_line", "scribe_version", "input_file", "input_sha256", "input_layer",
            "selection", "dataset_key", "datasets", "p_convention")
    out = {k: attrs[k] for k in keep if k in attrs}
    out["posterior_file"] = str(Path(posterior).resolve())
    out["posterior_sha256"] = file_sha256(posterior)
    return out


_COMMON = [
    click.argument("posterior", type=click.Path(path_type=Path)),
    click.argument("data", type=click.Path(path_type=Path)),
    click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
                 help="Output .h5ad: the data restricted to the fitted cells and genes, with the results added."),
    click.option("--overwrite", is_flag=True, help="Replace an existing output file."),
    click.option("--layer", help="AnnData layer with the raw counts [default: the layer the fit used]."),
    click.option("--posterior-draws", type=int, default=100, show_default=True,
                 help="Posterior draws used, evenly spaced over all chains (more: smaller Monte Carlo error, "
                      "proportionally more time)."),
]


def _common(f):
    for decorator in reversed(_COMMON):
        f = decorator(f)
    return f


@click.command()
@_common
@click.option("--layer-name", default="denoised", show_default=True,
              help="Name of the posterior-mean layer; the others are <name>_lo, <name>_hi, <name>_draw<i>.")
@click.option("--interval", type=float, help="Add <name>_lo and <name>_hi: the central interval of this probability "
              "(e.g. 0.9) of each true count.")
@click.option("--draws", "n_draws", type=int, default=0, show_default=True,
              help="Add N layers <name>_draw0.. of denoised draws (one posterior draw each).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draws behind --interval and --draws.")
def denoise(posterior, data, output, overwrite, layer, posterior_draws, layer_name, interval, n_draws, seed):
    """The posterior of each cell's true counts (before capture and zero inflation) as AnnData layers.

    Per posterior draw the true count given the observed one is closed form (docs/denoise.md: negative
    binomial by Gamma-Poisson conjugacy; zero inflation through the probability that a zero is structural;
    BNB through a Beta update of its success probability; mixtures through each cell's component
    probabilities; joint fits through each cell's dataset). The layer <name> is the posterior mean over
    --posterior-draws draws; cells are processed in blocks so memory stays bounded. Models without capture
    and zero inflation leave the counts as they are (the layer is then a sparse copy of them).
    Prints one JSON object (output, layers, draws used, time).
    """
    from .anndata_io import fitted_anndata, h5_safe, write_h5ad
    from .reports import denoise as den

    t0 = time.monotonic()
    try:
        if interval is not None and not 0 < interval < 1:
            raise UserInputError(f"--interval {interval} is not a probability; pass e.g. 0.9")
        if posterior_draws < 1 or n_draws < 0:
            raise UserInputError("--posterior-draws must be at least 1 and --draws at least 0")
        if n_draws > posterior_draws:
            raise UserInputError(f"--draws {n_draws} exceeds --posterior-draws {posterior_draws}; raise --posterior-draws")
        idata, counts, draws = _load(posterior, data, layer, output, overwrite, "denoising")
        adata = fitted_anndata(data, counts)
        names = [layer_name] + ([f"{layer_name}_lo", f"{layer_name}_hi"] if interval is not None else []) \
            + [f"{layer_name}_draw{i}" for i in range(n_draws)]
        clash = [n for n in names if n in adata.layers]
        if clash:
            raise UserInputError(f"the data already have layer(s) {', '.join(clash)}; choose another --layer-name")
        res = den.denoise(draws, counts.X, counts.cell_dataset, n_posterior=posterior_draws, interval=interval,
                          n_draw_layers=n_draws, seed=seed)
        adata.layers[layer_name] = res.mean
        if interval is not None:
            adata.layers[f"{layer_name}_lo"], adata.layers[f"{layer_name}_hi"] = res.lo, res.hi
        for i, layer_i in enumerate(res.draws):
            adata.layers[f"{layer_name}_draw{i}"] = layer_i
        if res.component_prob is not None:
            for k in range(res.component_prob.shape[1]):
                adata.obs[f"scribe_component_prob_{k}"] = res.component_prob[:, k]
        adata.uns[f"scribe_{layer_name}"] = h5_safe({
            "layers": names, "posterior_draws": res.n_posterior_draws, "interval": interval, "seed": seed,
            "what": "posterior of the true (pre-capture, pre-dropout) counts; formulas in docs/denoise.md",
            "counts_unchanged": res.identity, **_provenance(idata, posterior)})
        write_h5ad(adata, output)
    except ScribeError as exc:
        _fail(exc)
    import scipy.sparse as sp

    click.echo(json.dumps({"output": str(output), "layers": names, "cells": counts.n_cells, "genes": counts.n_genes,
                           "posterior_draws": res.n_posterior_draws, "block_cells": res.block_cells,
                           "sparse": {n: bool(sp.issparse(adata.layers[n])) for n in names},
                           "counts_unchanged": res.identity, "seconds": round(time.monotonic() - t0, 3)}))


@click.command()
@_common
@click.option("--interval", type=float, default=0.9, show_default=True,
              help="Probability of the central intervals (the _lo and _hi columns).")
def export(posterior, data, output, overwrite, layer, posterior_draws, interval):
    """Posterior summaries of the parameters into the data's var, obs and uns (an .h5ad scanpy reads).

    var: scribe_<parameter>[_c<component>][_<dataset>]_<mean|sd|lo|hi> for mu, r, p, gate, omega, kappa (and the
    population levels of joint fits) where they are per gene. obs: scribe_capture_<stat> (VCP models);
    scribe_component_prob_<k> and scribe_component (mixtures; from assignment_prob when the fit stored it, else
    computed from --posterior-draws draws). uns['scribe']: configuration, provenance, the other parameters
    (scalar p, weights, the priors' global scales) and the shrinkage report. Prints one JSON object.
    """
    from .anndata_io import fitted_anndata, h5_safe, write_h5ad
    from .reports import export as exp
    from .reports.denoise import mean_component_probabilities
    from .shrinkage import shrinkage

    t0 = time.monotonic()
    try:
        if not 0 < interval < 1:
            raise UserInputError(f"--interval {interval} is not a probability; pass e.g. 0.9")
        if posterior_draws < 1:
            raise UserInputError("--posterior-draws must be at least 1")
        idata, counts, draws = _load(posterior, data, layer, output, overwrite, "export")
        post = idata.posterior
        adata = fitted_anndata(data, counts)
        prob = None
        if "assignment_prob" in post:
            prob = post["assignment_prob"].mean(("chain", "draw")).transpose("cell", ...).values
        elif "component" in post.dims:
            prob = mean_component_probabilities(draws, counts.X, counts.cell_dataset, n_posterior=posterior_draws)
        var = exp.var_table(post, interval)
        obs = exp.obs_table(post, interval, counts.cells, prob)
        clash = [c for c in list(var.columns) if c in adata.var.columns] + [c for c in obs.columns if c in adata.obs.columns]
        if clash:
            raise UserInputError(f"the data already have column(s) {', '.join(clash[:3])}; pass data without "
                                 "a previous export's columns")
        for c in var.columns:
            adata.var[c] = var[c].values
        for c in obs.columns:
            adata.obs[c] = obs[c].values
        adata.uns["scribe"] = h5_safe({"interval": interval, "columns": exp.column_docs(interval),
                                       "parameters": exp.global_parameters(post, interval),
                                       "shrinkage": shrinkage(post), **_provenance(idata, posterior)})
        write_h5ad(adata, output)
    except ScribeError as exc:
        _fail(exc)
    click.echo(json.dumps({"output": str(output), "var_columns": list(var.columns), "obs_columns": list(obs.columns),
                           "uns": "scribe", "cells": counts.n_cells, "genes": counts.n_genes,
                           "seconds": round(time.monotonic() - t0, 3)}))
