"""`scribe compare`: model comparison of fits of the same data (PSIS-LOO, WAIC, stacking; per gene with --by gene).

Registered on the main group by cli.py (``main.add_command(compare)``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from .cli_de import _fail  # the one-line `scribe: error:` exit (cli.py imports this module, so not from there)
from .errors import ScribeError, UserInputError


@click.command()
@click.argument("posteriors", nargs=-1, required=True, metavar="A.nc B.nc [C.nc ...]", type=click.Path(path_type=Path))
@click.option("--by", type=click.Choice(["fit", "gene"]), default="fit", show_default=True,
              help="fit: LOO/WAIC table of all fits; gene: per-gene elpd differences between two fits (A - B).")
@click.option("--data", type=click.Path(path_type=Path),
              help="The data the fits used [default: their input_file attribute]; needed for --by gene and for fits "
                   "written without --log-lik. Its SHA-256 must match the fits'.")
@click.option("--draws", "n_draws", type=int, default=400, show_default=True,
              help="--by gene: posterior draws per fit (evenly spread) for the pointwise terms; the cost is linear in it.")
@click.option("--top", type=int, default=10, show_default=True, help="--by gene: genes listed on stdout for each fit.")
@click.option("-o", "--output-prefix", type=click.Path(path_type=Path),
              help="Write PREFIX.tsv (and PREFIX.png with --by gene) [default: beside the first posterior, "
                   "<A>.compare (fit) or <A>.vs_<B>.genes (gene)].")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def compare(posteriors, by, data, n_draws, top, output_prefix, overwrite):
    """Compare fits of the same data: PSIS-LOO and WAIC (ArviZ), elpd differences with SE, stacking weights.

    \b
    scribe compare a.nc b.nc c.nc           table over fits (a cell is the unit left out)
    scribe compare a.nc b.nc --by gene      per gene: elpd(A) - elpd(B), SE over cells, z-score, plot

    Per-cell log likelihoods come from each fit's log_likelihood group (`scribe run --log-lik`, computed in
    Stan) or, without it, from the same formulas in numpy on the data. Pareto k diagnostics say which fits'
    LOO estimates are unreliable and what to do. Fits of different data (input SHA-256, layer, selection) are
    refused. Prints one JSON object; writes a TSV table (and a PNG with --by gene).
    """
    from .atomic import atomic_write
    from .idata import check_output_path
    from .reports import compare as cmp

    try:
        if len(posteriors) < 2:
            raise UserInputError("one posterior given; pass two or more fits of the same data to compare")
        if by == "gene" and len(posteriors) != 2:
            raise UserInputError(f"--by gene compares two fits, {len(posteriors)} given; pass A.nc B.nc")
        if n_draws < 2 or top < 0:
            raise UserInputError("--draws must be at least 2 and --top at least 0")
        fits = cmp.load_fits(list(posteriors))
        cmp.check_same_data(fits)
        first = fits[0].path
        if by == "fit":
            prefix = output_prefix or first.with_name(first.name.removesuffix(".nc") + ".compare")
        else:
            prefix = output_prefix or first.with_name(f"{fits[0].label}.vs_{fits[1].label}.genes")
        tsv, png = Path(f"{prefix}.tsv"), Path(f"{prefix}.png")
        for path in (tsv, png) if by == "gene" else (tsv,):
            check_output_path(path, overwrite)
        cache: dict = {}

        def counts_of():
            if "counts" not in cache:
                cache["counts"] = cmp.fit_counts(fits[0], data)
            return cache["counts"]

        if by == "fit":
            sources = {f.label: cmp.ensure_log_likelihood(f, counts_of) for f in fits}
            res = cmp.compare_fits(fits)
            table = res["table"]
            atomic_write(tsv, lambda p: table.drop(columns=["warning", "scale"], errors="ignore")
                         .to_csv(p, sep="\t", float_format="%.6g"))
            for label, f in res["fits"].items():
                if "advice" in f["pareto_k"]:
                    click.echo(f"scribe: warning: {label}: {f['pareto_k']['advice']}", err=True)
            report = {"table": str(tsv), "ic": "loo", "weights": "stacking", "log_lik_from": sources,
                      "comparison": cmp.table_records(table), "fits": res["fits"]}
        else:
            counts = counts_of()
            table = cmp.gene_table(fits[0], fits[1], counts, n_draws)
            atomic_write(tsv, lambda p: table.to_csv(p, sep="\t", float_format="%.6g"))
            try:
                atomic_write(png, lambda p: cmp.plot_genes(table, p, fits[0].label, fits[1].label))
            except BaseException:
                tsv.unlink(missing_ok=True)  # a table without its figure is a partial output
                raise
            tops = cmp.top_genes(table, top)
            report = {"table": str(tsv), "figure": str(png), "a": fits[0].label, "b": fits[1].label,
                      "criterion": "WAIC per (cell, gene); SE over cells", "draws_per_fit": n_draws,
                      "n_genes": int(len(table)), "elpd_diff_total": float(table.elpd_diff.sum()),
                      "favour_a": int((table.z > 2).sum()), "favour_b": int((table.z < -2).sum()),
                      "top_a": tops["a"], "top_b": tops["b"]}
    except ScribeError as exc:
        _fail(exc)
    click.echo(json.dumps(report, default=float))
