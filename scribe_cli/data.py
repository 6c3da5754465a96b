"""Reading UMI count matrices and turning them into the sufficient statistics the Stan programs use.

Counts stay sparse from disk to Stan: we never build a dense cells x genes array.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import UserInputError


# The largest integer a Stan int holds (counts are int data in every program).
INT32_MAX = 2**31 - 1


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
    # Joint multi-dataset models (--dataset-key): the obs column, its levels (the dataset coordinate) and
    # each cell's 0-based dataset code, in row order. None / [] for a single dataset.
    dataset_key: str | None = None
    datasets: list[str] = field(default_factory=list)
    cell_dataset: np.ndarray | None = None
    # Each cell's UMI total over every input gene, taken before gene selection (the L_c of the capture prior,
    # which compares a cell's whole library with its expected mRNA content). None: the row sums of X.
    library_size: np.ndarray | None = None

    @property
    def n_cells(self) -> int:
        return self.X.shape[0]

    def cells_per_dataset(self) -> dict[str, int]:
        """dataset label -> number of cells ({} without a dataset key)."""
        if self.cell_dataset is None:
            return {}
        n = np.bincount(self.cell_dataset, minlength=len(self.datasets))
        return {d: int(k) for d, k in zip(self.datasets, n)}

    def cell_dataset_labels(self) -> np.ndarray | None:
        """Each cell's dataset label (strings, row order), or None without a dataset key."""
        if self.cell_dataset is None:
            return None
        return np.asarray(self.datasets, dtype=object)[self.cell_dataset].astype(str)

    @property
    def n_genes(self) -> int:
        return self.X.shape[1]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_counts(path: str | Path, layer: str | None = None, dataset_key: str | None = None) -> Counts:
    """Read validated integer counts from an .h5ad file (X or ``layer``), a 10x matrix directory or a 10x .h5.

    ``dataset_key``: the obs column naming each cell's dataset (see assign_datasets).
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"input file {path} does not exist; check the path")
    if path.is_dir():
        reader = _read_10x_mtx
    elif path.suffix == ".h5" and not path.name.endswith(".h5ad"):
        reader = _read_10x_h5
    else:
        reader = _read_h5ad
    if layer is not None and reader is not _read_h5ad:
        raise UserInputError(f"--layer applies to .h5ad input only; {path} is a 10x matrix: drop --layer")
    matrix, genes, cells, obs, where = reader(path, layer)
    X = validate_counts(matrix, where)
    if len(genes) != X.shape[1] or len(cells) != X.shape[0]:
        raise UserInputError(f"{path}: {len(cells)} cell names and {len(genes)} gene names for a {X.shape[0]} x {X.shape[1]} matrix; the files do not belong together")
    _refuse_duplicates(path, genes, "gene", "var_names")
    _refuse_duplicates(path, cells, "cell", "obs_names")
    if dataset_key is not None and reader is not _read_h5ad:
        raise UserInputError(f"--dataset-key {dataset_key}: 10x inputs carry no cell annotations; "
                             f"use an .h5ad with obs['{dataset_key}']")
    counts = Counts(
        X=X,
        genes=genes,
        cells=cells,
        obs=obs,
        source=path.resolve(),
        layer=layer,
        sha256=file_sha256(path) if path.is_file() else _dir_sha256(path),
    )
    return assign_datasets(counts, dataset_key) if dataset_key is not None else counts


def assign_datasets(counts: Counts, key: str) -> Counts:
    """Map each cell to a dataset through ``obs[key]`` (the one place this happens; read_counts calls it).

    Levels: the categories in their order when the column is categorical (unused categories dropped),
    otherwise the sorted distinct values (numerically for a numeric column) as strings. A column with
    missing values is refused: which dataset such a cell belongs to is the user's decision. Fewer than two
    levels is refused later by config.check_datasets, which knows the model and names the fix.
    """
    obs = counts.obs
    if key not in obs.columns:
        if len(obs.columns) == 0:
            raise UserInputError(f"--dataset-key {key}: {counts.source.name} has no obs columns (no cell annotations); "
                                 f"use an .h5ad with obs['{key}'] naming each cell's dataset")
        known = ", ".join(map(str, obs.columns))
        raise UserInputError(f"--dataset-key {key}: no obs column '{key}' in {counts.source.name} (obs columns: {known}); "
                             "pass one of them")
    column = obs[key]
    missing = int(column.isna().sum())
    if missing:
        raise UserInputError(f"--dataset-key {key}: obs['{key}'] has no value for {missing} of {len(column)} cells; "
                             f"filter them out of the input (e.g. adata[adata.obs['{key}'].notna()]) or fill them in")
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.cat.remove_unused_categories()
        levels = [str(c) for c in column.cat.categories]
        codes = np.asarray(column.cat.codes, dtype=np.int64)
    else:
        values = column.to_numpy()
        if pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
            uniq, codes = np.unique(values, return_inverse=True)
            levels = [str(v) for v in uniq]
        else:
            labels = column.astype(str).to_numpy()
            uniq, codes = np.unique(labels, return_inverse=True)
            levels = [str(v) for v in uniq]
        codes = np.asarray(codes, dtype=np.int64).ravel()
    if len(set(levels)) != len(levels):  # e.g. 1 and "1" in an object column
        raise UserInputError(f"--dataset-key {key}: obs['{key}'] has distinct values with the same text; "
                             "make the dataset names unique strings")
    return replace(counts, dataset_key=key, datasets=levels, cell_dataset=codes)


def _refuse_duplicates(path: Path, names: list[str], what: str, axis: str) -> None:
    """Duplicate names are refused, not renamed: the posterior's coords and the DE tables would hold
    ambiguous rows, and which copy is which is the user's call (10x gene symbols, which Cell Ranger
    repeats by design, are made unique when read, as anndata's read_10x does)."""
    index = pd.Index(names)
    dup = index[index.duplicated()].unique()
    if len(dup):
        shown = ", ".join(repr(n) for n in dup[:3]) + (f" and {len(dup) - 3} more" if len(dup) > 3 else "")
        raise UserInputError(f"{path.name}: {len(dup)} {what} name(s) occur more than once ({shown}); make them unique "
                             f"first (for an .h5ad: adata.{axis}_make_unique(), then write it again)")


