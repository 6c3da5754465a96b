"""The validated model configuration shared by `scribe render` and `scribe run`.

One frozen dataclass says which program to render; ``validate`` applies the validity rules, kept in
one table (RULES) so that the set of refused combinations is visible in one place.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from .errors import UserInputError

MODELS = ("nbdm", "zinb", "nbvcp", "zinbvcp")
CAPTURE_MODELS = ("nbvcp", "zinbvcp")  # a capture probability per cell
PARAMETERIZATIONS = ("canonical", "mean-prob", "mean-odds", "mean-disp")
PRIOR_FAMILIES = ("none", "gaussian", "horseshoe", "neg")
PRIOR_TARGETS = ("prob", "expression", "gate", "overdispersion")
# Dataset-level priors (datasets.md): option name -> the gene-level target whose parameter becomes per dataset.
DATASET_TARGETS = {
    "expression_dataset_prior": "expression",
    "prob_dataset_prior": "prob",
    "zero_inflation_dataset_prior": "gate",
    "overdispersion_dataset_prior": "overdispersion",
}
PROB_DATASET_MODES = ("scalar", "gene_specific", "two_level")
# Capture priors informed by biology (models.md): expected total mRNA per cell M_0 and the sd sigma_M of
# log capture around log(M_0 / L_c). The presets agree today; they are kept apart so that either can change.
ORGANISMS = {"human": (200000.0, 0.3), "mouse": (200000.0, 0.3)}

# Base priors: name -> (distribution, default parameters). Overridable with --prior NAME=dist(a,b); the
# numbers reach Stan as data, so an override does not recompile the program.
# Constrained mode (default): a distribution on the parameter's natural domain (models.md).
BASE_PRIORS = {
    "p": ("beta", (1.0, 1.0)),
    "r": ("lognormal", (0.0, 1.0)),
    "mu": ("lognormal", (0.0, 1.0)),
    "phi": ("betaprime", (1.0, 1.0)),
    "gate": ("beta", (1.0, 9.0)),
    "capture": ("beta", (1.0, 1.0)),
    "capture_odds": ("betaprime", (1.0, 1.0)),
}
# --unconstrained: a Normal on the link scale (logit for probabilities, softplus^-1 for positives).
BASE_PRIORS_UNCONSTRAINED = {
    "p": ("normal", (0.0, 1.0)),
    "r": ("normal", (0.0, 1.0)),
    "mu": ("normal", (0.0, 1.0)),
    "phi": ("normal", (0.0, 1.0)),
    "gate": ("normal", (-2.0, 1.0)),
    "capture": ("normal", (0.0, 1.0)),
    "capture_odds": ("normal", (0.0, 1.0)),
}


# Options that reach the program as data only: changing them never recompiles.
DATA_ONLY_FIELDS = ("horseshoe_tau0", "slab_df", "slab_scale", "neg_u", "neg_a", "neg_tau", "total_mrna",
                    "total_mrna_sd", "mean_anchor_sd")


# The off spelling of the CLI's on/off switches: cli_options builds each flag pair from it (--native-gradients/--stan-gradients,
# ...) and describe() names a switch turned off by it.
NEGATED_FLAGS = {"native_gradients": "--stan-gradients", "mean_coordinates": "--r-coordinates",
                 "scaled_coordinates": "--unit-coordinates", "neg_marginal": "--neg-local-scales",
                 "gated_mean": "--ungated-mean", "summed_gates": "--sampled-gates"}


@dataclass(frozen=True)
class ModelConfig:
    model: str = "nbdm"
    parameterization: str = "canonical"
    components: int = 1
    bnb: bool = False
    unconstrained: bool = False
    prob_prior: str = "none"
    expression_prior: str = "none"
    gate_prior: str = "none"
    overdispersion_prior: str = "none"
    horseshoe_tau0: float = 1.0
    slab_df: float = 4.0
    slab_scale: float = 2.0
    neg_u: float = 1.0
    neg_a: float = 1.0
    neg_tau: float = 1.0
    assignments: bool = False  # per-cell component probabilities (C x K) in generated quantities
    dataset_key: str | None = None  # obs column naming each cell's dataset (datasets.md); None: one dataset
    expression_dataset_prior: str = "none"
    prob_dataset_prior: str = "none"
    prob_dataset_mode: str = "gene_specific"
    zero_inflation_dataset_prior: str = "none"
    overdispersion_dataset_prior: str = "none"
    # Capture prior informed by biology (VCP models): eta_c = -log(capture_c) ~ Normal+(log M_0 - log L_c, sd);
    # total_mrna / total_mrna_sd override the organism preset's M_0 and sd (None: the preset's).
    organism: str = "none"
    total_mrna: float | None = None
    total_mrna_sd: float | None = None
    # Mean anchoring (VCP models): log mu_g ~ Normal(log((ubar_g + eps) / nubar), mean_anchor_sd).
    mean_anchor: bool = False
    mean_anchor_sd: float = 0.3
    # The rising-factorial table sum of every model (stan/cpp/rise_sum.hpp) and the O(cells x genes) terms of the
    # capture models with a per-gene p or a gate (stan/cpp/capture_cells.hpp) in hand-written C++ (value and
    # gradient) rather than in the Stan language; False renders the Stan-language reference they are tested against.
    native_gradients: bool = True
    # Canonical programs sample r through log mu = log r + logit(p) (plan.samples_log_mean): a change of the
    # sampler's coordinates, not of the model (r keeps its prior, with the Jacobian). False samples log r.
    mean_coordinates: bool = True
    # With a gene-level p hierarchy, the tightest coordinates (each gene's log mean, the hierarchy's centre and
    # Gaussian scale) in units of their standard errors from the counts (plan.scales_log_mean,
    # plan.scales_prob_hyper): Stan's offset/multiplier, the same model. False declares them plainly.
    scaled_coordinates: bool = True
    # Zero-inflated log-mean programs whose gate has its base prior sample each gene's mean after its gate,
    # log((1 - gate) mu), the mean its counts pin, with log mu derived (plan.gates_log_mean): a shift at fixed gate,
    # the same model. False samples log mu.
    gated_mean: bool = True
    # NEG with u = a = 1 on prob, gate or overdispersion integrates its local scales out (plan.marginal_neg): the
    # same prior, with psi drawn afterwards. False samples them (psi_raw), as every other NEG does. None: chosen
    # per method (for_method).
    neg_marginal: bool | None = None
    # zinb with a marginal NEG gate hierarchy (no capture, one component, no dataset-level parameters) sums each
    # gene's gate out of the likelihood on a grid (plan.integrates_gate): the same posterior, the gates drawn from
    # their conditionals afterwards. False samples them.
    summed_gates: bool = True
    priors: tuple = field(default_factory=tuple)  # ((name, dist, (a, b)), ...) overrides

    @property
    def zero_inflated(self) -> bool:
        return self.model in ("zinb", "zinbvcp")

    @property
    def variable_capture(self) -> bool:
        return self.model in CAPTURE_MODELS

    @property
    def capture_prior(self) -> tuple[float, float] | None:
        """(M_0, sd) of the biology-informed capture prior, or None (the base prior on capture)."""
        if self.organism == "none":
            return None
        m0, sd = ORGANISMS[self.organism]
        return (self.total_mrna or m0, self.total_mrna_sd or sd)

    @property
    def anchored(self) -> str | None:
        """The sampled quantity that carries the mean anchor: mu, or mu_pop under an expression prior."""
        if not self.mean_anchor:
            return None
        return "mu_pop" if self.expression_prior != "none" or self.expression_dataset_prior != "none" else "mu"

    def for_method(self, method: str) -> "ModelConfig":
        """The configuration a method runs: with neg_marginal unset, NEG's local scales are integrated out except
        under pathfinder. Its Gaussian fit reads the curvature along the L-BFGS path, and the marginal density's
        cusp at zero deviation (u = 1) looks infinitely curved: in the SBC of the three NEG configurations
        (docs/validation.md, notes of 1 December) pathfinder's gate, omega and kappa ranks were flagged with psi
        integrated out and not with psi sampled, while NUTS and ADVI were calibrated either way."""
        from .plan import marginal_neg

        if self.neg_marginal is None and method == "pathfinder" and any(marginal_neg(self, t) for t in self.hierarchical()):
            return dataclasses.replace(self, neg_marginal=False)
        return self  # unchanged otherwise: the same program text as `scribe render`, so the same compiled program

    @property
    def gate_split(self) -> bool:
        """A gene-level gate hierarchy whose genes the data sort into centred and non-centred coordinates
        (scribe_cli/centring.py): one gate per gene, no mixture, not summed out (plan.integrates_gate)."""
        from .plan import integrates_gate

        return self.gate_prior != "none" and not self.mixture and not integrates_gate(self)

    @property
    def prob_split(self) -> bool:
        """A gene-level p hierarchy whose genes the data sort into centred and non-centred coordinates
        (scribe_cli/centring.py): one p per gene, no mixture."""
        return self.prob_prior != "none" and not self.mixture

    @property
    def samples_p(self) -> bool:
        return self.parameterization in ("canonical", "mean-prob")

    @property
    def mixture(self) -> bool:
        return self.components >= 2

    @property
    def gene_specific_p(self) -> bool:
        """p varies by gene: sampled per gene under a prob prior (or a dataset-level one in a per-gene mode),
        or implied by mean-disp's (mu_g, r_g)."""
        return (self.prob_prior != "none" or self.parameterization == "mean-disp"
                or (self.prob_dataset_prior != "none" and self.prob_dataset_mode != "scalar"))

    @property
    def dataset_params(self) -> bool:
        """Some gene parameter is dataset-specific (a dataset-level prior): the likelihood works on the
        genes x datasets matrices (datasets.md)."""
        return self.dataset_key is not None and bool(self.dataset_priors())

    def dataset_priors(self) -> dict[str, str]:
        """gene-level target -> family for every dataset-level prior in use (datasets.md)."""
        return {t: getattr(self, opt) for opt, t in DATASET_TARGETS.items() if getattr(self, opt) != "none"}

    @property
    def dataset_axis(self) -> bool:
        """The program has a dataset axis (data D, cell_dataset): some parameter is per dataset. With
        --dataset-key alone every gene parameter is shared, so the program is the single-dataset one
        (except mixtures, whose weights are per dataset)."""
        return self.dataset_key is not None and (bool(self.dataset_priors()) or self.mixture)

    def hierarchical(self) -> dict[str, str]:
        """target -> family for every hierarchical prior in use."""
        return {t: getattr(self, f"{t}_prior") for t in PRIOR_TARGETS if getattr(self, f"{t}_prior") != "none"}

    def used_priors(self) -> list[str]:
        """The base priors this configuration samples from (names of BASE_PRIORS)."""
        sampled = {
            "canonical": ["r", "p"],
            "mean-prob": ["mu", "p"],
            "mean-odds": ["mu", "phi"],
            "mean-disp": ["mu", "r"],
        }[self.parameterization]
        if self.prob_prior != "none" or (self.prob_dataset_prior != "none" and "p" in sampled):
            sampled.remove("p")  # p_g comes from its hierarchy, which has its own centre and scale
        if self.prob_dataset_prior != "none" and "phi" in sampled:
            sampled.remove("phi")  # mean-odds: the dataset-level prior defines phi (log link)
        if self.zero_inflated and self.gate_prior == "none" and self.zero_inflation_dataset_prior == "none":
            sampled.append("gate")
        if self.variable_capture and self.organism == "none":
            sampled.append("capture_odds" if self.parameterization == "mean-odds" else "capture")
        if self.mean_anchor and "mu" in sampled:
            sampled.remove("mu")  # the anchor replaces mu's base prior
        return sampled

    def base_prior(self, name: str) -> tuple[str, tuple[float, float]]:
        for n, dist, params in self.priors:
            if n == name:
                return dist, params
        return (BASE_PRIORS_UNCONSTRAINED if self.unconstrained else BASE_PRIORS)[name]

    def describe(self, program_only: bool = False) -> str:
        """One line naming every non-default choice, for headers and logs.

        ``program_only`` leaves out what reaches Stan as data (K, hyperparameters, base prior numbers): the
        header of a rendered program names only what shapes its text, so changing those does not recompile.
        """
        parts = [f"--model {self.model}", f"--parameterization {self.parameterization}"]
        for f in dataclasses.fields(self):
            if f.name in ("model", "parameterization", "priors"):
                continue
            if program_only and f.name in DATA_ONLY_FIELDS:
                continue
            value = getattr(self, f.name)
            if value != f.default:
                flag = "--" + f.name.replace("_", "-")
                if program_only and f.name == "components":
                    parts.append(f"{flag} K (K >= 2)")
                elif program_only and f.name == "dataset_key":
                    if self.dataset_axis:  # the column's name is data; alone the key does not shape the program
                        parts.append(f"{flag} KEY (D >= 2)")
                elif isinstance(value, bool):  # a switch: its CLI spelling (--stan-gradients, not "... False")
                    parts.append(flag if value else NEGATED_FLAGS.get(f.name, f"--no-{f.name.replace('_', '-')}"))
                else:
                    parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
        if not program_only:
            for n, dist, (a, b) in self.priors:
                parts.append(f"--prior {n}={dist}({a:g},{b:g})")
        return " ".join(parts)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["priors"] = {n: f"{dist}({a:g},{b:g})" for n, dist, (a, b) in self.priors}
        return d


