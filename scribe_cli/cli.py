"""The `scribe` command line: parse, call the pipeline, print. Stdout is machine-readable; logs go to stderr.

Exit codes: 0 ok, 1 internal or toolchain failure, 2 bad input or configuration,
3 failed diagnostics under --strict, 130 interrupted (SIGINT), 143 terminated (SIGTERM).
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
from .advice import silent_gene_advice
from .atomic import atomic_write
from .cli_options import model_config_from_options, model_options
from .config import ModelConfig
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
    from .toolchain import set_cmdstanpy_log_level

    set_cmdstanpy_log_level(logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING)


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
    3 failed diagnostics (--strict), 130 interrupted, 143 terminated (SIGTERM).
    """


_model_config = model_config_from_options


@main.command()
@model_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the program here instead of stdout.")
@click.option("--log-lik", is_flag=True,
              help="Include the generated quantity log_lik (each cell's log likelihood): the program `scribe run --log-lik` compiles.")
def render(output, log_lik, **model_kw):
    """Print the Stan program of a configuration (nothing is compiled or run)."""
    from .render import render as render_program

    try:
        text = render_program(_model_config(**model_kw), log_lik=log_lik)
        if output:
            from .idata import check_output_path

            check_output_path(output, overwrite=True)
            output.write_text(text)
        else:
            click.echo(text, nl=False)
    except ScribeError as exc:
        _fail(exc)


# Options of `run` that are not part of the model configuration (the rest go to _model_config).
_RUN_KEYS = ("input_file", "output", "overwrite", "layer", "stan_file", "method", "chains", "parallel_chains",
             "threads_per_chain", "warmup", "draws", "seed", "init", "adapt_delta", "max_treedepth", "strict", "quiet",
             "verbose", "genes", "min_cells", "top_genes", "min_counts", "output_format", "float32", "log_lik",
             "prior_draws", "ppc_draws")


def _load_config_file(ctx, _param, value):
    """--config FILE: TOML whose keys are `run`'s option names; options given on the command line win."""
    if value is None:
        return None
    import tomllib

    try:
        with open(value, "rb") as fh:
            table = tomllib.load(fh)
    except FileNotFoundError:
        raise click.BadParameter(f"{value} does not exist; pass an existing TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{value} is not valid TOML ({exc}); fix the file") from None
    known = {p.name for p in ctx.command.params} - {"config", "print_config"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise click.BadParameter(f"unknown key(s) {', '.join(unknown)} in {value}; use option names such as model, chains, seed")
    for key, val in table.items():
        if isinstance(val, list):
            table[key] = tuple(val)
    ctx.default_map = {**(ctx.default_map or {}), **table}
    return value


@main.command()
@click.argument("input_file", metavar="DATA", required=False, type=click.Path(path_type=Path))
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False, callback=_load_config_file,
              help="TOML file with any of these options (keys = option names with underscores); the command line overrides it.")
@click.option("--print-config", is_flag=True, help="Print the resolved configuration as TOML and exit without running.")
@model_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Posterior NetCDF path [default: beside the input, <input>.<model>.<method>.nc].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--layer", help="AnnData layer with the raw counts [default: X].")
@click.option("--genes", type=click.Path(path_type=Path), help="Keep only the genes listed in this file (one name per line).")
@click.option("--min-cells", type=int, default=0, show_default=True, help="Keep genes detected in at least N cells.")
@click.option("--top-genes", type=int, help="Keep the N genes with the most UMIs (after the other filters).")
@click.option("--min-counts", type=int, default=0, show_default=True, help="Keep cells with at least N UMIs.")
@click.option("--stan-file", type=click.Path(path_type=Path), help="Run this (edited) Stan program instead of rendering one; same data.")
@click.option("--method", type=click.Choice(METHODS), default="nuts", show_default=True,
              help="nuts (MCMC, default); pathfinder, advi, advi-fullrank, laplace (approximations: check Pareto k); "
                   "optimize (posterior mode only). advi-fullrank is refused above 1,000 parameters (n x n covariance).")
