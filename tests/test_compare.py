"""`scribe compare`: numpy pointwise log likelihoods against Stan's log_lik, per-gene WAIC against ArviZ, and the
command end to end on two short fits of a tiny slice of the bundled data.

Cheap by design: the Stan programs are those of tests/test_likelihoods.py (helpers.reference_program, with
log_lik, so the compile cache already holds them), evaluated with fixed_param at random parameter points; the
two fits are 2 chains x 150 draws on 150 cells x 42 genes.
"""

from __future__ import annotations

import json

import arviz as az
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import reference_data, reference_program, scribe, small_counts

from scribe_cli.config import ModelConfig, validate
from scribe_cli.data import Counts
from scribe_cli.pointwise import cell_loglik, gene_elpd_difference, iter_blocks, posterior_draws
from scribe_cli.idata import variable_dims
from test_likelihoods import CASES as LIKELIHOOD_CASES

# Programs of tests/test_likelihoods.py (helpers.reference_program: cached) covering NB, zero inflation, a mixture,
# capture and BNB.
CASES = {name: LIKELIHOOD_CASES[name] for name in ("zinb_horseshoe", "mix", "zinbvcp_mix_bnb")}
N_POINTS = 3  # parameter points = "draws" of the posterior built below


def _counts(X: sp.csr_matrix) -> Counts:
    C, G = X.shape
    cells = [f"c{i}" for i in range(C)]
    return Counts(X=sp.csr_matrix(X, dtype=np.int64), genes=[f"g{j}" for j in range(G)], cells=cells,
                  obs=pd.DataFrame(index=cells), source=None)


def _posterior_at_points(name, compile_stan, X, tmp_path):
    """Stan's variables at N_POINTS random parameter points (fixed_param), as a posterior with one chain."""
    config = validate(ModelConfig(**CASES[name]))
    model = compile_stan(reference_program(config), name=f"lik_{name}")
    data = reference_data(config, X)
    points = []
    for seed in range(N_POINTS):
        fit = model.sample(data=data, fixed_param=True, chains=1, iter_sampling=1, seed=seed + 1, sig_figs=18,
                           output_dir=str(tmp_path), show_progress=False)
        points.append({k: np.asarray(v[0]) for k, v in fit.stan_variables().items()})
    arrays = {k: np.stack([p[k] for p in points])[None] for k in points[0]}
    counts = _counts(X)
    coords = {"gene": counts.genes, "cell": counts.cells, "component": list(range(config.components))}
    dims = variable_dims(config, arrays, data)
    used = {d for ds in dims.values() for d in ds}
    idata = az.from_dict(posterior=arrays, dims=dims, coords={k: v for k, v in coords.items() if k in used})
    return idata.posterior, arrays["log_lik"][0], counts


@pytest.mark.parametrize("name", list(CASES))
def test_numpy_cell_loglik_matches_stan(name, compile_stan, tmp_path):
    X = small_counts(11)
    post, stan_ll, counts = _posterior_at_points(name, compile_stan, X, tmp_path)
    # a tiny budget forces several cell blocks and gene blocks (the accumulation over blocks is what is tested)
    ll, idx = cell_loglik(post, counts, budget=60)
    assert ll.shape == (N_POINTS, X.shape[0]) and list(idx) == list(range(N_POINTS))
    assert len(set(np.round(ll.sum(axis=1), 6))) == N_POINTS  # the points differ
    # Same formulas in double precision on both sides: agreement to rounding (sig_figs=18 on the Stan side).
    np.testing.assert_allclose(ll, stan_ll, rtol=1e-8)


def test_per_gene_waic_matches_arviz_and_blocks(compile_stan, tmp_path):
    """Per gene, the blocked WAIC sums equal ArviZ's pointwise WAIC of the full (draw, cell x gene) matrix summed
    per gene, whatever the block size; a fit against itself differs by exactly 0 with SE 0."""
    X = small_counts(12)
    post, _, counts = _posterior_at_points("zinb_horseshoe", compile_stan, X, tmp_path)
    draws, idx = posterior_draws(post, counts)
    (block,) = list(iter_blocks(draws, idx, counts, budget=10**9))  # one block: the full matrix
    full = block.lp[..., 0]  # (S, C, G)
    S, C, G = full.shape
    waic = az.waic(az.from_dict(log_likelihood={"y": full.reshape(1, S, C * G)}), pointwise=True)
    expected = np.asarray(waic.waic_i).reshape(C, G).sum(axis=0)
    res = gene_elpd_difference(post, post, counts, budget=50)
    np.testing.assert_allclose(res["elpd_a"], expected, rtol=1e-10)
    np.testing.assert_allclose(res["elpd_diff"], 0.0, atol=1e-12)
    np.testing.assert_allclose(res["se"], 0.0, atol=1e-6)