def _unused_override(c: ModelConfig) -> str | None:
    used = c.used_priors()
    for name, _, _ in c.priors:
        if name not in used:
            return name
    return None


def _wrong_family_override(c: ModelConfig) -> str | None:
    table = BASE_PRIORS_UNCONSTRAINED if c.unconstrained else BASE_PRIORS
    for name, dist, _ in c.priors:
        if name in table and dist != table[name][0]:
            return f"{name}={dist}"
    return None


# (rule, violated(config) -> bool, fix). Checked in order; the first violated rule is reported, in one line:
# "invalid configuration: <rule>; <fix>". Everything not refused here renders and passes stanc
# (tests/test_render_matrix.py enumerates the whole valid matrix).
RULES = [
    ("--components must be at least 1", lambda c: c.components < 1,
     "use --components 1 (no mixture) or K >= 2"),
    ("--expression-prior needs a mixture (it pools each gene's expression across components)",
     lambda c: c.expression_prior != "none" and c.components < 2,
     "add --components K with K >= 2, or drop --expression-prior"),
    ("--assignments needs a mixture", lambda c: c.assignments and c.components < 2,
     "add --components K with K >= 2, or drop --assignments"),
    ("--prob-prior needs a parameterization that samples p", lambda c: c.prob_prior != "none" and not c.samples_p,
     "use --parameterization canonical or mean-prob, or drop --prob-prior"),
    ("--gate-prior needs a zero-inflated model", lambda c: c.gate_prior != "none" and not c.zero_inflated,
     "use --model zinb or zinbvcp, or drop --gate-prior"),
    ("--overdispersion-prior needs --bnb", lambda c: c.overdispersion_prior != "none" and not c.bnb,
     "add --bnb, or drop --overdispersion-prior"),
    ("--bnb needs a shrinkage prior on its excess dispersion omega",
     lambda c: c.bnb and c.overdispersion_prior == "none",
     "use --overdispersion-prior horseshoe (the default with --bnb) or neg"),
    ("--overdispersion-prior is horseshoe or neg", lambda c: c.overdispersion_prior == "gaussian",
     "use --overdispersion-prior horseshoe (default with --bnb) or neg"),
    ("a dataset-level prior needs --dataset-key", lambda c: bool(c.dataset_priors()) and c.dataset_key is None,
     "add --dataset-key OBS_COLUMN (the obs column naming each cell's dataset), or use the gene-level prior"),
    ("--prob-dataset-mode needs --prob-dataset-prior",
     lambda c: c.prob_dataset_mode != "gene_specific" and c.prob_dataset_prior == "none",
     "add --prob-dataset-prior FAMILY, or drop --prob-dataset-mode"),
    ("--prob-dataset-prior needs a parameterization that samples p or phi",
     lambda c: c.prob_dataset_prior != "none" and c.parameterization == "mean-disp",
     "use --parameterization canonical, mean-prob or mean-odds, or drop --prob-dataset-prior"),
    ("--prob-prior and --prob-dataset-prior both define p",
     lambda c: c.prob_prior != "none" and c.prob_dataset_prior != "none",
     "keep --prob-dataset-prior alone: its gene_specific and two_level modes already pool p over genes"),
    ("--zero-inflation-dataset-prior needs a zero-inflated model",
     lambda c: c.zero_inflation_dataset_prior != "none" and not c.zero_inflated,
     "use --model zinb or zinbvcp, or drop --zero-inflation-dataset-prior"),
    ("--gate-prior and --zero-inflation-dataset-prior both define the gate",
     lambda c: c.gate_prior != "none" and c.zero_inflation_dataset_prior != "none",
     "keep --zero-inflation-dataset-prior alone: it shares the centre and scale family across datasets"),
    ("--overdispersion-dataset-prior needs --bnb", lambda c: c.overdispersion_dataset_prior != "none" and not c.bnb,
     "add --bnb, or drop --overdispersion-dataset-prior"),
    ("dataset-level priors are not available with mixtures yet",
     lambda c: bool(c.dataset_priors()) and c.mixture,
     "fit the joint model with --components 1, or the mixture with --dataset-key alone (per-dataset weights)"),
    ("--organism (a capture prior) needs variable capture", lambda c: c.organism != "none" and not c.variable_capture,
     "use --model nbvcp or zinbvcp, or drop --organism"),
    ("--total-mrna and --total-mrna-sd set the --organism capture prior",
     lambda c: c.organism == "none" and (c.total_mrna is not None or c.total_mrna_sd is not None),
     "add --organism human or mouse, or drop --total-mrna / --total-mrna-sd"),
    ("--total-mrna and --total-mrna-sd must be positive",
     lambda c: any(x is not None and not x > 0 for x in (c.total_mrna, c.total_mrna_sd)),
     "pass e.g. --total-mrna 200000 --total-mrna-sd 0.3"),
    ("--mean-anchor needs variable capture (it resolves the mean x capture degeneracy)",
     lambda c: c.mean_anchor and not c.variable_capture,
     "use --model nbvcp or zinbvcp, or drop --mean-anchor"),
    ("--mean-anchor needs a parameterization that samples mu", lambda c: c.mean_anchor and c.parameterization == "canonical",
     "use --parameterization mean-prob, mean-odds or mean-disp, or drop --mean-anchor"),
    ("--mean-anchor is a log-normal prior on mu, written for constrained mode",
     lambda c: c.mean_anchor and c.unconstrained, "drop --unconstrained or --mean-anchor"),
    ("--mean-anchor with a mixture anchors the shared gene means: it needs --expression-prior",
     lambda c: c.mean_anchor and c.mixture and c.expression_prior == "none",
     "add --expression-prior FAMILY (the anchor then holds mu_pop), or drop --mean-anchor"),
    ("--mean-anchor-sd must be positive", lambda c: not c.mean_anchor_sd > 0, "pass e.g. --mean-anchor-sd 0.3"),
    ("horseshoe hyperparameters must be positive", lambda c: min(c.horseshoe_tau0, c.slab_df, c.slab_scale) <= 0,
     "pass positive --horseshoe-tau0, --slab-df and --slab-scale"),
    ("NEG hyperparameters must be positive", lambda c: min(c.neg_u, c.neg_a, c.neg_tau) <= 0,
     "pass positive --neg-u, --neg-a and --neg-tau"),
    ("--neg-marginal integrates NEG's local scales out in closed form, which exists for --neg-u 1 --neg-a 1 only",
     lambda c: c.neg_marginal is True and (c.neg_u, c.neg_a) != (1.0, 1.0) and "neg" in c.hierarchical().values(),
     "drop --neg-marginal (other u and a sample the local scales), or use --neg-u 1 --neg-a 1"),
    ("a --prior override must have the family of its mode (constrained: beta/lognormal/betaprime; --unconstrained: normal)",
     lambda c: _wrong_family_override(c) is not None,
     "write the override with the family `scribe render --help` lists for this mode, e.g. r=normal(0,1) with --unconstrained"),
    ("--prior names a parameter this configuration does not sample",
     lambda c: _unused_override(c) is not None,
     "drop that --prior (a hierarchical prior replaces the base prior of its target; capture priors need nbvcp/zinbvcp, "
     "phi and capture_odds need mean-odds)"),
]


