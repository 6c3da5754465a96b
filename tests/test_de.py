"""`scribe de` (spec: de.md): compositions, CLR effects, evidence, PEFP calls, the three kinds of comparison
and the command line. Hand-built posteriors only (no Stan), so every test here is fast.

Monte Carlo tolerances: a mean estimated from N independent draws with sd sigma has standard error
sigma / sqrt(N); we allow 4 standard errors (a two-sided miss has probability 6e-5 per check; the seeds are
fixed, so a test is deterministic anyway, and 4 SE leaves room for any seed while still catching a wrong
formula, whose error is many SE).
"""

from __future__ import annotations

import json

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner
from scipy import special

from scribe_cli.cli_de import de, metadata_path
from scribe_cli.errors import UserInputError
from scribe_cli.reports import de as D

TAU = np.log(1.1)


# --- helpers ---------------------------------------------------------------------------------------------------

def _posterior(variables: dict, coords: dict | None = None, attrs: dict | None = None) -> xr.Dataset:
    """variables: name -> (dims, array) with dims starting (chain, draw)."""
    ds = xr.Dataset({k: (dims, np.asarray(v, dtype=float)) for k, (dims, v) in variables.items()}, coords=coords or {})
    ds.attrs.update(attrs or {})
    return ds


def _write(ds: xr.Dataset, path):
    az.InferenceData(posterior=ds).to_netcdf(str(path))
    return path


def _genes(G):
    return [f"g{i}" for i in range(G)]


def _mixture(rng, chains=2, draws=200, G=60, K=3, planted=(), fold=3.0):
    """A mixture posterior: mu, r (chain, draw, gene, component); component 0 has the planted genes x fold."""
    base_mu = rng.lognormal(1.0, 1.0, G)
    r = np.full((chains, draws, G, K), 30.0) * np.exp(0.05 * rng.standard_normal((chains, draws, G, K)))
    mu = base_mu[None, None, :, None] * np.exp(0.05 * rng.standard_normal((chains, draws, G, K)))
    mu[:, :, list(planted), 0] *= fold
    return _posterior({"mu": (("chain", "draw", "gene", "component"), mu),
                       "r": (("chain", "draw", "gene", "component"), r),
                       "weights": (("chain", "draw", "component"), np.full((chains, draws, K), 1.0 / K))},
                      coords={"gene": _genes(G), "component": list(range(K))})


def _single(rng, chains=2, draws=200, G=40, genes=None, scale=1.0):
    mu = scale * rng.lognormal(1.0, 0.5, G)[None, None, :] * np.exp(0.05 * rng.standard_normal((chains, draws, G)))
    r = np.full((chains, draws, G), 20.0)
    return _posterior({"mu": (("chain", "draw", "gene"), mu), "r": (("chain", "draw", "gene"), r)},
                      coords={"gene": genes or _genes(G)})


def _group(label, mu, r):
    return D.Group(label, np.asarray(mu, float), np.asarray(r, float))


def _comparison(mu_a, r_a, mu_b, r_b):
    G = np.shape(mu_a)[1]
    return D.Comparison("components", "A", "B", [(_group("A", mu_a, r_a), _group("B", mu_b, r_b))], np.ones(1), _genes(G))


# --- compositions ------------------------------------------------------------------------------------------------

def test_shared_p_compositions_are_dirichlet():
    """With one p for all genes mu_g / r_g is constant, so rho ~ Dirichlet(r): check E[rho] = r / sum(r) and
    Var[rho_g] = a_g (a0 - a_g) / (a0^2 (a0 + 1)) within Monte Carlo error. Shapes below 1 included (where a
    direct Gamma draw would underflow)."""
    r = np.array([0.05, 0.3, 1.0, 2.5, 7.0, 20.0])
    p = 0.3
    N = 20000
    mu = np.broadcast_to(r * p / (1 - p), (N, r.size))
    rho = D.compositions(mu, np.broadcast_to(r, (N, r.size)), np.random.default_rng(1))[:, 0, :]
    assert np.allclose(rho.sum(axis=1), 1.0)
    a0 = r.sum()
    mean, var = r / a0, r * (a0 - r) / (a0**2 * (a0 + 1))
    se = np.sqrt(var / N)
    assert np.all(np.abs(rho.mean(axis=0) - mean) < 4 * se), (rho.mean(axis=0), mean)
    # The sample variance of N draws has sd ~ sqrt((kurt - 1) / N) var; rho is bounded in [0, 1], its kurtosis
    # is modest except for the tiny shape, so a 15% relative band is > 4 SE for the genes checked.
    assert np.allclose(rho.var(axis=0)[1:], var[1:], rtol=0.15)


def test_clr_sums_to_zero():
    rng = np.random.default_rng(2)
    rho = D.compositions(rng.lognormal(size=(50, 30)), rng.lognormal(size=(50, 30)), rng, samples_per_draw=3)
    assert rho.shape == (50, 3, 30)
    assert np.allclose(D.clr(rho).sum(axis=-1), 0.0, atol=1e-9)
    # and so does every Delta draw over the genes (the centre is taken over all genes, across gene blocks)
    G = D.GENE_BLOCK + 40
    comp = _comparison(rng.lognormal(size=(30, G)), np.full((30, G), 2.0), rng.lognormal(size=(30, G)), np.full((30, G), 5.0))
    delta = np.concatenate([d for _, d in D.delta_blocks(comp, seed=3, samples_per_draw=2)], axis=1)
    assert delta.shape == (60, G)
    assert np.allclose(delta.sum(axis=1), 0.0, atol=1e-8)


