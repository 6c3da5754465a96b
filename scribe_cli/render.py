"""Configuration -> Stan program text: the emitted text of the blocks that blocks.py lists (Jinja templates
in ``stan/templates``), joined per Stan block in program order, with the program's header notes.

Each block file defines one macro per Stan block it contributes to (``functions``, ``data``, ...,
``generated_quantities``), each taking one argument ``a``: the block's arguments (block_args.py).
"""

from __future__ import annotations

import functools
import re

import jinja2

from . import __version__
from .blocks import blocks_for
from .config import ModelConfig
from .plan import GD, Plan, dense_reference, integrates_gate, native_capture_terms, plan, samples_dataset_log_mean
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


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


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
    "capture_cells_native": "O((C + G) x nodes) for the zero terms (C++, stan/cpp/capture_cells.hpp) + O(non-zeros), "
                            "split across threads by reduce_sum (--threads-per-chain), + O(G + T)",
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
    if integrates_gate(config):
        notes.append("Each gene's gate is summed out of the likelihood on a grid of logit(gate) - gate_loc (data: gate_node, "
                     "gate_log_w, and every 4th node for genes whose conditional is broad, from scribe_cli/gate_grid.py; "
                     "C++: stan/cpp/gate_quadrature.hpp) and drawn from its conditional in generated quantities: NUTS "
                     "samples gate_loc, not the gates.")
    if config.gate_split:
        notes.append("The gate's genes are sampled centred where the data pin their gate down and non-centred "
                     "elsewhere (data: gate_centred_idx, chosen by scribe_cli/centring.py); the prior is the same.")
    if config.prob_split:
        notes.append("p's genes are sampled centred where their counts pin logit(p) down and non-centred "
                     "elsewhere (data: prob_centred_idx, chosen by scribe_cli/centring.py); the prior is the same.")
    if pl.mix:
        notes.append("Mixture: the component of each cell is marginalised; components are ordered by weight; "
                     "gene-level parameters are per component, p and phi (when scalar) and capture are shared.")
    if pl.dparams:
        per = [q for q, shape in pl.shapes.items() if shape in (GD, "vector[D]")]
        notes.append("Datasets (--dataset-key, D datasets): per dataset: " + ", ".join(per)
                     + "; everything else is shared. Dataset-level priors (non-centred): "
                     + ", ".join(f"{t} ({f})" for t, f in config.dataset_priors().items())
                     + (f", p mode {config.prob_dataset_mode}" if "prob" in config.dataset_priors() else "") + ".")
        if samples_dataset_log_mean(config):
            notes.append("The log mean per (gene, dataset) is sampled, in place of p's deviations: logit p = log mu - log r, "
                         "p's hierarchy centred on it (scribe_cli/plan.py, samples_dataset_log_mean).")
    elif pl.dweights:
        notes.append("Datasets (--dataset-key, D datasets): gene parameters are shared; mixing weights are per "
                     "dataset, around the ordered population weights.")
    cost = _COSTS["capture_cells_native" if native_capture_terms(config) else pl.form]
    notes.append(f"Likelihood cost: {cost}{' (G D columns (gene, dataset) in place of G)' if pl.dparams and pl.form != 'capture_cells' else ''}.")
    if log_lik:
        notes.append("Generated quantities: log_lik, the log likelihood of each cell (full log pmf, components "
                     "marginalised), for arviz.loo.")
    notes.append("Data switch prior_only = 1 leaves the likelihood out of target (--prior-draws): the prior draws "
                 "use this compiled program.")
    return notes


def render(config: ModelConfig, *, check_loglik: bool = False, dense: bool = False, log_lik: bool = False) -> str:
    """The Stan program of a (validated) configuration.

    Every program has the data switch ``prior_only`` (standata.stan_data sets it; `--prior-draws`,
    calibration.prior_draws): it leaves the likelihood out of target, so the prior draws share the run's compiled
    program. ``log_lik`` (`scribe run --log-lik`) adds the generated quantity ``log_lik``, a vector[C]: each cell's
    log likelihood (sum over genes of the full log pmf, log(u!) included, mixture components marginalised), at
    the cost of the likelihood form (pair forms: one log P(0) sum per draw plus the cell's non-zeros, read
    through the cells x pairs CSR that standata.stan_data(log_lik=True) adds). It is program text, not a data
    switch: its C++ costs every compile ~7 s (17-20%), which the runs without it should not pay.

    For tests and benchmarks only (the data then need ``counts_dense``: standata.stan_data(dense=True)):
    ``check_loglik`` adds generated quantities ``log_lik_fast`` (the likelihood term the model block adds to
    target, same expression) and ``log_lik_dense`` (a plain loop of built-in lpmfs over the full matrix);
    ``dense`` puts that dense loop in the model block instead of the fast likelihood.
    """
    if check_loglik or dense:
        config = dense_reference(config)
    env = _env()
    pl = plan(config)
    parts: dict[str, list[str]] = {s: [] for s, _ in SECTIONS}
    for blk in blocks_for(config, check_loglik, dense, log_lik):
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
