"""Input formats (h5ad, 10x matrix directory, 10x .h5) and gene/cell selection, on the bundled real data."""

from __future__ import annotations

import gzip

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from scribe_cli.data import read_counts, select
from scribe_cli.errors import UserInputError


@pytest.fixture(scope="module")
def demo(demo_h5ad):
    return read_counts(demo_h5ad)


def _write_10x_dir(folder, counts, gz=True):
    folder.mkdir()
    opener = (lambda p: gzip.open(p, "wt")) if gz else (lambda p: open(p, "w"))
    suffix = ".gz" if gz else ""
    with (gzip.open if gz else open)(folder / f"matrix.mtx{suffix}", "wb") as fh:
        scipy.io.mmwrite(fh, sp.coo_matrix(counts.X.T), field="integer")
    with opener(folder / f"features.tsv{suffix}") as fh:
        fh.writelines(f"ENSG{i:06d}\t{g}\tGene Expression\n" for i, g in enumerate(counts.genes))
    with opener(folder / f"barcodes.tsv{suffix}") as fh:
        fh.writelines(f"{c}\n" for c in counts.cells)


def _write_10x_h5(path, counts):
    csc = sp.csc_matrix(counts.X.T)  # genes x cells, CSC = the 10x layout
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"] = csc.data.astype(np.int32), csc.indices, csc.indptr
        g["shape"] = np.array(csc.shape)
        g["barcodes"] = np.array([c.encode() for c in counts.cells])
        feats = g.create_group("features")
        feats["name"] = np.array([n.encode() for n in counts.genes])
        feats["id"] = np.array([f"ENSG{i:06d}".encode() for i in range(len(counts.genes))])


@pytest.mark.parametrize("gz", [True, False])
def test_10x_directory_matches_h5ad(tmp_path, demo, gz):
    _write_10x_dir(tmp_path / "mtx", demo, gz=gz)
    got = read_counts(tmp_path / "mtx")
    assert got.genes == demo.genes and got.cells == demo.cells
    assert (got.X != demo.X).nnz == 0


def test_10x_h5_matches_h5ad(tmp_path, demo):
    _write_10x_h5(tmp_path / "filtered_feature_bc_matrix.h5", demo)
    got = read_counts(tmp_path / "filtered_feature_bc_matrix.h5")
    assert got.genes == demo.genes and got.cells == demo.cells
    assert (got.X != demo.X).nnz == 0


def test_10x_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="not a 10x matrix directory"):
        read_counts(tmp_path / "empty")
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["x"] = 1
    with pytest.raises(UserInputError, match="not a 10x Genomics .h5"):
        read_counts(bad)


def test_selection_filters_and_records(tmp_path, demo):
    sel = select(demo, min_counts=500, min_cells=50, top_genes=100)
    totals = np.asarray(demo.X.sum(axis=1)).ravel()
    assert sel.n_cells == int((totals >= 500).sum())
    assert sel.n_genes == 100
    assert np.all(np.diff(sel.X.tocsc().indptr) >= 50)
    assert sel.selection["top_genes"] == 100 and sel.selection["cells_in"] == demo.n_cells
    # top genes keep the original gene order and are the genes with the most UMIs among the kept ones
    idx = [demo.genes.index(g) for g in sel.genes]
    assert idx == sorted(idx)


def test_gene_list(tmp_path, demo):
    wanted = demo.genes[10:15][::-1]
    path = tmp_path / "genes.txt"
    path.write_text("\n".join(wanted) + "\n")
    sel = select(demo, genes_file=path)
    assert sel.genes == wanted
    np.testing.assert_array_equal(sel.X.toarray()[:, 0], demo.X.toarray()[:, demo.genes.index(wanted[0])])
    path.write_text("\n".join(wanted + ["NOT_A_GENE"]))
    with pytest.raises(UserInputError, match="1 gene\\(s\\) not in the data \\(NOT_A_GENE\\)"):
        select(demo, genes_file=path)


def test_selection_that_leaves_nothing(demo):
    with pytest.raises(UserInputError, match="relax"):
        select(demo, min_counts=10**9)
