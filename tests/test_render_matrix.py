"""The whole configuration matrix: every valid combination renders and passes stanc; every other one is
refused at configuration time with a one-line error; data dicts match the programs' data blocks; the
variable names follow docs/models.md.

Only program-shaping options are enumerated: K in {1, 2} (K >= 2 renders the same text for every K, since
K is data), the hyperparameters and base prior numbers are data (test_config_rules checks that they do
not change the text).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp

from scribe_cli.blocks import Block, blocks_for
from scribe_cli.cache import check_program
from scribe_cli.config import MODELS, PARAMETERIZATIONS, PRIOR_FAMILIES, PRIOR_TARGETS, ModelConfig, validate
from scribe_cli.errors import UserInputError
from scribe_cli.idata import variable_dims
from scribe_cli.plan import integrates_gate, samples_dataset_log_mean
from scribe_cli.render import render
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


def _block_key(block: Block) -> str:
    return json.dumps([block.template, block.args, block.only, block.skip], sort_keys=True, default=str)


def _block_pairs(config: ModelConfig, check_loglik: bool = False, dense: bool = False,
                 log_lik: bool = False) -> frozenset:
    """The template blocks of render(config, ...), each alone and each pair of them."""
    keys = sorted({_block_key(b) for b in blocks_for(validate(config), check_loglik, dense, log_lik)})
    return frozenset({(a,) for a in keys} | set(itertools.combinations(keys, 2)))


def pairwise_cover(configs: list, pairs_of=_block_pairs) -> list:
    """A subset of the configurations in which every template block (with its arguments) and every pair of
    blocks that meet in some valid program meet again. A program fails stanc through one block's own text or
    through two blocks that disagree (a name declared twice, used before or without its declaration, a size
    of the wrong type), so stanc on this subset checks all of that. Chosen greedily, the configuration that
    brings the most pairs not yet covered first (with lazily updated gains): 1,009 programs of 5,400, where
    taking each one that brought anything new, in enumeration order, needed 2,116 (each stanc check ~0.1 s).
    SCRIBE_FULL_STANC_MATRIX=1 checks all of them (about 2.5 more CPU-minutes)."""
    if os.environ.get("SCRIBE_FULL_STANC_MATRIX") == "1":
        return list(configs)
    pairs = [pairs_of(config) for config in configs]
    uncovered = set().union(*pairs)
    heap = [(-len(p), i) for i, p in enumerate(pairs)]  # (minus an upper bound of the gain, index)
    heapq.heapify(heap)
    chosen = []
    while uncovered:
        _, i = heapq.heappop(heap)
        gain = len(pairs[i] & uncovered)
        if heap and gain < -heap[0][0]:  # a stale bound: put it back with its true gain
            heapq.heappush(heap, (-gain, i))
            continue
        chosen.append(i)
        uncovered -= pairs[i]
    return [configs[i] for i in sorted(chosen)]


def test_pairwise_cover_covers_every_pair():
    configs = valid_configs()
    chosen = pairwise_cover(configs)
    assert set().union(*map(_block_pairs, chosen)) == set().union(*map(_block_pairs, configs))
    assert len(chosen) < len(configs) / 4


@pytest.mark.timeout(1800)
def test_every_valid_program_passes_stanc(toolchain):
    """Render all valid programs (each distinct) and check with stanc (check_program), two at a time, the
    subset that covers every pair of template blocks (pairwise_cover)."""
    all_configs = valid_configs()
    programs = {}
    for config in all_configs:
        programs[config] = render(validate(config))
    assert len(set(programs.values())) == len(all_configs), "two configurations rendered the same program"
    configs = pairwise_cover(all_configs)

    def check(config):
        try:
            check_program(programs[config])
        except UserInputError as exc:
            return f"{config.describe()}: {exc}"
        return None

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(check, configs) if f]
    print(f"\n{len(all_configs)} valid programs rendered; stanc accepted the {len(configs)} it checked")
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
        return config, check_program(render(validate(config)))

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
            # a summed-out gate (plan.integrates_gate) has no z: its link is drawn in generated quantities
            z = f"{target}_link" if target == "gate" and integrates_gate(config) else f"{target}_z"
            expected |= {z, {"gaussian": f"{target}_sigma", "horseshoe": f"{target}_tau",
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


# --- multi-dataset programs (--dataset-key, datasets.md) ---------------------------------------------------
# The full product of the dataset options with the matrix above is ~47,000 valid programs (42,024 joint
# K = 1 programs with dataset-level priors, 4,800 mixtures with per-dataset weights): about 40 minutes of
# stanc on two cores. The dataset templates interact with the other options only through (a) the likelihood
# form and observation model (model, --bnb), (b) the shapes of the derived quantities (parameterization,
# which dataset targets are on, the p mode, whether a gene-level prior makes p or the gate per gene), and
# (c) the hyperparameter data a family declares once for all its targets (which families meet in one
# program). So the enumeration below is complete over (a) and (b) - every model x parameterization x --bnb x
# on/off pattern of the dataset targets x p mode - and covers (c) with three rotations of the families:
# in rotation i, expression, prob, gate and overdispersion take FAMILIES[(i + j) % 3] for j = 0, 1, 2, 0,
# so every target meets every family in every pattern, and expression and overdispersion always share one.
# The rotation also sets the options that only change other blocks: --unconstrained in rotation 1, the
# gene-level prob / gate priors (where the dataset-level one is off) in rotations 1 and 2, the gene-level
# overdispersion prior (horseshoe / neg). 1,308 joint programs; mixtures with --dataset-key alone: every
# model x parameterization x --bnb x --assignments in the three rotations (192); and the log_lik and
# check_loglik variants of the richest pattern per model x parameterization x --bnb x p mode (and of the
# mixtures), which add generated quantities and data, and its dense=True (benchmarks) variants, which change
# the model block. (--prior-draws is a data switch: every program above has it.)
FAMILIES = ("gaussian", "horseshoe", "neg")
PROB_MODES = ("scalar", "gene_specific", "two_level")


def _dataset_valid(c: ModelConfig) -> bool:
    """datasets.md's Validity, with the single-dataset rules (independently of config.RULES)."""
    dp = [c.expression_dataset_prior, c.prob_dataset_prior, c.zero_inflation_dataset_prior, c.overdispersion_dataset_prior]
    any_dp = any(f != "none" for f in dp)
    single = (c.prob_prior == "none" or c.parameterization in ("canonical", "mean-prob")) \
        and (c.expression_prior == "none" or c.components >= 2) \
        and (c.gate_prior == "none" or c.model in ("zinb", "zinbvcp")) \
        and (c.overdispersion_prior in ("horseshoe", "neg") if c.bnb else c.overdispersion_prior == "none") \
        and (not c.assignments or c.components >= 2)
    return single and (not any_dp or c.dataset_key is not None) \
        and (c.prob_dataset_mode == "gene_specific" or c.prob_dataset_prior != "none") \
        and (c.prob_dataset_prior == "none" or c.parameterization != "mean-disp") \
        and (c.prob_prior == "none" or c.prob_dataset_prior == "none") \
        and (c.zero_inflation_dataset_prior == "none" or c.model in ("zinb", "zinbvcp")) \
        and (c.gate_prior == "none" or c.zero_inflation_dataset_prior == "none") \
        and (c.overdispersion_dataset_prior == "none" or c.bnb) \
        and (not any_dp or c.components == 1)


