"""Joint multi-dataset models, the I/O side (--dataset-key, spec datasets.md): reading the dataset column,
its errors, selection, the dataset coords and constant_data of the NetCDF, per-dataset posterior predictive
replication (and BNB replication), and per-dataset shrinkage readings.

Real data: CellBench's three cell lines measured with two protocols (obs['protocol']: celseq2 274 cells,
dropseq 225), restricted to 20 genes and fitted with pathfinder so that a run takes seconds.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import anndata
import arviz as az
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import xarray as xr
from click.testing import CliRunner
from helpers import scribe

from scribe_cli.cli import main
from scribe_cli.config import ModelConfig, validate
from scribe_cli.data import Counts, read_counts, select
from scribe_cli.errors import UserInputError
from scribe_cli.reports import ppc
from scribe_cli.shrinkage import shrinkage

# bundled subset of ../shared/data/cellbench_3cl_two_protocols.h5ad (data/README.md): all 499 cells, 200 genes
TWO_PROTOCOLS = Path(__file__).resolve().parents[1] / "data" / "cellbench_two_protocols_200genes.h5ad"
# `--prob-prior none` keeps the shared-p programs these dataset-axis checks were written with (the CLI default
# became a gene-specific p in issue 14; nothing here depends on p).
FAST = ["--top-genes", "20", "--method", "pathfinder", "--chains", "2", "--draws", "200", "--seed", "3", "--quiet",
        "--prob-prior", "none"]



def _h5ad(tmp_path, obs: dict, name="in.h5ad", n_genes=6, seed=0) -> Path:
    """A small count matrix with the given obs columns."""
    n = len(next(iter(obs.values())))
    X = sp.csr_matrix(np.random.default_rng(seed).poisson(2.0, size=(n, n_genes)))
    adata = anndata.AnnData(X=X, obs=pd.DataFrame(obs, index=[f"c{i}" for i in range(n)]))
    path = tmp_path / name
    adata.write_h5ad(path)
    return path


def _clean_failure(args, out: Path, *fragments: str) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("scribe: error:")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.*"))
    return lines[0]


# --- reading the dataset column ---

def test_unknown_obs_key_lists_the_columns(tmp_path):
    out = tmp_path / "post.nc"
    _clean_failure(["run", str(TWO_PROTOCOLS), "--dataset-key", "batch", "-o", str(out)], out,
                   "no obs column 'batch'", "obs columns: protocol, cell_line")


def test_inputs_without_obs_columns(tmp_path):
    out = tmp_path / "post.nc"
    path = tmp_path / "bare.h5ad"
    anndata.AnnData(X=sp.csr_matrix(np.ones((4, 3)))).write_h5ad(path)
    _clean_failure(["run", str(path), "--dataset-key", "protocol", "-o", str(out)], out, "has no obs columns",
                   "obs['protocol']")
    folder = tmp_path / "tenx"
    folder.mkdir()
    (folder / "matrix.mtx").write_text("%%MatrixMarket matrix coordinate integer general\n2 2 1\n1 1 3\n")
    (folder / "features.tsv").write_text("g1\tG1\ng2\tG2\n")
    (folder / "barcodes.tsv").write_text("a\nb\n")
    _clean_failure(["run", str(folder), "--dataset-key", "protocol", "-o", str(out)], out,
                   "10x inputs carry no cell annotations", "obs['protocol']")


def test_missing_values_in_the_dataset_column(tmp_path):
    path = _h5ad(tmp_path, {"batch": ["a", "b", None, "a", np.nan, "b"]})
    out = tmp_path / "post.nc"
    _clean_failure(["run", str(path), "--dataset-key", "batch", "-o", str(out)], out,
                   "obs['batch'] has no value for 2 of 6 cells", "filter them out")


@pytest.mark.parametrize("flag, family, equivalent", [
    ("--prob-dataset-prior", "gaussian", "--prob-prior gaussian"),
    ("--zero-inflation-dataset-prior", "horseshoe", "--gate-prior horseshoe"),
])
def test_single_level_column_names_the_single_dataset_flag(tmp_path, flag, family, equivalent):
    path = _h5ad(tmp_path, {"batch": ["only"] * 5})
    out = tmp_path / "post.nc"
    model = ["--model", "zinb"] if "zero" in flag else []
    _clean_failure(["run", str(path), *model, "--dataset-key", "batch", flag, family, "-o", str(out)], out,
                   "single level ('only')", equivalent)


def test_levels_follow_the_categories_or_sorted_values(tmp_path):
    cat = pd.Categorical(["y", "x", "y", "y"], categories=["y", "unused", "x"])
    counts = read_counts(_h5ad(tmp_path, {"batch": cat, "run": [10, 2, 10, 2]}), dataset_key="batch")
    assert counts.datasets == ["y", "x"]  # category order, unused category dropped
    np.testing.assert_array_equal(counts.cell_dataset, [0, 1, 0, 0])
    assert counts.cells_per_dataset() == {"y": 3, "x": 1}
    counts = read_counts(tmp_path / "in.h5ad", dataset_key="run")
    assert counts.datasets == ["2", "10"]  # numbers sort as numbers
    np.testing.assert_array_equal(counts.cell_dataset_labels(), ["10", "2", "10", "2"])


def test_selection_keeps_the_cell_dataset_map(tmp_path):
    X = np.array([[5, 0], [1, 0], [9, 9], [0, 1], [7, 0], [0, 2]])
    path = tmp_path / "s.h5ad"
    anndata.AnnData(X=sp.csr_matrix(X), obs=pd.DataFrame({"b": list("aabbcc")}, index=list("012345"))).write_h5ad(path)
    counts = read_counts(path, dataset_key="b")
    sel = select(counts, min_counts=3)
    assert sel.cells == ["0", "2", "4"]
    np.testing.assert_array_equal(sel.cell_dataset, [0, 1, 2])
    assert sel.selection["cells_per_dataset"] == {"a": 1, "b": 1, "c": 1}
    with pytest.raises(UserInputError, match="removes every cell of dataset\\(s\\) 'a', 'c'.*obs\\['b'\\]"):
        select(counts, min_counts=10)
    assert select(counts, top_genes=1).cell_dataset is counts.cell_dataset  # gene selection keeps every cell


# --- end to end on the two protocols ---

@pytest.fixture(scope="module")
def shared_run(tmp_path_factory, toolchain):
    """--dataset-key alone: every gene parameter shared (no dataset axis), the cell -> dataset map recorded."""
    path = tmp_path_factory.mktemp("datasets") / "shared.nc"
    res = scribe("run", TWO_PROTOCOLS, "--dataset-key", "protocol", *FAST, "-o", path)
    return path, json.loads(res.stdout)


def test_constant_data_and_attrs(shared_run):
    path, summary = shared_run
    assert "constant_data" in summary["groups"]
    idata = az.from_netcdf(path)
    labels = idata.constant_data["cell_dataset"]
    assert labels.dims == ("cell",)
    counts = read_counts(TWO_PROTOCOLS, dataset_key="protocol")
    assert list(labels.coords["cell"].values) == counts.cells
    assert [str(v) for v in labels.values] == list(read_counts(TWO_PROTOCOLS).obs["protocol"].astype(str))
    attrs = idata.posterior.attrs
    assert attrs["dataset_key"] == "protocol"
    assert json.loads(attrs["datasets"]) == ["celseq2", "dropseq"]
    assert json.loads(attrs["cells_per_dataset"]) == {"celseq2": 274, "dropseq": 225}
    assert "dataset" not in idata.posterior.dims  # no dataset-level prior, no mixture: the single-dataset program


def test_ppc_rereads_the_datasets_and_reports_coverage_per_dataset(shared_run, tmp_path):
    path, _ = shared_run
    res = scribe("ppc", path, TWO_PROTOCOLS, "--draws", "20", "-o", tmp_path / "ppc")
    report = json.loads(res.stdout)
    assert report["dataset_key"] == "protocol"
    assert set(report["coverage_90_by_dataset"]) == {"celseq2", "dropseq"}
    for cov in report["coverage_90_by_dataset"].values():
        assert set(cov) == set(ppc.STATS) and all(0.0 <= v <= 1.0 for v in cov.values())
    assert len(pd.read_csv(tmp_path / "ppc.tsv", sep="\t")) == 20  # the table stays per gene over all cells


def test_expression_dataset_prior_has_a_dataset_axis(tmp_path, toolchain):
    args = ["--dataset-key", "protocol", "--expression-dataset-prior", "gaussian"]
    assert "cell_dataset" in scribe("render", *args).stdout
    path = tmp_path / "joint.nc"
    res = json.loads(scribe("run", TWO_PROTOCOLS, *args, *FAST, "-o", path).stdout)
    idata = az.from_netcdf(path)
    assert idata.posterior["mu"].dims == ("chain", "draw", "gene", "dataset")
    assert list(idata.posterior.coords["dataset"].values) == ["celseq2", "dropseq"]
    assert "expression_dataset" in res["shrinkage"]
    report = json.loads(scribe("ppc", path, TWO_PROTOCOLS, "--draws", "20", "-o", tmp_path / "ppc").stdout)
    assert set(report["coverage_90_by_dataset"]) == {"celseq2", "dropseq"}


# --- posterior predictive replication (no Stan) ---

def _counts(n_cells: int, n_genes: int, cell_dataset=None, datasets=None) -> Counts:
    X = sp.csr_matrix((n_cells, n_genes), dtype=np.int64)
    cells = [f"c{i}" for i in range(n_cells)]
    return Counts(X=X, genes=[f"g{j}" for j in range(n_genes)], cells=cells, obs=pd.DataFrame(index=cells),
                  source=Path("hand-built"), dataset_key=None if cell_dataset is None else "batch",
                  datasets=datasets or [], cell_dataset=None if cell_dataset is None else np.asarray(cell_dataset))


def test_silent_genes_are_named_under_zero_inflation():
    """A gene with no counts (in some dataset, for dataset-specific gates) has a gate x mean posterior with two
    modes (advice.silent_gene_advice): `scribe run` warns and says how to drop it; no warning without a gate."""
    from scribe_cli.advice import silent_gene_advice

    U = np.ones((6, 4), dtype=np.int64)
    U[:3, 1] = 0  # gene 1: no counts in dataset A only
    U[:, 3] = 0  # gene 3: no counts anywhere
    counts = replace(_counts(6, 4, [0, 0, 0, 1, 1, 1], ["A", "B"]), X=sp.csr_matrix(U))
    joint = validate(ModelConfig(model="zinb", dataset_key="batch", zero_inflation_dataset_prior="neg"))
    assert silent_gene_advice(counts, joint).startswith("2 gene(s) have no counts in some dataset")
    shared_gate = validate(ModelConfig(model="zinb", gate_prior="neg"))
    message = silent_gene_advice(counts, shared_gate)
    assert message.startswith("1 gene(s) have no counts:") and "--min-cells 1" in message
    assert silent_gene_advice(counts, validate(ModelConfig(model="nbdm"))) is None
    U[:, 3] = 1
    assert silent_gene_advice(replace(counts, X=sp.csr_matrix(U)), shared_gate) is None


def _posterior(**variables) -> xr.Dataset:
    """variables: name -> (dims after (chain, draw), array of shape (1, S, ...))."""
    coords = {"dataset": ["A", "B"]}
    return xr.Dataset({k: (("chain", "draw") + dims, a) for k, (dims, a) in variables.items()},
                      coords={k: v for k, v in coords.items() if any(k in d for d, _ in variables.values())})


def test_ppc_uses_each_cells_dataset_column():
    """Two datasets with very different means: each dataset's replicated mean is its own mu (capture included);
    r is shared (no dataset dim)."""
    S, C = 2, 20000
    cell_dataset = np.r_[np.zeros(6000, int), np.ones(C - 6000, int)]
    counts = _counts(C, 2, cell_dataset, ["A", "B"])
    mu = np.array([[1.0, 40.0], [8.0, 0.3]])  # gene x dataset
    post = _posterior(mu=(("gene", "dataset"), np.broadcast_to(mu, (1, S, 2, 2)).copy()),
                      r=(("gene",), np.full((1, S, 2), 30.0)),
                      capture=(("cell",), np.full((1, S, C), 0.5)))
    rep = ppc.replicate_stats(post, counts, n_draws=S, seed=1)
    assert rep["mean_by_dataset"].shape == (S, 2, 2)
    expected = 0.5 * mu.T  # dataset x gene
    # sd of a mean over >= 6000 cells: sqrt(m + m^2 / 30) / sqrt(6000) <= 0.06 (m = 20); atol 0.25 is > 4 sd,
    # while using the other dataset's column would be off by 3 or more
    np.testing.assert_allclose(rep["mean_by_dataset"], np.broadcast_to(expected, (S, 2, 2)), atol=0.25)
    overall = (6000 * expected[0] + (C - 6000) * expected[1]) / C
    np.testing.assert_allclose(rep["mean"], np.broadcast_to(overall, (S, 2)), atol=0.25)


def test_ppc_mixture_draws_components_from_each_datasets_weights():
    S, C = 2, 20000
    cell_dataset = np.repeat([0, 1], C // 2)
    counts = _counts(C, 1, cell_dataset, ["A", "B"])
    mu = np.array([[2.0, 30.0]])  # gene x component
    dw = np.array([[0.9, 0.1], [0.2, 0.8]])  # dataset x component
    post = _posterior(mu=(("gene", "component"), np.broadcast_to(mu, (1, S, 1, 2)).copy()),
                      r=(("gene", "component"), np.full((1, S, 1, 2), 50.0)),
                      weights=(("component",), np.full((1, S, 2), 0.5)),
                      dataset_weights=(("dataset", "component"), np.broadcast_to(dw, (1, S, 2, 2)).copy()))
    rep = ppc.replicate_stats(post, counts, n_draws=S, seed=2)
    expected = dw @ mu[0]  # per dataset: 4.8 and 24.4; the population weights would give 16 for both
    # sd of a mean over 10000 cells: ~ sqrt(0.9 * 0.1 * 28^2 + 30) / 100 ~ 0.1; atol 0.5 is ~5 sd
    np.testing.assert_allclose(rep["mean_by_dataset"][:, :, 0], np.broadcast_to(expected, (S, 2)), atol=0.5)


def test_bnb_replication_keeps_the_mean_and_inflates_the_variance():
    """BNB with alpha = capture (kappa - 1) mu / r: mean capture * mu; variance the NB variance times
    (r + kappa - 1) / (kappa - 2) (docs/models.md)."""
    S, C = 3, 40000
    mu, r, kappa, nu = np.array([6.0, 40.0]), np.array([2.0, 5.0]), np.array([12.0, 8.0]), 0.5
    params = {"mu": np.tile(mu, (S, 1)), "r": np.tile(r, (S, 1)), "kappa": np.tile(kappa, (S, 1)),
              "capture": np.full((S, C), nu)}
    rep = ppc.simulate_stats(params, np.arange(S), C, np.random.default_rng(4))
    m = nu * mu
    var = (m + m**2 / r) * (r + kappa - 1) / (kappa - 2)  # 6.1 and 253
    # Monte Carlo sd of a mean over 40000 cells: sqrt(var / C) = 0.012 and 0.08; 5 sd
    np.testing.assert_allclose(rep["mean"], np.broadcast_to(m, (S, 2)), atol=5 * np.sqrt(var / C).max())
    # the sample variance of heavy-tailed counts is noisier: 15% around the BNB variance, which is 30% (gene 0)
    # and 100% (gene 1) above the NB variance that ignoring kappa would give
    np.testing.assert_allclose(rep["var"].mean(axis=0), var, rtol=0.15)


def test_ppc_refuses_what_it_cannot_map():
    counts = _counts(10, 2)  # read without a dataset key
    post = _posterior(mu=(("gene", "dataset"), np.ones((1, 2, 2, 2))), r=(("gene",), np.ones((1, 2, 2))))
    with pytest.raises(UserInputError, match="read them with the fit's --dataset-key"):
        ppc.draw_parameters(post, counts)
    with pytest.raises(UserInputError, match="datasets \\['A', 'B'\\] differ"):
        ppc.draw_parameters(post, _counts(10, 2, np.zeros(10, int), ["B", "A"]))
    odd = _posterior(mu=(("gene", "tissue"), np.ones((1, 2, 2, 3))), r=(("gene",), np.ones((1, 2, 2))))
    with pytest.raises(UserInputError, match="'mu' has dims \\('gene', 'tissue'\\)"):
        ppc.draw_parameters(odd, counts)


def test_dataset_weights_dims_when_datasets_equal_components():
    from scribe_cli.idata import variable_dims

    config = validate(ModelConfig(components=2, dataset_key="batch"))
    dims = variable_dims(config, {"dataset_weights": np.zeros((1, 3, 2, 2)), "mu": np.zeros((1, 3, 5, 2))},
                          {"C": 7, "G": 5, "K": 2, "D": 2})
    assert dims["dataset_weights"] == ["dataset", "component"]
    assert dims["mu"] == ["gene", "component"]


def test_dataset_contrasts_have_their_own_named_axis():
    """expression_dataset_z holds D - 1 Helmert contrasts per gene: its second axis is dataset_contrast, labelled
    by the datasets it compares, also when D - 1 equals another axis's length (here D - 1 = 2 = C)."""
    from scribe_cli.idata import data_coords, variable_dims

    config = validate(ModelConfig(dataset_key="batch", expression_dataset_prior="horseshoe"))
    data = {"C": 2, "G": 5, "D": 3}
    dims = variable_dims(config, {"expression_dataset_z": np.zeros((1, 3, 5, 2)), "mu": np.zeros((1, 3, 5, 3))}, data)
    assert dims["expression_dataset_z"] == ["gene", "dataset_contrast"]
    assert dims["mu"] == ["gene", "dataset"]
    counts = _counts(2, 5, np.array([0, 2]), ["A", "B", "C"])
    assert data_coords(counts, data)["dataset_contrast"] == ["A vs B", "mean(A, B) vs C"]
    with pytest.raises(ValueError, match="D = 3 datasets but the counts name 2"):
        data_coords(replace(counts, datasets=["A", "B"]), data)


