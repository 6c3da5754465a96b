"""`scribe sweep`: run a grid of `scribe run` configurations over inputs on Dask (scribe_cli.sweep).

Registered on the main group by cli.py (``main.add_command(sweep)``).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from .cli_de import _fail
from .errors import ScribeError, UserInputError


@click.command()
@click.argument("grid", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, metavar="DATA [DATA ...]", type=click.Path(path_type=Path))
@click.option("--cluster", type=click.Choice(["local", "slurm", "pbs", "sge"]), default="local", show_default=True,
              help="local: a dask.distributed LocalCluster on this machine; slurm / pbs / sge: batch jobs through "
                   "dask-jobqueue, configured by the grid's [cluster] table.")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the posteriors, their .json results and the index go [default: [sweep] output_dir, else "
                   "<grid name> beside the grid file].")
@click.option("--workers", type=int, help="Local worker processes [default: cores // --threads-per-chain]; with a "
              "batch cluster and no [cluster] jobs: the number of jobs.")
@click.option("--threads-per-chain", type=int, help="Sizes the local workers; also passed to every fit unless the grid "
              "sets threads_per_chain.")
@click.option("--retries", type=int, help="Times a failed or killed fit is retried [default: [sweep] retries, else 2].")
@click.option("--dry-run", is_flag=True, help="List the fits (and print a batch cluster's job script) without running.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def sweep(grid, inputs, cluster, output_dir, workers, threads_per_chain, retries, dry_run, quiet):
    """Fit every configuration of GRID (TOML) to every DATA file, as Dask tasks.

    \b
    GRID: top-level keys are `scribe run` options (underscores); a list means alternatives:
      model = ["nbdm", "zinb"]
      parameterization = "mean-disp"
      method = "nuts"
      seed = [1, 2]
      log_lik = true
      [sweep]     output_dir = "fits", retries = 2, workers = 2
      [cluster]   dask-jobqueue settings, e.g. cores = 4, memory = "8GB", walltime = "02:00:00", jobs = 8

    Each distinct Stan program is compiled once before the fits start. A fit killed mid-run is retried and never
    leaves a partial posterior; a sweep started again skips finished fits (same options and input SHA-256).
    Progress goes to stderr; at the end index.tsv / index.json (options, input, output, diagnostics verdict,
    timings) and, for inputs with several --log-lik fits, the `scribe compare` table. Stdout: one JSON object.
    """
    from . import sweep as sw
    from .cli import _setup_logging, _watch_sigint

    _setup_logging(quiet, False)
    import distributed  # noqa: F401  (configures its loggers on import: quieten them after that)

    for name in ("distributed", "tornado", "dask_jobqueue"):
        logging.getLogger(name).setLevel(logging.ERROR)  # worker restarts are reported by our own progress lines
    interrupted = _watch_sigint()
    client = cl = None
    try:
        table, cluster_settings, settings = sw.read_grid(grid)
        if threads_per_chain is not None and "threads_per_chain" not in table:
            table["threads_per_chain"] = threads_per_chain
        tasks = sw.expand(table, list(inputs))
        output_dir = output_dir or Path(settings.get("output_dir", grid.with_suffix("")))
        if output_dir.exists() and not output_dir.is_dir():
            raise UserInputError(f"{output_dir} is a file; pass another --output-dir")
        retries = retries if retries is not None else int(settings.get("retries", 2))
        workers = workers or settings.get("workers")
        if retries < 0 or (workers is not None and workers < 1):
            raise UserInputError("--retries must be 0 or more and --workers at least 1")
        output_dir.mkdir(parents=True, exist_ok=True)
        sw.assign_outputs(tasks, output_dir)
        pending = [t for t in tasks if not t.skipped]
        _progress = (lambda s: None) if quiet else (lambda s: click.echo(f"scribe: {s}", err=True))
        _progress(f"sweep: {len(tasks)} fits ({len(tasks) - len(pending)} already finished, skipped) in {output_dir}")
        threads = max(int(t.options["threads_per_chain"]) for t in tasks)
        if dry_run:
            report = {"fits": [{"input": str(t.input), "output": str(t.output), "skipped": t.skipped, "config": t.varied}
                               for t in tasks]}
            if cluster != "local":
                cl = sw.make_cluster(cluster, cluster_settings, workers, threads, scale=False)
                report["job_script"] = cl.job_script()
            click.echo(json.dumps(report, default=str))
            return
        if pending:
            n_programs = sw.compile_programs(pending)
            _progress(f"sweep: {n_programs} distinct program(s) ready; starting a {cluster} cluster")
            from dask.distributed import Client

            cl = sw.make_cluster(cluster, cluster_settings, workers, threads)
            client = Client(cl)
            sw.run_tasks(tasks, client, retries, _progress, claim_cores=cluster != "local" and "cores" in cluster_settings)
        rows = sw.index_rows(tasks)
        tsv, js = sw.write_index(rows, output_dir)
        comparisons = sw.compare_groups(tasks, output_dir)
    except (ScribeError, KeyboardInterrupt) as exc:
        if interrupted or isinstance(exc, KeyboardInterrupt):
            click.echo("scribe: sweep interrupted; finished fits are kept and skipped when the sweep is started again",
                       err=True)
            _close(client, cl)
            sys.exit(143 if __import__("signal").SIGTERM in interrupted else 130)
        _close(client, cl)
        _fail(exc)
    _close(client, cl)
    n_ok = sum(r["status"] == "ok" for r in rows)
    click.echo(json.dumps({"index": str(tsv), "index_json": str(js), "fits": len(rows), "ok": n_ok,
                           "skipped": sum(r["skipped"] for r in rows), "failed": len(rows) - n_ok,
                           "comparisons": comparisons}, default=str))
    if n_ok < len(rows):
        sys.exit(1)


def _close(client, cluster) -> None:
    for thing in (client, cluster):
        if thing is not None:
            try:
                thing.close()
            except Exception:  # noqa: BLE001 - shutting down after an error or Ctrl-C: nothing more to do
                pass