def _read_h5ad(path: Path, layer: str | None):
    import anndata

    try:
        with warnings.catch_warnings():
            # anndata warns of duplicate names on read; read_counts refuses them with the fix instead
            warnings.filterwarnings("ignore", message=r".*names are not unique", category=UserWarning)
            adata = anndata.read_h5ad(path)
    except Exception as exc:  # anndata raises many types for a non-HDF5 / non-AnnData file
        raise UserInputError(
            f"{path} is not a readable .h5ad file ({type(exc).__name__}); pass an AnnData .h5ad file, "
            "a 10x matrix directory or a 10x .h5 file"
        ) from None
    if layer is None:
        matrix, where = adata.X, "X"
    else:
        if layer not in adata.layers:
            known = ", ".join(adata.layers.keys()) or "none"
            raise UserInputError(f"layer '{layer}' not found in {path} (layers: {known}); pass one of them to --layer or omit it for X")
        matrix, where = adata.layers[layer], f"layer '{layer}'"
    if matrix is None:
        raise UserInputError(f"{path} has no X matrix; pass --layer with the layer that holds the raw counts")
    return matrix, [str(g) for g in adata.var_names], [str(c) for c in adata.obs_names], adata.obs.copy(), where


def _open_maybe_gz(path: Path):
    import gzip

    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _read_10x_mtx(path: Path, _layer):
    """A Cell Ranger matrix directory: matrix.mtx, features.tsv (v3) or genes.tsv (v2), barcodes.tsv.

    Read with scipy.io.mmread rather than scanpy: scanpy would bring a large dependency tree for
    three small text files.
    """
    from scipy.io import mmread

    mtx = _first_existing(path, ("matrix.mtx",))
    feats = _first_existing(path, ("features.tsv", "genes.tsv"))
    barcodes = _first_existing(path, ("barcodes.tsv",))
    if mtx is None or feats is None or barcodes is None:
        raise UserInputError(
            f"{path} is not a 10x matrix directory (needs matrix.mtx, features.tsv or genes.tsv, barcodes.tsv, "
            "optionally .gz); pass such a directory, an .h5ad or a 10x .h5 file"
        )
    try:
        with _open_maybe_gz(mtx) as fh:
            matrix = sp.csr_matrix(mmread(fh)).T  # 10x stores genes x cells
        with _open_maybe_gz(feats) as fh:
            rows = [ln.rstrip("\n").split("\t") for ln in fh if ln.strip()]
        with _open_maybe_gz(barcodes) as fh:
            cells = [ln.strip() for ln in fh if ln.strip()]
    except (ValueError, OSError) as exc:
        raise UserInputError(f"cannot read the 10x matrix in {path}: {exc}; check the files") from None
    genes = _unique([r[1] if len(r) > 1 else r[0] for r in rows])
    return sp.csr_matrix(matrix), genes, cells, pd.DataFrame(index=cells), "matrix.mtx"