def validate(config: ModelConfig) -> ModelConfig:
    for name, allowed in (("model", MODELS), ("parameterization", PARAMETERIZATIONS)):
        if getattr(config, name) not in allowed:
            raise UserInputError(f"unknown --{name} '{getattr(config, name)}'; use one of {', '.join(allowed)}")
    for t in PRIOR_TARGETS:
        value = getattr(config, f"{t}_prior")
        if value not in PRIOR_FAMILIES:
            raise UserInputError(f"unknown --{t}-prior '{value}'; use one of {', '.join(PRIOR_FAMILIES)}")
    if config.organism not in ("none", *ORGANISMS):
        raise UserInputError(f"unknown --organism '{config.organism}'; use one of {', '.join(ORGANISMS)}")
    if config.prob_dataset_mode not in PROB_DATASET_MODES:
        raise UserInputError(f"unknown --prob-dataset-mode '{config.prob_dataset_mode}'; use one of {', '.join(PROB_DATASET_MODES)}")
    for opt in DATASET_TARGETS:
        if getattr(config, opt) not in PRIOR_FAMILIES:
            raise UserInputError(f"unknown --{opt.replace('_', '-')} '{getattr(config, opt)}'; use one of {', '.join(PRIOR_FAMILIES)}")
    for rule, violated, fix in RULES:
        if violated(config):
            detail = ""
            if "does not sample" in rule:
                detail = f" ({_unused_override(config)})"
            elif "family of its mode" in rule:
                detail = f" ({_wrong_family_override(config)})"
            raise UserInputError(f"invalid configuration: {rule}{detail}; {fix}")
    return config