def dataset_configs(rotations=(0, 1, 2)) -> list[ModelConfig]:
    """Joint (K = 1) programs with dataset-level priors: see the comment above."""
    out = []
    for model, par, bnb, rot in itertools.product(MODELS, PARAMETERIZATIONS, (False, True), rotations):
        fam = {t: FAMILIES[(rot + j) % 3] for j, t in enumerate(("expression", "prob", "gate", "overdispersion"))}
        zi = model in ("zinb", "zinbvcp")
        samples_p = par != "mean-disp"
        for expr, prob, gate, od in itertools.product((False, True), ("none",) + PROB_MODES if samples_p else ("none",),
                                                      (False, True) if zi else (False,), (False, True) if bnb else (False,)):
            if not (expr or prob != "none" or gate or od):
                continue
            kw = dict(model=model, parameterization=par, bnb=bnb, unconstrained=rot == 1, dataset_key="ds")
            kw["expression_dataset_prior"] = fam["expression"] if expr else "none"
            if prob != "none":
                kw.update(prob_dataset_prior=fam["prob"], prob_dataset_mode=prob)
            elif rot and par in ("canonical", "mean-prob"):
                kw["prob_prior"] = FAMILIES[rot]  # p per gene from a gene-level prior
            if gate:
                kw["zero_inflation_dataset_prior"] = fam["gate"]
            elif rot and zi:
                kw["gate_prior"] = FAMILIES[(rot + 1) % 3]
            if bnb:
                kw["overdispersion_prior"] = ("horseshoe", "neg")[rot % 2]
                kw["overdispersion_dataset_prior"] = fam["overdispersion"] if od else "none"
            out.append(ModelConfig(**kw))
    return out


