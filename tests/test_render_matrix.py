"""The whole configuration matrix: every valid combination renders and passes stanc; every other one is
refused at configuration time with a one-line error; data dicts match the programs' data blocks; the
variable names follow docs/models.md.

Only program-shaping options are enumerated: K in {1, 2} (K >= 2 renders the same text for every K, since
K is data), the hyperparameters and base prior numbers are data (test_config_rules checks that they do
not change the text).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from scribe_cli.config import MODELS, PARAMETERIZATIONS, PRIOR_FAMILIES, PRIOR_TARGETS, ModelConfig, validate
from scribe_cli.errors import UserInputError
from scribe_cli.render import render, variable_dims
from scribe_cli.standata import stan_data

AXES = dict(model=MODELS, parameterization=PARAMETERIZATIONS, components=(1, 2), bnb=(False, True),
            unconstrained=(False, True), prob_prior=PRIOR_FAMILIES, expression_prior=PRIOR_FAMILIES,
            gate_prior=PRIOR_FAMILIES, overdispersion_prior=PRIOR_FAMILIES, assignments=(False, True))


def valid_configs() -> list[ModelConfig]:
    """The valid matrix, built from the spec's rules (independently of config.RULES)."""
    out = []
    for model, par, K, bnb, unc in itertools.product(MODELS, PARAMETERIZATIONS, (1, 2), (False, True), (False, True)):
        probs = PRIOR_FAMILIES if par in ("canonical", "mean-prob") else ("none",)  # needs sampled p
        exprs = PRIOR_FAMILIES if K >= 2 else ("none",)  # pools across components
        gates = PRIOR_FAMILIES if model in ("zinb", "zinbvcp") else ("none",)
        ods = ("horseshoe", "neg") if bnb else ("none",)  # BNB always shrinks omega
        assigns = (False, True) if K >= 2 else (False,)
        for pp, ep, gp, op, asg in itertools.product(probs, exprs, gates, ods, assigns):
            out.append(ModelConfig(model=model, parameterization=par, components=K, bnb=bnb, unconstrained=unc,
                                   prob_prior=pp, expression_prior=ep, gate_prior=gp, overdispersion_prior=op,
                                   assignments=asg))
    return out


# 4 models x 4 parameterizations x bnb x unconstrained, times the prior choices:
# prob 4 (canonical, mean-prob) or 1; expression 4 and assignments 2 when K = 2; gate 4 for zinb/zinbvcp;
# overdispersion 2 with --bnb.
EXPECTED_VALID = (4 + 4 + 1 + 1) * (1 + 4 * 2) * (1 + 4 + 1 + 4) * (1 + 2) * 2


def test_matrix_size():
    assert len(valid_configs()) == EXPECTED_VALID == 5400


def test_invalid_combinations_are_refused():
    """Every combination of the axes outside the valid matrix fails validate() with a one-line message."""
    valid = set(valid_configs())
    n_invalid = 0
    for values in itertools.product(*AXES.values()):
        config = ModelConfig(**dict(zip(AXES, values)))
        if config in valid:
            validate(config)
            continue
        n_invalid += 1
        with pytest.raises(UserInputError) as err:
            validate(config)
        msg = str(err.value)
        assert msg.startswith("invalid configuration: ") and "\n" not in msg and "; " in msg
    print(f"\n{n_invalid} invalid combinations refused")
    assert n_invalid == np.prod([len(v) for v in AXES.values()]) - EXPECTED_VALID


def _stanc(toolchain: Path, program: str, info: bool = False) -> str:
    with tempfile.TemporaryDirectory(prefix="scribe-matrix-") as tmp:
        src = Path(tmp) / "m.stan"
        src.write_text(program)
        cmd = [str(toolchain / "bin" / "stanc"), str(src)] + (["--info"] if info else ["--o", str(Path(tmp) / "m.hpp")])
        res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise AssertionError(res.stderr or res.stdout)
    return res.stdout