def test_clr_difference_matches_dirichlet_moments(monkeypatch):
    """Shared p on both sides: CLR_g = x_g - mean_j x_j with x_g = log Gamma(r_g) independent, so
    E[Delta_g] = [psi(rA_g) - mean psi(rA)] - [psi(rB_g) - mean psi(rB)] and
    Var[Delta_g] = sum over sides of (1 - 2/G) psi1(r_g) + sum_j psi1(r_j) / G^2. Spans several draw and
    gene blocks; the mean is checked within 4 SE = 4 sd / sqrt(N)."""
    rng = np.random.default_rng(4)
    S, G, m = 600, D.GENE_BLOCK + 50, 4
    rA, rB = rng.uniform(0.5, 20, G), rng.uniform(0.5, 20, G)
    comp = _comparison(np.broadcast_to(rA * 2.0, (S, G)), np.broadcast_to(rA, (S, G)),
                       np.broadcast_to(rB * 0.5, (S, G)), np.broadcast_to(rB, (S, G)))
    table = D.de_table(comp, samples_per_draw=m, seed=5, shrink="none").set_index("gene").loc[comp.genes]
    e = (special.digamma(rA) - special.digamma(rA).mean()) - (special.digamma(rB) - special.digamma(rB).mean())
    v = sum((1 - 2 / G) * special.polygamma(1, x) + special.polygamma(1, x).sum() / G**2 for x in (rA, rB))
    z = (table["mean_clr_diff"].to_numpy() - e) / np.sqrt(v / (S * m))
    assert np.all(np.abs(z) < 4), np.abs(z).max()
    # sd: relative SE of a sample sd is about 1 / sqrt(2 N) = 0.6% here (log-gamma tails are light); 5% is generous
    assert np.allclose(table["sd_clr_diff"], np.sqrt(v), rtol=0.05)
    # keeping the draws in memory or regenerating them block by block gives the same numbers
    monkeypatch.setattr(D, "KEEP_ELEMENTS", 0)
    again = D.de_table(comp, samples_per_draw=m, seed=5, shrink="none").set_index("gene").loc[comp.genes]
    pd.testing.assert_frame_equal(table, again)


# --- evidence and calls -------------------------------------------------------------------------------------------

