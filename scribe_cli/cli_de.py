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
    return sibling(output, ".meta.json")


def sibling(output: Path, suffix: str) -> Path:
    """A file beside the DE table: out.tsv -> out<suffix> (.meta.json, .png, .sets.tsv)."""
    return output.with_name(output.name.removesuffix(".tsv") + suffix)


EFFECT_HELP = ("Effect that `called` and the sort use (every effect's columns are written). "
               "lfc = log(mu_A / mu_B), the change of the gene's mean count per cell (the default: the best power "
               "at the promised error rate in every benchmark grouping, docs/de.md; any depth difference between "
               "the groups shifts every gene); "
               "clr-mu = CLR(mu_A) - CLR(mu_B), the change of the gene's share of the population's expected "
               "expression (depth-free: use it when the groups differ in sequencing depth, e.g. separate fits of "
               "different batches; a note is printed when the CLR centre, the mean LFC over genes, passes tau / 2, "
               "since unchanged genes can then be called); "
               "lvr = log variance ratio, Var = mu + mu^2 / r (a change of noise); "
               "clr-draws = CLR difference of compositions drawn with Gamma(r) noise (do two random cells differ; "
               "the same centre note).")


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
@click.option("--effect", type=click.Choice(["lfc", "clr-mu", "lvr", "clr-draws"]), default="lfc",
              show_default=True, help=EFFECT_HELP)
@click.option("--shrink", type=click.Choice(["npmle", "ash", "none"]), default="npmle", show_default=True,
              help="Empirical-Bayes shrinkage of every effect across genes, fitted to all genes' posterior means and "
                   "sds: it learns how many genes do not change, which keeps the calls at the promised error rate. "
                   "npmle: any distribution of effects (point masses on a grid); ash: adaptive shrinkage, unimodal "
                   "at zero (overshoots the target when real changes are all large, docs/de.md); none: each gene's "
                   "own posterior (calls then far exceed the target when most genes do not change).")
@click.option("--min-mean", type=float, default=0.0, show_default=True,
              help="Expression mask: genes whose posterior mean expression (mu_A + mu_B) / 2, in counts per cell, is "
                   "below this are reported (masked = True) but never called.")
@click.option("--gene-sets", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.gmt",
              help="Gene sets (GMT: name, description, genes; tab-separated): per set, the posterior of the mean "
                   "effect over its genes, lfsr and PEFP calls across sets, written to <table>.sets.tsv.")
@click.option("--no-plot", is_flag=True, help="Skip the volcano and MA plots (<table>.png).")
@click.option("--ci", type=float, default=0.90, show_default=True, help="Probability of the equal-tailed credible interval.")
@click.option("--tau", type=float, help="Practical-significance threshold on the effect (all effects are on the log scale) "
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
def de(posteriors, components, datasets, pair_weights, effect, shrink, min_mean, gene_sets, no_plot, ci, tau, target, samples_per_draw, seed, output, overwrite):
    """Differential expression between two groups from posterior draws.

    \b
    scribe de POST.nc --components 0 2            two components of one mixture fit
    scribe de POST.nc --datasets celseq2 dropseq  two datasets of one joint fit
    scribe de A.nc B.nc                           two separate fits (draws paired by index)

    Per gene and for each effect (see --effect): posterior mean, sd, credible interval, P(> 0), lfsr,
    lfsr_tau = 1 - P(|effect| > tau), and calls controlling the posterior expected false discovery proportion
    at --target; `called` and the order follow --effect. Writes a TSV table, a JSON metadata sidecar and a
    PNG (volcano and MA plots); prints one JSON object (paths, genes called, top genes). docs/de.md says
    which effect to use when.
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
        plot_path = None if no_plot else sibling(output, ".png")
        sets_path = sibling(output, ".sets.tsv") if gene_sets else None
        sets = de_mod.read_gmt(gene_sets) if gene_sets else None
        from .idata import check_output_path

        for path in (p for p in (output, meta_path, plot_path, sets_path) if p is not None):  # before the work: fail in a second, and write nothing
            check_output_path(path, overwrite)
        notes = list(comp.notes)
        if comp.n_draws * samples_per_draw < 100:
            notes.append(f"only {comp.n_draws * samples_per_draw} effect draws: the probabilities are coarse "
                         "(a posterior from NUTS or pathfinder with more draws, or --samples-per-draw, refines them)")
        result = de_mod.run_de(comp, effect=effect, ci=ci, tau=tau, target=target, samples_per_draw=samples_per_draw,
                               seed=seed, shrink=shrink, min_mean=min_mean, gene_sets=sets)
        notes += result.notes
        for note in notes:
            _warn(note)
        table = result.table
        summ = de_mod.summary(table, effect)
        meta = {
            "comparison": {"kind": comp.kind, "a": comp.label_a, "b": comp.label_b,
                           "pairs": [[ga.label, gb.label] for ga, gb in comp.pairs],
                           "pair_weights": [float(w) for w in comp.weights],
                           "effect": effect, "effect_meaning": de_mod.EFFECTS[effect][1] + "; positive = higher in A"},
            "shrink": shrink, "min_mean": min_mean, "n_masked": summ["masked"],
            "gene_sets": str(gene_sets) if gene_sets else None, "sets_table": str(sets_path) if sets_path else None,
            "n_sets_called": int(result.sets["called"].sum()) if result.sets is not None else None,
            "plot": str(plot_path) if plot_path else None,
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
        writers = [(output, lambda p: table.to_csv(p, sep="\t", index=False, float_format="%.6g"))]
        if sets_path:
            writers.append((sets_path, lambda p: result.sets.to_csv(p, sep="\t", index=False, float_format="%.6g")))
        if plot_path:
            from .reports import de_plots

            title = f"{comp.label_a} vs {comp.label_b}: {effect}, {summ['called']} called at PEFP {target}"
            writers.append((plot_path, lambda p: de_plots.plot(table, effect, p, comp.n_draws * samples_per_draw, title)))
        writers.append((meta_path, lambda p: Path(p).write_text(json.dumps(meta, indent=2) + "\n")))  # last: complete
        written = []
        try:
            for path, write in writers:
                atomic_write(path, write)
                written.append(path)
        except BaseException:
            for path in written:  # a table without its metadata (or plot) is a partial output
                path.unlink(missing_ok=True)
            raise
    except ScribeError as exc:
        _fail(exc)
    click.echo(json.dumps({"table": str(output), "metadata": str(meta_path), "plot": meta["plot"],
                           "sets": meta["sets_table"], "n_sets_called": meta["n_sets_called"], "comparison": meta["comparison"]["kind"],
                           "a": comp.label_a, "b": comp.label_b, "draws": comp.n_draws, **summ}))
