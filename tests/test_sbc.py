"""Calibration machinery (scribe_cli.calibration, bench/sbc.py): the simulator against the likelihood, the
uniformity tests, and a smoke run of simulation-based calibration on a tiny NBDM.

The simulator (reports.ppc.simulate_counts) is checked against helpers.dense_cell_loglik, the scipy pmf that
tests/test_likelihoods.py checks against Stan's per-cell log_lik for every likelihood form: so the counts SBC
and ppc simulate follow the distribution the Stan programs evaluate, and cannot drift from it unnoticed.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from helpers import dense_cell_loglik
from scribe_cli import calibration
from scribe_cli.config import ModelConfig, validate
from scribe_cli.render import render

N_SIM = 20_000  # cells simulated per check: the chi-square test then sees relative errors of ~2% in a bin
GRID = 12  # counts 0..GRID-1 per gene on the 2-gene grid; the rest is one lumped bin


def _truth(values: dict, dims: dict) -> xr.Dataset:
    """One draw (chain = 1, draw = 1) with named dims, as the prior program's draws come."""
    return xr.Dataset({k: (("chain", "draw", *dims[k]), np.asarray(v, dtype=float)[None, None])
                       for k, v in values.items()})


SIM_CASES = {
    # name: (config, parameter values, their dims) with G = 2 genes (K = 2 components, D = 2 datasets)
    "nbdm": (dict(model="nbdm"), {"mu": [1.5, 4.0], "r": [0.7, 3.0]}, {}),
    "zinb": (dict(model="zinb"), {"mu": [1.5, 4.0], "r": [0.7, 3.0], "gate": [0.3, 0.1]}, {}),
    "nbvcp": (dict(model="nbvcp"), {"mu": [3.0, 6.0], "r": [0.7, 3.0]}, {"capture": 0.4}),
    "zinbvcp_mix_bnb": (dict(model="zinbvcp", components=2, bnb=True, overdispersion_prior="horseshoe"),
                        {"mu": [[1.0, 5.0], [4.0, 0.5]], "r": [[0.8, 2.0], [3.0, 1.2]], "gate": [[0.2, 0.05], [0.1, 0.3]],
                         "kappa": [[2.5, 40.0], [6.0, 3.0]], "weights": [0.3, 0.7]}, {"capture": 0.6}),
    "datasets": (dict(model="nbdm", dataset_key="batch", expression_dataset_prior="gaussian"),
                 {"mu": [[1.0, 3.0], [4.0, 2.0]], "r": [[0.8, 0.8], [2.0, 2.0]]}, {}),
}
DIMS = {"mu": ("gene",), "r": ("gene",), "gate": ("gene",), "kappa": ("gene",), "capture": ("cell",),
        "weights": ("component",)}


def _case(name):
    kw, values, cell_values = SIM_CASES[name]
    config = validate(ModelConfig(**kw))
    values = {k: np.asarray(v, dtype=float) for k, v in values.items()}
    dims = {k: DIMS[k] + (("component",) if config.mixture else ("dataset",) if config.dataset_params else ())
            if k in ("mu", "r", "gate", "kappa") else DIMS[k] for k in values}
    return config, values, dims, cell_values


def _chi2_pvalues(name, scale_r=1.0, seed=0):
    """p-value per dataset of the simulated (gene 1, gene 2) counts against the pmf, grid + lumped tail;
    ``scale_r`` multiplies the sizes r of the simulation only (a wrong simulator)."""
    config, values, dims, cell_values = _case(name)
    D = 2 if config.dataset_params else 0
    counts = calibration.placeholder_counts(N_SIM, 2, D)
    sim_values = dict(values, r=values["r"] * scale_r, **{k: np.full(N_SIM, v) for k, v in cell_values.items()})
    sim_dims = dict(dims, **{k: DIMS[k] for k in cell_values})
    X = calibration.simulate(_truth(sim_values, sim_dims), counts, np.random.default_rng(seed)).X.toarray()
    u1, u2 = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    grid = np.column_stack([u1.ravel(), u2.ravel()])
    pvalues = []
    for d in range(max(D, 1)):
        Xd = X if not D else X[counts.cell_dataset == d]
        v = dict(values, **{k: np.full(len(grid), v) for k, v in cell_values.items()})
        ll, _ = dense_cell_loglik(config, v, grid, np.full(len(grid), d) if D else None)
        prob = np.exp(ll)
        inside = (Xd < GRID).all(axis=1)
        observed = np.bincount(Xd[inside, 0] * GRID + Xd[inside, 1], minlength=GRID * GRID)
        expected = prob * len(Xd)
        keep = expected >= 5  # chi-square needs >= 5 expected per bin; the rest is lumped with the tail
        obs = np.r_[observed[keep], len(Xd) - observed[keep].sum()]
        exp = np.r_[expected[keep], len(Xd) - expected[keep].sum()]
        assert exp[-1] > 0 and keep.sum() >= 10
        pvalues.append(stats.chisquare(obs, exp).pvalue)
    return pvalues


@pytest.mark.parametrize("name", list(SIM_CASES))
def test_simulator_follows_the_likelihood(name):
    """Fixed seed; under a correct simulator the p-value is uniform, so refusing below 0.001 fails a correct
    simulator one time in a thousand seeds."""
    assert min(_chi2_pvalues(name)) > 1e-3