def dataset_mixture_configs(rotations=(0, 1, 2)) -> list[ModelConfig]:
    """Mixtures with --dataset-key alone (per-dataset weights)."""
    out = []
    for model, par, bnb, asg, rot in itertools.product(MODELS, PARAMETERIZATIONS, (False, True), (False, True), rotations):
        kw = dict(model=model, parameterization=par, bnb=bnb, components=2, assignments=asg, unconstrained=rot == 1,
                  dataset_key="ds", expression_prior=("none", "horseshoe", "gaussian")[rot])
        if par in ("canonical", "mean-prob"):
            kw["prob_prior"] = ("neg", "none", "gaussian")[rot]
        if model in ("zinb", "zinbvcp"):
            kw["gate_prior"] = ("neg", "none", "horseshoe")[rot]
        if bnb:
            kw["overdispersion_prior"] = ("horseshoe", "neg")[rot % 2]
        out.append(ModelConfig(**kw))
    return out


def test_dataset_matrix_size_and_validity():
    configs = dataset_configs()
    # per model x parameterization x bnb: 2 (expression) x (1 + 3 modes, or 1 under mean-disp) x 2 (gate, zi
    # models) x 2 (overdispersion, --bnb) patterns, less the all-off one; three rotations
    assert len(configs) == 3 * (2 * 13 * 6 * 3 - 32) == 1308
    assert len(set(configs)) == len(configs)
    assert all(_dataset_valid(c) for c in configs + dataset_mixture_configs())
    for target in ("expression", "prob", "gate", "overdispersion"):  # every target meets every family
        opt = {"gate": "zero_inflation", }.get(target, target) + "_dataset_prior"
        assert {getattr(c, opt) for c in configs} == {"none", *FAMILIES}
    assert {(c.prob_dataset_prior, c.prob_dataset_mode) for c in configs} >= set(itertools.product(FAMILIES, PROB_MODES))


def _variant_configs():
    """The richest pattern per model x parameterization x bnb x p mode (every applicable dataset target on,
    families of rotation 0) and the mixtures of rotation 0: rendered with log_lik, check_loglik and dense too."""
    best = {}
    for c in dataset_configs(rotations=(0,)):
        key = (c.model, c.parameterization, c.bnb, c.prob_dataset_prior != "none" and c.prob_dataset_mode)
        n_on = len(c.dataset_priors())
        if key not in best or n_on > len(best[key].dataset_priors()):
            best[key] = c
    return list(best.values()) + dataset_mixture_configs(rotations=(0,))


@pytest.mark.timeout(1800)
def test_every_dataset_program_passes_stanc(toolchain):
    """Render the dataset programs (see the comment above), each distinct, and check with stanc, two at a time,
    the subset that covers every pair of their template blocks (pairwise_cover: 1,295 of 1,500, and 456 of the
    504 variants with log_lik, check_loglik or dense); with --dataset-key alone (K = 1) the
    program is the single-dataset one."""
    configs = dataset_configs() + dataset_mixture_configs()
    seen, rendered = {}, {}
    for config in configs:
        program = rendered[config] = render(validate(config))
        assert program not in seen, f"{config.describe()} renders the program of {seen.get(program)}"
        seen[program] = config.describe()
    jobs = {rendered[config]: config.describe() for config in pairwise_cover(configs)}  # program -> description
    variants = [(config, kw) for config in _variant_configs()
                for kw in (dict(log_lik=True), dict(check_loglik=True), dict(dense=True))]
    for config, kw in pairwise_cover(variants, lambda item: _block_pairs(item[0], **item[1])):
        jobs[render(validate(config), **kw)] = f"{config.describe()} {kw}"
    for config in valid_configs():
        if config.components == 1:
            keyed = dataclasses.replace(config, dataset_key="ds")
            assert render(validate(keyed)) == render(config), keyed.describe()
    for config in dataset_mixture_configs():
        keyed = render(validate(config))
        assert "dataset_weights" in keyed and keyed != render(dataclasses.replace(config, dataset_key=None))

    def check(program):
        try:
            check_program(program)
        except UserInputError as exc:
            return f"{jobs[program]}: {exc}"
        return None

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(check, list(jobs)) if f]
    print(f"\n{len(jobs)} dataset programs rendered and accepted by stanc")
    assert not failures, f"{len(failures)} programs rejected, e.g. {failures[0]}"