def _single_dataset_equivalent(config: ModelConfig, opt: str) -> str:
    """What a dataset-level prior means with one dataset, as flags (named in the D = 1 error, decisions.md 4)."""
    family = getattr(config, opt)
    if opt == "prob_dataset_prior":
        if config.prob_dataset_mode != "scalar" and config.samples_p:
            return f"--prob-prior {family}"
        return "the default shared p: drop --prob-dataset-prior"
    if opt == "zero_inflation_dataset_prior":
        return f"--gate-prior {family}"
    if opt == "overdispersion_dataset_prior":
        return "the gene-level --overdispersion-prior alone: drop --overdispersion-dataset-prior"
    return "no flag (with one dataset mu_g^(d) is mu_g): drop --expression-dataset-prior"


def check_datasets(config: ModelConfig, levels: list[str]) -> None:
    """Refuse a joint model whose --dataset-key column has fewer than two levels (D comes with the data).

    The original silently rewrites dataset-level priors to gene-level ones with one dataset; we refuse and
    name the single-dataset equivalent instead.
    """
    if config.dataset_key is None or len(levels) >= 2:
        return
    found = f"obs['{config.dataset_key}'] has a single level ({levels[0]!r})" if levels else \
        f"obs['{config.dataset_key}'] has no levels"
    used = [opt for opt in DATASET_TARGETS if getattr(config, opt) != "none"]
    if not used:
        raise UserInputError(f"{found}: a joint model needs at least two datasets; drop --dataset-key")
    opt = used[0]
    equivalent = _single_dataset_equivalent(config, opt)
    raise UserInputError(f"{found}: --{opt.replace('_', '-')} needs at least two datasets; "
                         f"the single-dataset equivalent is {equivalent}")