@click.option("--chains", type=int, default=4, show_default=True, help="MCMC chains (pathfinder: number of paths).")
@click.option("--parallel-chains", type=int, help="Chains run at once [default: all].")
@click.option("--threads-per-chain", type=int,
              help="Threads per chain for reduce_sum likelihoods [default: 1 for nuts and pathfinder, whose chains and "
                   "paths fill the cores; every available core for advi, optimize and laplace, which run one process].")
@click.option("--warmup", type=int, default=1000, show_default=True, help="NUTS warmup iterations per chain.")
@click.option("--draws", type=int, default=1000, show_default=True, help="Draws per chain (approximate draws for pathfinder/ADVI/laplace).")
@click.option("--seed", type=int, help="Random seed [default: random, recorded in the output and in --print-config].")
@click.option("--init", default="random", show_default=True,
              help="NUTS starting points: random (Stan's random inits), pathfinder (draws of a pathfinder run, one "
                   "path per chain), or FILE.json (starting values in Stan's JSON format, any subset of the "
                   "parameters, the rest random; e.g. a mixture's mu per gene and component from a clustering).")
@click.option("--adapt-delta", type=float, default=0.8, show_default=True, help="NUTS target acceptance rate.")
@click.option("--max-treedepth", type=int, default=10, show_default=True, help="NUTS maximum tree depth.")
@click.option("--float32", is_flag=True, help="Store cell-level arrays as float32 (halves large outputs).")
@click.option("--log-lik", is_flag=True,
              help="Add a log_likelihood group: log_lik per cell and draw (computed in Stan), for arviz.loo. Its "
                   "generated quantity is a program of its own, compiled once per configuration.")
@click.option("--prior-draws", type=int, default=0, show_default=True,
              help="Add a prior group: N NUTS draws per chain of the prior (the same compiled program, its likelihood "
                   "switched off by data); 0 = off.")
@click.option("--ppc-draws", type=int, default=0, show_default=True,
              help="Add posterior_predictive (replicated per-gene mean, variance, zero fraction at N draws per chain, "
                   "evenly thinned) and observed_data groups; 0 = off.")
@click.option("--format", "output_format", type=click.Choice(["json", "table"]), default="json", show_default=True,
              help="Stdout: one JSON object, or a human-readable table.")
@click.option("--strict", is_flag=True, help="Exit 3 when convergence diagnostics fail.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr; no progress bars.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs, including cmdstanpy's command lines.")
def run(print_config, **kw):
    """Fit a count model to DATA and write the posterior as ArviZ NetCDF.

    DATA is an AnnData .h5ad (X or --layer), a 10x Genomics matrix directory or a 10x .h5 file,
    with raw UMI counts. Prints one JSON object on stdout: output path, method, seed, wall times per
    stage and convergence diagnostics. Progress and logs go to stderr.
    """
    run_kw = {k: kw.pop(k) for k in _RUN_KEYS}
    model_kw = kw
    _setup_logging(run_kw["quiet"], run_kw["verbose"])
    interrupted = _watch_sigint()
    try:
        if run_kw["seed"] is None:
            run_kw["seed"] = random.SystemRandom().randrange(2**31)
        config = _model_config(**model_kw)
        if print_config:
            click.echo(_config_toml({**run_kw, **model_kw}), nl=False)
            return
        result = _run(config, **run_kw)
    except (ScribeError, KeyboardInterrupt) as exc:
        # Ctrl-C reaches the Stan processes too; cmdstanpy may then report their death as a failed run
        # rather than re-raise the interrupt, so the flag decides.
        if interrupted or isinstance(exc, KeyboardInterrupt):
            import signal

            terminated = signal.SIGTERM in interrupted
            click.echo(f"scribe: {'terminated' if terminated else 'interrupted'}; no output written", err=True)
            sys.exit(143 if terminated else 130)
        _fail(exc)
    _print_result(result.summary(), run_kw["output_format"])
    diag = result.diagnostics
    for problem in diag.get("problems", []):
        log.warning("diagnostics: %s", problem)
    for tip in diag.get("advice", []):
        log.warning("what to do: %s", tip)
    if run_kw["strict"] and not diag.get("ok", True):
        _fail(DiagnosticsFailed("convergence diagnostics failed: " + "; ".join(diag["problems"])))