def test_evidence_definitions_on_constructed_draws():
    # 10 draws per gene, fractions easy to count
    delta = np.array([
        [-0.5, -0.2, -0.05, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # 7 > 0, 3 < 0; > tau: 6, < -tau: 2
        [-1, -1, -1, -1, -1, -1, -1, -1, -1, 0.0],               # 0 > 0, 9 < 0, one exact zero
        [0.01] * 10,                                              # all > 0 but none beyond tau
    ]).T
    ev = D.gene_evidence(delta, ci=0.8, tau=TAU)
    assert np.allclose(ev["prob_positive"], [0.7, 0.0, 1.0])
    assert np.allclose(ev["lfsr"], [0.3, 0.0, 0.0])           # min(P(> 0), P(< 0)); zeros count in neither
    assert np.allclose(ev["prob_effect"], [0.6, 0.9, 0.0])   # max(P(> tau), P(< -tau))
    assert np.allclose(ev["lfsr_tau"], [0.4, 0.1, 1.0])
    assert np.allclose(ev["mean_clr_diff"], delta.mean(axis=0))
    assert np.allclose(ev["sd_clr_diff"], delta.std(axis=0, ddof=1))
    assert np.allclose(ev["ci_low"], np.quantile(delta, 0.1, axis=0))
    assert np.allclose(ev["ci_high"], np.quantile(delta, 0.9, axis=0))
    # tau = 0: prob_effect = 1 - lfsr for draws without exact zeros
    ev0 = D.gene_evidence(delta[:, [0, 2]], tau=0.0)
    assert np.allclose(ev0["lfsr_tau"], ev0["lfsr"])


def test_pefp_calls():
    lfsr_tau = np.array([0.2, 0.0, 0.5, 0.01, 0.1])
    # ascending 0, .01, .1, .2, .5: running means 0, .005, .037, .0775, ...: three genes at 0.05
    assert D.pefp_calls(lfsr_tau, 0.05).tolist() == [False, True, False, True, True]
    assert D.pefp_calls(lfsr_tau, 0.0).tolist() == [False, True, False, False, False]
    assert D.pefp_calls(lfsr_tau, 1.0).all()
    assert not D.pefp_calls(np.array([0.3, 0.4]), 0.05).any()


def test_table_columns_order_and_rank():
    rng = np.random.default_rng(6)
    post = _mixture(rng, planted=range(5))
    table = D.de_table(D.components_comparison(post, ["0"], ["1"]), seed=1, effect="clr-draws", shrink="none")
    assert list(table.columns[:15]) == ["gene", "mean_clr_diff", "sd_clr_diff", "ci_low", "ci_high", "prob_positive",
                                        "prob_effect", "lfsr", "lfsr_tau", "lfc_mean", "lfc_sd", "called", "rank",
                                        "lvr_mean", "lvr_sd"]  # the original columns first, unchanged
    assert list(table.columns) == D.COLUMNS and table["called"].equals(table["clr_draws_called"])
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    key = list(zip(table["lfsr_tau"], -table["mean_clr_diff"].abs()))
    assert key == sorted(key)
    called = table["called"].to_numpy()
    assert not np.any(called[1:] & ~called[:-1])  # the calls are a prefix of the table
    assert table.loc[called, "lfsr_tau"].mean() <= 0.05


def test_planted_effect_is_called_and_nulls_are_not():
    """Five genes x3 in component 0. Planted: Delta ~ log 3 - (5/60) log 3 = 1.0, sd ~ sqrt(2 psi1(30)) = 0.26,
    so lfsr_tau is ~0 and all are called. Nulls sit at -0.09 (the closure shift) with sd 0.26, so each has
    lfsr_tau >= ~0.4: PEFP at 0.05 over 5 near-zero genes admits at most one of them (0.4 / 6 < 0.07, two
    would exceed), hence <= 1 false call, and the called set's mean lfsr_tau is at most the target."""
    rng = np.random.default_rng(7)
    planted = [3, 10, 20, 33, 47]
    post = _mixture(rng, chains=2, draws=500, G=60, planted=planted)
    table = D.de_table(D.components_comparison(post, ["0"], ["2"]), seed=2, effect="clr-draws", shrink="none")
    called = set(table.loc[table["called"], "gene"])
    truth = {f"g{i}" for i in planted}
    assert truth <= called
    assert len(called - truth) <= 1
    assert table.loc[table["called"], "lfsr_tau"].mean() <= 0.05
    up = table.set_index("gene").loc[sorted(truth)]
    assert np.all(up["mean_clr_diff"] > 0.5) and np.allclose(up["lfc_mean"], np.log(3), atol=0.05)


def test_lfc_and_lvr_formulas():
    mu_a = np.array([[1.0, 4.0, 2.0], [2.0, 8.0, 2.0]])
    r_a = np.array([[1.0, 2.0, 0.5], [1.0, 2.0, 0.5]])
    mu_b = np.array([[1.0, 2.0, 2.0], [1.0, 2.0, 2.0]])
    r_b = np.array([[1.0, 2.0, 5.0], [1.0, 2.0, 5.0]])
    table = D.de_table(_comparison(mu_a, r_a, mu_b, r_b), seed=0, shrink="none").set_index("gene").loc[["g0", "g1", "g2"]]
    lf = np.log(mu_a / mu_b)
    var = lambda mu, r: mu + mu**2 / r  # noqa: E731
    lv = np.log(var(mu_a, r_a) / var(mu_b, r_b))
    assert np.allclose(table["lfc_mean"], lf.mean(axis=0)) and np.allclose(table["lfc_sd"], lf.std(axis=0, ddof=1))
    assert np.allclose(table["lvr_mean"], lv.mean(axis=0)) and np.allclose(table["lvr_sd"], lv.std(axis=0, ddof=1))
    # gene 2: same mean, noisier in A (r 0.5 vs 5): no fold change, a positive variance ratio
    assert table.loc["g2", "lfc_mean"] == 0 and table.loc["g2", "lvr_mean"] == pytest.approx(np.log(10 / 2.8))
    assert np.allclose(D.lvr(mu_a, r_a, mu_b, r_b), lv) and np.allclose(D.lfc(mu_a, mu_b), lf)


def test_seed_and_samples_per_draw():
    rng = np.random.default_rng(8)
    comp = D.components_comparison(_mixture(rng, draws=50), ["0"], ["1"])
    t1, t2 = D.de_table(comp, seed=3, shrink="none"), D.de_table(comp, seed=3, shrink="none")
    pd.testing.assert_frame_equal(t1, t2)
    assert not D.de_table(comp, seed=4, shrink="none")["mean_clr_diff"].equals(t1["mean_clr_diff"])
    n = sum(d.shape[0] for _, d in D.delta_blocks(comp, seed=0, samples_per_draw=5)) // -(-comp.n_genes // D.GENE_BLOCK)
    assert n == comp.n_draws * 5


# --- groups ---------------------------------------------------------------------------------------------------------

def test_component_labels():
    rng = np.random.default_rng(9)
    post = _mixture(rng, K=3)
    comp = D.components_comparison(post, [2], [0])
    (a, b), = comp.pairs
    assert np.array_equal(a.mu, post["mu"].sel(component=2).values.reshape(-1, 60))
    assert np.array_equal(b.r, post["r"].sel(component=0).values.reshape(-1, 60))
    with pytest.raises(UserInputError, match=r"component '5' is not in .*components: 0, 1, 2"):
        D.components_comparison(post, ["5"], ["0"])
    with pytest.raises(UserInputError, match="with itself"):
        D.components_comparison(post, ["1"], ["1"])
    with pytest.raises(UserInputError, match="not a mixture fit"):
        D.components_comparison(_single(rng), ["0"], ["1"])


def test_split_rhat_and_chains_that_swap_components():
    """Split R-hat against its definition on a hand-checkable case, and the note `scribe de` gives when the
    chains of a mixture label the components differently (label switching between chains)."""
    x = np.zeros((2, 4, 1))
    x[0, :, 0] = [0.0, 1.0, 0.0, 1.0]
    x[1, :, 0] = [0.0, 1.0, 0.0, 1.0]
    # four half-chains [0, 1] each: within-variance 0.5, no between-variance -> sqrt((1/2) 0.5 / 0.5)
    assert D.split_rhat(x)[0] == pytest.approx(np.sqrt(0.5))
    rng = np.random.default_rng(3)
    post = _mixture(rng, K=2, planted=range(20), fold=4.0)
    assert not D.components_comparison(post, [0], [1]).notes  # the chains agree: no note
    swapped = post.copy(deep=True)
    for v in ("mu", "r"):
        swapped[v].values[1] = swapped[v].values[1][..., ::-1]
    notes = D.components_comparison(swapped, [0], [1]).notes
    assert len(notes) == 2 and all("chains of component" in n and "20 of 60 genes" in n for n in notes)
    # a component left empty: every chain agrees, but its weight gives it about one cell of 200
    empty = post.copy(deep=True)
    empty["weights"].values[..., 0], empty["weights"].values[..., 1] = 0.005, 0.995
    empty.attrs["n_cells"] = 200
    notes = D.components_comparison(empty, [0], [1]).notes
    assert len(notes) == 1 and "component 0 of the posterior holds about 1.0 of 200 cells" in notes[0]


def test_dataset_dim_broadcasts_by_name():
    """mu per dataset stored as (chain, dataset, draw, gene) - an unusual axis order on purpose - and r shared
    (chain, draw, gene): the groups take mu's dataset slice and the same r, matched by dim names."""
    rng = np.random.default_rng(10)
    C, S, G = 2, 30, 12
    mu = rng.lognormal(size=(C, 3, S, G))
    r = rng.lognormal(size=(C, S, G))
    post = _posterior({"mu": (("chain", "dataset", "draw", "gene"), mu), "r": (("chain", "draw", "gene"), r)},
                      coords={"gene": _genes(G), "dataset": ["celseq2", "dropseq", "10x"]})
    comp = D.datasets_comparison(post, ["dropseq"], ["celseq2"])
    (a, b), = comp.pairs
    assert np.array_equal(a.mu, mu[:, 1].reshape(C * S, G)) and np.array_equal(b.mu, mu[:, 0].reshape(C * S, G))
    assert np.array_equal(a.r, r.reshape(C * S, G)) and np.array_equal(b.r, a.r)
    table = D.de_table(comp, shrink="none").set_index("gene").loc[comp.genes]
    assert np.allclose(table["lfc_mean"], np.log(mu[:, 1] / mu[:, 0]).reshape(-1, G).mean(axis=0))
    # the other way round: shared mu, per-dataset r (e.g. a per-dataset p under mean-prob)
    post2 = _posterior({"mu": (("chain", "draw", "gene"), r), "r": (("chain", "draw", "gene", "dataset"), mu.transpose(0, 2, 3, 1))},
                       coords={"gene": _genes(G), "dataset": ["celseq2", "dropseq", "10x"]})
    (a2, b2), = D.datasets_comparison(post2, ["10x"], ["celseq2"]).pairs
    assert np.array_equal(a2.mu, b2.mu) and np.array_equal(a2.r, mu[:, 2].reshape(C * S, G))
    with pytest.raises(UserInputError, match=r"dataset 'smartseq' is not in .*datasets: celseq2, dropseq, 10x"):
        D.datasets_comparison(post, ["smartseq"], ["celseq2"])
    shared = _posterior({"mu": (("chain", "draw", "gene"), r), "r": (("chain", "draw", "gene"), r)}, coords={"gene": _genes(G)})
    with pytest.raises(UserInputError, match="no dataset-specific mu or r"):
        D.datasets_comparison(shared, ["a"], ["b"])


def test_several_grouping_levels_average_within_pair_effects():
    """Two donors x two conditions: Delta = w1 Delta_1 + w2 Delta_2, each within one donor; the LFC (no
    composition noise) is exactly the weighted mean of the within-donor LFCs, with weights by cells."""
    rng = np.random.default_rng(11)
    C, S, G = 1, 400, 20
    names = ["d1_ctrl", "d2_ctrl", "d1_trt", "d2_trt"]
    mu = rng.lognormal(1, 0.3, size=(C, S, G, 4))
    mu[..., 2] = mu[..., 0] * 2.0  # donor 1: x2 in treatment for all genes ...
    mu[..., 3] = mu[..., 1] * 1.0
    mu[..., 0, 2] *= 4.0           # ... and gene 0 x8 in total
    mu[..., 0, 3] *= 4.0           # donor 2: gene 0 x4
    post = _posterior({"mu": (("chain", "draw", "gene", "dataset"), mu), "r": (("chain", "draw", "gene"), np.full((C, S, G), 50.0))},
                      coords={"gene": _genes(G), "dataset": names})
    cells = {"d1_ctrl": 100, "d2_ctrl": 300, "d1_trt": 100, "d2_trt": 300}
    comp = D.datasets_comparison(post, ["d1_trt", "d2_trt"], ["d1_ctrl", "d2_ctrl"], weights="cells", cells_per_dataset=cells)
    assert np.allclose(comp.weights, [0.25, 0.75])
    table = D.de_table(comp, seed=1, shrink="none").set_index("gene")
    assert table.loc["g0", "lfc_mean"] == pytest.approx(0.25 * np.log(8) + 0.75 * np.log(4))
    assert table.loc["g5", "lfc_mean"] == pytest.approx(0.25 * np.log(2))
    # the CLR removes donor 1's global x2 (closure): only gene 0 stands out; its Delta is ~ the LFC minus the
    # mean LFC over genes (sd of its mean over 400 draws ~ 0.2 / 20 = 0.01; 0.05 is 5 SE)
    centre = table["lfc_mean"].mean()
    assert table.loc["g0", "mean_clr_diff"] == pytest.approx(table.loc["g0", "lfc_mean"] - centre, abs=0.05)
    assert table.index[0] == "g0" and table.loc["g0", "called"]
    with pytest.raises(UserInputError, match="same number of labels"):
        D.datasets_comparison(post, ["d1_trt", "d2_trt"], ["d1_ctrl"])


def test_two_fits_unequal_draws_and_gene_mismatch():
    rng = np.random.default_rng(12)
    A, B = _single(rng, chains=2, draws=250), _single(rng, chains=2, draws=150)
    comp = D.fits_comparison(A, B, "A.nc", "B.nc", seed=1)
    assert comp.n_draws == 300 and (comp.n_draws_a, comp.n_draws_b) == (500, 300)
    assert any("ignores any technical structure" in n for n in comp.notes)
    assert any("subsampled to 300" in n for n in comp.notes)
    # the subsample is a subset of A's draws, in order
    rows = A["mu"].values.reshape(500, -1)
    idx = [int(np.flatnonzero((rows == row).all(axis=1))[0]) for row in comp.pairs[0][0].mu]
    assert idx == sorted(set(idx))
    with pytest.raises(UserInputError, match=r"genes of A.nc and B.nc differ \(gene 3 is 'g2' vs 'x'\)"):
        D.fits_comparison(A, _single(rng, genes=["g0", "g1", "x"] + _genes(40)[3:]), "A.nc", "B.nc")
    with pytest.raises(UserInputError, match=r"40 vs 39 genes"):
        D.fits_comparison(A, _single(rng, G=39), "A.nc", "B.nc")
    with pytest.raises(UserInputError, match="extra dim.*component"):
        D.fits_comparison(_mixture(rng, G=40), A, "M.nc", "A.nc")


def test_missing_mu_or_r():
    post = _posterior({"r": (("chain", "draw", "gene"), np.ones((1, 5, 3)))})
    with pytest.raises(UserInputError, match="no 'mu'"):
        D.components_comparison(post, ["0"], ["1"], name="P.nc")


# --- command line ---------------------------------------------------------------------------------------------------

def _invoke(args):
    return CliRunner().invoke(de, [str(a) for a in args])


def _assert_clean_failure(result, out, fragment):
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("scribe: error:") and fragment in lines[0], lines
    assert result.stdout == ""
    assert not out.exists() and not metadata_path(out).exists()
    assert not list(out.parent.glob(f".{out.name}.*")), "temporary files left behind"


def test_cli_components_end_to_end(tmp_path):
    rng = np.random.default_rng(13)
    post = _write(_mixture(rng, planted=[1, 2, 3]), tmp_path / "post.nc")
    result = _invoke([post, "--components", 0, 1, "--seed", 4])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    out = tmp_path / "post.de.0_vs_1.tsv"
    assert report["table"] == str(out) and report["metadata"] == str(tmp_path / "post.de.0_vs_1.meta.json")
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns) == D.COLUMNS and len(table) == 60
    assert report["called"] == int(table["called"].sum()) >= 3
    assert {t["gene"] for t in report["top"][:3]} == {"g1", "g2", "g3"}
    meta = json.loads(metadata_path(out).read_text())
    assert meta["comparison"]["kind"] == "components" and meta["n_draws"] == 400
    assert meta["comparison"]["effect"] == "lfc" and table["called"].equals(table["lfc_called"])  # the default
    assert meta["tau"] == pytest.approx(TAU) and meta["target"] == 0.05 and meta["files"][0]["path"].endswith("post.nc")
    # existing output is kept unless --overwrite
    before = out.read_bytes()
    again = _invoke([post, "--components", 0, 1, "--seed", 5])
    assert again.exit_code == 2 and "already exists" in again.stderr and out.read_bytes() == before
    again = _invoke([post, "--components", 0, 1, "--seed", 5, "--overwrite", "--target", 0.2, "--no-plot"])
    assert again.exit_code == 0 and out.read_bytes() != before
    assert json.loads(metadata_path(out).read_text())["target"] == 0.2


