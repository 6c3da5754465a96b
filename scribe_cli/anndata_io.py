"""Results back into AnnData (`scribe denoise`, `scribe export`): the input restricted to the fitted cells and
genes, everything else in it kept, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_write
from .data import Counts
from .errors import UserInputError


def fitted_anndata(data: Path, counts: Counts):
    """The input AnnData with the fitted cells and genes in the fitted order (X, layers, obs, var, obsm, varm,
    uns kept); a 10x input becomes an AnnData with its counts in X."""
    import anndata

    data = Path(data)
    if data.is_dir() or not data.name.endswith(".h5ad"):
        return anndata.AnnData(X=counts.X.astype(np.float32), obs=pd.DataFrame(index=pd.Index(counts.cells)),
                               var=pd.DataFrame(index=pd.Index(counts.genes)))
    adata = anndata.read_h5ad(data)
    rows = _positions(adata.obs_names, counts.cells, "obs_names", "obs_names_make_unique")
    cols = _positions(adata.var_names, counts.genes, "var_names", "var_names_make_unique")
    if len(rows) == adata.n_obs and len(cols) == adata.n_vars and np.all(rows == np.arange(len(rows))) \
            and np.all(cols == np.arange(len(cols))):
        return adata
    return adata[rows, cols].copy()


def _positions(index: pd.Index, names: list[str], what: str, fix: str) -> np.ndarray:
    index = pd.Index(index.astype(str))
    if not index.is_unique:
        raise UserInputError(f"the data's {what} are not unique, so the fitted ones cannot be placed; "
                             f"make them unique (adata.{fix}()) and refit")
    pos = index.get_indexer(names)
    if (pos < 0).any():
        raise UserInputError(f"{int((pos < 0).sum())} fitted {what} are not in the data; pass the data file the fit used")
    return pos


def h5_safe(value):
    """A value AnnData can store in uns: nested dicts of strings, numbers and arrays. None is dropped, a
    list of numbers becomes an array, any other list JSON text."""
    if isinstance(value, dict):
        return {str(k): h5_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return np.asarray(value)
        if all(isinstance(v, str) for v in value):
            return np.asarray(value, dtype=object) if value else np.asarray([], dtype=str)
        return json.dumps(value, default=str)
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def write_h5ad(adata, path: Path) -> None:
    """Write to a temporary file beside ``path``, then rename (nothing partial is ever visible)."""
    atomic_write(Path(path), lambda tmp: adata.write_h5ad(tmp))