def test_dense_benchmark_programs_pass_stanc(toolchain):
    """render(dense=True) (bench/likelihood_scaling.py) puts the dense likelihood in the model block, which reads mu
    and p: programs whose mu or p otherwise exist only in generated quantities (log mu coordinates, p from its
    hierarchy's logit) must declare them earlier. It once failed stanc for the default NBDM."""
    for kw in (dict(model="nbdm"), dict(model="nbdm", prob_prior="gaussian"), dict(model="zinb", gate_prior="neg")):
        config = validate(ModelConfig(**kw))
        assert "vector[G] mu = exp(log_mu);" in render(config).split("generated quantities {")[1]  # mu in GQ there
        check_program(render(config, dense=True))


# Dataset axes for the refused combinations: the rules only look at whether a prior is set, so one family
# per dataset option; the base axes likewise (validate() costs microseconds: 98,304 combinations).
DATASET_AXES = dict(model=MODELS, parameterization=PARAMETERIZATIONS, components=(1, 2), bnb=(False, True),
                    prob_prior=("none", "neg"), expression_prior=("none", "gaussian"), gate_prior=("none", "horseshoe"),
                    overdispersion_prior=("none", "horseshoe"), dataset_key=(None, "ds"),
                    expression_dataset_prior=("none", "gaussian"), prob_dataset_prior=("none", "horseshoe"),
                    prob_dataset_mode=PROB_MODES, zero_inflation_dataset_prior=("none", "neg"),
                    overdispersion_dataset_prior=("none", "gaussian"))
DATASET_RULES = ("a dataset-level prior needs --dataset-key", "--prob-dataset-mode needs --prob-dataset-prior",
                 "--prob-dataset-prior needs a parameterization", "--prob-prior and --prob-dataset-prior",
                 "--zero-inflation-dataset-prior needs a zero-inflated model",
                 "--gate-prior and --zero-inflation-dataset-prior", "--overdispersion-dataset-prior needs --bnb",
                 "dataset-level priors are not available with mixtures")


def test_invalid_dataset_combinations_are_refused():
    """Every combination of the dataset axes (with the base axes) that datasets.md's Validity refuses fails
    validate() with one line naming the rule and the fix; each dataset rule is met; the valid ones pass."""
    n_valid, seen = 0, set()
    for values in itertools.product(*DATASET_AXES.values()):
        config = ModelConfig(**dict(zip(DATASET_AXES, values)))
        if _dataset_valid(config):
            validate(config)
            n_valid += 1
            continue
        with pytest.raises(UserInputError) as err:
            validate(config)
        msg = str(err.value)
        assert msg.startswith("invalid configuration: ") and "\n" not in msg and "; " in msg, msg
        seen |= {rule for rule in DATASET_RULES if rule in msg}
    assert seen == set(DATASET_RULES), set(DATASET_RULES) - seen
    print(f"\n{n_valid} valid, {np.prod([len(v) for v in DATASET_AXES.values()]) - n_valid} refused")


@pytest.mark.parametrize("option, family, equivalent", [
    ("expression_dataset_prior", "horseshoe", "drop --expression-dataset-prior"),
    ("prob_dataset_prior", "neg", "--prob-prior neg"),
    ("zero_inflation_dataset_prior", "gaussian", "--gate-prior gaussian"),
    ("overdispersion_dataset_prior", "horseshoe", "drop --overdispersion-dataset-prior"),
    (None, None, "drop --dataset-key"),
])
def test_single_dataset_is_refused_naming_the_equivalent(option, family, equivalent):
    """decisions.md item 4: with one dataset (D = 1) a dataset-level prior is refused, not rewritten; the one
    line names the single-dataset equivalent. Two levels pass."""
    from scribe_cli.config import check_datasets

    kw = dict(model="zinb", bnb=True, overdispersion_prior="neg", dataset_key="batch")
    if option:
        kw[option] = family
    config = validate(ModelConfig(**kw))
    for levels in (["kit1"], []):
        with pytest.raises(UserInputError) as err:
            check_datasets(config, levels)
        msg = str(err.value)
        assert "\n" not in msg and "batch" in msg and equivalent in msg, msg
        assert err.value.exit_code == 2
    check_datasets(config, ["kit1", "kit2"])


