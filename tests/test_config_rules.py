"""Validity rules of the model configuration (config.RULES), prior overrides, the CLI model options.

Everything here is pure Python except the two CLI tests that hand the rendered program to stanc.
"""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from scribe_cli.cli import main
from scribe_cli.cli_options import MODEL_OPTION_NAMES, model_config_from_options
from scribe_cli.config import RULES, ModelConfig, parse_prior_override, validate
from scribe_cli.errors import UserInputError
from scribe_cli.render import render

# One configuration breaking each rule (and only that one, given the order of RULES), with the fragment of
# the message that names the rule.
VIOLATIONS = [
    (dict(components=0), "--components must be at least 1"),
    (dict(expression_prior="neg"), "--expression-prior needs a mixture"),
    (dict(assignments=True), "--assignments needs a mixture"),
    (dict(parameterization="mean-disp", prob_prior="gaussian"), "--prob-prior needs a parameterization that samples p"),
    (dict(parameterization="mean-odds", prob_prior="horseshoe"), "--prob-prior needs a parameterization that samples p"),
    (dict(model="nbvcp", gate_prior="neg"), "--gate-prior needs a zero-inflated model"),
    (dict(overdispersion_prior="horseshoe"), "--overdispersion-prior needs --bnb"),
    (dict(bnb=True), "--bnb needs a shrinkage prior"),
    (dict(bnb=True, overdispersion_prior="gaussian"), "--overdispersion-prior is horseshoe or neg"),
    # dataset-level priors (datasets.md, Validity)
    (dict(expression_dataset_prior="gaussian"), "a dataset-level prior needs --dataset-key"),
    (dict(dataset_key="ds", prob_dataset_mode="scalar"), "--prob-dataset-mode needs --prob-dataset-prior"),
    (dict(dataset_key="ds", parameterization="mean-disp", prob_dataset_prior="neg"),
     "--prob-dataset-prior needs a parameterization that samples p or phi"),
    (dict(dataset_key="ds", prob_prior="neg", prob_dataset_prior="horseshoe"), "--prob-prior and --prob-dataset-prior"),
    (dict(dataset_key="ds", zero_inflation_dataset_prior="horseshoe"),
     "--zero-inflation-dataset-prior needs a zero-inflated model"),
    (dict(dataset_key="ds", model="zinb", gate_prior="neg", zero_inflation_dataset_prior="neg"),
     "--gate-prior and --zero-inflation-dataset-prior"),
    (dict(dataset_key="ds", overdispersion_dataset_prior="horseshoe"), "--overdispersion-dataset-prior needs --bnb"),
    (dict(dataset_key="ds", components=2, expression_dataset_prior="neg"),
     "dataset-level priors are not available with mixtures"),
    # capture priors informed by biology (models.md)
    (dict(organism="human"), "--organism (a capture prior) needs variable capture"),
    (dict(model="nbvcp", total_mrna=1e5), "--total-mrna and --total-mrna-sd set the --organism capture prior"),
    (dict(model="nbvcp", organism="mouse", total_mrna_sd=0.0), "--total-mrna and --total-mrna-sd must be positive"),
    (dict(mean_anchor=True), "--mean-anchor needs variable capture"),
    (dict(model="nbvcp", mean_anchor=True), "--mean-anchor needs a parameterization that samples mu"),
    (dict(model="nbvcp", parameterization="mean-disp", mean_anchor=True, unconstrained=True),
     "--mean-anchor is a log-normal prior on mu"),
    (dict(model="nbvcp", parameterization="mean-prob", mean_anchor=True, components=2),
     "--mean-anchor with a mixture anchors the shared gene means"),
    (dict(model="nbvcp", parameterization="mean-prob", mean_anchor=True, mean_anchor_sd=-1.0),
     "--mean-anchor-sd must be positive"),
    (dict(model="nbvcp", organism="human", priors=(("capture", "beta", (1.0, 2.0)),)), "does not sample"),
    (dict(gate_prior="horseshoe", model="zinb", slab_scale=0.0), "horseshoe hyperparameters must be positive"),
    (dict(neg_a=-1.0), "NEG hyperparameters must be positive"),
    (dict(prob_prior="neg", neg_marginal=True, neg_u=0.5), "closed form, which exists for --neg-u 1 --neg-a 1 only"),
    (dict(priors=(("r", "normal", (0.0, 1.0)),)), "must have the family of its mode"),
    (dict(unconstrained=True, priors=(("r", "lognormal", (0.0, 1.0)),)), "must have the family of its mode"),
    (dict(priors=(("phi", "betaprime", (1.0, 2.0)),)), "does not sample"),
    (dict(priors=(("capture", "beta", (1.0, 2.0)),)), "does not sample"),
    (dict(prob_prior="neg", priors=(("p", "beta", (2.0, 2.0)),)), "does not sample"),
    (dict(model="zinb", gate_prior="neg", priors=(("gate", "beta", (1.0, 4.0)),)), "does not sample"),
    (dict(model="nbvcp", parameterization="mean-odds", priors=(("capture", "beta", (1.0, 4.0)),)), "does not sample"),
]


