"""Configuration -> Stan program text (Jinja templates in ``stan/templates``).

A program is a list of Blocks; each block file defines one macro per Stan block it contributes to
(``functions``, ``data``, ..., ``generated_quantities``), each taking one argument ``a``: the block's
arguments. The order of the list is the order of declarations, so quantities are defined before use.

Blocks, in program order:
  likelihood (functions, data, transformed data)  likelihoods/<form>.stan.j2
  base-prior parameters                           params/base.stan.j2, once per sampled quantity
  hierarchical priors                             priors/<family>.stan.j2, once per target
  derived quantities of the parameterization      params/<parameterization>.stan.j2
  BNB concentration, mixing weights               params/bnb.stan.j2, params/mixture.stan.j2
  likelihood (model statement, generated quantities)
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np

from . import __version__
from .config import BASE_PRIORS, ModelConfig
from .resources import TEMPLATES


SECTIONS = [
    ("functions", "functions"),
    ("data", "data"),
    ("transformed_data", "transformed data"),
    ("parameters", "parameters"),
    ("transformed_parameters", "transformed parameters"),
    ("model", "model"),
    ("generated_quantities", "generated quantities"),
]

_TITLES = {
    "nbdm": "Negative binomial (NBDM) model of a cells x genes UMI matrix",
    "zinb": "Zero-inflated negative binomial (ZINB) model of a cells x genes UMI matrix",
    "nbvcp": "Negative binomial with variable capture per cell (NBVCP)",
    "zinbvcp": "Zero-inflated negative binomial with variable capture (ZINBVCP)",
}

_SAMPLED = {
    "canonical": "r and p are sampled; mu = r p / (1 - p)",
    "mean-prob": "mu and p are sampled; r = mu (1 - p) / p",
    "mean-odds": "mu and the odds phi are sampled; p = 1 / (1 + phi), r = mu phi",
    "mean-disp": "mu and r are sampled; p = mu / (mu + r), per gene",
}

# Hierarchical targets (priors.md): the parameter each defines, its link, the normal prior of a scalar
# population centre (None: expression has one centre per gene, with the base prior), the Gaussian s_raw prior.
_TARGETS = {
    "prob": ("p", "logit", (0, 1), (0, 0.5)),
    "gate": ("gate", "logit", (-5, 1), (-2, 0.5)),
    "overdispersion": ("omega", "log", (-5, 1), (-2, 0.5)),
    "expression": (None, "log", None, (-2, 0.5)),
}


@dataclass
class Block:
    """One template file and the arguments of its macros.

    ``only`` limits it to some Stan blocks: a likelihood lists its data and functions early and its
    model statement after the priors, so the rendered model block reads priors first.
    """

    template: str
    args: dict = field(default_factory=dict)
    only: tuple[str, ...] | None = None
    skip: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """Shapes and the likelihood form implied by a configuration."""

    mix: bool
    elt: str  # Stan type of a gene-level parameter: vector[G], or matrix[G, K] (genes x components)
    p_scalar: bool  # one p for all genes (and components)
    form: str  # pairs | pairs_mixture | capture_shared_p | capture_cells
    obs: str  # nb | zinb | bnb | zibnb
    dparams: bool = False  # dataset-specific gene parameters (genes x datasets matrices, datasets.md)
    dweights: bool = False  # mixture weights per dataset
    shapes: dict = field(default_factory=dict)  # dparams: Stan type of every gene-level quantity


def likelihood_form(config: ModelConfig) -> str:
    """Which likelihood template, i.e. which data the program needs and what it costs per gradient.

    pairs / pairs_mixture: no cell-specific parameters, per-gene sufficient statistics.
    capture_shared_p: variable capture with one shared p (NB only): p_hat depends on the cell alone.
    capture_cells: every other variable-capture model; O(C G) zero terms, reduce_sum over cells.
    """
    if not config.variable_capture:
        return "pairs_mixture" if config.mixture else "pairs"
    if not config.zero_inflated and not config.bnb and not config.gene_specific_p:
        return "capture_shared_p"
    return "capture_cells"


def plan(config: ModelConfig) -> Plan:
    obs = ("zi" if config.zero_inflated else "") + ("bnb" if config.bnb else "nb")
    return Plan(
        mix=config.mixture,
        elt="matrix[G, K]" if config.mixture else "vector[G]",
        p_scalar=not config.gene_specific_p,
        form=likelihood_form(config),
        obs=obs,
        dparams=config.dataset_params,
        dweights=config.dataset_axis and config.mixture,
        shapes=dataset_shapes(config) if config.dataset_params else {},
    )


# --- Multi-dataset programs (datasets.md) -----------------------------------------------------------------
# A quantity is shared by the datasets (real, vector[G]) or dataset-specific (vector[D]: one per dataset;
# matrix[G, D]: one per gene and dataset). Derived quantities take the broadcast shape of their inputs, and
# the likelihood sees every gene-level quantity as a genes x datasets matrix.
GD = "matrix[G, D]"


def _bcast(a: str, b: str) -> str:
    if a == b or b == "real":
        return a
    if a == "real":
        return b
    return GD  # vector[G] with vector[D], or anything with a matrix


def dataset_shapes(config: ModelConfig) -> dict[str, str]:
    """Stan type of each gene-level quantity of a program with dataset-specific parameters."""
    dp = config.dataset_priors()
    expression = "r" if config.parameterization == "canonical" else "mu"
    if "prob" in dp:
        prob_shape = "vector[D]" if config.prob_dataset_mode == "scalar" else GD
    else:
        prob_shape = "vector[G]" if config.prob_prior != "none" else "real"
    sh = {expression: GD if "expression" in dp else "vector[G]"}
    if config.parameterization in ("canonical", "mean-prob"):
        sh["p"] = prob_shape
    elif config.parameterization == "mean-odds":
        sh["phi"] = sh["p"] = prob_shape
    else:
        sh["r"] = "vector[G]"
        sh["p"] = _bcast(sh["mu"], sh["r"])
    derived = "mu" if expression == "r" else "r"
    if derived not in sh:
        sh[derived] = _bcast(sh[expression], sh.get("phi", sh["p"]))
    if config.zero_inflated:
        sh["gate"] = GD if "gate" in dp else "vector[G]"
    if config.bnb:
        sh["omega"] = GD if "overdispersion" in dp else "vector[G]"
        sh["kappa"] = _bcast(sh["r"], sh["omega"])
    return sh


def _gd(expr: str, shape: str) -> str:
    """``expr`` (of type ``shape``) as a genes x datasets matrix."""
    return {"real": f"rep_matrix({expr}, G, D)", "vector[G]": f"rep_matrix({expr}, D)",
            "vector[D]": f"rep_matrix(({expr})', G)", GD: expr}[shape]


def _times(x: str, x_shape: str, f: str, f_shape: str) -> str:
    """x times f elementwise, broadcast (f: an expression, parenthesised where needed)."""
    out = _bcast(x_shape, f_shape)
    if x_shape != out:
        x, x_shape = _gd(x, x_shape), out
    if f_shape == "real":
        return f"{x} * ({f})"
    if x_shape == GD and f_shape == "vector[G]":
        return f"diag_pre_multiply({f}, {x})"  # row g times f[g]
    if x_shape == GD and f_shape == "vector[D]":
        return f"diag_post_multiply({x}, {f})"  # column d times f[d]
    return f"{x} .* {f}"


def _lift(name: str, shape: str, to: str) -> str:
    """``name`` as an operand of type ``to``: itself, or broadcast to genes x datasets."""
    return name if shape == to else _gd(name, shape)


def _derived_dataset_args(config: ModelConfig, sh: dict) -> dict:
    """(type, expression) of the derived quantities of the parameterization and BNB, broadcast."""
    def ratio(num: str, den: str) -> str:  # p / (1 - p) or (1 - p) / p, in p's shape
        return f"{num} / {den}" if sh["p"] == "real" else f"{num} ./ {den}"

    out = {}
    if config.parameterization == "canonical":
        out["mu"] = (sh["mu"], _times("r", sh["r"], ratio("p", "(1 - p)"), sh["p"]))
    elif config.parameterization == "mean-prob":
        out["r"] = (sh["r"], _times("mu", sh["mu"], ratio("(1 - p)", "p"), sh["p"]))
    elif config.parameterization == "mean-odds":
        out["p"] = (sh["p"], "inv(1 + phi)")
        out["r"] = (sh["r"], _times("mu", sh["mu"], "phi", sh["phi"]))
    else:
        mu, r = _lift("mu", sh["mu"], sh["p"]), _lift("r", sh["r"], sh["p"])
        out["p"] = (sh["p"], f"{mu} ./ ({mu} + {r})")
    if config.bnb:
        r, omega = _lift("r", sh["r"], sh["kappa"]), _lift("omega", sh["omega"], sh["kappa"])
        out["kappa"] = (sh["kappa"], f"2 + ({r} + 1) ./ {omega}")
    return out


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _bounded(shape: str, unit: bool) -> str:
    """``vector[G]`` -> ``vector<lower=0, upper=1>[G]`` (unit) or ``vector<lower=0>[G]``."""
    bounds = "<lower=0, upper=1>" if unit else "<lower=0>"
    if shape == "real":
        return "real" + bounds
    kind, size = shape.split("[", 1)
    return f"{kind}{bounds}[{size}"


def _base_specs(config: ModelConfig, pl: Plan) -> list[dict]:
    """The quantities sampled with a base prior, in declaration order."""
    in_comp = " and component" if pl.mix else ""
    docs = {
        "r": f"NB size (dispersion) per gene{in_comp}",
        "mu": f"mean expression per gene{in_comp}",
        "r_pop": "population centre of each gene's r across components",
        "mu_pop": "population centre of each gene's mean across components",
        "p": "success probability, shared by all genes" + (" and components" if pl.mix else ""),
        "phi": "odds (1 - p) / p, shared by all genes" + (" and components" if pl.mix else ""),
        "gate": f"zero-inflation probability per gene{in_comp}",
        "capture": "capture probability per cell",
        "capture_odds": "capture odds per cell: capture = 1 / (1 + capture_odds)",
    }
    expression = "r" if config.parameterization == "canonical" else "mu"
    other = {"canonical": ("p", "real"), "mean-prob": ("p", "real"), "mean-odds": ("phi", "real"),
             "mean-disp": ("r", pl.elt)}[config.parameterization]
    dp = config.dataset_priors()
    if "expression" in dp:
        docs["r_pop"] = "shared size of each gene, the population level of its per-dataset r"
        docs["mu_pop"] = "shared mean of each gene, the population level of its per-dataset means"
    wanted: list[tuple[str, str, str]] = []  # (name, prior, shape)
    if config.expression_prior != "none" or "expression" in dp:
        wanted.append((f"{expression}_pop", expression, "vector[G]"))
    else:
        wanted.append((expression, expression, pl.elt))
    if not (other[0] in ("p", "phi") and (config.prob_prior != "none" or "prob" in dp)):
        wanted.append((other[0], other[0], other[1]))
    if config.zero_inflated and config.gate_prior == "none" and "gate" not in dp:
        wanted.append(("gate", "gate", pl.elt))
    if config.variable_capture:
        name = "capture_odds" if config.parameterization == "mean-odds" else "capture"
        wanted.append((name, name, "vector[C]"))
    specs = []
    for i, (name, prior, shape) in enumerate(wanted):
        unit = prior in ("p", "gate", "capture")
        specs.append({
            "name": name,
            "prior": prior,
            "doc": docs[name],
            "shape": shape,
            "decl": _bounded(shape, unit),
            "is_matrix": shape.startswith("matrix"),
            "unconstrained": config.unconstrained,
            "link": "logit" if unit else "softplus",
            "dist": {"beta": "beta", "lognormal": "lognormal", "betaprime": "beta_prime"}[BASE_PRIORS[prior][0]],
            "first": i == 0,
        })
    return specs


# Dataset-level targets (datasets.md): link, normal prior of a scalar population centre (None: the centre
# is the shared per-gene value), Gaussian s_raw prior, and what the local scales are per.
_DATASET_TARGETS = {
    "expression": ("log", None, (-2, 0.5), "vector[G]"),
    "prob": ("logit", (0, 1), (0, 0.5), None),  # per element (mode-dependent)
    "gate": ("logit", (-5, 0.01), (-2, 0.5), "vector[G]"),  # tight centre: zero inflation off by default
    "overdispersion": ("log", None, (-2, 0.5), "vector[G]"),
}


def _dataset_hier_args(config: ModelConfig, pl: Plan, target: str, family: str, declare_data: bool) -> dict:
    """Arguments of a family block for a dataset-level prior: same non-centred form as the gene-level
    targets, with elements per (gene, dataset), or per dataset for the scalar p mode."""
    link, loc_prior, sigma_prior, local = _DATASET_TARGETS[target]
    T = f"{target}_dataset"
    q = {"expression": "r" if config.parameterization == "canonical" else "mu",
         "prob": "phi" if config.parameterization == "mean-odds" else "p",
         "gate": "gate", "overdispersion": "omega"}[target]
    if target == "prob":
        link = "log" if q == "phi" else "logit"
    elt = pl.shapes[q]
    local = local or elt
    if loc_prior is None:
        centre = f"rep_matrix(log({q}_pop), D)"
    elif elt == GD and config.prob_dataset_mode == "two_level" and target == "prob":
        centre = f"rep_matrix({T}_loc_d', G)"
    else:
        centre = f"{T}_loc"
    return _family_args(T, family, q, elt, local, link, centre, loc_prior, sigma_prior, declare_data,
                        across="datasets", copies="D", label=" dataset-level")


def _two_level_args(config: ModelConfig, pl: Plan, family: str, declare_data: bool) -> dict:
    """prob-dataset-mode two_level: each dataset its own centre and scale of logit p (log phi)."""
    a = _dataset_hier_args(config, pl, "prob", family, declare_data)
    T = a["T"]
    local = {"gaussian": None, "horseshoe": f"{T}_lambda_tilde", "neg": f"sqrt({T}_psi)"}[family]
    z = f"{local} .* {T}_z" if local else f"{T}_z"
    a.update(family=a["family"].replace("dataset-level", "two-level"), two_level=True,
             scaled_z=f"diag_post_multiply({z}, {T}_sigma)", local=GD, local_matrix=True,
             local_unit=_bounded(GD, True), local_pos=_bounded(GD, False))
    return a


def _num(x: float) -> str:
    return f"{x:g}"


def _hier_args(config: ModelConfig, pl: Plan, target: str, family: str, declare_data: bool) -> dict:
    q, link, loc_prior, sigma_prior = _TARGETS[target]
    T = target
    if target == "overdispersion" and "overdispersion" in config.dataset_priors():
        q = "omega_pop"  # the shared per-gene level of the dataset-level prior
    if target == "expression":
        q = "r" if config.parameterization == "canonical" else "mu"
        elt, local = "matrix[G, K]", "vector[G]"  # local scales per gene, shared by the components
        centre = f"rep_matrix(log({q}_pop), K)"
    else:
        elt = local = pl.elt
        centre = f"{T}_loc"
    return _family_args(T, family, q, elt, local, link, centre, loc_prior, sigma_prior, declare_data,
                        across="components" if target == "expression" else "", copies="K")


_FAMILY_NAMES = {"gaussian": "Gaussian", "horseshoe": "regularized horseshoe", "neg": "NEG"}


def _family_args(T: str, family: str, q: str, elt: str, local: str, link: str, centre: str, loc_prior, sigma_prior,
                 declare_data: bool, across: str, copies: str, label: str = "") -> dict:
    """Arguments of a family block (priors/*.stan.j2): link(q) = centre + scale * z, the scale the family's;
    local scales shaped ``local`` are repeated ``copies`` times (columns) when the element is a matrix."""
    scale = {"gaussian": f"{T}_sigma", "horseshoe": f"{T}_tau * {T}_lambda_tilde", "neg": f"sqrt({T}_psi)"}[family]
    if family == "gaussian":
        scaled_z = f"{T}_sigma * {T}_z"
    elif local != elt:
        scaled_z = f"rep_matrix({scale}, {copies}) .* {T}_z"
    else:
        scaled_z = f"{scale} .* {T}_z"
    return {
        "T": T,
        "family": _FAMILY_NAMES[family] + label,
        "q": q,
        "elt": elt,
        "link": link,
        "inv_link": "exp" if link == "log" else "inv_logit",
        "centre": centre,
        "scaled_z": scaled_z,
        "loc_prior": tuple(map(_num, loc_prior)) if loc_prior else None,
        "sigma_prior": tuple(map(_num, sigma_prior)),
        "local": local,
        "local_matrix": local.startswith("matrix"),
        "local_unit": _bounded(local, True),
        "local_pos": _bounded(local, False),
        "declare_data": declare_data,
        "across": across,
    }


def _likelihood_args(config: ModelConfig, pl: Plan, check_loglik: bool, log_lik: bool = False) -> dict:
    if pl.p_scalar:
        rep = "rep_matrix({}, G, K)" if pl.mix else "rep_vector({}, G)"
        log_p, log1m_p = rep.format("log(p)"), rep.format("log1m(p)")
    else:
        log_p, log1m_p = "log(p)", "log1m(p)"
    return {
        "zi": config.zero_inflated,
        "bnb": config.bnb,
        "mix": pl.mix,
        "pairs": pl.form in ("pairs", "pairs_mixture"),
        "obs": pl.obs,
        "log_p": log_p,
        "log1m_p": log1m_p,
        # mean-preserving alpha = (kappa - 1) m / r with m the NB mean (models.md, decisions.md item 2)
        "alpha": "(kappa - 1) .* mu ./ r",
        "assignments": config.assignments,
        "check_loglik": check_loglik,
        "log_lik": log_lik,
        "dparams": pl.dparams,
        "dweights": pl.dweights,
        "log_weights": "cell_log_weights(dataset_weights, cell_dataset)" if pl.dweights else "log(weights)",
        "r": "r", "mu": "mu", "gate": "gate", "kappa": "kappa",
        **(_dataset_likelihood_args(config, pl) if pl.dparams else {}),
    }


def _dataset_likelihood_args(config: ModelConfig, pl: Plan) -> dict:
    """Every gene-level quantity as a genes x datasets matrix; the pair form takes them as vectors over
    the columns (gene, dataset), in the order of the data's pair_gene."""
    sh = pl.shapes
    wrap = (lambda e: f"to_vector({e})") if pl.form == "pairs" else (lambda e: e)
    gd = {q: _gd(q, sh[q]) for q in sh}
    out = {q: wrap(gd[q]) for q in ("r", "mu", "gate", "kappa") if q in sh}
    out["log_p"] = wrap(_gd("log(p)", sh["p"]))
    out["log1m_p"] = wrap(_gd("log1m(p)", sh["p"]))
    if config.bnb:
        out["alpha"] = wrap(f"({gd['kappa']} - 1) .* {gd['mu']} ./ {gd['r']}")
    if pl.form == "capture_shared_p":  # one p per dataset at most: p_hat per cell
        out["p_cell"] = "rep_vector(p, C)" if sh["p"] == "real" else "p[cell_dataset]"
    return out


def blocks_for(config: ModelConfig, check_loglik: bool = False, dense: bool = False,
               prior_only: bool = False, log_lik: bool = False) -> list[Block]:
    """The template blocks of a configuration, in program order (check_loglik / dense / prior_only / log_lik:
    see render)."""
    pl = plan(config)
    likelihood = f"likelihoods/{pl.form}.stan.j2"
    lik_args = _likelihood_args(config, pl, check_loglik, log_lik)
    blocks = [Block(likelihood, lik_args, skip=("model", "generated_quantities"))]
    dense_args = {"vcp": config.variable_capture, "bnb": config.bnb, "zi": config.zero_inflated, "mix": pl.mix,
                  "t": "matrix" if pl.mix or pl.dparams else "vector", "dparams": pl.dparams, "dweights": pl.dweights,
                  "log_weights": lik_args["log_weights"],
                  "gd": {q: _gd(q, pl.shapes[q]) for q in ("mu", "r", "kappa", "gate") if q in pl.shapes}}
    if check_loglik or dense:
        blocks.append(Block("likelihoods/dense.stan.j2", dense_args, only=("functions", "data")))
    blocks += [Block("params/base.stan.j2", spec) for spec in _base_specs(config, pl)]
    declared: set[str] = set()
    for target, family in config.hierarchical().items():
        blocks.append(Block(f"priors/{family}.stan.j2", _hier_args(config, pl, target, family, family not in declared)))
        declared.add(family)
    for target, family in config.dataset_priors().items():
        if target == "prob" and config.prob_dataset_mode == "two_level":
            blocks.append(Block("priors/two_level.stan.j2", _two_level_args(config, pl, family, family not in declared)))
        else:
            blocks.append(Block(f"priors/{family}.stan.j2",
                                _dataset_hier_args(config, pl, target, family, family not in declared)))
        declared.add(family)
    derived = {"elt": pl.elt, "p_scalar": pl.p_scalar, "vcp": config.variable_capture,
               "ds": _derived_dataset_args(config, pl.shapes) if pl.dparams else None}
    blocks.append(Block(f"params/{config.parameterization.replace('-', '_')}.stan.j2", derived))
    if config.bnb:
        blocks.append(Block("params/bnb.stan.j2", derived))
    if pl.mix:
        blocks.append(Block("params/mixture.stan.j2", {"dweights": pl.dweights}))
    blocks.append(Block(likelihood, lik_args,
                        only=("generated_quantities",) if dense or prior_only else ("model", "generated_quantities")))
    if dense and not prior_only:
        blocks.append(Block("likelihoods/dense.stan.j2", dense_args, only=("model",)))
    if check_loglik:
        blocks.append(Block("likelihoods/dense.stan.j2", dense_args, only=("generated_quantities",)))
    return blocks


def _title(config: ModelConfig) -> str:
    title = _TITLES[config.model]
    if config.mixture:
        title += ", a mixture of K components"
    if config.bnb:
        title += ", with beta-negative-binomial tails"
    return title


_COSTS = {
    "pairs": "O(G + T) per gradient from per-gene sufficient statistics (T = rising-factorial terms, about the "
             "distinct non-zero (gene, count) pairs)",
    "pairs_mixture": "O(K (G + T + J + nnz)) per gradient: per-cell marginalisation from pair statistics",
    "capture_shared_p": "O(C + G + T) per gradient (x K for mixtures, + J + nnz): p_hat depends on the cell only",
    "capture_cells": "O(C G) per gradient (x K for mixtures), split across threads by reduce_sum "
                     "(--threads-per-chain)",
}


def _notes(config: ModelConfig, pl: Plan, log_lik: bool = False) -> list[str]:
    notes = [f"Parameterization {config.parameterization}: {_SAMPLED[config.parameterization]}."]
    if config.unconstrained:
        notes.append("Base priors (--unconstrained): normals on the link scale (logit / softplus), transformed.")
    else:
        notes.append("Base priors: on each parameter's natural domain (constrained mode).")
    hier = config.hierarchical()
    if hier:
        notes.append("Hierarchical priors (non-centred, on the link scale): "
                     + ", ".join(f"{t} ({f})" for t, f in hier.items()) + ".")
    if pl.mix:
        notes.append("Mixture: the component of each cell is marginalised; components are ordered by weight; "
                     "gene-level parameters are per component, p and phi (when scalar) and capture are shared.")
    if pl.dparams:
        per = [q for q, shape in pl.shapes.items() if shape in (GD, "vector[D]")]
        notes.append("Datasets (--dataset-key, D datasets): per dataset: " + ", ".join(per)
                     + "; everything else is shared. Dataset-level priors (non-centred): "
                     + ", ".join(f"{t} ({f})" for t, f in config.dataset_priors().items())
                     + (f", p mode {config.prob_dataset_mode}" if "prob" in config.dataset_priors() else "") + ".")
    elif pl.dweights:
        notes.append("Datasets (--dataset-key, D datasets): gene parameters are shared; mixing weights are per "
                     "dataset, around the ordered population weights.")
    notes.append(f"Likelihood cost: {_COSTS[pl.form]}{' (G D columns (gene, dataset) in place of G)' if pl.dparams and pl.form != 'capture_cells' else ''}.")
    if log_lik:
        notes.append("Generated quantities: log_lik, the log likelihood of each cell (full log pmf, components "
                     "marginalised), for arviz.loo.")
    return notes


def render(config: ModelConfig, *, check_loglik: bool = False, dense: bool = False, prior_only: bool = False,
           log_lik: bool = False) -> str:
    """The Stan program of a (validated) configuration.

    For tests and benchmarks only (the data then need ``counts_dense``: standata.stan_data(dense=True)):
    ``check_loglik`` adds generated quantities ``log_lik`` (the likelihood term the model block adds to
    target, same expression) and ``log_lik_dense`` (a plain loop of built-in lpmfs over the full matrix);
    ``dense`` puts that dense loop in the model block instead of the fast likelihood; ``prior_only`` leaves
    the likelihood out of the model block (draws from the prior, for prior checks).

    ``log_lik`` (`scribe run --log-lik`) adds the generated quantity ``log_lik``, a vector[C]: each cell's
    log likelihood (sum over genes of the full log pmf, log(u!) included, mixture components marginalised),
    at the cost of the likelihood form (pair forms: one log P(0) sum per draw plus the cell's non-zeros).
    The pair forms then need the cells x pairs CSR in the data (standata.stan_data(log_lik=True)).
    It cannot be combined with ``check_loglik``, whose scalar quantity has the same name.
    """
    if log_lik and check_loglik:
        raise ValueError("render: log_lik and check_loglik both define a generated quantity 'log_lik'")
    env = _env()
    pl = plan(config)
    parts: dict[str, list[str]] = {s: [] for s, _ in SECTIONS}
    for blk in blocks_for(config, check_loglik, dense, prior_only, log_lik):
        module = env.get_template(blk.template).module
        for s, _ in SECTIONS:
            if hasattr(module, s) and s not in blk.skip and (blk.only is None or s in blk.only):
                text = str(getattr(module, s)(blk.args)).rstrip()
                if text.strip():
                    parts[s].append(text)
    sections = [(header, _join(parts[s])) for s, header in SECTIONS if parts[s]]
    text = env.get_template("program.stan.j2").render(
        title=_title(config),
        version=__version__,
        config_line=config.describe(program_only=True),
        notes=_notes(config, pl, log_lik),
        sections=sections,
    )
    return _tidy(text)


def _join(parts: list[str]) -> str:
    """One Stan block from its blocks' pieces: a piece that opens with a comment starts a new paragraph."""
    out = ""
    for text in parts:
        text = text.strip("\n")
        if out:
            out += "\n\n" if text.lstrip().startswith("//") else "\n"
        out += text
    return out


_COMMENT_COLUMN = 49
_DECL_COMMENT = re.compile(r"^(\s+\S.*?;)\s+(//.*)$")


def _tidy(text: str) -> str:
    """Collapse the blank lines that template whitespace leaves, drop blank lines after an opening or
    before a closing brace, and align trailing comments of statements at one column."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.rstrip()
        m = _DECL_COMMENT.match(line)
        if m:
            code, comment = m.groups()
            line = code.ljust(_COMMENT_COLUMN - 1) + " " + comment
        if not line and out and (not out[-1] or out[-1].endswith("{")):
            continue
        if line.strip() == "}" and out and not out[-1]:
            out.pop()
        out.append(line)
    return "\n".join(out).strip() + "\n"


def stan_data(config: ModelConfig, counts, log_lik: bool = False) -> dict:
    """The data dict for a rendered program (see scribe_cli.standata)."""
    from .standata import stan_data as _stan_data

    return _stan_data(config, counts, log_lik=log_lik)


def data_summary(data: dict) -> dict:
    return {k: (len(v) if isinstance(v, (list, np.ndarray)) else v) for k, v in data.items()}


# Variables whose axes are known by name (docs/models.md), used when their sizes match the data's.
_KNOWN_DIMS = {
    "log_lik": ("cell",),
    "capture": ("cell",),
    "capture_odds": ("cell",),
    "capture_raw": ("cell",),
    "capture_odds_raw": ("cell",),
    "assignment_prob": ("cell", "component"),
    "weights": ("component",),
    "weights_raw": ("component",),
    "dataset_weights": ("dataset", "component"),
}


def variable_dims(config: ModelConfig, arrays: dict, data: dict) -> dict[str, list[str]]:
    """Named dims of each Stan variable, from the sizes the data fix (gene = G, cell = C, component = K).

    Works for rendered programs and for edited ones (``--stan-file``) alike. When sizes coincide the
    axis is ambiguous; gene wins over cell over component (every model here is indexed by gene first,
    and K is small), and each name is used once per variable.
    """
    sizes = [("gene", data["G"]), ("cell", data["C"])]
    if "K" in data:
        sizes.append(("component", data["K"]))
    if "D" in data:  # multi-dataset programs (one axis per dataset)
        sizes.append(("dataset", data["D"]))
    size_of = dict(sizes)
    dims: dict[str, list[str]] = {}
    for name, value in arrays.items():
        shape = np.shape(value)[2:]  # drop the chain and draw axes
        known = _KNOWN_DIMS.get(name)
        if known and len(known) == len(shape) and all(size_of.get(d) == n for d, n in zip(known, shape)):
            dims[name] = list(known)  # per-cell quantities stay on `cell` even when C == G
            continue
        names: list[str] = []
        for i, size in enumerate(shape):
            for dim, n in sizes:
                if size == n and dim not in names:
                    names.append(dim)
                    break
            else:
                names.append(f"{name}_dim_{i}")
        if names:
            dims[name] = names
    return dims