@pytest.mark.timeout(1800)
def test_every_valid_program_passes_stanc(toolchain):
    """Render all valid programs and check each with stanc (check_program), two at a time."""
    from scribe_cli.cache import check_program

    configs = valid_configs()
    programs = {}
    for config in configs:
        programs[config] = render(validate(config))
    assert len(set(programs.values())) == len(configs), "two configurations rendered the same program"

    def check(config):
        try:
            check_program(programs[config])
        except UserInputError as exc:
            return f"{config.describe()}: {exc}"
        return None

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(check, configs) if f]
    print(f"\n{len(configs)} valid programs rendered and accepted by stanc")
    assert not failures, f"{len(failures)} programs rejected, e.g. {failures[0]}"


def _tiny_counts():
    X = np.array([[0, 3, 0, 1], [2, 0, 0, 0], [0, 0, 0, 7], [1, 1, 0, 0], [0, 0, 0, 0]])
    return sp.csr_matrix(X)


def _representative_configs():
    """Each (model, parameterization, K, bnb, unconstrained) with its applicable targets all on one family,
    for each family: every data declaration and every variable name appears in some program here."""
    seen = {}
    for c in valid_configs():
        if c.assignments != c.mixture:
            continue
        families = {getattr(c, f"{t}_prior") for t in PRIOR_TARGETS} - {"none"}
        key = (c.model, c.parameterization, c.components, c.bnb, c.unconstrained, tuple(sorted(families)))
        if len(families) <= 1 and key not in seen:
            seen[key] = c
    return list(seen.values())


@pytest.mark.timeout(900)
def test_data_and_names_match_programs(toolchain):
    """stan_data provides exactly the data each program declares, and the variables follow the naming
    convention of docs/models.md (which reports rely on)."""
    X = _tiny_counts()
    configs = _representative_configs()

    def info(config):
        return config, json.loads(_stanc(toolchain, render(validate(config)), info=True))

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(info, configs))
    for config, inf in results:
        declared = set(inf["inputs"])
        data = stan_data(config, X)
        assert declared == set(data), (config.describe(), declared ^ set(data))
        names = set(inf["parameters"]) | set(inf["transformed parameters"]) | set(inf["generated quantities"])
        expected = {"r", "mu", "p"}
        expected |= {"phi"} if config.parameterization == "mean-odds" else set()
        expected |= {"gate"} if config.zero_inflated else set()
        expected |= {"capture"} if config.variable_capture else set()
        expected |= {"capture_odds"} if config.variable_capture and config.parameterization == "mean-odds" else set()
        expected |= {"omega", "kappa"} if config.bnb else set()
        expected |= {"weights"} if config.mixture else set()
        expected |= {"assignment_prob"} if config.assignments else set()
        for target, family in config.hierarchical().items():
            expected |= {f"{target}_z", {"gaussian": f"{target}_sigma", "horseshoe": f"{target}_tau",
                                         "neg": f"{target}_psi"}[family]}
            expected |= {f"{target}_lambda_tilde"} if family == "horseshoe" else set()
            expected |= {f"{target}_loc"} if target != "expression" else {"r_pop" if config.parameterization == "canonical" else "mu_pop"}
        assert expected <= names, (config.describe(), expected - names)
    print(f"\n{len(results)} programs: data dicts and variable names checked")


def test_variable_dims_with_components():
    data = {"G": 4, "C": 6, "K": 2}
    arrays = {"mu": np.zeros((1, 10, 4, 2)), "assignment_prob": np.zeros((1, 10, 6, 2)), "weights": np.zeros((1, 10, 2)),
              "capture": np.zeros((1, 10, 6)), "p": np.zeros((1, 10)), "other": np.zeros((1, 10, 3))}
    dims = variable_dims(ModelConfig(components=2), arrays, data)
    assert dims == {"mu": ["gene", "component"], "assignment_prob": ["cell", "component"], "weights": ["component"],
                    "capture": ["cell"], "other": ["other_dim_0"]}
