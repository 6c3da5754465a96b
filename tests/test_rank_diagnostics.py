"""rank_diagnostics computes ArviZ's rank-normalised R-hat, bulk and tail ESS with array operations: it must
give ArviZ's numbers (to rounding) on the shapes and pathologies a fit produces."""

import arviz as az
import numpy as np
import pytest

from scribe_cli import rank_diagnostics as rd


def _ar1(rng, c, n, e, phi):
    x = np.zeros((c, n, e))
    eps = rng.normal(size=(c, n, e))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + eps[:, t]
    return x


@pytest.mark.parametrize("chains,draws", [(4, 400), (3, 101), (2, 7), (4, 5), (1, 50)])
def test_diagnose_matches_arviz(chains, draws):
    rng = np.random.default_rng(chains * 1000 + draws)
    x = np.concatenate([
        _ar1(rng, chains, draws, 6, 0.95),  # slow mixing: Geyer's sequences truncate late
        _ar1(rng, chains, draws, 6, -0.7),  # antithetic draws (NUTS's): ESS above the draw count
        rng.normal(size=(chains, draws, 6)) + 0.5 * np.arange(chains)[:, None, None],  # chains disagree
    ], axis=2)
    x[:, :, 0] = 2.0  # a constant scalar
    x[:, :, 1] = np.round(x[:, :, 1])  # ties in the ranks
    x[0, 0, 2] = np.nan  # a non-finite draw
    x[:, :, 3] = rng.poisson(0.05, size=(chains, draws))  # mostly one value, as a rarely-used indicator
    ds = az.convert_to_dataset({"v": x})
    expected = (az.rhat(ds)["v"].values, az.ess(ds, method="bulk")["v"].values, az.ess(ds, method="tail")["v"].values)
    for name, mine, theirs in zip(("rhat", "ess_bulk", "ess_tail"), rd.diagnose(x), expected):
        np.testing.assert_array_equal(np.isnan(mine), np.isnan(theirs), err_msg=name)
        np.testing.assert_allclose(mine, theirs, rtol=1e-9, equal_nan=True, err_msg=name)


def test_blocks_cover_every_scalar(monkeypatch):
    """Blocks split the scalars; a small block size must not change any value."""
    rng = np.random.default_rng(3)
    x = _ar1(rng, 4, 200, 50, 0.5)
    whole = rd.diagnose(x)
    monkeypatch.setattr(rd, "BLOCK_BYTES", 4 * 200 * 8 * 7)  # 7 scalars per block, the last one short
    for a, b in zip(whole, rd.diagnose(x)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_monotone_copies_are_not_ranked_twice():
    rng = np.random.default_rng(5)
    log_mu = _ar1(rng, 4, 100, 20, 0.5)
    other = _ar1(rng, 4, 100, 20, 0.5)
    kept = rd.distinct({"log_mu": log_mu, "mu": np.exp(log_mu), "neg": -3 * log_mu, "other": other,
                        "almost": np.exp(log_mu) + 0.1 * other})
    assert list(kept) == ["log_mu", "other", "almost"]


@pytest.mark.parametrize("method", ["nuts", "pathfinder"])
def test_parameter_table_matches_arviz_summary(method):
    """`scribe summary`'s table (reports.summary.parameter_table) against az.summary(kind="all" / "stats",
    hdi_prob=0.9): the same rows (labels from the coordinates, C order), columns and numbers. One exception:
    az.summary's tail ESS takes its 5% / 95% quantiles from its own _quantile, not np.quantile as az.ess does;
    ours is az.ess(method="tail") (test above), which differs from the summary's by ~0.1% here."""
    from scribe_cli.reports.summary import parameter_table

    rng = np.random.default_rng(11)
    posterior = {"p": rng.beta(3, 5, size=(4, 300)), "mu": _ar1(rng, 4, 300, 5, 0.8) + 3.0,
                 "w": rng.normal(size=(4, 300, 3, 2)), "c": np.full((4, 300), 2.5)}
    idata = az.from_dict(posterior=posterior, coords={"gene": ["g1", "g2", "g3", "g4", "g5"], "component": [0, 1]},
                         dims={"mu": ["gene"], "w": ["gene_subset", "component"]})
    idata.posterior = idata.posterior.assign_coords(gene_subset=["a", "b", "c"])
    idata.posterior.attrs["method"] = method  # as `scribe run` writes it
    mine = parameter_table(idata, rounded=False)
    theirs = az.summary(idata, kind="all" if method == "nuts" else "stats", hdi_prob=0.9, round_to="none")
    assert list(mine.index) == list(theirs.index) and list(mine.columns) == list(theirs.columns)
    for col in mine.columns:
        rtol = 5e-3 if col == "ess_tail" else 1e-9
        np.testing.assert_allclose(mine[col], theirs[col], rtol=rtol, equal_nan=True, err_msg=col)
    subset = parameter_table(idata, ["mu"])
    assert list(subset.index) == [f"mu[g{i}]" for i in range(1, 6)] and subset["mean"].round(3).equals(subset["mean"])
