"""`scribe de`: differential expression between two groups from posterior draws (spec: de.md).

Registered on the main group by cli.py (``main.add_command(de)``); usable on its own too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .data import file_sha256
from .errors import ScribeError, UserInputError


def _fail(exc: ScribeError) -> None:
    # Same message and exit code as cli._fail (not imported: cli.py imports this module).
    click.echo(f"scribe: error: {exc}", err=True)
    sys.exit(exc.exit_code)


def _warn(text: str) -> None:
    click.echo(f"scribe: warning: {text}", err=True)


def _split(values: tuple[str, str] | None) -> tuple[list[str], list[str]] | None:
    if not values:
        return None
    a, b = values
    return [x.strip() for x in a.split(",") if x.strip()], [x.strip() for x in b.split(",") if x.strip()]


def _default_output(posteriors: list[Path], label_a: str, label_b: str) -> Path:
    from .reports.de import safe_label

    first = posteriors[0]
    stem = first.name.removesuffix(".nc")
    if len(posteriors) == 2:
        other = posteriors[1].name.removesuffix(".nc")
        return first.with_name(f"{stem}.de.vs_{safe_label(other)}.tsv")
    return first.with_name(f"{stem}.de.{safe_label(label_a)}_vs_{safe_label(label_b)}.tsv")


def metadata_path(output: Path) -> Path:
    """The sidecar JSON beside a DE table: out.tsv -> out.meta.json."""
    return output.with_name(output.name.removesuffix(".tsv") + ".meta.json")


@click.command()
@click.argument("posteriors", nargs=-1, required=True, metavar="POSTERIOR [POSTERIOR_B]", type=click.Path(path_type=Path))
@click.option("--components", nargs=2, metavar="A B",
              help="Compare two components of one mixture fit (labels of the component coords, e.g. 0 2). "
                   "Comma lists (0,1 2,3) pair components in order and average the paired effects.")
@click.option("--datasets", nargs=2, metavar="A B",
              help="Compare two datasets of one joint fit (--dataset-key), e.g. celseq2 dropseq. Several grouping levels: "
                   "comma lists pair datasets in order (d1_ctrl,d2_ctrl d1_trt,d2_trt); the within-pair effects are "
                   "averaged at each draw.")
@click.option("--pair-weights", type=click.Choice(["uniform", "cells"]), default="uniform", show_default=True,
              help="Weights of the pairs when averaging several (--datasets comma lists): uniform, or by the pair's cells.")
@click.option("--ci", type=float, default=0.90, show_default=True, help="Probability of the equal-tailed credible interval.")
@click.option("--tau", type=float, help="Practical-significance threshold on the CLR difference, log scale "
              "[default: log(1.1) = 0.0953].")
@click.option("--target", type=float, default=0.05, show_default=True,
              help="Posterior expected false discovery proportion (PEFP) of the called genes.")
@click.option("--samples-per-draw", type=int, default=1, show_default=True,
              help="Compositions drawn per posterior draw (lowers the Monte Carlo error of the probabilities; time grows linearly).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the composition draws (and of any resampling).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="TSV table [default: beside the (first) posterior, <posterior>.de.<A>_vs_<B>.tsv]; metadata goes "
                   "to the same name with .meta.json.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def de(posteriors, components, datasets, pair_weights, ci, tau, target, samples_per_draw, seed, output, overwrite):
    """Differential expression between two groups from posterior draws.

    \b
    scribe de POST.nc --components 0 2            two components of one mixture fit
    scribe de POST.nc --datasets celseq2 dropseq  two datasets of one joint fit
    scribe de A.nc B.nc                           two separate fits (draws paired by index)

    Per gene: the CLR difference of compositions drawn at each posterior draw (mean, sd, credible interval,
    P(> 0), P(|effect| > tau), lfsr, lfsr_tau), the log fold change of the means and the log variance ratio;
    genes are called controlling the posterior expected false discovery proportion at --target. Writes a TSV
    table and a JSON metadata sidecar; prints one JSON object (paths, number of genes called, top genes).
    """
    from math import log

    from .reports import de as de_mod
    from .reports.summary import load_posterior, run_attrs

    if tau is None:
        tau = log(1.1)
    try:
        posteriors = list(posteriors)
        de_mod.check_settings(ci=ci, tau=tau, target=target, samples_per_draw=samples_per_draw, seed=seed)
        if len(posteriors) > 2:
            raise UserInputError(f"{len(posteriors)} posterior files given; pass one (with --components or --datasets) or two")
        if components and datasets:
            raise UserInputError("--components and --datasets both given; compare either components or datasets")
        if len(posteriors) == 2 and (components or datasets):
            raise UserInputError("--components/--datasets compare groups within one fit; with two files, "
                                 "pass only the two posteriors (scribe de A.nc B.nc)")
        if len(posteriors) == 1 and not (components or datasets):
            raise UserInputError("one posterior given: pass --components A B or --datasets A B to choose the groups, "
                                 "or two posterior files to compare two fits")
        if pair_weights == "cells" and not datasets:
            raise UserInputError("--pair-weights cells needs --datasets (cells are counted per dataset)")
        names = [str(p) for p in posteriors]
        idatas = [load_posterior(p) for p in posteriors]
        if components:
            a, b = _split(components)
            comp = de_mod.components_comparison(idatas[0].posterior, a, b, name=names[0])
        elif datasets:
            a, b = _split(datasets)
            cells = run_attrs(idatas[0]).get("cells_per_dataset")
            comp = de_mod.datasets_comparison(idatas[0].posterior, a, b, name=names[0], weights=pair_weights,
                                              cells_per_dataset=cells if isinstance(cells, dict) else None)
        else:
            comp = de_mod.fits_comparison(idatas[0].posterior, idatas[1].posterior, names[0], names[1], seed=seed)
        output = output or _default_output(posteriors, comp.label_a, comp.label_b)
        meta_path = metadata_path(output)
        from .idata import check_output_path

        for path in (output, meta_path):  # before the work: fail in a second, and write nothing
            check_output_path(path, overwrite)
        notes = list(comp.notes)
        if comp.n_draws * samples_per_draw < 100:
            notes.append(f"only {comp.n_draws * samples_per_draw} effect draws: the probabilities are coarse "
                         "(a posterior from NUTS or pathfinder with more draws, or --samples-per-draw, refines them)")
        for note in notes:
            _warn(note)
        table = de_mod.de_table(comp, ci=ci, tau=tau, target=target, samples_per_draw=samples_per_draw, seed=seed)
        summ = de_mod.summary(table)
        meta = {
            "comparison": {"kind": comp.kind, "a": comp.label_a, "b": comp.label_b,
                           "pairs": [[ga.label, gb.label] for ga, gb in comp.pairs],
                           "pair_weights": [float(w) for w in comp.weights],
                           "effect": "CLR(rho_A) - CLR(rho_B); positive = higher share in A"},
            "ci": ci, "tau": tau, "target": target, "samples_per_draw": samples_per_draw, "seed": seed,
            "n_draws": comp.n_draws, "n_draws_a": comp.n_draws_a, "n_draws_b": comp.n_draws_b,
            "n_effect_draws": comp.n_draws * samples_per_draw,
            "n_genes": comp.n_genes, "n_called": summ["called"],
            "files": [{"path": str(p.resolve()), "sha256": file_sha256(p)} for p in posteriors],
            "table": str(output), "columns": list(table.columns), "notes": notes,
        }
        from . import __version__
        from .atomic import atomic_write

        meta["scribe_version"] = __version__
        atomic_write(output, lambda p: table.to_csv(p, sep="\t", index=False, float_format="%.6g"))
        try:
            atomic_write(meta_path, lambda p: Path(p).write_text(json.dumps(meta, indent=2) + "\n"))
        except BaseException:
            output.unlink(missing_ok=True)  # a table without its metadata is a partial output
            raise
    except ScribeError as exc:
        _fail(exc)
    click.echo(json.dumps({"table": str(output), "metadata": str(meta_path), "comparison": meta["comparison"]["kind"],
                           "a": comp.label_a, "b": comp.label_b, "draws": comp.n_draws, **summ}))