@pytest.mark.parametrize("kw, fragment", VIOLATIONS)
def test_each_rule_refuses_with_one_line(kw, fragment):
    with pytest.raises(UserInputError) as err:
        validate(ModelConfig(**kw))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("invalid configuration: ") and fragment in msg
    assert "; " in msg, "the message names the fix after '; '"
    assert err.value.exit_code == 2


def test_every_rule_has_an_example():
    covered = {next(rule for rule, _, _ in RULES if frag in rule) for _, frag in VIOLATIONS}
    assert covered == {rule for rule, _, _ in RULES}


@pytest.mark.parametrize("kw", [
    dict(model="zinbvcp", parameterization="mean-prob", components=3, bnb=True, overdispersion_prior="neg",
         prob_prior="horseshoe", expression_prior="gaussian", gate_prior="neg", unconstrained=True, assignments=True),
    dict(model="nbvcp", parameterization="mean-odds", priors=(("phi", "betaprime", (2.0, 3.0)),
                                                              ("capture_odds", "betaprime", (1.0, 2.0)))),
    dict(model="zinb", unconstrained=True, priors=(("gate", "normal", (-3.0, 0.5)),)),
    dict(components=2, expression_prior="neg", priors=(("r", "lognormal", (1.0, 0.5)),)),  # r_pop's prior
])
def test_valid_configurations_pass(kw):
    config = ModelConfig(**kw)
    assert validate(config) is config


def test_unknown_values():
    for kw, fragment in [(dict(model="nb"), "unknown --model"), (dict(parameterization="odds"), "unknown --parameterization"),
                         (dict(gate_prior="laplace"), "unknown --gate-prior"),
                         (dict(prob_dataset_mode="both"), "unknown --prob-dataset-mode"),
                         (dict(zero_inflation_dataset_prior="laplace"), "unknown --zero-inflation-dataset-prior")]:
        with pytest.raises(UserInputError, match=fragment):
            validate(ModelConfig(**kw))


@pytest.mark.parametrize("text, unconstrained, expected", [
    ("r=lognormal(1,0.5)", False, ("r", "lognormal", (1.0, 0.5))),
    (" p = beta( 2 , 3 ) ", False, ("p", "beta", (2.0, 3.0))),
    ("gate=normal(-3,0.5)", True, ("gate", "normal", (-3.0, 0.5))),
    ("mu=lognormal(-1e-1,2E0)", False, ("mu", "lognormal", (-0.1, 2.0))),
])
def test_parse_prior_override(text, unconstrained, expected):
    assert parse_prior_override(text, unconstrained=unconstrained) == expected


@pytest.mark.parametrize("text, unconstrained, fragment", [
    ("r=lognormal(1)", False, "cannot parse"),
    ("q=beta(1,1)", False, "unknown prior"),
    ("r=normal(0,1)", False, "must be a lognormal"),
    ("r=lognormal(0,1)", True, "must be a normal"),
    ("p=beta(0,1)", False, "out of range"),
    ("r=lognormal(0,-1)", False, "out of range"),
    ("mu=lognormal(1..2,1)", False, "cannot parse"),
])
def test_parse_prior_override_refuses(text, unconstrained, fragment):
    with pytest.raises(UserInputError, match=fragment):
        parse_prior_override(text, unconstrained=unconstrained)


def test_options_match_config_fields():
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(MODEL_OPTION_NAMES) == fields


def test_bnb_defaults_to_horseshoe():
    assert model_config_from_options(bnb=True).overdispersion_prior == "horseshoe"
    assert model_config_from_options().overdispersion_prior == "none"
    assert model_config_from_options(bnb=True, overdispersion_prior="neg").overdispersion_prior == "neg"
    with pytest.raises(UserInputError, match="--bnb needs a shrinkage prior"):
        model_config_from_options(bnb=True, overdispersion_prior="none")


def test_duplicate_prior_override():
    with pytest.raises(UserInputError, match="given 2 times"):
        model_config_from_options(priors=("r=lognormal(0,1)", "r=lognormal(1,1)"))


