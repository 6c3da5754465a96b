"""Which template blocks a configuration's program is made of, in program order:

  likelihood (functions, data, transformed data)  likelihoods/<form>.stan.j2
  base-prior parameters                           params/base.stan.j2, once per sampled quantity
  hierarchical priors                             priors/<family>.stan.j2, once per target
  derived quantities of the parameterization      params/<parameterization>.stan.j2
  BNB concentration, mixing weights               params/bnb.stan.j2, params/mixture.stan.j2
  likelihood (model statement, generated quantities)

Each block's arguments come from block_args.py; render.py turns the list into text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .block_args import (base_specs, dataset_hier_args, derived_dataset_args, hier_args, likelihood_args,
                         log_mean_dataset_args, logit_p_expr, two_level_args)
from .config import ModelConfig
from .plan import as_gd, gates_log_mean, output_only, plan, samples_dataset_log_mean, samples_log_mean, shifts_capture


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


def blocks_for(config: ModelConfig, check_loglik: bool = False, dense: bool = False,
               log_lik: bool = False) -> list[Block]:
    """The template blocks of a configuration, in program order (check_loglik / dense / log_lik: see render)."""
    pl = plan(config)
    likelihood = f"likelihoods/{pl.form}.stan.j2"
    lik_args = likelihood_args(config, pl, check_loglik, log_lik)
    blocks = [Block(likelihood, lik_args, skip=("model", "generated_quantities"))]
    dense_args = {"vcp": config.variable_capture, "bnb": config.bnb, "zi": config.zero_inflated, "mix": pl.mix,
                  "t": "matrix" if pl.mix or pl.dparams else "vector", "dparams": pl.dparams, "dweights": pl.dweights,
                  "log_weights": lik_args["log_weights"],
                  "gd": {q: as_gd(q, pl.shapes[q]) for q in ("mu", "r", "kappa", "gate") if q in pl.shapes}}
    if check_loglik or dense:
        blocks.append(Block("likelihoods/dense.stan.j2", dense_args, only=("functions", "data")))
    blocks += [Block("params/base.stan.j2", spec) for spec in base_specs(config, pl)]
    if config.capture_prior is not None:
        blocks.append(Block("params/capture_organism.stan.j2", {"odds": config.parameterization == "mean-odds",
                                                                "shift": shifts_capture(config)}))
    declared: set[str] = set()
    for target, family in config.hierarchical().items():
        blocks.append(Block(f"priors/{family}.stan.j2", hier_args(config, pl, target, family, family not in declared)))
        declared.add(family)
    for target, family in config.dataset_priors().items():
        if target == "prob" and config.prob_dataset_mode == "two_level":
            blocks.append(Block("priors/two_level.stan.j2", two_level_args(config, pl, family, family not in declared)))
        else:
            if target == "prob" and samples_dataset_log_mean(config):  # logit p from the sampled log mean
                blocks.append(Block("params/log_mean_dataset.stan.j2", log_mean_dataset_args(config, pl)))
            blocks.append(Block(f"priors/{family}.stan.j2",
                                dataset_hier_args(config, pl, target, family, family not in declared)))
        declared.add(family)
    derived = {"elt": pl.elt, "p_scalar": pl.p_scalar, "vcp": config.variable_capture and config.capture_prior is None,
               "ds": derived_dataset_args(config, pl.shapes) if pl.dparams else None,
               "log_mean": samples_log_mean(config), "logit_p": logit_p_expr(config, pl),
               "mu_in_gq": "mu" in output_only(config), "gated": gates_log_mean(config),
               "capture_shift": shifts_capture(config)}
    blocks.append(Block(f"params/{config.parameterization.replace('-', '_')}.stan.j2", derived))
    if config.bnb:
        blocks.append(Block("params/bnb.stan.j2", derived))
    if pl.mix:
        blocks.append(Block("params/mixture.stan.j2", {"dweights": pl.dweights}))
    blocks.append(Block(likelihood, lik_args,
                        only=("generated_quantities",) if dense else ("model", "generated_quantities")))
    if dense:
        blocks.append(Block("likelihoods/dense.stan.j2", dense_args, only=("model",)))
        for blk in blocks:  # the dense model block reads mu and p: none of them computed in generated quantities only
            blk.args.update({k: False for k in ("mu_in_gq", "q_in_gq") if k in blk.args})
    if check_loglik:
        blocks.append(Block("likelihoods/dense.stan.j2", dense_args, only=("generated_quantities",)))
    return blocks
