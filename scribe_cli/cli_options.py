"""The click options that define a model (shared by `scribe render` and `scribe run`) and the
ModelConfig they build. Option names match ModelConfig fields, so `run --config FILE` TOML keys and
`--print-config` output use the same names."""

from __future__ import annotations

import click

from .errors import UserInputError
from .config import BASE_PRIORS, BASE_PRIORS_UNCONSTRAINED, MODELS, NEGATED_FLAGS, ORGANISMS, PARAMETERIZATIONS, PRIOR_FAMILIES, \
    PROB_DATASET_MODES, ModelConfig, parse_prior_override, validate

_FAMILY = click.Choice(PRIOR_FAMILIES)


def _prior_help() -> str:
    constrained = ", ".join(f"{n}={d}{a}".replace(" ", "") for n, (d, a) in BASE_PRIORS.items())
    unconstrained = ", ".join(f"{n}={d}{a}".replace(" ", "") for n, (d, a) in BASE_PRIORS_UNCONSTRAINED.items())
    return (f"Override a base prior's two numbers (data: no recompile). Repeatable. Defaults: {constrained}; "
            f"with --unconstrained (normal on the link scale): {unconstrained}.")


def _switch(field: str) -> str:
    """A ModelConfig switch's on/off flags, the off spelling from config.NEGATED_FLAGS (which describe() also reads)."""
    return f"--{field.replace('_', '-')}/{NEGATED_FLAGS[field]}"