_PRIOR_RE = re.compile(r"^\s*(\w+)\s*=\s*(\w+)\s*\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)\s*$")


def parse_prior_override(text: str, unconstrained: bool = False) -> tuple[str, str, tuple[float, float]]:
    """Parse ``NAME=dist(a,b)``: the distribution family of a base prior is fixed, only its numbers change.

    In constrained mode the families are those of BASE_PRIORS; with ``--unconstrained`` every base prior is
    a normal on the link scale.
    """
    m = _PRIOR_RE.match(text)
    if not m:
        raise UserInputError(f"cannot parse --prior '{text}'; write it as NAME=dist(a,b), e.g. r=lognormal(1,0.5)")
    name, dist = m.group(1), m.group(2).lower()
    try:
        a, b = float(m.group(3)), float(m.group(4))
    except ValueError:
        raise UserInputError(f"cannot parse the numbers in --prior '{text}'; write them as decimals, e.g. r=lognormal(1,0.5)") from None
    table = BASE_PRIORS_UNCONSTRAINED if unconstrained else BASE_PRIORS
    if name not in table:
        raise UserInputError(f"unknown prior '{name}' in --prior; use one of {', '.join(table)}")
    expected = table[name][0]
    if dist != expected:
        mode = "with --unconstrained" if unconstrained else "in constrained mode"
        raise UserInputError(f"--prior {name} must be a {expected}(a,b) prior {mode}, not {dist}; change only its two numbers")
    location_first = dist in ("lognormal", "normal")
    if (location_first and b <= 0) or (not location_first and (a <= 0 or b <= 0)) or not all(
            map(lambda x: x == x and abs(x) != float("inf"), (a, b))):
        raise UserInputError(f"--prior {text}: parameters out of range; scales and shapes must be positive and finite")
    return name, dist, (a, b)
