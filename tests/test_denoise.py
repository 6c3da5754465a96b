"""`scribe denoise`, `scribe export` and `scribe ppc --biological` (docs/denoise.md).

The closed forms are checked against Monte Carlo simulation from the generative model (true count, binomial
capture, gate), done here with numpy independently of the formulas. The commands run on posteriors built in
numpy (every draw at the simulated truth, so that the denoising posterior is exactly the conditional of the
true counts): no Stan, so the whole file takes a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from helpers import bnb_logpmf
from scipy import stats

from scribe_cli.cli import main

from scribe_cli.reports import denoise as den
from scribe_cli.reports.ppc import Draws
from scribe_cli.simulate import at_truth, simulate_from_prior, write_posterior

N_MC = 400_000


class _Result:
    def __init__(self, res):
        self.returncode, self.stdout, self.stderr = res.exit_code, res.stdout, res.stderr


def _scribe(*args, check: bool = True) -> _Result:
    """The CLI in process (CliRunner: its own stdout and stderr, the exit code), which saves the start-up of a
    subprocess per call; tests/test_run_e2e.py covers the installed entry point."""
    res = CliRunner().invoke(main, [str(a) for a in args])
    if check and res.exit_code != 0:
        raise AssertionError(f"scribe {' '.join(map(str, args))} exited {res.exit_code}:\n{res.stderr}{res.exception!r}")
    return _Result(res)


def _simulate_one(rng, n, mu, r, nu, kappa=None, gate=None):
    """(m, u) pairs from the model, written from its story rather than from the formulas: BNB as the odds
    O ~ BetaPrime(alpha, kappa) of the observed-scale rate (alpha = (kappa - 1) nu mu / r), the true count
    m ~ Poisson(Gamma(r) O / nu); NB as m ~ Poisson(Gamma(r, scale mu / r)); then u ~ Binomial(m, nu) and the
    gate zeroes u."""
    if kappa is None:
        m = rng.poisson(rng.gamma(r, mu / r, n))
    else:
        alpha = (kappa - 1) * nu * mu / r
        m = rng.poisson(rng.gamma(r, size=n) * rng.gamma(alpha, size=n) / rng.gamma(kappa, size=n) / nu)
    u = rng.binomial(m, nu)
    structural = rng.random(n) < (gate or 0.0)
    return m, np.where(structural, 0, u), structural


CASES = {
    "nb_capture": dict(mu=5.0, r=2.0, nu=0.3),
    "zinb_capture": dict(mu=5.0, r=2.0, nu=0.3, gate=0.3),
    "bnb_capture": dict(mu=5.0, r=2.0, nu=0.3, kappa=6.0),
    "zibnb_capture": dict(mu=5.0, r=2.0, nu=0.4, kappa=4.0, gate=0.2),
    "zinb_no_capture": dict(mu=3.0, r=1.5, nu=1.0, gate=0.25),
}


@pytest.mark.parametrize("case", CASES)
def test_closed_forms_match_simulation_from_the_model(case):
    kw = CASES[case]
    rng = np.random.default_rng(11)
    m, u, structural = _simulate_one(rng, N_MC, **kw)
    comp = den.Component(mu=np.array(kw["mu"]), r=np.array(kw["r"]), nu=kw["nu"],
                         kappa=np.array(kw["kappa"]) if "kappa" in kw else None,
                         gate=np.array(kw["gate"]) if "gate" in kw else None)
    for value in range(4):
        truth = m[u == value]
        n = truth.size
        assert n > 20_000
        se = truth.std() / np.sqrt(n)
        # the closed-form E[m | u] against the simulated conditional mean: 5 Monte Carlo sd (se <= 0.02)
        assert abs(float(den.conditional_mean(np.array(float(value)), comp)) - truth.mean()) <= 5 * se + 1e-9, value
        draws = den.conditional_sample(np.full(100_000, float(value)), comp, rng)
        assert draws.min() >= value  # the true count is at least the observed one
        # the sampler's distribution against the simulated conditional one (two-sample KS; discrete, so the
        # test is conservative; p < 1e-4 would be a real difference at these sizes)
        assert stats.ks_2samp(draws, truth).pvalue > 1e-4, value
    if "gate" in kw:
        # P(structural | u = 0) against the simulated fraction of gate zeros among zeros: 5 binomial sd
        zeros = u == 0
        w = float(den.structural_zero_prob(np.array(0.0), comp))
        assert abs(w - structural[zeros].mean()) < 5 * np.sqrt(w * (1 - w) / zeros.sum())


def test_bnb_story_thins_to_the_fitted_likelihood():
    """The BNB reading of docs/denoise.md (capture scales the odds draw's rate) gives exactly the likelihood the
    fit uses: u ~ BNB(r, alpha = (kappa - 1) nu mu / r, kappa)."""
    rng = np.random.default_rng(5)
    mu, r, nu, kappa = 5.0, 2.0, 0.3, 6.0
    _, u, _ = _simulate_one(rng, N_MC, mu, r, nu, kappa=kappa)
    k = np.arange(8)
    pmf = np.exp(bnb_logpmf(k, r, kappa, (kappa - 1) * nu * mu / r))
    freq = np.bincount(u, minlength=8)[:8] / u.size
    # binomial sd of a frequency over 4e5 draws is at most 0.0008; 5 sd
    np.testing.assert_allclose(freq, pmf, atol=0.004)


def _draws(S, G, K=1, D=1, **values) -> Draws:
    """A Draws with gene-level parameters (S, G, K, D) and the other values as given."""
    gene_dims = ("gene",) + (("component",) if K > 1 else ()) + (("dataset",) if D > 1 else ())
    dims = {}
    for name, x in values.items():
        if name in ("mu", "r", "gate", "kappa"):
            values[name] = np.broadcast_to(np.asarray(x, float), (S, G, K, D)).copy()
            dims[name] = gene_dims
        else:
            dims[name] = {"capture": ("cell",), "weights": ("component",), "dataset_weights": ("dataset", "component")}[name]
    return Draws(values, dims)


def test_mixture_mean_and_component_probabilities_match_simulation():
    """Two components, two genes, capture 0.5: E[m_1 | u_1, u_2] and P(component | u_1, u_2) against the
    simulated conditionals for the most frequent patterns (u_1, u_2)."""
    rng = np.random.default_rng(3)
    n, nu = N_MC, 0.5
    w = np.array([0.3, 0.7])
    mu = np.array([[1.0, 8.0], [6.0, 0.5]])  # gene x component
    r = np.array([[2.0, 3.0], [1.5, 4.0]])
    z = rng.choice(2, size=n, p=w)
    m = rng.poisson(rng.gamma(r[:, z].T, (mu / r)[:, z].T))
    u = rng.binomial(m, nu)
    patterns, inverse, count = np.unique(u, axis=0, return_inverse=True, return_counts=True)
    top = np.argsort(-count)[:6]
    X = sp.csr_matrix(patterns[top])
    draws = _draws(1, 2, K=2, mu=mu[None, :, :, None], r=r[None, :, :, None], capture=np.full((1, 6), nu),
                   weights=w[None])
    res = den.Denoiser(draws, X, np.array([0])).block(0, 6, rng)
    for row, j in enumerate(top):
        sel = inverse.ravel() == j
        se = m[sel, 0].std() / np.sqrt(sel.sum())
        assert abs(res.mean[row, 0] - m[sel, 0].mean()) < 5 * max(se, 1e-3), patterns[j]
        p1 = z[sel].mean()
        assert abs(res.component_prob[row, 1] - p1) < 5 * np.sqrt(p1 * (1 - p1) / sel.sum()) + 1e-3, patterns[j]


def test_datasets_draws_and_blocks():
    """Each cell uses its dataset's column (a BNB, zero-inflated model with capture); the mean averages the per-draw
    closed forms; blocks of any size give the same layer."""
    rng = np.random.default_rng(8)
    C, G, S = 30, 4, 3
    X = sp.csr_matrix(rng.poisson(2.0, size=(C, G)))
    cell_dataset = rng.integers(0, 2, C)
    mu = rng.lognormal(1.0, 0.5, size=(S, G, 1, 2))
    r = rng.lognormal(0.5, 0.3, size=(S, G, 1, 1))
    nu = rng.uniform(0.2, 0.9, size=(S, C))
    gate = np.full((S, G, 1, 1), 0.2)
    kappa = rng.uniform(3.0, 9.0, size=(S, G, 1, 1))
    draws = _draws(S, G, D=2, mu=mu, r=r, gate=gate, kappa=kappa, capture=nu)
    U = X.toarray().astype(float)
    expected = np.zeros((C, G))
    for s in range(S):
        comp = den.Component(mu=mu[s, :, 0, cell_dataset].reshape(C, G), r=r[s, :, 0, 0], nu=nu[s][:, None],
                             gate=gate[s, :, 0, 0], kappa=kappa[s, :, 0, 0])
        expected += den.conditional_mean(U, comp) / S
    for block in (1, 7 * S * G, 10**9):  # one cell, 7 cells, all cells per block
        res = den.denoise(draws, X, cell_dataset, n_posterior=S, block_elements=block)
        np.testing.assert_allclose(res.mean, expected, rtol=1e-5)  # float32 layer


# --- the commands, on posteriors built in numpy ---


def _h5ad(tmp_path: Path, X, name="data.h5ad", **layers) -> Path:
    C, G = X.shape
    adata = anndata.AnnData(X=sp.csr_matrix(X), obs=pd.DataFrame({"batch": ["a"] * C}, index=[f"c{i}" for i in range(C)]),
                            var=pd.DataFrame({"symbol": [f"S{j}" for j in range(G)]}, index=[f"g{j}" for j in range(G)]))
    for k, v in layers.items():
        adata.layers[k] = v
    path = tmp_path / name
    adata.write_h5ad(path)
    return path


@pytest.mark.parametrize("capture,gate", [(True, False), (False, True), (True, True)])
def test_denoise_beats_the_observed_counts_and_covers_the_truth(tmp_path, capture, gate):
    sim = simulate_from_prior(np.random.default_rng(21), 300, 40, capture=capture, gate=gate, p=0.7)
    data = _h5ad(tmp_path, sim.X, spliced=sp.csr_matrix(sim.X))
    post = write_posterior(tmp_path / "post.nc", data, [f"g{j}" for j in range(40)], [f"c{i}" for i in range(300)],
                            at_truth(sim))
    out = tmp_path / "out.h5ad"
    report = json.loads(_scribe("denoise", post, data, "-o", out, "--interval", "0.9", "--draws", "2").stdout)
    assert report["layers"] == ["denoised", "denoised_lo", "denoised_hi", "denoised_draw0", "denoised_draw1"]
    ad = anndata.read_h5ad(out)
    dense = {k: (v.toarray() if sp.issparse(v) else np.asarray(v)) for k, v in ad.layers.items()}
    M = sim.M
    err_obs = np.sqrt(np.mean((sim.X.toarray() - M) ** 2))
    err_den = np.sqrt(np.mean((dense["denoised"] - M) ** 2))
    assert err_den < 0.9 * err_obs, (err_den, err_obs)
    covered = np.mean((dense["denoised_lo"] <= M) & (M <= dense["denoised_hi"]))
    # Every draw is the truth, so each (lo, hi) is an interval of the exact conditional of m, from 80 draws:
    # for a discrete law it covers at least 90% (less the quantile error of 80 draws, ~2 points); 12000
    # entries put the Monte Carlo sd of the rate near 0.3 points, but entries of a gene share parameters
    coverage_floor = 0.86
    assert coverage_floor < covered < 0.995, covered
    assert np.all(dense["denoised_draw0"] >= sim.X.toarray()) and np.all(dense["denoised"] >= sim.X.toarray() - 1e-4)
    # the input's other contents are kept
    np.testing.assert_array_equal(ad.X.toarray(), sim.X.toarray())
    np.testing.assert_array_equal(dense["spliced"], sim.X.toarray())
    assert list(ad.obs["batch"]) == ["a"] * 300 and ad.var["symbol"].iloc[3] == "S3"
    assert ad.uns["scribe_denoised"]["posterior_draws"] == 80 and not report["counts_unchanged"]


def test_nb_without_capture_or_gate_leaves_the_counts_sparse(tmp_path):
    sim = simulate_from_prior(np.random.default_rng(2), 50, 10, capture=False, gate=False, p=0.5)
    data = _h5ad(tmp_path, sim.X)
    post = write_posterior(tmp_path / "post.nc", data, [f"g{j}" for j in range(10)], [f"c{i}" for i in range(50)],
                            at_truth(sim), config={"model": "nbdm"})
    out = tmp_path / "out.h5ad"
    report = json.loads(_scribe("denoise", post, data, "-o", out, "--layer-name", "true").stdout)
    assert report["counts_unchanged"] and report["sparse"] == {"true": True}
    layer = anndata.read_h5ad(out).layers["true"]
    assert sp.issparse(layer) and (layer != sim.X).nnz == 0


def _one_line_failure(res, out: Path, *fragments):
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("scribe: error:"), lines
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert res.stdout == "" and not out.exists() and not list(out.parent.glob(f".{out.name}.*"))


def test_bad_combinations_exit_2_and_write_nothing(tmp_path):
    sim = simulate_from_prior(np.random.default_rng(4), 20, 6, capture=True, gate=False, p=0.6)
    data = _h5ad(tmp_path, sim.X)
    genes, cells = [f"g{j}" for j in range(6)], [f"c{i}" for i in range(20)]
    out = tmp_path / "out.h5ad"
    other_genes = write_posterior(tmp_path / "g.nc", data, genes[::-1], cells, at_truth(sim))
    other_cells = _h5ad(tmp_path, sim.X[:19], name="fewer.h5ad")
    good = write_posterior(tmp_path / "ok.nc", data, genes, cells, at_truth(sim))
    mode = write_posterior(tmp_path / "opt.nc", data, genes, cells, at_truth(sim, S=1, chains=1), method="optimize")
    for command in ("denoise", "export"):
        _one_line_failure(_scribe(command, other_genes, data, "-o", out, check=False), out, "genes differ")
        _one_line_failure(_scribe(command, good, other_cells, "-o", out, check=False), out, "cells differ")
        _one_line_failure(_scribe(command, mode, data, "-o", out, check=False), out, "optimize", "--method nuts")
    with_layer = _h5ad(tmp_path, sim.X, name="layered.h5ad", denoised=sp.csr_matrix(sim.X))
    post = write_posterior(tmp_path / "l.nc", with_layer, genes, cells, at_truth(sim))
    _one_line_failure(_scribe("denoise", post, with_layer, "-o", out, check=False), out, "--layer-name")
    _one_line_failure(_scribe("denoise", good, data, "-o", out, "--interval", "90", check=False), out, "--interval")


def test_export_puts_parameters_in_var_obs_and_uns(tmp_path):
    """A two-component mixture with capture and per-dataset means: var columns per component and dataset,
    obs capture and component probabilities, uns configuration, scalar p and shrinkage."""
    rng = np.random.default_rng(6)
    C, G, S = 60, 5, 30
    X = rng.poisson(3.0, size=(C, G))
    X[:30, 0] += 20  # cells 0..29 express gene 0 highly: component 1
    adata = anndata.AnnData(X=sp.csr_matrix(X), obs=pd.DataFrame({"kit": ["A", "B"] * 30}, index=[f"c{i}" for i in range(C)]),
                            var=pd.DataFrame(index=[f"g{j}" for j in range(G)]))
    data = tmp_path / "mix.h5ad"
    adata.write_h5ad(data)
    mu = np.full((2, S, G, 2), 3.0)
    mu[..., 0, 1] = 23.0
    post = write_posterior(
        tmp_path / "mix.nc", data, [f"g{j}" for j in range(G)], [f"c{i}" for i in range(C)],
        {"mu": (("gene", "component"), mu * rng.lognormal(0, 0.05, mu.shape)),
         "r": (("gene", "component"), np.full((2, S, G, 2), 20.0)),
         "p": ((), np.full((2, S), 0.4)),
         "weights": (("component",), np.full((2, S, 2), 0.5)),
         "prob_sigma": ((), rng.lognormal(-3, 0.1, (2, S))),
         "capture": (("cell",), rng.uniform(0.8, 0.99, (2, S, C)))},
        config={"model": "nbvcp", "components": 2})
    out = tmp_path / "exp.h5ad"
    report = json.loads(_scribe("export", post, data, "-o", out).stdout)
    ad = anndata.read_h5ad(out)
    assert {"scribe_mu_c0_mean", "scribe_mu_c1_sd", "scribe_r_c1_lo", "scribe_r_c0_hi"} <= set(ad.var.columns)
    assert set(report["var_columns"]) <= set(ad.var.columns)
    np.testing.assert_allclose(ad.var["scribe_mu_c1_mean"].iloc[0], 23.0, rtol=0.05)
    assert (ad.var["scribe_mu_c0_lo"] < ad.var["scribe_mu_c0_hi"]).all()
    prob = ad.obs[["scribe_component_prob_0", "scribe_component_prob_1"]].to_numpy()
    np.testing.assert_allclose(prob.sum(axis=1), 1.0)
    assert (ad.obs["scribe_component"].astype(int).to_numpy()[:30] == 1).all()
    assert (ad.obs["scribe_component"].astype(int).to_numpy()[30:] == 0).all()
    assert ((ad.obs["scribe_capture_mean"] > 0.8) & (ad.obs["scribe_capture_mean"] < 0.99)).all()
    assert list(ad.obs["kit"][:2]) == ["A", "B"]  # the input's obs kept
    uns = ad.uns["scribe"]
    assert uns["method"] == "nuts" and uns["interval"] == 0.9
    assert abs(uns["parameters"]["p"]["mean"] - 0.4) < 1e-9
    assert uns["shrinkage"]["prob"]["family"] == "gaussian"
    assert "scribe_<parameter>" in uns["columns"]["var"]


def test_export_names_per_dataset_columns_by_dataset(tmp_path):
    rng = np.random.default_rng(9)
    C, G, S = 12, 3, 10
    adata = anndata.AnnData(X=sp.csr_matrix(rng.poisson(2.0, (C, G))),
                            obs=pd.DataFrame({"protocol": ["celseq2", "dropseq"] * 6}, index=[f"c{i}" for i in range(C)]),
                            var=pd.DataFrame(index=[f"g{j}" for j in range(G)]))
    data = tmp_path / "ds.h5ad"
    adata.write_h5ad(data)
    post = write_posterior(
        tmp_path / "ds.nc", data, [f"g{j}" for j in range(G)], [f"c{i}" for i in range(C)],
        {"mu": (("gene", "dataset"), rng.lognormal(0, 0.1, (1, S, G, 2))), "r": (("gene",), np.ones((1, S, G)))},
        config={"model": "nbdm", "dataset_key": "protocol"}, dataset_key="protocol", datasets=["celseq2", "dropseq"])
    out = tmp_path / "ds_out.h5ad"
    _scribe("export", post, data, "-o", out)
    var = anndata.read_h5ad(out).var
    assert {"scribe_mu_celseq2_mean", "scribe_mu_dropseq_mean", "scribe_r_mean"} <= set(var.columns)


def test_ppc_biological_strips_capture_and_gate(tmp_path):
    """Replicates of the biological NB have mean mu, not capture x mu, and no structural zeros."""
    sim = simulate_from_prior(np.random.default_rng(13), 400, 8, capture=True, gate=True, p=0.8)
    data = _h5ad(tmp_path, sim.X)
    post = write_posterior(tmp_path / "post.nc", data, [f"g{j}" for j in range(8)], [f"c{i}" for i in range(400)],
                            at_truth(sim, S=10))
    report = json.loads(_scribe("ppc", post, data, "-o", tmp_path / "chk", "--draws", "10", "--biological").stdout)
    bio = report["biological"]
    assert Path(bio["figure"]).is_file() and Path(bio["table"]).is_file() and Path(report["table"]).is_file()
    table = pd.read_csv(bio["table"], sep="\t", index_col="gene")
    full = pd.read_csv(report["table"], sep="\t", index_col="gene")
    # sd of a replicated mean over 400 cells: sqrt(mu + mu^2 / r) / 20 <= 0.2 mu for these r; 25% tolerance
    np.testing.assert_allclose(table["rep_mean_median"], sim.mu, rtol=0.25)
    # the full model's replicates carry capture (mean capture ~0.5): their means are clearly lower
    assert (full["rep_mean_median"] < 0.8 * table["rep_mean_median"]).mean() > 0.7