def _read_10x_h5(path: Path, _layer):
    """A Cell Ranger .h5 (v3 `matrix/features`, or v2 with one genome group), read with h5py."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f["matrix"] if "matrix" in f else f[next(iter(f.keys()))]
            data, indices, indptr = group["data"][:], group["indices"][:], group["indptr"][:]
            n_genes, n_cells = (int(x) for x in group["shape"][:])
            cells = [b.decode() for b in group["barcodes"][:]]
            if "features" in group:
                names = group["features"]["name"][:]
            else:
                names = group["gene_names"][:]
            genes = _unique([n.decode() for n in names])
    except (OSError, KeyError, StopIteration, ValueError, TypeError) as exc:
        raise UserInputError(f"{path} is not a 10x Genomics .h5 matrix ({type(exc).__name__}); pass a Cell Ranger .h5, an .h5ad or a 10x directory") from None
    # 10x stores CSC over genes x cells, i.e. CSR over cells x genes.
    matrix = sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))
    return matrix, genes, cells, pd.DataFrame(index=cells), "matrix"


def _unique(names: list[str]) -> list[str]:
    """Make gene names unique as anndata's var_names_make_unique does (NAME, NAME-1, ...)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}-{seen[n]}")
        else:
            seen[n] = 0
            out.append(n)
    return out


def _dir_sha256(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        h.update(f.name.encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


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
    if data.max() > INT32_MAX:
        raise UserInputError(f"{where} contains a count of {data.max():.6g}, above {INT32_MAX} (2^31 - 1, the largest "
                             "integer Stan holds); UMI counts are far smaller: check that this is a raw count matrix")
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


def select(counts: Counts, genes_file: Path | None = None, min_cells: int = 0, top_genes: int | None = None,
           min_counts: int = 0) -> Counts:
    """Cell and gene selection, recorded in ``counts.selection`` (and from there in the output attrs).

    Order: cells with at least ``min_counts`` UMIs; then genes from ``genes_file``; genes seen in at least
    ``min_cells`` of the kept cells; the ``top_genes`` genes with the most UMIs. Column/row slicing of the
    CSR matrix keeps it sparse.
    """
    X, genes, cells, obs = counts.X, list(counts.genes), list(counts.cells), counts.obs
    cell_dataset = counts.cell_dataset
    record: dict = {}
    if min_counts < 0 or min_cells < 0 or (top_genes is not None and top_genes < 1):
        raise UserInputError("--min-counts and --min-cells must be >= 0 and --top-genes >= 1")
    if min_counts:
        keep = np.flatnonzero(np.asarray(X.sum(axis=1)).ravel() >= min_counts)
        X, cells, obs = X[keep], [cells[i] for i in keep], obs.iloc[keep]
        record["min_counts"] = min_counts
        if cell_dataset is not None:
            cell_dataset = cell_dataset[keep]
            left = np.bincount(cell_dataset, minlength=len(counts.datasets))
            emptied = [d for d, n in zip(counts.datasets, left) if n == 0]
            if emptied:
                raise UserInputError(f"--min-counts {min_counts} removes every cell of dataset(s) "
                                     f"{', '.join(map(repr, emptied))} (obs['{counts.dataset_key}']); lower --min-counts "
                                     "or drop those cells from the input")
    library_size = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()  # before any gene is dropped
    if genes_file is not None:
        wanted = _read_gene_list(genes_file)
        index = {g: i for i, g in enumerate(genes)}
        unknown = [g for g in wanted if g not in index]
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise UserInputError(f"--genes {genes_file}: {len(unknown)} gene(s) not in the data ({shown}); use names from var_names")
        cols = np.array([index[g] for g in wanted])
        X, genes = X[:, cols], list(wanted)
        record["genes_file"] = str(Path(genes_file).resolve())
    if min_cells:
        cols = np.flatnonzero(np.diff(X.tocsc().indptr) >= min_cells)
        X, genes = X[:, cols], [genes[i] for i in cols]
        record["min_cells"] = min_cells
    if top_genes is not None:
        totals = np.asarray(X.sum(axis=0)).ravel()
        cols = np.sort(np.argsort(-totals, kind="stable")[:top_genes])
        X, genes = X[:, cols], [genes[i] for i in cols]
        record["top_genes"] = top_genes
    if not record:
        return counts
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise UserInputError(f"the selection left {X.shape[0]} cells x {X.shape[1]} genes; relax --min-counts/--min-cells/--top-genes")
    X = sp.csr_matrix(X)
    if X.nnz == 0:
        raise UserInputError("the selection left only zeros; relax --min-counts/--min-cells/--top-genes")
    record.update(n_cells=X.shape[0], n_genes=X.shape[1], cells_in=counts.n_cells, genes_in=counts.n_genes)
    out = replace(counts, X=X, genes=genes, cells=cells, obs=obs, selection=record, cell_dataset=cell_dataset,
                  library_size=library_size)
    if out.dataset_key is not None:
        record["cells_per_dataset"] = out.cells_per_dataset()
    return out


def _read_gene_list(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"gene list {path} does not exist; pass a text file with one gene name per line")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not names:
        raise UserInputError(f"gene list {path} is empty; put one gene name per line")
    if len(set(names)) != len(names):
        raise UserInputError(f"gene list {path} repeats gene names; list each gene once")
    return names
