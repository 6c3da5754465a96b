"""The `scribe` command line: parse, call the pipeline, print. Stdout is machine-readable; logs go to stderr.

Exit codes: 0 ok, 1 internal or toolchain failure, 2 bad input or configuration,
3 failed diagnostics under --strict, 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import random
import shlex
import sys
from pathlib import Path

import click

from . import __version__
from .config import MODELS, PARAMETERIZATIONS, ModelConfig, parse_prior_override, validate
from .errors import DiagnosticsFailed, ScribeError, UserInputError
from .fit import METHODS, RunOptions
from .toolchain import STAN_VERSION

log = logging.getLogger("scribe_cli")

P_CONVENTION_HELP = (
    "Convention: NB(r, p) has mean r*p/(1-p) and P(0) = (1-p)^r (NumPyro's, as the original SCRIBE code); "
    "gene means mu = r*p/(1-p)."
)


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("scribe: %(message)s"))
    root = logging.getLogger("scribe_cli")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    logging.getLogger("cmdstanpy").setLevel(logging.DEBUG if verbose else logging.ERROR)


def _fail(exc: ScribeError) -> None:
    click.echo(f"scribe: error: {exc}", err=True)
    sys.exit(exc.exit_code)


def _version_text() -> str:
    from .toolchain import embedded_dir, ensure_toolchain, stanc_version

    try:
        stanc = stanc_version(ensure_toolchain(build=False))
    except ScribeError:
        stanc = f"not built yet (toolchain: {embedded_dir()})"
    return f"scribe-cli {__version__}\nStan {STAN_VERSION}\nstanc {stanc}"


def _print_version(ctx, _param, value):
    if value and not ctx.resilient_parsing:
        click.echo(_version_text())
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print scribe-cli, Stan and stanc versions and exit.")
def main() -> None:
    """Bayesian count models for single-cell RNA-seq UMI matrices, fitted with Stan.

    Exit codes: 0 ok, 1 toolchain/internal failure, 2 bad input or configuration,
    3 failed diagnostics (--strict), 130 interrupted.
    """


def model_options(f):
    """Options that define the Stan program; shared by `render` and `run`."""
    opts = [
        click.option("--model", type=click.Choice(MODELS), default="nbdm", show_default=True,
                     help="Count model: nbdm, zinb (zero-inflated), nbvcp / zinbvcp (variable capture per cell)."),
        click.option("--parameterization", type=click.Choice(PARAMETERIZATIONS), default="canonical", show_default=True,
                     help="Which NB coordinates are sampled: canonical (r, p), mean-prob (mu, p), mean-odds (mu, phi), mean-disp (mu, r)."),
        click.option("--prior", "priors", multiple=True, metavar="NAME=dist(a,b)",
                     help="Override a base prior's numbers, e.g. r=lognormal(1,0.5). Repeatable."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _model_config(model: str, parameterization: str, priors: tuple[str, ...]) -> ModelConfig:
    overrides = tuple(parse_prior_override(p) for p in priors)
    return validate(ModelConfig(model=model, parameterization=parameterization, priors=overrides))


@main.command()
@model_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the program here instead of stdout.")
def render(model, parameterization, priors, output):
    """Print the Stan program of a configuration (nothing is compiled or run)."""
    from .render import render as render_program

    try:
        text = render_program(_model_config(model, parameterization, priors))
        if output:
            from .idata import check_output_path

            check_output_path(output, overwrite=True)
            output.write_text(text)
        else:
            click.echo(text, nl=False)
    except ScribeError as exc:
        _fail(exc)


@main.command()
@click.argument("input_file", metavar="DATA.h5ad", type=click.Path(path_type=Path))
@model_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Posterior NetCDF path [default: beside the input, <input>.<model>.<method>.nc].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--layer", help="AnnData layer with the raw counts [default: X].")
@click.option("--stan-file", type=click.Path(path_type=Path), help="Run this (edited) Stan program instead of rendering one; same data.")
@click.option("--method", type=click.Choice(METHODS), default="nuts", show_default=True,
              help="nuts (MCMC, default), pathfinder or advi (fast approximations; check Pareto k). "
                   "Full-rank ADVI diverges beyond a few hundred parameters: prefer pathfinder.")
@click.option("--chains", type=int, default=4, show_default=True, help="MCMC chains (pathfinder: number of paths).")
@click.option("--parallel-chains", type=int, help="Chains run at once [default: all].")
@click.option("--warmup", type=int, default=1000, show_default=True, help="NUTS warmup iterations per chain.")
@click.option("--draws", type=int, default=1000, show_default=True, help="Draws per chain (approximate draws for pathfinder/ADVI).")
@click.option("--seed", type=int, help="Random seed [default: random, recorded in the output].")
@click.option("--adapt-delta", type=float, default=0.8, show_default=True, help="NUTS target acceptance rate.")
@click.option("--max-treedepth", type=int, default=10, show_default=True, help="NUTS maximum tree depth.")
@click.option("--strict", is_flag=True, help="Exit 3 when convergence diagnostics fail.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr; no progress bars.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs, including cmdstanpy's command lines.")
def run(input_file, model, parameterization, priors, output, overwrite, layer, stan_file, method, chains,
        parallel_chains, warmup, draws, seed, adapt_delta, max_treedepth, strict, quiet, verbose):
    """Fit a count model to DATA.h5ad and write the posterior as ArviZ NetCDF.

    Prints one JSON object on stdout: output path, method, seed, wall times per stage and
    convergence diagnostics. Progress and logs go to stderr.
    """
    _setup_logging(quiet, verbose)
    from .cache import check_user_program
    from .data import read_counts
    from .pipeline import run as run_pipeline

    try:
        config = _model_config(model, parameterization, priors)
        opts = RunOptions(
            method=method, chains=chains, parallel_chains=parallel_chains, warmup=warmup, draws=draws,
            seed=seed if seed is not None else random.SystemRandom().randrange(2**31),
            adapt_delta=adapt_delta, max_treedepth=max_treedepth, show_progress=not quiet,
        ).validate()
        program = check_user_program(stan_file) if stan_file else None
        if output is None:
            output = input_file.with_name(f"{input_file.stem}.{model}.{method}.nc")
        counts = read_counts(input_file, layer=layer)
        log.info("read %d cells x %d genes (%d non-zero) from %s", counts.n_cells, counts.n_genes, counts.X.nnz, input_file)
        result = run_pipeline(counts, config, opts, output, overwrite=overwrite, program=program,
                              command_line=shlex.join(["scribe"] + sys.argv[1:]))
    except ScribeError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        click.echo("scribe: interrupted; no output written", err=True)
        sys.exit(130)
    click.echo(json.dumps(result.summary()))
    diag = result.diagnostics
    for problem in diag.get("problems", []):
        log.warning("diagnostics: %s", problem)
    if strict and not diag.get("ok", True):
        _fail(DiagnosticsFailed("convergence diagnostics failed: " + "; ".join(diag["problems"])))


@main.command()
@click.option("--build", is_flag=True, help="Build the toolchain if it is missing.")
def doctor(build):
    """Check the Stan toolchain; print its path, the cache dir and how many compiled models it holds."""
    from .cache import count_cached_models
    from .toolchain import cache_dir, ensure_toolchain, stanc_version, toolchain_id

    try:
        path = ensure_toolchain(build=build)
    except ScribeError as exc:
        _fail(exc)
    report = {
        "toolchain": str(path),
        "toolchain_id": toolchain_id(),
        "stanc": stanc_version(path),
        "cache_dir": str(cache_dir()),
        "compiled_models": count_cached_models(),
    }
    click.echo(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
