"""The optional InferenceData groups of `scribe run`: log_likelihood (--log-lik), prior (--prior-draws),
posterior_predictive and observed_data (--ppc-draws).

log_lik is computed in Stan's generated quantities with the cost of each likelihood form (pair forms: one
sum of log P(0) per draw plus each cell's non-zeros through the cells x pairs CSR); tests/test_likelihoods.py
checks it against an independent dense per-cell sum with scipy for every form. --prior-draws is a data switch
(prior_only) of the program a plain run compiles; --log-lik renders its generated quantity (render(log_lik=True)),
so that runs without it do not pay its ~7 s of every compile. Here: which program each run compiles, that a run
without --log-lik reads and writes nothing for it, log_lik's dims, and one `scribe run` with every group on the
bundled data with short chains.
"""

from __future__ import annotations

import json
from dataclasses import replace

import arviz as az
import numpy as np
import pytest
from helpers import reference_program, scribe, small_counts
import scipy.sparse as sp
from scipy import stats

from scribe_cli.config import ModelConfig, validate
from scribe_cli.idata import variable_dims
from scribe_cli.pipeline import _check_groups
from scribe_cli.plan import likelihood_form
from scribe_cli.render import render
from scribe_cli.standata import stan_data
from test_likelihoods import CASES as LIKELIHOOD_CASES

# Each cell's log_lik is checked against scipy in tests/test_likelihoods.py, on every program there (every
# likelihood form and its branches, with and without datasets, with and without assignment_prob).


@pytest.fixture(scope="module")
def counts() -> sp.csr_matrix:
    return small_counts(7)


def test_programs_of_log_lik_and_prior_draws(counts, toolchain, tmp_path, monkeypatch):
    """A plain run and a --prior-draws run compile (or find in the cache) one program, the text render(config) of
    `scribe render`; a --log-lik run compiles render(config, log_lik=True), whose draws are the plain run's; the
    plain run's posterior has no log_lik and no log_likelihood group."""
    from scribe_cli import pipeline
    from scribe_cli.calibration import placeholder_counts
    from scribe_cli.fit import RunOptions

    config = validate(ModelConfig())  # the shared-p NBDM of the runs below (`--prob-prior none`): compiled once
    compiled = []
    real = pipeline.compile_program
    monkeypatch.setattr(pipeline, "compile_program", lambda program, name: compiled.append(program) or real(program, name))
    data = replace(placeholder_counts(*counts.shape), X=counts)
    opts = RunOptions(chains=1, warmup=100, draws=40, seed=5, show_progress=False)
    runs = {"plain": {}, "log_lik": {"log_lik": True}, "prior": {"prior_draws": 20}}
    for name, kw in runs.items():
        pipeline.run(data, config, opts, tmp_path / f"{name}.nc", **kw)
    assert compiled == [render(config), render(config, log_lik=True), render(config)]
    plain, with_ll, prior = (az.from_netcdf(tmp_path / f"{name}.nc") for name in runs)
    assert set(plain.groups()) == {"posterior", "sample_stats"} and "log_lik" not in plain.posterior
    assert with_ll.log_likelihood["log_lik"].shape == (1, 40, counts.shape[0])
    assert "log_lik" not in prior.prior and set(prior.prior.data_vars) == set(plain.posterior.data_vars)
    for name in plain.posterior.data_vars:  # log_lik is generated quantities only: the same draws
        np.testing.assert_array_equal(with_ll.posterior[name].values, plain.posterior[name].values)


def test_programs_without_log_lik_have_none_of_it(counts):
    """Without --log-lik a program has no log_lik, and the pair forms get no cells x pairs CSR (only log_lik reads
    it); with it, the CSR is the matrix's. Mixtures read it in their likelihood, and capture_cells has the CSR
    matrix itself: both always hold it. --prior-draws only sets prior_only (and plain coordinates,
    test_likelihoods)."""
    for kw in LIKELIHOOD_CASES.values():
        config = validate(ModelConfig(**kw))
        plain = render(config)
        assert "cell_log_factorial" not in plain and " log_lik" not in plain and "vector[C] log_lik" in render(config, log_lik=True)
        data, with_ll = stan_data(config, counts), stan_data(config, counts, log_lik=True)
        assert (data["prior_only"], stan_data(config, counts, prior_only=True)["prior_only"]) == (0, 1)
        assert with_ll["N"] == counts.nnz and with_ll["cell_start"].size == counts.shape[0] + 1
        if likelihood_form(config) in ("pairs", "capture_shared_p") and not config.mixture:
            assert "nz_pair" not in data and {"nz_pair", "cell_start", "N"} <= set(with_ll)
        else:
            assert set(data) == set(with_ll)
    both = reference_program(validate(ModelConfig()))  # the tests' reference programs
    assert " log_lik = " in both and " log_lik_fast = " in both and " log_lik_dense = " in both


