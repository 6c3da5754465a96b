"""Variational methods that users can trust (issue 9, part 3): pathfinder's PSIS resample is never written when
it holds a handful of distinct draws; large Pareto k comes with what to do; full-rank ADVI is refused where it
cannot work; a failed ADVI run says why.

The unit tests need no Stan; the end-to-end ones reuse the NBDM program test_run_e2e.py compiles."""

from __future__ import annotations

import json
from pathlib import Path

import arviz as az
import numpy as np
import pytest
from helpers import scribe

from scribe_cli import psis
from scribe_cli.advice import approximation_advice
from scribe_cli.config import ModelConfig, validate
from scribe_cli.errors import UserInputError
from scribe_cli.fit import FULLRANK_MAX_PARAMS, _console_reason, check_method_size
from scribe_cli.param_count import unconstrained_size
from scribe_cli.render import render

# gate_n_centred: how many genes a gate hierarchy samples centred (data; any split has G parameters)
SIZES = dict(G=1500, C=1000, D=2, K=3, gate_n_centred=100)


def test_min_distinct_threshold():
    assert psis.min_distinct(1000) == 50 and psis.min_distinct(100) == 20 and psis.min_distinct(10_000) == 500
    assert psis.min_distinct(20) == 10  # short smoke-test runs: half their draws


def test_resample_keeps_a_good_approximation():
    # Ratios with sd 0.3 on the log scale: q is close to the target, so the PSIS ESS is near the raw count
    # (ESS / n = 1 / E[w^2] = exp(-0.09) = 0.91 for log-normal weights) and 1000 draws of 4000 hold ~880
    # distinct ones (4000 (1 - exp(-1000 / 4000)) = 885).
    log_ratio = np.random.default_rng(1).normal(0, 0.3, size=4000)
    r = psis.resample(log_ratio, 1000, seed=3)
    assert r.resampled and r.pick.size == 1000
    assert r.pareto_k < 0.5 and 3400 < r.ess < 3900 and 800 < r.distinct < 950
    assert r.attrs()["psis_resampled"] == 1


def test_resample_collapse_falls_back_to_distinct_raw_draws():
    # Ratios with sd 30 (high-dimensional q missing the target): one draw carries almost all the weight.
    log_ratio = np.random.default_rng(2).normal(0, 30, size=4000)
    r = psis.resample(log_ratio, 1000, seed=3)
    assert not r.resampled and r.distinct < 50 and r.ess < 5
    assert r.pick.size == 1000 and np.unique(r.pick).size == 1000  # distinct raw draws, not one point repeated
    assert np.all(np.diff(r.pick) > 0)  # in path order
    assert np.all(np.isfinite(r.log_weight)) and r.log_weight.shape == (1000,)
    # the same seed gives the same choice
    np.testing.assert_array_equal(r.pick, psis.resample(log_ratio, 1000, seed=3).pick)


def test_parameter_count_from_the_program():
    def count(**kw):
        return unconstrained_size(render(validate(ModelConfig(**kw))), SIZES)

    G, C, D, K = SIZES["G"], SIZES["C"], SIZES["D"], SIZES["K"]
    assert count() == G + 1  # r, p
    # r, p and gate_loc: each gene's gate summed out of the likelihood (plan.integrates_gate)
    assert count(model="zinb", gate_prior="neg") == G + 1 + 1
    # sampled: gate_z and gate_centred (G together); NEG's local scales integrated out (u = a = 1)
    assert count(model="zinb", gate_prior="neg", summed_gates=False) == G + 1 + 1 + G
    assert count(model="zinb", gate_prior="neg", neg_marginal=False) == G + 1 + 1 + 2 * G  # + gate_psi_raw
    assert count(model="zinb", gate_prior="neg", neg_u=0.5) == G + 1 + 1 + 2 * G  # no closed form: psi_raw
    assert count(model="nbvcp") == G + 1 + C  # + capture
    assert count(components=K) == K * G + 1 + K  # r per component, shared p, positive_ordered weights_raw
    # unknown declarations: no count, so no refusal
    assert unconstrained_size("parameters { cov_matrix[G] S; }", SIZES) is None
    assert unconstrained_size("parameters { array[D] simplex[K] w; real<lower=0> s; }", SIZES) == D * (K - 1) + 1


def test_fullrank_refused_by_size_only():
    big = render(validate(ModelConfig(model="zinb", gate_prior="neg", summed_gates=False)))
    with pytest.raises(UserInputError, match="advi-fullrank cannot fit 3,002 parameters.*--method advi"):
        check_method_size("advi-fullrank", big, SIZES)
    check_method_size("advi", big, SIZES)  # mean-field is linear in n
    small = dict(SIZES, G=FULLRANK_MAX_PARAMS - 1)
    check_method_size("advi-fullrank", render(validate(ModelConfig())), small)  # exactly at the bound