MODEL_OPTIONS = [
    click.option("--model", type=click.Choice(MODELS), default="nbdm", show_default=True,
                 help="Count model: nbdm, zinb (zero-inflated), nbvcp / zinbvcp (variable capture per cell)."),
    click.option("--parameterization", type=click.Choice(PARAMETERIZATIONS), default="canonical", show_default=True,
                 help="Which NB coordinates are sampled: canonical (r, p), mean-prob (mu, p), mean-odds (mu, phi), "
                      "mean-disp (mu, r; p per gene)."),
    click.option("--components", type=int, default=1, show_default=True,
                 help="Mixture components K; K >= 2 marginalises each cell's component (ordered by weight)."),
    click.option("--assignments", is_flag=True,
                 help="With --components K >= 2: per-cell component probabilities (cells x K) in the output."),
    click.option("--bnb", is_flag=True,
                 help="Beta-negative-binomial tails (mean-preserving; excess dispersion shrunk by --overdispersion-prior)."),
    click.option("--unconstrained", is_flag=True,
                 help="Base priors as normals on the link scale (logit / softplus) instead of natural-domain priors."),
    click.option("--prob-prior", type=_FAMILY, default=None,
                 help="Hierarchical prior on logit p_g (gene-specific p); needs canonical or mean-prob. Default: gaussian "
                      "with canonical / mean-prob (one p shared by all genes misfits droplet data; its scale prob_sigma "
                      "says whether one p would have done), none otherwise; `--prob-prior none` is the shared-p model."),
    click.option("--expression-prior", type=_FAMILY, default="none", show_default=True,
                 help="Hierarchical prior pooling each gene's log mean (log r under canonical) across components; needs K >= 2."),
    click.option("--gate-prior", type=_FAMILY, default="none", show_default=True,
                 help="Hierarchical prior on logit gate_g (centre -5: zero inflation off by default); needs zinb or zinbvcp."),
    click.option("--overdispersion-prior", type=_FAMILY, default=None,
                 help="Shrinkage prior on the BNB excess dispersion log omega_g: horseshoe (default with --bnb) or neg."),
    click.option("--dataset-key", default=None, metavar="OBS_COLUMN",
                 help="Joint model of several datasets: the obs column naming each cell's dataset (>= 2 levels). "
                      "Alone it shares every gene parameter (mixtures get per-dataset weights); the dataset-level "
                      "priors below make parameters dataset-specific."),
    click.option("--expression-dataset-prior", type=_FAMILY, default="none", show_default=True,
                 help="Per-dataset log mean (log r under canonical) around the shared gene mean; needs --dataset-key."),
    click.option("--prob-dataset-prior", type=_FAMILY, default="none", show_default=True,
                 help="Per-dataset logit p (log phi under mean-odds), shaped by --prob-dataset-mode; needs --dataset-key."),
    click.option("--prob-dataset-mode", type=click.Choice(PROB_DATASET_MODES), default="gene_specific", show_default=True,
                 help="scalar: one p per dataset; gene_specific: p per (gene, dataset) around one population; "
                      "two_level: each dataset its own centre and scale."),
    click.option("--zero-inflation-dataset-prior", type=_FAMILY, default="none", show_default=True,
                 help="Gate per (gene, dataset), sharing a centre (-5, off by default) and scale family; needs zinb/zinbvcp."),
    click.option("--overdispersion-dataset-prior", type=_FAMILY, default="none", show_default=True,
                 help="BNB excess dispersion per (gene, dataset) around the gene's omega; needs --bnb."),
    click.option("--organism", type=click.Choice(("none", *ORGANISMS)), default="none", show_default=True,
                 help="Capture prior informed by biology (nbvcp, zinbvcp): -log capture_c ~ Normal+(log M_0 - log L_c, sd) "
                      "with L_c the cell's UMI total over all input genes and M_0 = 200000 mRNA per cell (human and "
                      "mouse). Pins the mean x capture scale that NUTS otherwise crawls along."),
    click.option("--total-mrna", type=float, default=None, metavar="M0",
                 help="With --organism: expected total mRNA molecules per cell M_0 (data: no recompile)."),
    click.option("--total-mrna-sd", type=float, default=None, metavar="SD",
                 help="With --organism: sd of log capture around log(L_c / M_0) (default 0.3)."),
    click.option("--mean-anchor", is_flag=True,
                 help="VCP models: log mu_g ~ Normal(log((mean count_g + eps) / mean capture), --mean-anchor-sd) in "
                      "place of mu's base prior; ties gene means to the observed scale. Needs mean-prob, mean-odds "
                      "or mean-disp."),
    click.option("--mean-anchor-sd", type=float, default=0.3, show_default=True,
                 help="Width of the mean anchor on the log scale (data: no recompile)."),
    click.option(_switch("native_gradients"), default=True, show_default=True,
                 help="Hand-written C++ with its own gradient for the likelihood's hot spots: every model's "
                      "rising-factorial sum (stan/cpp/rise_sum.hpp), NB / ZINB's per-gene terms from logit p "
                      "(stan/cpp/logit_gene_sum.hpp) and, in VCP models with a per-gene p or a gate, "
                      "the O(cells x genes) terms (stan/cpp/capture_cells.hpp; several times faster); or the Stan "
                      "language throughout (the reference they are tested against)."),
    click.option(_switch("mean_coordinates"), default=True, show_default=True,
                 help="canonical: let NUTS move r through log mu = log r + logit(p) (the same model and priors, "
                      "with the Jacobian; the data pin the mean, so this removes the r x p ridge: several times "
                      "fewer steps), or through log r as Stan's lower bound does. Joint models with a Gaussian "
                      "--prob-dataset-prior per gene: sample log mu per (gene, dataset), logit(p) = log mu - log r "
                      "(with --organism moving with the cells' capture shift), or r and p's deviations."),
    click.option(_switch("scaled_coordinates"), default=True, show_default=True,
                 help="With a gene-level p hierarchy (or a joint model's log mean per (gene, dataset)): sample each gene's log mean and the hierarchy's centre (and "
                      "Gaussian scale) in units of their standard errors from the counts (Stan's offset/multiplier: "
                      "the same model). Stan's warmup cannot learn scales far below 0.01; at 10,000 cells NUTS's "
                      "warmup took 2.7x fewer steps (docs/performance.md). --unit-coordinates declares them plainly."),
    click.option(_switch("gated_mean"), default=True, show_default=True,
                 help="zinb, zinbvcp (one dataset, no --gate-prior) with the mean coordinates: sample each gene's mean after its gate, "
                      "log((1 - gate) mu), the mean its counts pin, and derive log mu (the same model: a shift at "
                      "fixed gate). In (gate, log mu) a gene whose zeros the gate shares lies on a diagonal ridge "
                      "(docs/performance.md). --ungated-mean samples log mu itself."),
    click.option(_switch("neg_marginal"), default=None,
                 help="NEG with --neg-u 1 --neg-a 1 on p, the gate or omega: integrate each element's local scale "
                      "out (the same prior; psi is drawn from its conditional afterwards; no funnel, so no "
                      "divergences from it), or sample it as log psi. Default: integrated out, except with "
                      "--method pathfinder, whose Gaussian fit the marginal's cusp at zero misleads."),
    click.option(_switch("summed_gates"), default=True, show_default=True,
                 help="zinb with --gate-prior neg (--neg-u 1 --neg-a 1, one component, no capture): sum each gene's "
                      "gate out of the likelihood on a grid (C++, stan/cpp/gate_quadrature.hpp; the same posterior, "
                      "the gates drawn from their conditionals afterwards), so NUTS samples the means, p and the "
                      "gates' centre only: about 16x fewer steps per draw on PBMC (docs/performance.md); or sample "
                      "every gate."),
    click.option("--horseshoe-tau0", type=float, default=1.0, show_default=True, help="Horseshoe global scale tau ~ HalfCauchy(tau0)."),
    click.option("--slab-df", type=float, default=4.0, show_default=True, help="Horseshoe slab degrees of freedom."),
    click.option("--slab-scale", type=float, default=2.0, show_default=True, help="Horseshoe slab scale."),
    click.option("--neg-u", type=float, default=1.0, show_default=True, help="NEG inner Gamma shape (1: NEG, 0.5: horseshoe-like)."),
    click.option("--neg-a", type=float, default=1.0, show_default=True, help="NEG outer Gamma shape."),
    click.option("--neg-tau", type=float, default=1.0, show_default=True, help="NEG outer Gamma rate."),
    click.option("--prior", "priors", multiple=True, metavar="NAME=dist(a,b)", help=_prior_help()),
]