def _watch_sigint() -> list:
    """Record SIGINT (Ctrl-C) and SIGTERM (what schedulers such as SLURM send at a time limit), then behave
    as Python does on Ctrl-C: raise KeyboardInterrupt, so that temporary files are removed on the way out."""
    import signal

    seen: list = []

    def handler(signum, frame):
        seen.append(signum)
        # Ctrl-C in a terminal reaches the Stan processes by itself, but a scheduler's SIGTERM or a `kill -INT`
        # aimed at this process alone does not: stop them either way, or they would run on as orphans.
        _terminate_children()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return seen


def _terminate_children() -> None:
    """SIGTERM our direct child processes (the Stan executables cmdstanpy started), found through /proc:
    no process library is needed for this one Linux-only case."""
    import os
    import signal

    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = fh.read().rsplit(")", 1)[1].split()[1]
            if ppid == me:
                os.kill(int(entry), signal.SIGTERM)
        except (OSError, IndexError):
            continue


def _run(config: ModelConfig, *, input_file, output, overwrite, layer, stan_file, method, chains, parallel_chains,
         threads_per_chain, warmup, draws, seed, init, adapt_delta, max_treedepth, strict, quiet, verbose, genes,
         min_cells, top_genes, min_counts, output_format, float32, log_lik, prior_draws, ppc_draws):
    from .cache import check_user_program
    from .config import check_datasets
    from .data import read_counts, select
    from .idata import check_output_path
    from .pipeline import run as run_pipeline

    if input_file is None:
        raise UserInputError("no input data; pass DATA (an .h5ad, a 10x directory or a 10x .h5) or set input_file in --config")
    opts = RunOptions(
        method=method, chains=chains, parallel_chains=parallel_chains, threads_per_chain=threads_per_chain,
        warmup=warmup, draws=draws, seed=seed, init=init, adapt_delta=adapt_delta, max_treedepth=max_treedepth,
        show_progress=not quiet,
    ).validate()
    if prior_draws < 0 or ppc_draws < 0:
        raise UserInputError("--prior-draws and --ppc-draws must be 0 (off) or more")
    program = check_user_program(stan_file) if stan_file else None
    if output is None:
        output = input_file.with_name(f"{input_file.name.removesuffix('.h5ad').removesuffix('.h5')}.{config.model}.{method}.nc")
    check_output_path(output, overwrite)  # before reading data: fail in a second, not after a minute
    counts = read_counts(input_file, layer=layer, dataset_key=config.dataset_key)
    check_datasets(config, counts.datasets)
    counts = select(counts, genes_file=genes, min_cells=min_cells, top_genes=top_genes, min_counts=min_counts)
    log.info("data: %d cells x %d genes (%d non-zero) from %s", counts.n_cells, counts.n_genes, counts.X.nnz, input_file)
    if counts.dataset_key is not None:
        log.info("datasets (obs['%s']): %s", counts.dataset_key,
                 ", ".join(f"{d} {n} cells" for d, n in counts.cells_per_dataset().items()))
    silent = silent_gene_advice(counts, config)
    if silent:
        log.warning(silent)
    return run_pipeline(counts, config, opts, output, overwrite=overwrite, program=program, float32=float32,
                        command_line=shlex.join(["scribe"] + sys.argv[1:]), log_lik=log_lik,
                        prior_draws=prior_draws, ppc_draws=ppc_draws)


def _config_toml(values: dict) -> str:
    import tomli_w

    clean = {}
    for k, v in values.items():
        if v is None or k in ("quiet", "verbose"):
            continue
        clean[k] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
    return tomli_w.dumps(clean)