def test_advice_names_the_remedies():
    tips = approximation_advice("pathfinder", 0.9, paths=4)
    assert "--chains 8" in tips[0] and any("--method advi" in t for t in tips) and "--method nuts" in tips[-1]
    # beyond k = 1 more paths are not offered
    assert not any("--chains" in t for t in approximation_advice("pathfinder", 5.0, paths=4))
    hs = approximation_advice("advi", 3.0, config={"expression_dataset_prior": "horseshoe", "gate_prior": "neg"})
    assert "--expression-dataset-prior neg" in hs[0] and "--gate-prior" not in hs[0]
    assert any("--method advi" in t for t in approximation_advice("advi-fullrank", 3.0))
    # capture and joint models: ADVI first (its intervals covered more of the truth on those benchmarks), once
    joint = approximation_advice("pathfinder", 30.0, config={"model": "zinbvcp", "dataset_key": "dataset",
                                                            "expression_dataset_prior": "horseshoe"})
    assert "--method advi first" in joint[0] and "--expression-dataset-prior neg" in joint[1]
    assert sum("--method advi" in t for t in joint) == 1
    assert "--method advi first" in approximation_advice("pathfinder", 5.0, config={"model": "nbvcp"})[0]
    assert not any("first" in t for t in approximation_advice("pathfinder", 5.0, config={"model": "zinb"}))


def test_console_reason_reads_the_transcript(tmp_path):
    # What Stan's ADVI prints when it fails (Stan 2.39 stan/variational/advi.hpp), with the lines around it.
    (tmp_path / "nbdm-20261130_0-stdout.txt").write_text(
        "method = variational\n  algorithm = fullrank\nBegin eta adaptation.\nIteration: 1 / 250 [  0%]  (Adaptation)\n"
        "stan::variational::advi::adapt_eta: All proposed step-sizes failed. Your model may be either severely "
        "ill-conditioned or misspecified.\n")
    reason = _console_reason(tmp_path)
    assert reason.startswith("stan::variational::advi::adapt_eta: All proposed step-sizes failed")
    assert "Iteration" not in reason and "algorithm" not in reason