def test_capture_subset_coordinates_are_not_named_as_data_axes():
    """capture_dev and capture_eta_own run over data-chosen subsets of the cells: a length that equals G or C
    is a coincidence, not the gene or cell axis."""
    from scribe_cli.idata import variable_dims

    config = validate(ModelConfig(model="nbvcp", organism="human"))
    dims = variable_dims(config, {"capture_dev": np.zeros((1, 3, 5)), "capture_eta_own": np.zeros((1, 3, 2)),
                                  "capture_shift": np.zeros((1, 3, 1)), "capture": np.zeros((1, 3, 7))},
                         {"C": 7, "G": 5})
    assert dims["capture_dev"] == ["capture_dev_dim_0"]
    assert dims["capture_eta_own"] == ["capture_eta_own_dim_0"]
    assert dims["capture"] == ["cell"]


# --- shrinkage readings of dataset-level targets ---

def test_dataset_targets_are_not_confused_with_gene_level_ones():
    rng = np.random.default_rng(0)
    post = _posterior(prob_dataset_sigma=((), np.abs(rng.normal(1.0, 0.05, size=(1, 300)))),
                      expression_dataset_sigma=((), np.abs(rng.normal(0.02, 0.01, size=(1, 300)))),
                      gate_dataset_psi=(("gene", "dataset"), np.full((1, 300, 4, 2), 2.0)))
    out = shrinkage(post)
    assert set(out) == {"prob_dataset", "expression_dataset", "gate_dataset"}  # no "prob", "expression", "gate"
    assert out["prob_dataset"]["reading"].startswith("scale large: different kit or sequencing profiles")
    assert out["expression_dataset"]["reading"].startswith("scale near zero: identical biology across datasets")
    assert "gene-specific zero inflation differs" in out["gate_dataset"]["reading"]
    both = shrinkage(post.assign(prob_sigma=(("chain", "draw"), np.full((1, 300), 0.01))))
    assert both["prob"]["scale"] == "prob_sigma" and both["prob"]["mean"] == pytest.approx(0.01)
    assert both["prob_dataset"]["scale"] == "prob_dataset_sigma"


