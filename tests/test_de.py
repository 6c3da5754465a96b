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
    table = D.de_table(comp, samples_per_draw=m, seed=5).set_index("gene").loc[comp.genes]
    e = (special.digamma(rA) - special.digamma(rA).mean()) - (special.digamma(rB) - special.digamma(rB).mean())
    v = sum((1 - 2 / G) * special.polygamma(1, x) + special.polygamma(1, x).sum() / G**2 for x in (rA, rB))
    z = (table["mean_clr_diff"].to_numpy() - e) / np.sqrt(v / (S * m))
    assert np.all(np.abs(z) < 4), np.abs(z).max()
    # sd: relative SE of a sample sd is about 1 / sqrt(2 N) = 0.6% here (log-gamma tails are light); 5% is generous
    assert np.allclose(table["sd_clr_diff"], np.sqrt(v), rtol=0.05)
    # keeping the draws in memory or regenerating them block by block gives the same numbers
    monkeypatch.setattr(D, "KEEP_ELEMENTS", 0)
    again = D.de_table(comp, samples_per_draw=m, seed=5).set_index("gene").loc[comp.genes]
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
    table = D.de_table(D.components_comparison(post, ["0"], ["1"]), seed=1)
    assert list(table.columns) == ["gene", "mean_clr_diff", "sd_clr_diff", "ci_low", "ci_high", "prob_positive",
                                   "prob_effect", "lfsr", "lfsr_tau", "lfc_mean", "lfc_sd", "called", "rank",
                                   "lvr_mean", "lvr_sd"]
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
    table = D.de_table(D.components_comparison(post, ["0"], ["2"]), seed=2)
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
    table = D.de_table(_comparison(mu_a, r_a, mu_b, r_b), seed=0).set_index("gene").loc[["g0", "g1", "g2"]]
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
    t1, t2 = D.de_table(comp, seed=3), D.de_table(comp, seed=3)
    pd.testing.assert_frame_equal(t1, t2)
    assert not D.de_table(comp, seed=4)["mean_clr_diff"].equals(t1["mean_clr_diff"])
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
    table = D.de_table(comp).set_index("gene").loc[comp.genes]
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
    table = D.de_table(comp, seed=1).set_index("gene")
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
    assert meta["tau"] == pytest.approx(TAU) and meta["target"] == 0.05 and meta["files"][0]["path"].endswith("post.nc")
    # existing output is kept unless --overwrite
    before = out.read_bytes()
    again = _invoke([post, "--components", 0, 1, "--seed", 5])
    assert again.exit_code == 2 and "already exists" in again.stderr and out.read_bytes() == before
    again = _invoke([post, "--components", 0, 1, "--seed", 5, "--overwrite", "--target", 0.2])
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
    result = _invoke([path, "--datasets", "celseq2", "dropseq", "-o", out])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["comparison"] == "datasets" and (tmp_path / "ds.meta.json").exists()

    a = _write(_single(rng, draws=120), tmp_path / "A.nc")
    b = _write(_single(rng, draws=100), tmp_path / "B.nc")
    result = _invoke([a, b])
    assert result.exit_code == 0, result.output
    assert "ignores any technical structure" in result.stderr and "subsampled to 200" in result.stderr
    report = json.loads(result.stdout)
    assert report["table"] == str(tmp_path / "A.de.vs_B.tsv") and report["draws"] == 200
    assert len(json.loads((tmp_path / "A.de.vs_B.meta.json").read_text())["notes"]) == 2


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