@pytest.mark.parametrize("parameterization, mode", [("canonical", "scalar"), ("mean-odds", "gene_specific")])
def test_single_dataset_shared_p_equivalent(parameterization, mode):
    """A scalar-mode p, or phi under mean-odds, has no per-gene single-dataset flag: one shared p is the default."""
    from scribe_cli.config import check_datasets

    config = validate(ModelConfig(parameterization=parameterization, dataset_key="batch", prob_dataset_prior="gaussian",
                                  prob_dataset_mode=mode))
    with pytest.raises(UserInputError, match="drop --prob-dataset-prior"):
        check_datasets(config, ["kit1"])


def _representative_dataset_configs():
    """Each model x parameterization x bnb x p mode with every applicable dataset target on one family, for
    each family, and the mixtures with --dataset-key: every data declaration and variable name of the
    dataset templates appears in some program here."""
    out = []
    for model, par, bnb, fam in itertools.product(MODELS, PARAMETERIZATIONS, (False, True), FAMILIES):
        zi = model in ("zinb", "zinbvcp")
        for mode in (("none",) + PROB_MODES if par != "mean-disp" else ("none",)):
            kw = dict(model=model, parameterization=par, bnb=bnb, dataset_key="ds", expression_dataset_prior=fam)
            if mode != "none":
                kw.update(prob_dataset_prior=fam, prob_dataset_mode=mode)
            if zi:
                kw["zero_inflation_dataset_prior"] = fam
            if bnb:
                kw.update(overdispersion_prior=fam if fam != "gaussian" else "horseshoe", overdispersion_dataset_prior=fam)
            out.append(ModelConfig(**kw))
    return out + dataset_mixture_configs(rotations=(0,))


@pytest.mark.timeout(900)
def test_dataset_data_and_names_match_programs(toolchain):
    """stan_data of a dataset program (plain, for prior draws, and with log_lik for a fifth of them) provides
    exactly the data it declares, and the variables follow the naming convention of docs/models.md and
    datasets.md."""
    X = _tiny_counts()
    cell_dataset = np.array([1, 0, 1, 0, 1])  # 0-based; D = 2
    configs = _representative_dataset_configs()

    def info(job):
        config, log_lik = job
        return config, log_lik, check_program(render(validate(config), log_lik=log_lik))

    jobs = [(c, False) for c in configs] + [(c, True) for c in configs[::5]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(info, jobs))
    for config, log_lik, inf in results:
        declared = set(inf["inputs"])
        for prior_only in (False, True):
            data = stan_data(config, X, log_lik=log_lik, prior_only=prior_only, cell_dataset_override=cell_dataset)
            assert declared == set(data), (config.describe(), log_lik, declared ^ set(data))
        assert data["D"] == 2 and list(data["cell_dataset"]) == [2, 1, 2, 1, 2]
        names = set(inf["parameters"]) | set(inf["transformed parameters"]) | set(inf["generated quantities"])
        expected = {"r", "mu", "p"} | ({"phi"} if config.parameterization == "mean-odds" else set())
        expected |= {"gate"} if config.zero_inflated else set()
        expected |= {"omega", "kappa"} if config.bnb else set()
        expected |= {"weights", "dataset_weights"} if config.mixture else set()
        expected |= {"log_lik"} if log_lik else set()
        for target, family in config.dataset_priors().items():
            T = f"{target}_dataset"
            # p from the sampled log mean (plan.samples_dataset_log_mean): logit_p and log_mu in place of z
            z = {"logit_p", "log_mu"} if target == "prob" and samples_dataset_log_mean(config) else {f"{T}_z"}
            expected |= z | {{"gaussian": f"{T}_sigma", "horseshoe": f"{T}_lambda_tilde", "neg": f"{T}_psi"}[family]}
            two_level = target == "prob" and config.prob_dataset_mode == "two_level"
            if two_level:
                expected |= {f"{T}_loc", f"{T}_loc_d", f"{T}_sigma"}
            elif family == "horseshoe":
                expected.add(f"{T}_tau")
            if target in ("prob", "gate"):
                expected.add(f"{T}_loc")
            elif target == "expression":
                expected.add("r_pop" if config.parameterization == "canonical" else "mu_pop")
            else:
                expected.add("omega_pop")
        assert expected <= names, (config.describe(), expected - names)
        assert ("prob_dataset_z" in names) != samples_dataset_log_mean(config) or "prob" not in config.dataset_priors()
        if "prob" in config.dataset_priors() and config.prob_dataset_mode != "two_level":
            assert "prob_dataset_loc_d" not in names  # one centre: decisions.md item 3
    print(f"\n{len(results)} dataset programs: data dicts and variable names checked")