def _print_result(summary: dict, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(summary))
        return
    rows = [("output", summary["output"]), ("method", summary["method"]), ("seed", summary["seed"]),
            ("compiled model", "cached" if summary["cached_model"] else "compiled")]
    rows += [(f"time {k} (s)", v) for k, v in summary["timings"].items()]
    rows += [(k, v) for k, v in summary["diagnostics"].items() if k not in ("problems", "advice")]
    rows += [("what to do", tip) for tip in summary["diagnostics"].get("advice", [])]
    for t, sh in summary.get("shrinkage", {}).items():
        rows.append((f"shrinkage {t}", f"{sh['scale']} = {sh['mean']:.3g} [{sh['q05']:.3g}, {sh['q95']:.3g}]: {sh['reading']}"))
        rows += [(f"shrinkage {t} [{d}]", f"{sh['per_dataset_scale']} = {v['mean']:.3g} [{v['q05']:.3g}, {v['q95']:.3g}]: "
                  f"{v['reading']}") for d, v in sh.get("per_dataset", {}).items()]
    width = max(len(str(k)) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{str(k).ljust(width)}  {v:.4g}" if isinstance(v, float) else f"{str(k).ljust(width)}  {v}")


@main.command()
@click.argument("posterior", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "tsv", "json"]), default="text", show_default=True,
              help="text for people, tsv (parameter table only) or json for programs.")