def test_log_lik_is_on_the_cell_axis_when_cells_equal_genes():
    config = validate(ModelConfig(model="nbvcp", components=2, assignments=True))
    data = {"C": 5, "G": 5, "K": 2}
    arrays = {"log_lik": np.zeros((1, 3, 5)), "capture": np.zeros((1, 3, 5)), "mu": np.zeros((1, 3, 5, 2)),
              "assignment_prob": np.zeros((1, 3, 5, 2)), "weights": np.zeros((1, 3, 2))}
    dims = variable_dims(config, arrays, data)
    assert dims["log_lik"] == ["cell"] and dims["capture"] == ["cell"]
    assert dims["mu"] == ["gene", "component"] and dims["assignment_prob"] == ["cell", "component"]
    assert dims["weights"] == ["component"]


def test_mixture_replication_draws_components_from_the_weights():
    """ppc.simulate_stats on a two-component posterior: the replicated gene mean is the weighted mean."""
    from scribe_cli.reports.ppc import simulate_stats, thinned_draws

    S, G, C = 3, 2, 20000
    mu = np.broadcast_to(np.array([[1.0, 20.0], [5.0, 0.5]]), (S, G, 2)).copy()
    params = {"mu": mu, "r": np.full((S, G, 2), 50.0), "weights": np.tile([0.25, 0.75], (S, 1))}
    rep = simulate_stats(params, np.arange(S), C, np.random.default_rng(0))
    expected = mu[0] @ np.array([0.25, 0.75])
    # gene 1: variance = 0.25 * 0.75 * 19^2 (components) + ~24 (NB) ~ 92, so the sd of a mean over 20000 cells
    # is ~0.07 and atol 0.3 is ~4 sd; a replication ignoring the weights would be off by 5 or more
    np.testing.assert_allclose(rep["mean"], np.broadcast_to(expected, (S, G)), atol=0.3)
    np.testing.assert_array_equal(thinned_draws(150, 10), np.round(np.linspace(0, 149, 10)).astype(int))
    np.testing.assert_array_equal(thinned_draws(5, 10), np.arange(5))


# --- end to end: `scribe run` with every optional group ---

# `--prob-prior none`: the seed's shared-p NBDM, whose spec prior (p ~ Beta(1, 1)) the prior test checks; the CLI's
# default is a gene-specific p since issue 14 (its end-to-end run is tests/test_run_e2e.py).
SHORT = ["--chains", "2", "--warmup", "150", "--draws", "150", "--seed", "11", "--quiet", "--prob-prior", "none"]
PRIOR_DRAWS, PPC_DRAWS = 100, 12


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, demo_h5ad, toolchain):
    path = tmp_path_factory.mktemp("groups") / "all.nc"
    res = scribe("run", demo_h5ad, "-o", path, *SHORT, "--log-lik", "--prior-draws", PRIOR_DRAWS,
                 "--ppc-draws", PPC_DRAWS, "--float32")
    return path, json.loads(res.stdout)


@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto")  # a few influential cells, short chains
def test_log_likelihood_group_and_loo(full_run, demo_h5ad):
    import anndata

    path, summary = full_run
    idata = az.from_netcdf(path)
    assert {"posterior", "sample_stats", "log_likelihood", "prior", "posterior_predictive", "observed_data"} <= set(idata.groups())
    assert set(summary["groups"]) == set(idata.groups())
    ll = idata.log_likelihood["log_lik"]
    assert ll.dims == ("chain", "draw", "cell") and ll.shape == (2, 150, 906)
    assert list(ll.coords["cell"].values) == list(anndata.read_h5ad(demo_h5ad).obs_names)
    assert ll.dtype == np.float32  # --float32: cell-level arrays
    assert "log_lik" not in idata.posterior  # moved, not duplicated; not part of R-hat
    assert np.all(np.isfinite(ll.values)) and np.all(ll.values < 0)
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo) and loo.pareto_k.shape == (906,)
    attrs = idata.posterior.attrs
    groups = json.loads(attrs["output_groups"])
    assert groups["log_likelihood"] is True and groups["prior_draws"] == PRIOR_DRAWS and groups["ppc_draws"] == PPC_DRAWS
    assert attrs["stan_program"] == render(validate(ModelConfig()), log_lik=True)  # `scribe render --log-lik`
    assert {"prior", "ppc"} <= set(summary["timings"])


