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
PARAMETERIZATIONS = ("canonical", "mean-prob", "mean-odds", "mean-disp")
PRIOR_FAMILIES = ("none", "gaussian", "horseshoe", "neg")

# What the renderer can build today; the rest of the spec's matrix comes with the model issue.
IMPLEMENTED = {("nbdm", "canonical")}

# Base priors: name -> (distribution, default parameters). Overridable with --prior NAME=dist(a,b).
BASE_PRIORS = {
    "p": ("beta", (1.0, 1.0)),
    "r": ("lognormal", (0.0, 1.0)),
    "mu": ("lognormal", (0.0, 1.0)),
    "phi": ("betaprime", (1.0, 1.0)),
    "gate": ("beta", (1.0, 9.0)),
    "capture": ("beta", (1.0, 1.0)),
    "capture_odds": ("betaprime", (1.0, 1.0)),
}


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
    priors: tuple = field(default_factory=tuple)  # ((name, dist, (a, b)), ...) overrides

    @property
    def zero_inflated(self) -> bool:
        return self.model in ("zinb", "zinbvcp")

    @property
    def variable_capture(self) -> bool:
        return self.model in ("nbvcp", "zinbvcp")

    @property
    def samples_p(self) -> bool:
        return self.parameterization in ("canonical", "mean-prob")

    def base_prior(self, name: str) -> tuple[str, tuple[float, float]]:
        for n, dist, params in self.priors:
            if n == name:
                return dist, params
        return BASE_PRIORS[name]

    def describe(self) -> str:
        """One line naming every non-default choice, for headers and logs."""
        parts = [f"--model {self.model}", f"--parameterization {self.parameterization}"]
        for f in dataclasses.fields(self):
            if f.name in ("model", "parameterization", "priors"):
                continue
            value = getattr(self, f.name)
            if value != f.default:
                flag = "--" + f.name.replace("_", "-")
                parts.append(flag if value is True else f"{flag} {value}")
        for n, dist, (a, b) in self.priors:
            parts.append(f"--prior {n}={dist}({a:g},{b:g})")
        return " ".join(parts)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["priors"] = {n: f"{dist}({a:g},{b:g})" for n, dist, (a, b) in self.priors}
        return d


# (rule, applies(config) -> bool meaning "violated", fix). Checked in order; the first violated rule is reported.
RULES = [
    ("--components must be at least 1", lambda c: c.components < 1, "use --components 1 (no mixture) or K >= 2"),
    ("--expression-prior needs a mixture", lambda c: c.expression_prior != "none" and c.components < 2,
     "add --components K with K >= 2, or drop --expression-prior"),
    ("--prob-prior needs a parameterization that samples p", lambda c: c.prob_prior != "none" and not c.samples_p,
     "use --parameterization canonical or mean-prob, or drop --prob-prior"),
    ("--gate-prior needs a zero-inflated model", lambda c: c.gate_prior != "none" and not c.zero_inflated,
     "use --model zinb or zinbvcp, or drop --gate-prior"),
    ("--overdispersion-prior needs --bnb", lambda c: c.overdispersion_prior != "none" and not c.bnb,
     "add --bnb, or drop --overdispersion-prior"),
    ("--overdispersion-prior is horseshoe or neg", lambda c: c.overdispersion_prior == "gaussian",
     "use --overdispersion-prior horseshoe (default with --bnb) or neg"),
    ("horseshoe hyperparameters must be positive", lambda c: min(c.horseshoe_tau0, c.slab_df, c.slab_scale) <= 0,
     "pass positive --horseshoe-tau0, --slab-df and --slab-scale"),
    ("NEG hyperparameters must be positive", lambda c: min(c.neg_u, c.neg_a, c.neg_tau) <= 0,
     "pass positive --neg-u, --neg-a and --neg-tau"),
]


def validate(config: ModelConfig) -> ModelConfig:
    for name, allowed in (("model", MODELS), ("parameterization", PARAMETERIZATIONS)):
        if getattr(config, name) not in allowed:
            raise UserInputError(f"unknown --{name} '{getattr(config, name)}'; use one of {', '.join(allowed)}")
    for name in ("prob_prior", "expression_prior", "gate_prior", "overdispersion_prior"):
        if getattr(config, name) not in PRIOR_FAMILIES:
            raise UserInputError(f"unknown --{name.replace('_', '-')} '{getattr(config, name)}'; use one of {', '.join(PRIOR_FAMILIES)}")
    for rule, violated, fix in RULES:
        if violated(config):
            raise UserInputError(f"invalid configuration: {rule}; {fix}")
    supported = (config.model, config.parameterization) in IMPLEMENTED and config.components == 1 and not config.bnb \
        and not config.unconstrained and all(
            getattr(config, n) == "none" for n in ("prob_prior", "expression_prior", "gate_prior", "overdispersion_prior"))
    if not supported:
        raise UserInputError(
            f"this configuration ({config.describe()}) is valid but not implemented yet in this version; "
            "use --model nbdm --parameterization canonical"
        )
    return config


_PRIOR_RE = re.compile(r"^\s*(\w+)\s*=\s*(\w+)\s*\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)\s*$")


def parse_prior_override(text: str) -> tuple[str, str, tuple[float, float]]:
    """Parse ``NAME=dist(a,b)``: the distribution family of a base prior is fixed, only its numbers change."""
    m = _PRIOR_RE.match(text)
    if not m:
        raise UserInputError(f"cannot parse --prior '{text}'; write it as NAME=dist(a,b), e.g. r=lognormal(1,0.5)")
    name, dist, a, b = m.group(1), m.group(2).lower(), float(m.group(3)), float(m.group(4))
    if name not in BASE_PRIORS:
        raise UserInputError(f"unknown prior '{name}' in --prior; use one of {', '.join(BASE_PRIORS)}")
    expected = BASE_PRIORS[name][0]
    if dist != expected:
        raise UserInputError(f"--prior {name} must be a {expected}(a,b) prior, not {dist}; change only its two numbers")
    if dist != "lognormal" and (a <= 0 or b <= 0) or dist == "lognormal" and b <= 0:
        raise UserInputError(f"--prior {text}: parameters out of range; scales and shapes must be positive")
    return name, dist, (a, b)