# The keyword arguments model_options adds to a command (everything model_config_from_options takes).
MODEL_OPTION_NAMES = ("model", "parameterization", "components", "assignments", "bnb", "unconstrained", "prob_prior",
                      "expression_prior", "gate_prior", "overdispersion_prior", "dataset_key",
                      "expression_dataset_prior", "prob_dataset_prior", "prob_dataset_mode",
                      "zero_inflation_dataset_prior", "overdispersion_dataset_prior", "organism", "total_mrna",
                      "total_mrna_sd", "mean_anchor", "mean_anchor_sd", "native_gradients", "mean_coordinates",
                      "scaled_coordinates", "gated_mean", "neg_marginal", "summed_gates",
                      "horseshoe_tau0", "slab_df",
                      "slab_scale", "neg_u", "neg_a", "neg_tau", "priors")


def model_options(f):
    """Decorator: the options that define the Stan program; shared by `render` and `run`."""
    for opt in reversed(MODEL_OPTIONS):
        f = opt(f)
    return f


def default_prob_prior(parameterization: str, prob_dataset_prior: str = "none") -> str:
    """The CLI's --prob-prior when none is given (and no `--prior p=...`, which asks for the shared p with that
    prior): gaussian (p per gene, pooled on the logit scale) where the parameterization samples p and no
    dataset-level prior defines it; none otherwise (mean-disp already has a p
    per gene; mean-odds samples a shared odds). Why (bench/default_fit.py, README "Choosing a model"): one p
    shared by all genes gives every gene the same variance-to-mean ratio, and on droplet data its posterior gene
    means sit well above the observed ones. ModelConfig's own default stays the spec's shared p."""
    if parameterization in ("canonical", "mean-prob") and prob_dataset_prior == "none":
        return "gaussian"
    return "none"


def model_config_from_options(**kw) -> ModelConfig:
    """Validated ModelConfig from model_options' keyword arguments (UserInputError, exit 2, when invalid).

    Without --overdispersion-prior, --bnb means the horseshoe (priors.md); an explicit `none` with --bnb
    is refused by the rules. Without --prob-prior, see default_prob_prior.
    """
    kw = dict(kw)
    unconstrained = bool(kw.get("unconstrained", False))
    overrides = tuple(parse_prior_override(p, unconstrained=unconstrained) for p in kw.pop("priors", ()) or ())
    names = [name for name, _, _ in overrides]
    for name in names:
        if names.count(name) > 1:
            raise UserInputError(f"--prior {name} is given {names.count(name)} times; give each base prior once")
    if kw.get("prob_prior") is None:  # the default: a gene-specific p wherever the parameterization samples p
        kw["prob_prior"] = "none" if "p" in names else \
            default_prob_prior(kw.get("parameterization", "canonical"), kw.get("prob_dataset_prior", "none"))
    if kw.get("overdispersion_prior") is None:
        kw["overdispersion_prior"] = "horseshoe" if kw.get("bnb") else "none"
    unknown = set(kw) - set(MODEL_OPTION_NAMES)
    if unknown:
        raise TypeError(f"not model options: {', '.join(sorted(unknown))}")
    return validate(ModelConfig(priors=overrides, **kw))