def test_prior_group_has_the_posterior_dims_and_the_spec_prior(full_run):
    idata = az.from_netcdf(full_run[0])
    prior, post = idata.prior, idata.posterior
    assert set(prior.data_vars) == set(post.data_vars)
    for name in post.data_vars:
        assert prior[name].dims == post[name].dims, name
    assert prior.sizes["chain"] == 2 and prior.sizes["draw"] == PRIOR_DRAWS
    assert list(prior.coords["gene"].values) == list(post.coords["gene"].values)
    assert "sample_stats_prior" in idata.groups()
    # nbdm canonical: r ~ LogNormal(0, 1) independently per gene, so log r ~ Normal(0, 1). Genes are independent
    # under the prior (a product target), and within a chain every 10th draw is taken (measured lag-10
    # autocorrelation of log r: |rho| < 0.01; lag 1 is -0.24, NUTS being antithetic here): 2 chains x 10 draws
    # x 500 genes = 10000 nearly iid draws, so the KS test's iid null applies. Seed fixed (this run: p ~ 0.4);
    # p > 0.01 is a 1% false-alarm level for a correct sampler; a 10% error in the scale of log r would
    # give D ~ 0.022 > 1.63 / sqrt(10000) = 0.016, i.e. fail.
    log_r = np.log(prior["r"].values[:, 9::10, :].ravel())
    assert log_r.size == 2 * (PRIOR_DRAWS // 10) * 500
    assert stats.kstest(log_r, "norm").pvalue > 0.01
    # (the posterior is far from it: the data pin each gene's log r down)
    assert stats.kstest(np.log(post["r"].values[:, 9::10, :].ravel()), "norm").pvalue < 1e-6
    # p ~ Beta(1, 1): one scalar, 200 autocorrelated draws; only a loose check of its mean (sd of the mean
    # of 200 iid U(0, 1) draws is 0.02, allow for ESS ~ 20)
    assert abs(float(prior["p"].mean()) - 0.5) < 0.2


def test_posterior_predictive_and_observed_data(full_run, demo_h5ad):
    from scribe_cli.data import read_counts
    from scribe_cli.reports.ppc import observed_stats, replicate_by_chain

    idata = az.from_netcdf(full_run[0])
    pp, od = idata.posterior_predictive, idata.observed_data
    for k in ("mean", "var", "zero_frac"):
        assert pp[f"rep_{k}"].dims == ("chain", "draw", "gene")
        assert pp[f"rep_{k}"].shape == (2, PPC_DRAWS, 500)
        assert od[f"obs_{k}"].dims == ("gene",)
    assert list(pp.coords["draw"].values) == list(np.round(np.linspace(0, 149, PPC_DRAWS)).astype(int))
    assert np.all((pp["rep_zero_frac"] >= 0) & (pp["rep_zero_frac"] <= 1)) and np.all(pp["rep_mean"] >= 0)
    counts = read_counts(demo_h5ad)
    obs = observed_stats(counts)
    for k in ("mean", "var", "zero_frac"):
        np.testing.assert_allclose(od[f"obs_{k}"].values, obs[k].values)
    # the group is the refactored ppc replication at those draws, reproducible from the file and the seed
    rep, draws = replicate_by_chain(idata.posterior, counts, PPC_DRAWS, seed=11)
    np.testing.assert_array_equal(draws, pp.coords["draw"].values)
    np.testing.assert_allclose(pp["rep_mean"].values, rep["mean"])
    # replicated and observed zero fractions agree broadly (the NBDM matches zeros better than means)
    assert float(np.median(np.abs(pp["rep_zero_frac"].mean(("chain", "draw")) - od["obs_zero_frac"]))) < 0.1


@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto")
def test_groups_with_an_approximate_method(demo_h5ad, tmp_path, toolchain):
    """pathfinder draws are one chain: log_lik and posterior_predictive keep that layout; the program is the
    cached program of the NUTS run above."""
    path = tmp_path / "pf.nc"
    scribe("run", demo_h5ad, "-o", path, "--method", "pathfinder", "--chains", "2", "--draws", "100", "--seed", "3",
           "--quiet", "--log-lik", "--ppc-draws", "5", "--prob-prior", "none")
    idata = az.from_netcdf(path)
    assert idata.log_likelihood["log_lik"].shape == (1, 100, 906)
    assert idata.posterior_predictive["rep_var"].shape == (1, 5, 500)
    assert "prior" not in idata.groups()
    assert np.isfinite(az.loo(idata).elpd_loo)


def test_run_help_and_refusals(demo_h5ad, tmp_path):
    help_text = scribe("run", "--help").stdout
    for opt in ("--log-lik", "--prior-draws", "--ppc-draws"):
        assert opt in help_text
    prog = tmp_path / "m.stan"
    prog.write_text(render(validate(ModelConfig())))
    res = scribe("run", demo_h5ad, "--stan-file", prog, "--prior-draws", "10", "-o", tmp_path / "x.nc", check=False)
    assert res.returncode == 2 and "--prior-draws" in res.stderr and not (tmp_path / "x.nc").exists()
    _check_groups(render(validate(ModelConfig()), log_lik=True), True, 0, 0)  # `scribe render --log-lik` has it
    res = scribe("run", demo_h5ad, "--stan-file", prog, "--log-lik", "-o", tmp_path / "y.nc", check=False)
    assert res.returncode == 2 and "log_lik" in res.stderr
    res = scribe("run", demo_h5ad, "--ppc-draws", "-1", "-o", tmp_path / "z.nc", check=False)
    assert res.returncode == 2