def test_failed_advi_says_why_and_what_to_do(tmp_path):
    """cmdstanpy raises "Error during variational inference: " with nothing after it when Stan's message lacks
    the "Error" prefix it greps for (the fullrank failure of issue 9); run_method reads the transcript instead.
    The model here stands in for a CmdStanModel at that one call: it writes the transcript Stan would, then
    raises what cmdstanpy raises."""
    from scribe_cli.fit import RunOptions, run_method

    class FailingADVI:
        def variational(self, output_dir, **kw):
            (tmp_path / "m-1_0-stdout.txt").write_text(
                "Begin eta adaptation.\nstan::variational::advi::calc_ELBO: The number of dropped evaluations has "
                "reached its maximum amount (100). Your model may be either severely ill-conditioned or misspecified.\n")
            raise RuntimeError("Error during variational inference: ")

    with pytest.raises(UserInputError) as err:
        run_method(FailingADVI(), {}, RunOptions(method="advi-fullrank"), tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("Stan could not run advi-fullrank: stan::variational::advi::calc_ELBO")
    assert "not finite" in msg and "--method advi (mean-field)" in msg and "--method pathfinder" in msg


def test_advi_tries_again_from_the_next_seed(tmp_path):
    """A failure of ADVI's random start (its ELBO not computable from the initial approximation) is retried from
    the next seed, at most ADVI_ATTEMPTS times, and the fit records the seed that worked; a failure that is not
    the start's is not retried. The model stands in for a CmdStanModel, as above."""
    from scribe_cli.fit import ADVI_ATTEMPTS, RunOptions, run_method

    class StartDependentADVI:
        def __init__(self, failing, message="stan::variational::normal_meanfield::calc_grad: The number of dropped "
                                            "evaluations has reached its maximum amount (10)."):
            self.failing, self.message, self.seeds = failing, message, []

        def variational(self, output_dir, seed, **kw):
            self.seeds.append(seed)
            if seed in self.failing:
                (Path(output_dir) / f"m-{seed}-stdout.txt").write_text(f"Begin eta adaptation.\n{self.message}\n")
                raise RuntimeError("Error during variational inference: ")
            return type("Fit", (), {})()

    model = StartDependentADVI(failing={7})
    fit = run_method(model, {}, RunOptions(method="advi", seed=7), tmp_path / "a")
    assert model.seeds == [7, 8] and fit.scribe_seed == 8
    model = StartDependentADVI(failing=set(range(100)))
    with pytest.raises(UserInputError, match="calc_grad"):
        run_method(model, {}, RunOptions(method="advi", seed=1), tmp_path / "b")
    assert model.seeds == list(range(1, 1 + ADVI_ATTEMPTS))
    model = StartDependentADVI(failing={3}, message="Exception: variable does not exist; processing stage=data")
    with pytest.raises(UserInputError, match="does not exist"):
        run_method(model, {}, RunOptions(method="advi", seed=3), tmp_path / "c")
    assert model.seeds == [3]


def test_threads_per_chain_reaches_the_one_process_methods(tmp_path, monkeypatch):
    """cmdstanpy's variational, optimize and laplace take no thread count and start Stan with the environment's
    STAN_NUM_THREADS (which our driver and CmdStan read): run_method sets it to --threads-per-chain for the call
    and puts the environment back afterwards. The model stands in for a CmdStanModel, recording what Stan would
    see."""
    import os

    from scribe_cli.fit import RunOptions, run_method

    seen = {}

    class Recorder:
        def variational(self, **kw):
            seen["advi"] = os.environ.get("STAN_NUM_THREADS")
            return "fit"

        def optimize(self, **kw):
            seen["optimize"] = os.environ.get("STAN_NUM_THREADS")
            return "fit"

    monkeypatch.setenv("STAN_NUM_THREADS", "7")
    assert run_method(Recorder(), {}, RunOptions(method="advi", threads_per_chain=2), tmp_path) == "fit"
    run_method(Recorder(), {}, RunOptions(method="optimize", threads_per_chain=3), tmp_path)
    assert seen == {"advi": "2", "optimize": "3"} and os.environ["STAN_NUM_THREADS"] == "7"
    monkeypatch.delenv("STAN_NUM_THREADS")
    run_method(Recorder(), {}, RunOptions(method="advi", threads_per_chain=1), tmp_path)
    assert seen["advi"] == "1" and "STAN_NUM_THREADS" not in os.environ
    # unset, a one-process method takes every core it may run on; NUTS and pathfinder one thread per chain
    cores = len(os.sched_getaffinity(0))
    assert RunOptions(method="advi").threads_per_chain == RunOptions(method="laplace").threads_per_chain == cores
    assert RunOptions(method="nuts").threads_per_chain == RunOptions(method="pathfinder").threads_per_chain == 1


def test_collapsed_pathfinder_writes_distinct_raw_draws_and_says_what_to_do(demo_h5ad, tmp_path, toolchain):
    """NBDM on the demo data, pathfinder with 2 paths: Pareto k is far above 0.7 (about 5 with this seed) and the
    PSIS resample holds a handful of distinct draws; the file must hold distinct draws, flagged, with weights."""
    path = tmp_path / "pf.nc"
    res = scribe("run", demo_h5ad, "-o", path, "--method", "pathfinder", "--chains", "2", "--draws", "100",
                 "--seed", "3", "--quiet", "--strict", check=False)
    assert res.returncode == 3 and "convergence diagnostics failed" in res.stderr  # --strict: exit 3, file written
    diag = json.loads(res.stdout)["diagnostics"]
    assert diag["distinct_draws"] < diag["min_distinct_draws"] == 20
    assert diag["draws_written"].startswith("raw") and diag["psis_ess"] < 20 and diag["pareto_k"] > 0.7
    assert any("distinct draw" in p for p in diag["problems"])
    assert any("--method nuts" in t for t in diag["advice"]) and any("--method advi" in t for t in diag["advice"])
    idata = az.from_netcdf(path)
    r = idata.posterior["r"].values[0]  # (draw, gene)
    assert r.shape == (100, 500) and np.unique(r, axis=0).shape[0] == 100  # 100 different draws, not a few repeated
    assert np.all(np.isfinite(idata.sample_stats["log_weight"].values))
    assert "NOT PSIS-resampled" in idata.sample_stats.attrs["draws_kind"]
    # `scribe summary` recomputes the same verdict from the file and prints what to do
    text = scribe("summary", path).stdout
    assert "PROBLEMS: PSIS resampling kept" in text and "what to do: " in text and "--method nuts" in text
    report = json.loads(scribe("summary", path, "--format", "json").stdout)
    assert report["diagnostics"]["distinct_draws"] == diag["distinct_draws"]
    assert report["diagnostics"]["advice"] == diag["advice"]


def test_fullrank_refused_early_on_the_command_line(demo_h5ad, tmp_path):
    out = tmp_path / "fr.nc"
    res = scribe("run", demo_h5ad, "--model", "zinb", "--gate-prior", "neg", "--sampled-gates", "--prob-prior", "none",
                 "--method", "advi-fullrank", "-o", out, "--quiet", check=False)
    assert res.returncode == 2 and not out.exists()
    assert res.stderr.startswith("scribe: error: --method advi-fullrank cannot fit 1,002 parameters")
    assert len(res.stderr.strip().splitlines()) == 1
