"""Reading UMI count matrices and turning them into the sufficient statistics the Stan programs use.

Counts stay sparse from disk to Stan: we never build a dense cells x genes array.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import UserInputError


@dataclass
class Counts:
    """A validated cells x genes UMI matrix (CSR, int64) with its names."""

    X: sp.csr_matrix
    genes: list[str]
    cells: list[str]
    obs: pd.DataFrame
    source: Path
    layer: str | None = None
    sha256: str = ""
    selection: dict = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        return self.X.shape[0]

    @property
    def n_genes(self) -> int:
        return self.X.shape[1]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_counts(path: str | Path, layer: str | None = None) -> Counts:
    """Read an .h5ad file's X (or ``layer``) as validated integer counts."""
    import anndata

    path = Path(path)
    if not path.exists():
        raise UserInputError(f"input file {path} does not exist; check the path")
    if path.is_dir():
        raise UserInputError(f"input {path} is a directory; pass an .h5ad file")
    try:
        adata = anndata.read_h5ad(path)
    except Exception as exc:  # anndata raises many types for a non-HDF5 / non-AnnData file
        raise UserInputError(
            f"{path} is not a readable .h5ad file ({type(exc).__name__}); pass an AnnData .h5ad file"
        ) from None
    if layer is None:
        matrix = adata.X
        where = "X"
    else:
        if layer not in adata.layers:
            known = ", ".join(adata.layers.keys()) or "none"
            raise UserInputError(f"layer '{layer}' not found in {path} (layers: {known}); pass one of them to --layer or omit it for X")
        matrix = adata.layers[layer]
        where = f"layer '{layer}'"
    if matrix is None:
        raise UserInputError(f"{path} has no X matrix; pass --layer with the layer that holds the raw counts")
    X = validate_counts(matrix, where)
    return Counts(
        X=X,
        genes=[str(g) for g in adata.var_names],
        cells=[str(c) for c in adata.obs_names],
        obs=adata.obs.copy(),
        source=path.resolve(),
        layer=layer,
        sha256=file_sha256(path),
    )


def validate_counts(matrix, where: str = "X") -> sp.csr_matrix:
    """Check that ``matrix`` holds raw UMI counts; return it as CSR int64 without densifying."""
    if sp.issparse(matrix):
        X = sp.csr_matrix(matrix)
    else:
        arr = np.asarray(matrix)
        if arr.ndim != 2:
            raise UserInputError(f"{where} is not a 2-D matrix; pass a cells x genes count matrix")
        X = sp.csr_matrix(arr)
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise UserInputError(f"{where} is empty ({X.shape[0]} cells x {X.shape[1]} genes); pass a matrix with cells and genes")
    X.eliminate_zeros()
    data = X.data
    if data.size == 0:
        raise UserInputError(f"{where} holds only zeros; pass a matrix with observed UMI counts")
    if not np.all(np.isfinite(data)):
        raise UserInputError(f"{where} contains NaN or infinite values; pass raw UMI counts")
    if data.min() < 0:
        raise UserInputError(f"{where} contains negative values (min {data.min():g}); pass raw UMI counts, not centred or scaled data")
    if np.issubdtype(data.dtype, np.floating):
        frac = data[data != np.round(data)]
        if frac.size:
            raise UserInputError(
                f"{where} contains non-integer values (e.g. {frac[0]:.4g}): it looks normalized or log-transformed; "
                "pass raw UMI counts (e.g. --layer counts)"
            )
    X = X.astype(np.int64)
    X.sort_indices()
    return X


@dataclass
class GeneCountPairs:
    """Per-gene distinct non-zero counts with multiplicities, plus per-gene totals.

    For likelihoods whose cell-level parameters are absent, a gene's data enter only through how
    many cells show each distinct count: ``pair_gene[j]`` (1-based), ``pair_count[j] > 0`` and
    ``pair_weight[j]`` cells. Zeros are implied: gene g has ``n_cells - nnz[g]`` of them.
    """

    pair_gene: np.ndarray
    pair_count: np.ndarray
    pair_weight: np.ndarray
    gene_total: np.ndarray
    gene_nnz: np.ndarray
    n_cells: int

    @property
    def n_pairs(self) -> int:
        return int(self.pair_gene.size)


def gene_count_pairs(X: sp.csr_matrix) -> GeneCountPairs:
    """Sufficient statistics of a count matrix for cell-independent likelihoods (O(nnz log nnz))."""
    coo = X.tocoo()
    genes = coo.col.astype(np.int64)
    counts = coo.data.astype(np.int64)
    span = int(counts.max()) + 1
    keys, weight = np.unique(genes * span + counts, return_counts=True)
    pair_gene = keys // span
    pair_count = keys % span
    G = X.shape[1]
    gene_total = np.bincount(genes, weights=counts, minlength=G).astype(np.int64)
    gene_nnz = np.bincount(genes, minlength=G).astype(np.int64)
    return GeneCountPairs(
        pair_gene=pair_gene + 1,
        pair_count=pair_count,
        pair_weight=weight.astype(np.int64),
        gene_total=gene_total,
        gene_nnz=gene_nnz,
        n_cells=X.shape[0],
    )