def test_cli_datasets_and_two_fits(tmp_path):
    rng = np.random.default_rng(14)
    C, S, G = 2, 100, 15
    post = _posterior({"mu": (("chain", "draw", "gene", "dataset"), rng.lognormal(size=(C, S, G, 2))),
                       "r": (("chain", "draw", "gene"), np.full((C, S, G), 10.0))},
                      coords={"gene": _genes(G), "dataset": ["celseq2", "dropseq"]},
                      attrs={"cells_per_dataset": json.dumps({"celseq2": 10, "dropseq": 20})})
    path = _write(post, tmp_path / "joint.nc")
    out = tmp_path / "ds.tsv"
    result = _invoke([path, "--datasets", "celseq2", "dropseq", "-o", out, "--no-plot"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["comparison"] == "datasets" and (tmp_path / "ds.meta.json").exists()

    a = _write(_single(rng, draws=120), tmp_path / "A.nc")
    b = _write(_single(rng, draws=100), tmp_path / "B.nc")
    result = _invoke([a, b, "--no-plot"])
    assert result.exit_code == 0, result.output
    assert "ignores any technical structure" in result.stderr and "subsampled to 200" in result.stderr
    report = json.loads(result.stdout)
    assert report["table"] == str(tmp_path / "A.de.vs_B.tsv") and report["draws"] == 200
    notes = json.loads((tmp_path / "A.de.vs_B.meta.json").read_text())["notes"]
    # the two pairing notes; random gene means may also move the CLR centre (its own note)
    assert sum("ignores any technical" in n or "subsampled" in n for n in notes) == 2
    assert all("ignores any technical" in n or "subsampled" in n or "CLR effects" in n for n in notes)


@pytest.mark.parametrize("case, fragment", [
    ("unknown_component", "components: 0, 1, 2"),
    ("gene_mismatch", "genes of"),
    ("no_mu", "no 'mu'"),
    ("no_groups", "pass --components A B or --datasets A B"),
    ("bad_tau", "--tau"),
    ("missing_file", "does not exist"),
    ("not_dataset_fit", "no dataset-specific mu or r"),
])
def test_cli_errors_write_nothing(tmp_path, case, fragment):
    rng = np.random.default_rng(15)
    mix = _write(_mixture(rng, G=40), tmp_path / "mix.nc")
    single = _write(_single(rng), tmp_path / "single.nc")
    out = tmp_path / "out.tsv"
    args = {
        "unknown_component": [mix, "--components", 0, 7],
        "gene_mismatch": [single, _write(_single(rng, G=41), tmp_path / "other.nc")],
        "no_mu": [_write(_posterior({"r": (("chain", "draw", "gene"), np.ones((1, 5, 3)))}), tmp_path / "nomu.nc"), single],
        "no_groups": [mix],
        "bad_tau": [mix, "--components", 0, 1, "--tau", -1],
        "missing_file": [tmp_path / "nope.nc", "--components", 0, 1],
        "not_dataset_fit": [single, "--datasets", "a", "b"],
    }[case]
    _assert_clean_failure(_invoke([*args, "-o", out]), out, fragment)


# --- population-level effects, shrinkage, mask, gene sets, plots (issue 10) ------------------------------------------

def _population(rng, S=400, G=80, planted=(0, 1, 2, 3), fold=2.0, noise=0.05, depth=1.0):
    """Two groups' posterior draws of mu around fixed means (sd of log mu = ``noise``), A = B x fold on the
    planted genes and x ``depth`` on every gene (a global depth difference), r = 5 on both sides."""
    base = rng.lognormal(1.0, 1.0, G)
    mu_b = base * np.exp(noise * rng.standard_normal((S, G)))
    mu_a = depth * base * np.exp(noise * rng.standard_normal((S, G)))
    mu_a[:, list(planted)] *= fold
    return _comparison(mu_a, np.full((S, G), 5.0), mu_b, np.full((S, G), 5.0))


def test_population_effect_draws_are_clr_of_the_means():
    """clr-mu draws are CLR(mu_A) - CLR(mu_B) = LFC - mean LFC per draw, across gene blocks; the table's
    evidence for each population effect is gene_evidence of those draws (no shrinkage)."""
    rng = np.random.default_rng(20)
    G = D.GENE_BLOCK + 30
    comp = _population(rng, S=50, G=G, depth=3.0)
    a, b = comp.pairs[0]
    clr_mu = np.concatenate([d for _, d in D.effect_blocks(comp, "clr-mu")], axis=1)
    assert np.allclose(clr_mu, D.clr(a.mu) - D.clr(b.mu)) and np.allclose(clr_mu.sum(axis=1), 0.0, atol=1e-9)
    lfc = np.concatenate([d for _, d in D.effect_blocks(comp, "lfc")], axis=1)
    assert np.allclose(lfc, np.log(a.mu / b.mu))
    table = D.de_table(comp, shrink="none", target=0.05).set_index("gene").loc[comp.genes]
    for effect, draws in (("clr-mu", clr_mu), ("lfc", lfc)):
        ev = D.gene_evidence(draws)
        for field, key in (("mean", "mean_clr_diff"), ("sd", "sd_clr_diff"), ("lfsr", "lfsr"), ("lfsr_tau", "lfsr_tau"),
                           ("ci_low", "ci_low"), ("prob_positive", "prob_positive")):
            assert np.allclose(table[D.column(effect, field)], ev[key]), (effect, field)
    # a x3 depth difference shifts every LFC by log 3 (all genes called), the CLR of the means removes it
    assert table["lfc_called"].all()
    assert set(table.index[table["clr_mu_called"]]) == {"g0", "g1", "g2", "g3"}
    assert D.DEFAULT_EFFECT == "lfc" and table["called"].equals(table["lfc_called"])  # the default effect
    clr = D.de_table(comp, shrink="none", target=0.05, effect="clr-mu")
    assert clr["called"].equals(clr["clr_mu_called"]) and clr["called"].sum() == 4


def test_effect_option_chooses_called_and_order():
    rng = np.random.default_rng(21)
    comp = _population(rng)
    for effect in D.EFFECTS:
        table = D.de_table(comp, effect=effect, shrink="none", seed=1)
        assert table["called"].equals(table[D.column(effect, "called")])
        key = list(table[D.column(effect, "lfsr_tau")])
        assert key == sorted(key) and table["rank"].tolist() == list(range(1, len(table) + 1))
    with pytest.raises(UserInputError, match="unknown effect"):
        D.de_table(comp, effect="foo")


def test_ash_posterior_formulas():
    """One null and one N(0, sigma^2) component with known weights: the posterior is w0 delta_0 + w1 N(m, v),
    m = b sigma^2 / (s^2 + sigma^2), v = s^2 sigma^2 / (s^2 + sigma^2), w1 proportional to pi1 N(b; 0, s^2 + sigma^2)."""
    from scipy import stats

    from scribe_cli.reports import ash

    b, s = np.array([-2.0, 0.1, 1.5]), np.array([0.5, 0.5, 1.0])
    sigma, pi = np.array([0.0, 2.0]), np.array([0.7, 0.3])
    post = ash.Posterior(b, s, np.zeros(2), sigma, pi)
    l0, l1 = 0.7 * stats.norm.pdf(b, scale=s), 0.3 * stats.norm.pdf(b, scale=np.sqrt(s**2 + 4))
    w1 = l1 / (l0 + l1)
    m, v = b * 4 / (s**2 + 4), s**2 * 4 / (s**2 + 4)
    assert np.allclose(post.mean(), w1 * m)
    assert np.allclose(post.std() ** 2, w1 * (m**2 + v) - (w1 * m) ** 2)
    assert np.allclose(post.prob_greater(0.3), w1 * stats.norm.sf(0.3, m, np.sqrt(v)))
    assert np.allclose(post.prob_less(0.0), w1 * stats.norm.cdf(0.0, m, np.sqrt(v)))  # the point mass is not < 0
    q = post.quantile(0.95)
    assert np.allclose(post.cdf(q)[[0, 2]], 0.95, atol=1e-9)  # continuous there; gene 1's 0.95 may sit on the atom


def test_shrinkage_learns_the_null_share_and_keeps_the_error_rate():
    """1000 effects: 80% exactly 0, 20% at +-1 or +-2 (a gap between no change and the smallest change, as in
    bench/de_fdr.py), observed with s = 0.3. Both families put ~0.8 of g within 0.1 of zero (SE of a proportion
    over 1000 genes: 0.013; the null-biased penalty adds 10 / 1000; +-0.06 allows the near-zero components to
    share the mass; +-0.1 for ash, whose unimodal g moves some of it to scales near s). PEFP calls at target
    0.1: the realised FDP is a proportion over ~180 calls (SE ~0.022 at 0.1): the NPMLE stays at most
    0.1 + 3 SE. Without shrinkage (each effect's own flat-prior posterior N(b, s^2)) the same rule calls many
    nulls: what the shrinkage is for."""
    from scipy import stats

    from scribe_cli.reports import ash

    rng = np.random.default_rng(22)
    G = 1000
    truth = np.where(rng.random(G) < 0.8, 0.0, rng.choice([-2.0, -1.0, 1.0, 2.0], G))
    s = np.full(G, 0.3)
    b = truth + s * rng.standard_normal(G)
    false = lambda called, mean: called & (np.sign(mean) != np.sign(truth))  # noqa: E731  (zero truth: false)
    for family in ("ash", "npmle"):
        loc, sigma, pi = ash.fit(b, s, family)
        tol = 0.06 if family == "npmle" else 0.1  # ash's unimodal g spreads some null mass to scales ~s
        assert abs(pi[(np.abs(loc) < 0.1) & (sigma < 0.1)].sum() - 0.8) < tol, (family, loc, sigma, pi)
        ev = ash.shrink(b, s, ci=0.9, tau=0.0, family=family)
        called = D.pefp_calls(ev["lfsr_tau"], 0.1)
        fdp = false(called, ev["mean"]).sum() / called.sum()
        assert called.sum() > 150 and fdp <= 0.1 + 3 * 0.022 if family == "npmle" else fdp < 0.25, (family, fdp)
        # (the mean may lie outside the interval: an atom at 0 holding > 95% with a far slab gives [0, 0])
        assert np.all(ev["ci_low"] <= ev["ci_high"]) and np.all((ev["ci_low"] <= 0) | (ev["lfsr"] < 0.05))
    flat = D.pefp_calls(stats.norm.cdf(-np.abs(b) / s), 0.1)
    assert (flat & (truth == 0)).sum() / flat.sum() > 0.15


def test_min_mean_masks_without_calling():
    rng = np.random.default_rng(23)
    comp = _population(rng, planted=(0, 1, 2, 3))
    expr = D.mean_expression(comp)
    cut = float(np.sort(expr)[20])
    table = D.de_table(comp, min_mean=cut, seed=0)
    masked = table["masked"].to_numpy()
    assert masked.sum() == 20 and np.array_equal(masked, table["mean_expr"].to_numpy() < cut)
    assert not table.loc[masked, [D.column(e, "called") for e in D.EFFECTS]].to_numpy().any()
    assert not np.any(masked[:-20]) and np.all(masked[-20:])  # reported, after every unmasked gene
    unmasked_planted = {f"g{i}" for i in range(4)} - set(table.loc[masked, "gene"])
    assert unmasked_planted <= set(table.loc[table["called"], "gene"])
    with pytest.raises(UserInputError, match="--min-mean"):
        D.de_table(comp, min_mean=-1)


def test_gene_sets(tmp_path):
    """A set's draws are the mean of its genes' effect draws; the planted set is called, a null set is not."""
    rng = np.random.default_rng(24)
    comp = _population(rng, planted=(0, 1, 2, 3), fold=1.5)
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("up\tplanted\tg0\tg1\tg2\tg3\tNOT_A_GENE\nnull\tx\tg10\tg11\tg12\tg13\tg14\n"
                   "elsewhere\tx\tA\tB\n# a comment\n\n")
    sets = D.read_gmt(gmt)
    assert sets["up"][-1] == "NOT_A_GENE" and len(sets) == 3
    res = D.run_de(comp, gene_sets=sets, shrink="none", effect="clr-mu")
    st = res.sets.set_index("set")
    assert list(st.index) == ["up", "null"] and st.loc["up", "genes_in_fit"] == 4
    assert any("share no gene" in n and "elsewhere" in n for n in res.notes)
    clr_mu = np.concatenate([d for _, d in D.effect_blocks(comp, "clr-mu")], axis=1)
    assert st.loc["up", "mean"] == pytest.approx(clr_mu[:, :4].mean(axis=1).mean())
    assert st.loc["up", "called"] and not st.loc["null", "called"]
    bad = tmp_path / "bad.gmt"
    bad.write_text("only_a_name\n")
    with pytest.raises(UserInputError, match="tab-separated"):
        D.read_gmt(bad)
    with pytest.raises(UserInputError, match="no gene set shares a gene"):
        D.run_de(comp, gene_sets={"x": ["nope"]})


def test_cli_effect_plot_sets(tmp_path):
    rng = np.random.default_rng(25)
    post = _write(_mixture(rng, planted=[1, 2, 3]), tmp_path / "post.nc")
    gmt = tmp_path / "s.gmt"
    gmt.write_text("planted\t-\tg1\tg2\tg3\n")
    out = tmp_path / "t.tsv"
    result = _invoke([post, "--components", 0, 1, "--effect", "lfc", "--gene-sets", gmt, "--min-mean", 0.5, "-o", out])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    png = tmp_path / "t.png"
    assert report["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["effect"] == "lfc" and report["sets"] == str(tmp_path / "t.sets.tsv") and report["n_sets_called"] == 1
    table = pd.read_csv(out, sep="\t")
    assert table["called"].equals(table["lfc_called"]) and report["masked"] == int(table["masked"].sum())
    meta = json.loads(metadata_path(out).read_text())
    assert meta["comparison"]["effect"] == "lfc" and meta["shrink"] == "npmle" and meta["min_mean"] == 0.5
    out2 = tmp_path / "u.tsv"
    result = _invoke([post, "--components", 0, 1, "--no-plot", "-o", out2])
    assert result.exit_code == 0 and json.loads(result.stdout)["plot"] is None and not (tmp_path / "u.png").exists()
    # a bad GMT fails before any work, and writes nothing
    bad = tmp_path / "bad.gmt"
    bad.write_text("x\n")
    out3 = tmp_path / "v.tsv"
    _assert_clean_failure(_invoke([post, "--components", 0, 1, "--gene-sets", bad, "-o", out3]), out3, "tab-separated")
    assert not (tmp_path / "v.png").exists()


def test_run_init_file_starts_every_chain_there(tmp_path):
    """`scribe run --init FILE.json`: the file's values start every NUTS chain (a mixture started at clusters
    instead of random values, from which one component can take every cell); bad values are refused."""
    from scribe_cli import fit as F

    start = {"mu": [[1.0, 2.0]], "weights_raw": [0.4, 0.6]}
    path = tmp_path / "init.json"
    path.write_text(json.dumps(start))
    seen = {}

    class Model:
        def sample(self, **kw):
            seen.update(kw)

    F._nuts(Model(), {}, F.RunOptions(chains=3, init=str(path)).validate(), tmp_path)
    assert seen["inits"] == [start] * 3
    for bad, match in (("nope", "unknown --init"), (str(tmp_path / "missing.json"), "no such file")):
        with pytest.raises(UserInputError, match=match):
            F.RunOptions(init=bad).validate()
    path.write_text("[1, 2]")
    with pytest.raises(UserInputError, match="JSON object"):
        F._nuts(Model(), {}, F.RunOptions(init=str(path)).validate(), tmp_path)


def test_clr_centre_note():
    """Changed genes that do not cancel move the CLR centre: a note when it passes tau / 2, none otherwise."""
    rng = np.random.default_rng(4)
    G, S = 100, 400
    mu_b = rng.lognormal(1.0, 1.0, G)
    r = np.full((S, G), 20.0)
    for shift, expect in ((np.log(2.0), True), (0.0, False)):
        mu_a = mu_b.copy()
        mu_a[:30] *= np.exp(shift)  # 30 genes up by x2: centre 0.3 log 2 = 0.21 > tau / 2 = 0.048
        ga = D.Group("A", mu_a[None] * np.exp(0.01 * rng.standard_normal((S, G))), r)
        gb = D.Group("B", mu_b[None] * np.exp(0.01 * rng.standard_normal((S, G))), r)
        comp = D.Comparison("fits", "A", "B", [(ga, gb)], np.ones(1), _genes(G))
        for effect in ("clr-mu", "clr-draws"):
            notes = D.run_de(comp, shrink="none", effect=effect).notes
            assert any("mean log fold change over all genes is +0.208" in n for n in notes) == expect
        for effect in ("lfc", "lvr"):  # the note concerns the CLR effects only (lfc is the default)
            assert not D.run_de(comp, shrink="none", effect=effect).notes
        assert not D.run_de(comp, shrink="none").notes