def test_two_level_prob_scale_is_reported_per_dataset():
    sigma = np.empty((1, 200, 2))
    sigma[..., 0], sigma[..., 1] = 0.02, 0.8  # dataset A: genes share p; B: p differs between genes
    out = shrinkage(_posterior(prob_dataset_sigma=(("dataset",), sigma)))["prob_dataset"]
    assert out["scale"] == "max over datasets of prob_dataset_sigma" and out["mean"] == pytest.approx(0.8)
    assert set(out["per_dataset"]) == {"A", "B"}
    assert out["per_dataset"]["A"]["reading"].startswith("scale near zero: genes share one p in this dataset")
    assert out["per_dataset"]["B"]["reading"].startswith("scale large: p differs between genes in this dataset")


def test_two_level_horseshoe_headline_is_the_spread_of_the_dataset_centres():
    S = 200
    sigma = np.empty((1, S, 2))
    sigma[..., 0], sigma[..., 1] = 0.05, 1.0
    lam = np.full((1, S, 10, 2), 0.5)
    lam[:, :, :4, 1] = 20.0  # dataset B: 4 of 10 genes escape (kappa = 1 / (1 + 400) vs 1 / (1 + 0.25))
    post = _posterior(prob_dataset_sigma=(("dataset",), sigma),
                      prob_dataset_lambda_tilde=(("gene", "dataset"), lam),
                      prob_dataset_loc_scale=((), np.full((1, S), 0.02)))
    out = shrinkage(post)["prob_dataset"]
    assert out["family"] == "horseshoe" and out["scale"] == "prob_dataset_loc_scale"
    assert out["reading"].startswith("scale near zero: same technical characteristics across datasets")
    assert out["per_dataset"]["A"]["fraction_escaping"] == 0.0
    assert out["per_dataset"]["B"]["fraction_escaping"] == 0.4
    assert out["per_dataset"]["B"]["reading"].endswith("40.0% of elements escape shrinkage")