def test_data_only_options_do_not_change_the_program():
    """K, hyperparameters and base prior numbers reach Stan as data: the same program, no recompile. NEG's u and
    a are data too, but u = a = 1 has a closed-form marginal (plan.marginal_neg): leaving 1 changes the form."""
    base = dict(model="zinb", components=2, gate_prior="horseshoe", prob_prior="neg")
    program = render(validate(ModelConfig(**base)))
    for extra in [dict(components=5), dict(slab_df=3.0, slab_scale=1.0, horseshoe_tau0=0.1), dict(neg_tau=2.0),
                  dict(priors=(("r", "lognormal", (1.0, 0.3)),))]:
        assert render(validate(ModelConfig(**{**base, **extra}))) == program, extra
    local = dict(base, neg_marginal=False)
    program = render(validate(ModelConfig(**local)))
    assert "prob_psi_raw" in program and "neg_marginal_lpdf" not in program
    assert render(validate(ModelConfig(**local, neg_u=0.5, neg_a=0.5, neg_tau=2.0))) == program
    assert "prob_psi_raw" in render(validate(ModelConfig(**base, neg_u=0.5)))


# --- the command line ---------------------------------------------------------------------------------

def test_cli_render_zinb_gate_neg_passes_stanc(toolchain):
    from scribe_cli.cache import check_program

    result = CliRunner().invoke(main, ["render", "--model", "zinb", "--gate-prior", "neg"])
    assert result.exit_code == 0, result.output
    assert "gate_psi" in result.stdout and "zinb_pairs_loglik" in result.stdout
    check_program(result.stdout)


def test_cli_render_every_option(toolchain, tmp_path):
    from scribe_cli.cache import check_program

    out = tmp_path / "m.stan"
    args = ["render", "--model", "zinbvcp", "--parameterization", "mean-prob", "--components", "3", "--assignments",
            "--bnb", "--overdispersion-prior", "neg", "--unconstrained", "--prob-prior", "gaussian",
            "--expression-prior", "horseshoe", "--gate-prior", "neg", "--horseshoe-tau0", "0.5", "--slab-df", "3",
            "--slab-scale", "1", "--neg-u", "0.5", "--neg-a", "0.5", "--neg-tau", "2",
            "--prior", "mu=normal(1,0.5)", "--prior", "capture=normal(0,2)", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    check_program(out.read_text())


@pytest.mark.parametrize("args, fragment", [
    (["--expression-prior", "neg"], "--expression-prior needs a mixture"),
    (["--model", "nbdm", "--gate-prior", "horseshoe"], "--gate-prior needs a zero-inflated model"),
    (["--parameterization", "mean-disp", "--prob-prior", "neg"], "--prob-prior needs a parameterization"),
    (["--overdispersion-prior", "neg"], "--overdispersion-prior needs --bnb"),
    (["--bnb", "--overdispersion-prior", "gaussian"], "horseshoe or neg"),
    (["--prior", "phi=betaprime(1,1)"], "does not sample"),
    (["--unconstrained", "--prior", "r=lognormal(0,1)"], "must be a normal"),
])
def test_cli_invalid_combination_exits_2(args, fragment):
    result = CliRunner().invoke(main, ["render", *args])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("scribe: error:") and fragment in lines[0], lines
    assert result.stdout == ""


@pytest.mark.parametrize("args, header", [
    ([], "--parameterization canonical --prob-prior gaussian"),  # issue 14: a p per gene by default
    (["--parameterization", "mean-prob"], "--parameterization mean-prob --prob-prior gaussian"),
    (["--prob-prior", "none"], "--parameterization canonical"),  # the seed's shared p, one flag away
    (["--prior", "p=beta(2,2)"], "--parameterization canonical"),  # a prior for the shared p asks for it
    (["--parameterization", "mean-disp"], "--parameterization mean-disp"),  # p per gene already, no prob prior
    (["--dataset-key", "b", "--prob-dataset-prior", "gaussian"], "--parameterization canonical --dataset-key"),
])
def test_cli_default_prob_prior(args, header):
    result = CliRunner().invoke(main, ["render", *args])
    assert result.exit_code == 0, result.output
    line = result.stdout.splitlines()[2]
    assert line.startswith(f"//   --model nbdm {header}"), line
    assert ("--prob-prior gaussian" in line) == ("--prob-prior gaussian" in header), line


@pytest.mark.parametrize("options", [
    dict(model="zinb", gate_prior="neg", native_gradients=False, mean_coordinates=False, scaled_coordinates=False,
         neg_marginal=False, prob_prior="gaussian"),
    dict(model="nbvcp", parameterization="mean-prob", organism="human", mean_anchor=True, neg_marginal=True,
         prob_prior="neg", slab_df=3.0),
    dict(model="zinbvcp", organism="human", gated_mean=False, prob_prior="gaussian"),
])
def test_describe_speaks_the_cli(options):
    """describe() (program headers, logs) names each choice as the CLI spells it, switches turned off included
    (--stan-gradients, not "--native-gradients False"): its words, given back to `scribe render`, render the same
    program."""
    config = validate(ModelConfig(**options))
    words = config.describe().split()
    result = CliRunner().invoke(main, ["render", *words])
    assert result.exit_code == 0, (words, result.output)
    assert result.output.strip() == render(config).strip()
