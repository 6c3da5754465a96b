"""Count reading, validation and sufficient statistics (no Stan needed)."""

from __future__ import annotations

import anndata
import numpy as np
import pytest
import scipy.sparse as sp

from scribe_cli.data import gene_count_pairs, read_counts, validate_counts
from scribe_cli.errors import UserInputError


def _write(tmp_path, X, name="x.h5ad", **layers):
    adata = anndata.AnnData(X=X, layers=layers or None)
    path = tmp_path / name
    adata.write_h5ad(path)
    return path


def test_reads_demo_sparse_and_keeps_names(demo_h5ad):
    counts = read_counts(demo_h5ad)
    assert sp.isspmatrix_csr(counts.X) or sp.issparse(counts.X)
    assert counts.X.shape == (906, 500)
    assert counts.X.nnz == 94735  # from data/README.md
    assert len(counts.genes) == 500 and len(counts.cells) == 906
    assert len(counts.sha256) == 64


def test_layer_is_read_and_unknown_layer_is_refused(tmp_path):
    X = sp.random(20, 10, density=0.3, format="csr", random_state=0) * 10
    raw = sp.csr_matrix(np.round(X.toarray()))
    path = _write(tmp_path, X.astype(np.float32), counts=raw)
    counts = read_counts(path, layer="counts")
    assert counts.X.sum() == raw.sum()
    with pytest.raises(UserInputError, match="layer 'nope' not found"):
        read_counts(path, layer="nope")
    with pytest.raises(UserInputError, match="non-integer"):
        read_counts(path)  # X holds the non-integer values


@pytest.mark.parametrize(
    "matrix, message",
    [
        (np.array([[1, -2], [0, 3]]), "negative"),
        (np.array([[1.5, 2.0], [0.0, 3.0]]), "non-integer"),
        (np.log1p(np.array([[1.0, 2.0], [0.0, 3.0]])), "normalized or log-transformed"),
        (np.zeros((0, 5)), "empty"),
        (np.zeros((3, 4)), "only zeros"),
        (np.array([[1.0, np.nan]]), "NaN"),
    ],
)
def test_invalid_counts_are_refused(matrix, message):
    with pytest.raises(UserInputError, match=message):
        validate_counts(matrix)


def test_integral_floats_are_accepted():
    X = validate_counts(np.array([[1.0, 0.0], [2.0, 7.0]]))
    assert X.dtype == np.int64 and X.sum() == 10


def test_missing_and_non_h5ad_files(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        read_counts(tmp_path / "absent.h5ad")
    bogus = tmp_path / "bogus.h5ad"
    bogus.write_text("cell,gene\n1,2\n")
    with pytest.raises(UserInputError, match="not a readable .h5ad"):
        read_counts(bogus)


def test_gene_count_pairs_reconstruct_the_matrix():
    rng = np.random.default_rng(1)
    dense = rng.negative_binomial(2, 0.6, size=(300, 40)) * (rng.random((300, 40)) < 0.3)
    pairs = gene_count_pairs(sp.csr_matrix(dense))
    # Each gene's distinct non-zero counts with multiplicities must give back its histogram.
    for g in range(dense.shape[1]):
        col = dense[:, g]
        values, freq = np.unique(col[col > 0], return_counts=True)
        sel = pairs.pair_gene == g + 1
        np.testing.assert_array_equal(pairs.pair_count[sel], values)
        np.testing.assert_array_equal(pairs.pair_weight[sel], freq)
    np.testing.assert_array_equal(pairs.gene_total, dense.sum(axis=0))
    np.testing.assert_array_equal(pairs.gene_nnz, (dense > 0).sum(axis=0))
    assert pairs.n_pairs < (dense > 0).sum()  # compression: fewer pairs than non-zeros


def test_capture_prior_data_uses_whole_libraries_and_the_spec_formulas(tmp_path):
    """--organism centres -log(capture) at log(M_0 / L_c) with L_c over every input gene (taken before
    --top-genes drops some), floored at 0; --mean-anchor centres log mu_g at log((ubar_g + 0.5 / C) / nubar)."""
    from scribe_cli.config import ModelConfig, validate
    from scribe_cli.data import select
    from scribe_cli.standata import stan_data

    X = np.array([[5, 1, 0, 4], [0, 2, 2, 0], [300, 0, 1, 1]])
    counts = select(read_counts(_write(tmp_path, sp.csr_matrix(X))), top_genes=2)
    assert counts.X.shape == (3, 2)
    config = validate(ModelConfig(model="nbvcp", parameterization="mean-prob", organism="human", total_mrna=100.0,
                                  mean_anchor=True, mean_anchor_sd=0.2))
    data = stan_data(config, counts)
    lib = X.sum(axis=1)  # 10, 4, 302: whole libraries, not the 2 kept genes
    np.testing.assert_allclose(data["capture_eta_loc"], np.maximum(np.log(100.0 / lib), 0.0))
    assert data["capture_eta_loc"][2] == 0.0 and data["capture_eta_sd"] == 0.3
    kept = counts.X.toarray()
    nubar = np.mean(np.minimum(lib / 100.0, 1.0))
    np.testing.assert_allclose(data["mean_anchor_loc"], np.log((kept.mean(axis=0) + 0.5 / 3) / nubar))
    assert data["mean_anchor_sd"] == 0.2
    assert "prior_capture" not in data and "prior_mu" not in data  # replaced, not added