@click.option("--var", "var_names", multiple=True, help="Variables to tabulate (repeatable) [default: all].")
def summary(posterior, fmt, var_names):
    """Parameter table, convergence verdict and configuration of a posterior written by `scribe run`."""
    from .reports.summary import load_posterior, summarize

    try:
        report = summarize(load_posterior(posterior), list(var_names) or None)
    except ScribeError as exc:
        _fail(exc)
    table = report.pop("parameters")
    if fmt == "tsv":
        click.echo(table.to_csv(sep="\t", index_label="parameter"), nl=False)
    elif fmt == "json":
        report["parameters"] = json.loads(table.to_json(orient="index"))
        click.echo(json.dumps(report, default=str))
    else:
        diag = report["diagnostics"]
        verdict = "ok" if diag["ok"] else "PROBLEMS: " + "; ".join(diag["problems"])
        click.echo(f"method {report['method']}, seed {report['seed']}, dims {report['dims']}")
        if report.get("dataset_key"):
            cells = report.get("cells_per_dataset") or {}
            click.echo(f"datasets (obs['{report['dataset_key']}']): " + ", ".join(f"{d} ({n} cells)" for d, n in cells.items()))
        click.echo(f"diagnostics: {verdict}")
        click.echo(", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                             for k, v in diag.items() if k not in ("ok", "problems", "advice")))
        for tip in diag.get("advice", []):
            click.echo(f"what to do: {tip}")
        for target, sh in report["shrinkage"].items():
            click.echo(f"shrinkage {target} ({sh['family']}): {sh['scale']} = {sh['mean']:.3g} "
                       f"[{sh['q05']:.3g}, {sh['q95']:.3g}]; {sh['reading']}")
            for d, v in sh.get("per_dataset", {}).items():
                click.echo(f"  dataset {d}: {sh['per_dataset_scale']} = {v['mean']:.3g} "
                           f"[{v['q05']:.3g}, {v['q95']:.3g}]; {v['reading']}")
        click.echo(table.to_string(max_rows=40))
        if len(table) > 40:
            click.echo(f"({len(table)} rows; --format tsv lists them all)")


@main.command()
@click.argument("posterior", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--layer", help="AnnData layer with the raw counts [default: the layer the fit used].")
@click.option("-o", "--output-prefix", type=click.Path(path_type=Path),
              help="Write PREFIX.png and PREFIX.tsv [default: beside the posterior, <posterior>.ppc].")
@click.option("--draws", "n_draws", type=int, default=100, show_default=True, help="Posterior draws to replicate the data from.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the replicates.")
@click.option("--biological", is_flag=True,
              help="Also check replicates of the biological distribution alone (no capture, no zero inflation): "
                   "writes PREFIX.biological.png and .tsv next to the full-model check.")
def ppc(posterior, data, layer, output_prefix, n_draws, seed, biological):
    """Posterior predictive checks per gene: mean, variance and fraction of zeros, observed vs replicated.

    Writes a figure (PNG) and a per-gene table (TSV); prints a JSON object with the paths and the fraction
    of genes whose observed statistic lies inside the 90% predictive interval. For a fit with --dataset-key
    the data are read with the same key, and the JSON also gives that fraction over each dataset's cells
    (coverage_90_by_dataset). With --biological, the replicates of the biological NB alone (capture and zero
    inflation stripped; mixture components, datasets and BNB tails kept) are compared with the observed data
    too: the JSON's "biological" entry gives their figure, table and coverage.
    """
    from .fit_data import fit_counts
    from .reports import ppc as ppc_mod
    from .reports.summary import load_posterior, run_attrs

    try:
        idata = load_posterior(posterior)
        attrs = run_attrs(idata)
        counts, notes = fit_counts(idata, data, layer)
        for note in notes:
            click.echo(f"scribe: warning: {note}", err=True)
        if n_draws < 1:
            raise UserInputError("--draws must be at least 1")
        prefix = output_prefix or posterior.with_suffix(".ppc")
        png, tsv = Path(f"{prefix}.png"), Path(f"{prefix}.tsv")
        from .idata import check_output_path

        check_output_path(png, overwrite=True)
        rep = ppc_mod.replicate_stats(idata.posterior, counts, n_draws=n_draws, seed=seed)
        table = ppc_mod.ppc_table(ppc_mod.observed_stats(counts), rep)
        by_dataset = ppc_mod.coverage_by_dataset(counts, rep) if counts.dataset_key is not None else None
        bio = None
        if biological:
            bio_png, bio_tsv = Path(f"{prefix}.biological.png"), Path(f"{prefix}.biological.tsv")
            rep_bio = ppc_mod.replicate_stats(idata.posterior, counts, n_draws=n_draws, seed=seed, by_dataset=False,
                                              biological_only=True)
            bio_table = ppc_mod.ppc_table(ppc_mod.observed_stats(counts), rep_bio)
            bio = {"figure": str(bio_png), "table": str(bio_tsv), "coverage_90": ppc_mod.coverage(bio_table)}
        atomic_write(tsv, lambda p: table.to_csv(p, sep="\t", index_label="gene"))
        atomic_write(png, lambda p: ppc_mod.plot(table, p, title=f"{posterior.name}: posterior predictive checks ({attrs.get('method', '')})"))
        if bio is not None:
            atomic_write(bio_tsv, lambda p: bio_table.to_csv(p, sep="\t", index_label="gene"))
            atomic_write(bio_png, lambda p: ppc_mod.plot(bio_table, p, title=f"{posterior.name}: biological replicates "
                                                         "(no capture, no zero inflation) against the observed counts"))
    except ScribeError as exc:
        _fail(exc)
    report = {"figure": str(png), "table": str(tsv),
              "draws": int(min(n_draws, idata.posterior.sizes['chain'] * idata.posterior.sizes['draw'])),
              "coverage_90": ppc_mod.coverage(table)}
    if by_dataset is not None:
        report["dataset_key"] = counts.dataset_key
        report["coverage_90_by_dataset"] = by_dataset
    if bio is not None:
        report["biological"] = bio
    click.echo(json.dumps(report))


@main.command()
@click.option("--build", is_flag=True, help="Build the toolchain if it is missing.")
def doctor(build):
    """Check the Stan toolchain; print its path, the cache dir and how many compiled models it holds."""
    from .cache import count_cached_models
    from .toolchain import arch, cache_dir, ensure_toolchain, stanc_version, toolchain_id, user_cmdstan

    try:
        path = ensure_toolchain(build=build)
    except ScribeError as exc:
        _fail(exc)
    report = {
        "toolchain": str(path),
        "toolchain_id": toolchain_id(),
        "stanc": stanc_version(path),
        # what every object and model of the embedded toolchain is compiled with (README: the Stan toolchain)
        "cpu_flags": None if user_cmdstan() else arch()[1],
        "cache_dir": str(cache_dir()),
        "compiled_models": count_cached_models(),
    }
    click.echo(json.dumps(report, indent=2))


from .cli_de import de  # noqa: E402  (its own module: the command is long; registered here)

main.add_command(de)

from .cli_anndata import denoise, export  # noqa: E402  (results back into AnnData: docs/denoise.md)
from .cli_compare import compare  # noqa: E402
from .cli_sweep import sweep  # noqa: E402

main.add_command(denoise)
main.add_command(export)
main.add_command(compare)
main.add_command(sweep)


if __name__ == "__main__":
    main()
