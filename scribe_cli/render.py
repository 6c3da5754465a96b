"""Configuration -> Stan program text (Jinja templates in ``stan/templates``), and the matching data dict."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np

from . import __version__
from .config import ModelConfig
from .data import Counts, gene_count_pairs

TEMPLATES = Path(__file__).resolve().parents[1] / "stan" / "templates"

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
    "zinb": "Zero-inflated negative binomial (ZINB) model",
    "nbvcp": "Negative binomial with variable capture per cell (NBVCP)",
    "zinbvcp": "Zero-inflated negative binomial with variable capture (ZINBVCP)",
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


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def blocks_for(config: ModelConfig) -> list[Block]:
    """The template blocks of a configuration, in program order."""
    likelihood = "likelihoods/nb_pairs.stan.j2"
    return [
        Block(likelihood, skip=("model",)),
        Block("params/canonical.stan.j2"),
        Block(likelihood, {"log_p": "rep_vector(log(p), G)", "log1m_p": "rep_vector(log1m(p), G)"}, only=("model",)),
    ]


def render(config: ModelConfig) -> str:
    env = _env()
    blocks = []
    for blk in blocks_for(config):
        module = env.get_template(blk.template).module
        members = {
            s: getattr(module, s)
            for s, _ in SECTIONS
            if hasattr(module, s) and s not in blk.skip and (blk.only is None or s in blk.only)
        }
        blocks.append({"module": members, "args": blk.args})
    text = env.get_template("program.stan.j2").render(
        title=_TITLES[config.model],
        version=__version__,
        config_line=config.describe(),
        sections=SECTIONS,
        blocks=blocks,
    )
    return _tidy(text)


def _tidy(text: str) -> str:
    """Collapse the blank lines that template whitespace leaves between blocks."""
    out: list[str] = []
    for line in text.splitlines():
        if not line.strip() and out and not out[-1].strip():
            continue
        out.append(line.rstrip())
    return "\n".join(out).strip() + "\n"


def stan_data(config: ModelConfig, counts: Counts) -> dict:
    """The data dict for a rendered program (sufficient statistics, base prior numbers)."""
    pairs = gene_count_pairs(counts.X)
    data = {
        "C": counts.n_cells,
        "G": counts.n_genes,
        "J": pairs.n_pairs,
        "pair_gene": pairs.pair_gene.tolist(),
        "pair_count": pairs.pair_count.tolist(),
        "pair_weight": pairs.pair_weight.astype(float).tolist(),
        "gene_total": pairs.gene_total.astype(float).tolist(),
    }
    for name in ("p", "r"):
        data[f"prior_{name}"] = list(config.base_prior(name)[1])
    return data


def data_summary(data: dict) -> dict:
    return {k: (len(v) if isinstance(v, (list, np.ndarray)) else v) for k, v in data.items()}


def variable_dims(config: ModelConfig, variables: dict, data: dict) -> dict[str, list[str]]:
    """Named dims of each Stan variable, from the sizes the data fix (gene = G, cell = C).

    Works for rendered programs and for edited ones (``--stan-file``) alike. When G == C the
    axis is ambiguous; genes win, since every model here is indexed by gene first.
    """
    G, C = data["G"], data["C"]
    dims: dict[str, list[str]] = {}
    for name, value in variables.items():
        shape = np.shape(value)[1:]  # drop the draw axis
        names = []
        for i, size in enumerate(shape):
            if size == G and "gene" not in names:
                names.append("gene")
            elif size == C and "cell" not in names:
                names.append("cell")
            else:
                names.append(f"{name}_dim_{i}")
        if names:
            dims[name] = names
    return dims
