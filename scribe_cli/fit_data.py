"""A posterior and the data it was fitted to, read back together (`scribe ppc`, `denoise`, `export`).

The posterior's attrs say how the fit read its data (layer, dataset key, selection) and which file it was
(SHA-256). The data are read the same way and checked against the posterior: same genes in the same order,
same cells (by name where the posterior has a cell coordinate, else by number), same datasets. A file whose
bytes differ from the fitted one but whose genes and cells match is accepted with a note (e.g. the same
counts saved again with more obs columns).
"""

from __future__ import annotations

from pathlib import Path

import arviz as az

from .data import Counts, read_counts, select
from .errors import UserInputError
from .reports.summary import run_attrs

PASS_FIT_DATA = "pass the data file (and layer) the fit used"


def fit_counts(idata: az.InferenceData, data: Path, layer: str | None = None) -> tuple[Counts, list[str]]:
    """The fitted cells x genes of ``data`` (the fit's layer, dataset key and selection), and notes for the user."""
    attrs = run_attrs(idata)
    post = idata.posterior
    if layer is None and attrs.get("input_layer", "X") != "X":
        layer = attrs["input_layer"]
    config = attrs.get("config") if isinstance(attrs.get("config"), dict) else {}
    dataset_key = attrs.get("dataset_key") or config.get("dataset_key")
    counts = read_counts(data, layer=layer, dataset_key=dataset_key)  # the fit's cell -> dataset map
    sel = attrs.get("selection") or {}
    counts = select(counts, genes_file=sel.get("genes_file"), min_cells=sel.get("min_cells", 0),
                    top_genes=sel.get("top_genes"), min_counts=sel.get("min_counts", 0))
    genes = [str(g) for g in post.coords["gene"].values] if "gene" in post.coords else None
    if genes is not None and genes != counts.genes:
        raise UserInputError(f"the data's genes differ from the posterior's ({counts.n_genes} vs {len(genes)} after the "
                             f"fit's selection); {PASS_FIT_DATA}")
    if "cell" in post.coords:
        cells = [str(c) for c in post.coords["cell"].values]
        if cells != counts.cells:
            raise UserInputError(f"the data's cells differ from the posterior's ({counts.n_cells} vs {len(cells)} after "
                                 f"the fit's selection); {PASS_FIT_DATA}")
    elif attrs.get("n_cells") is not None and int(attrs["n_cells"]) != counts.n_cells:
        raise UserInputError(f"the data have {counts.n_cells} cells after the fit's selection, the posterior "
                             f"{int(attrs['n_cells'])}; {PASS_FIT_DATA}")
    if dataset_key is not None:
        fitted = attrs.get("datasets") or ([str(v) for v in post.coords["dataset"].values]
                                           if "dataset" in post.coords else None)
        if fitted is not None and list(fitted) != counts.datasets:
            raise UserInputError(f"obs['{dataset_key}'] of the data has datasets {counts.datasets}, the posterior "
                                 f"{list(fitted)}; {PASS_FIT_DATA}")
    notes = []
    if attrs.get("input_sha256") and counts.sha256 and attrs["input_sha256"] != counts.sha256:
        notes.append(f"{Path(data).name} is not byte-for-byte the file the fit read (SHA-256 differs) but has its "
                     "genes and cells; make sure it holds the same counts")
    return counts, notes


def require_draws(idata: az.InferenceData, what: str) -> None:
    """Refuse a posterior without draws (``--method optimize`` keeps the mode only)."""
    method = run_attrs(idata).get("method", "")
    n = idata.posterior.sizes.get("chain", 1) * idata.posterior.sizes.get("draw", 1)
    if method == "optimize" or n < 2:
        raise UserInputError(f"the posterior holds {n} draw ({method or 'unknown method'}: the mode only); {what} needs "
                             "posterior draws: refit with --method nuts (or pathfinder, advi, laplace)")