def test_simulator_check_has_power():
    """The same check refuses a simulator whose sizes are 30% off (so the test above can fail)."""
    assert max(_chi2_pvalues("zinbvcp_mix_bnb", scale_r=1.3)) < 1e-6


def test_uniformity_pvalue_and_holm():
    rng = np.random.default_rng(3)
    L = 100
    uniform = rng.integers(0, L, size=(200, 3))
    assert calibration.group_pvalue(uniform, L) > 0.01
    piled = np.clip(rng.normal(50, 8, size=(200, 3)).astype(int), 0, L - 1)  # too narrow: an overdispersed posterior
    assert calibration.group_pvalue(piled, L) < 1e-6
    assert calibration.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_sbc_smoke_nbdm(toolchain, tmp_path):
    """A few SBC replicates of a tiny NBDM with NUTS: the ranks are in range and their mean is near the
    middle, and the same ranks taken against a wrong truth (r three times too large) are not.

    Normalised ranks of a calibrated method are uniform on [0, 1] (mean 0.5, sd 0.289 per element). Elements of
    one replicate share p and the data, so count only the 8 replicates as independent: the mean of all of them
    has sd at most 0.289 / sqrt(8) = 0.10, and 0.5 +- 0.35 (3.4 sd) fails a correct program with probability
    below 0.001."""
    config = validate(ModelConfig(model="nbdm"))
    n_rep, L = 8, 19
    counts = calibration.placeholder_counts(20, 4)
    prior, check = calibration.prior_draws(config, counts, n_rep, seed=11, workdir=tmp_path / "prior", thin=5,
                                           warmup=300)
    assert prior.sizes["draw"] == n_rep and check["divergences"] == 0
    model = calibration.compiled_model(config)
    rng = np.random.default_rng(12)
    right, wrong = [], []
    for i in range(n_rep):
        truth = calibration.truth_at(prior, i)
        data = calibration.simulate(truth, counts, rng)
        post, diag = calibration.fit_posterior(config, model, data, "nuts", seed=100 + i, workdir=tmp_path / f"fit{i}")
        assert diag["divergences"] <= 5
        r = calibration.ranks(post, truth, L, rng)
        assert set(r) >= {"r", "p", "mu"}
        assert all(0 <= x <= L for v in r.values() for x in v)
        right += [x for v in r.values() for x in v]
        bad = truth.copy()
        bad["r"] = truth["r"] * 3
        wrong += calibration.ranks(post, bad, L, rng)["r"]
    assert abs(np.mean(right) / L - 0.5) < 0.35
    assert np.mean(wrong) / L > 0.85


def test_data_chosen_coordinates_are_not_ranked():
    """A split gate's coordinates hold the genes the data chose (centred or not): the prior's truth and a fit's
    can differ in size and in meaning, so only the gate itself is ranked (they made 10% of SBC replicates fail)."""
    skip = calibration.data_chosen_coordinates(validate(ModelConfig(model="zinb", gate_prior="neg", summed_gates=False)))
    assert skip == {"gate_z", "gate_centred"}
    # summed out (plan.integrates_gate): no gate coordinates at all, the gate drawn in generated quantities
    assert calibration.data_chosen_coordinates(validate(ModelConfig(model="zinb", gate_prior="neg"))) == set()
    assert calibration.data_chosen_coordinates(validate(ModelConfig(model="zinb"))) == set()
    rng = np.random.default_rng(0)
    post = xr.Dataset({"gate": (("chain", "draw", "gene"), rng.uniform(size=(2, 50, 5))),
                       "gate_z": (("chain", "draw", "z"), rng.normal(size=(2, 50, 4)))})
    truth = xr.Dataset({"gate": (("gene",), rng.uniform(size=5)), "gate_z": (("z",), rng.normal(size=5))})
    out = calibration.ranks(post, truth, 20, rng, skip=skip)
    assert set(out) == {"gate"} and len(out["gate"]) == 5 and all(0 <= r <= 20 for r in out["gate"])


def test_pathfinder_samples_neg_local_scales_and_skips_their_coordinates():
    """ModelConfig.for_method: NEG's local scales are integrated out except under pathfinder (unless the user
    chose); configurations without an eligible NEG target are returned unchanged (the same compiled program).
    In SBC the truth comes from the integrated-out prior, so pathfinder's T_z (a standard normal there, an asinh
    of the deviation in the truth) is not ranked; its parameter and psi are."""
    neg = validate(ModelConfig(model="nbdm", bnb=True, overdispersion_prior="neg"))
    assert neg.for_method("nuts") is neg and neg.for_method("advi") is neg
    assert neg.for_method("pathfinder").neg_marginal is False
    assert "overdispersion_psi_raw" in render(neg.for_method("pathfinder"))
    assert "overdispersion_psi_raw" not in render(neg)
    chosen = validate(ModelConfig(model="nbdm", bnb=True, overdispersion_prior="neg", neg_marginal=True))
    assert chosen.for_method("pathfinder") is chosen
    plain = validate(ModelConfig(model="zinb", gate_prior="gaussian"))
    assert plain.for_method("pathfinder") is plain
    assert calibration.form_coordinates(neg, "pathfinder") == {"overdispersion_z"}
    assert calibration.form_coordinates(neg, "nuts") == set() == calibration.form_coordinates(chosen, "pathfinder")