@pytest.fixture(scope="module")
def two_fits(tmp_path_factory, demo_h5ad):
    """NB with a shared p and --log-lik (the program of test_output_groups) and the CLI's default NB, a p per gene
    without --log-lik (the program of test_run_e2e), on 150 cells x 42 genes: two cached programs, and a
    comparison that takes one fit's log likelihood from Stan and the other's from numpy."""
    import anndata as ad

    tmp = tmp_path_factory.mktemp("compare")
    data = tmp / "tiny.h5ad"
    ad.read_h5ad(demo_h5ad)[:150, ::12].copy().write_h5ad(data)
    short = ("--chains", "2", "--warmup", "150", "--draws", "150", "--seed", "1", "--quiet", "--model", "nbdm")
    scribe("run", data, *short, "--log-lik", "--parameterization", "canonical", "--prob-prior", "none",
           "-o", tmp / "nbdm.nc")
    scribe("run", data, *short, "-o", tmp / "pgene.nc")
    return tmp, data


def test_compare_fits_table(two_fits):
    tmp, data = two_fits
    res = json.loads(scribe("compare", tmp / "nbdm.nc", tmp / "pgene.nc").stdout)
    rows = {r["fit"]: r for r in res["comparison"]}
    assert set(rows) == {"nbdm", "pgene"} and res["log_lik_from"] == {"nbdm": "stan", "pgene": "numpy"}
    assert sum(r["weight"] for r in rows.values()) == pytest.approx(1.0, abs=1e-6)
    best = min(rows.values(), key=lambda r: r["rank"])
    assert best["elpd_diff"] == 0 and all(r["elpd_diff"] >= 0 for r in rows.values())
    for fit in res["fits"].values():
        k = fit["pareto_k"]
        assert k["n_ok"] + k["n_bad"] + k["n_very_bad"] == 150
    assert (tmp / "nbdm.compare.tsv").is_file()


def test_compare_without_log_lik_uses_numpy(two_fits):
    """A copy of the NB fit without its log_likelihood group: the same LOO from the numpy log likelihood."""
    tmp, data = two_fits
    idata = az.from_netcdf(tmp / "nbdm.nc")
    del idata.log_likelihood
    idata.to_netcdf(tmp / "nbdm_nolog.nc")
    res = json.loads(scribe("compare", tmp / "nbdm.nc", tmp / "nbdm_nolog.nc", "-o", tmp / "self").stdout)
    assert res["log_lik_from"] == {"nbdm": "stan", "nbdm_nolog": "numpy"}
    elpd = [f["elpd_loo"] for f in res["fits"].values()]
    # Stan writes its draws (log_lik, and the r and p numpy starts from) to 6 significant figures: each per-cell
    # value carries a relative rounding error up to 5e-6, so the two sums agree to about that, not to 1e-8.
    assert elpd[0] == pytest.approx(elpd[1], rel=1e-5)


def test_compare_by_gene(two_fits):
    tmp, data = two_fits
    res = json.loads(scribe("compare", tmp / "nbdm.nc", tmp / "pgene.nc", "--by", "gene", "--draws", "100").stdout)
    table = pd.read_csv(res["table"], sep="\t", index_col="gene")
    assert len(table) == res["n_genes"] == 42 and (tmp / "nbdm.vs_pgene.genes.png").stat().st_size > 10_000
    np.testing.assert_allclose(table.elpd_diff, table.elpd_a - table.elpd_b, atol=1e-3)
    # sorted by z, genes favouring A first; SE is 0 only for a gene with the same count in every cell (all zeros)
    assert np.all(np.diff(table.z.values) <= 0) and (table.se >= 0).all() and (table.se > 0).mean() > 0.9
    assert res["elpd_diff_total"] == pytest.approx(table.elpd_diff.sum(), rel=1e-3)


def test_compare_refuses_different_data(two_fits):
    tmp, _ = two_fits
    idata = az.from_netcdf(tmp / "pgene.nc")
    idata.posterior.attrs["selection"] = json.dumps({"top_genes": 20})
    idata.to_netcdf(tmp / "pgene_other.nc")
    res = scribe("compare", tmp / "nbdm.nc", tmp / "pgene_other.nc", "-o", tmp / "bad", check=False)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("scribe: error: ") and "different data" in res.stderr and len(res.stderr.splitlines()) == 1
    assert not (tmp / "bad.tsv").exists()
