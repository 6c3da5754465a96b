"""What to do when an approximation's diagnostics fail: one sentence per remedy, for the run's JSON
(``diagnostics.advice``), its warnings and `scribe summary`."""

from __future__ import annotations

from .config import CAPTURE_MODELS

# Options whose value is a hierarchical prior family (ModelConfig field names; the CLI option is the same
# name with dashes).
PRIOR_FIELDS = ("prob_prior", "expression_prior", "gate_prior", "overdispersion_prior", "expression_dataset_prior",
                "prob_dataset_prior", "zero_inflation_dataset_prior", "overdispersion_dataset_prior")

# Above this Pareto k the importance ratios have no finite mean (Vehtari et al. 2024), so more draws from more
# paths cannot make the weighted estimate converge; measured (docs/variational.md): 4 -> 8 paths took k from
# 11.8 to 9.8 at twice the time with the same recovery. Between the threshold and 1 more draws do help, slowly.
MORE_PATHS_K_MAX = 1.0


def _option(field: str) -> str:
    return "--" + field.replace("_", "-")


def horseshoe_options(config: dict | None) -> list[str]:
    """The CLI options that select a horseshoe in this configuration (``config``: ModelConfig.to_dict())."""
    return [_option(f) for f in PRIOR_FIELDS if (config or {}).get(f) == "horseshoe"]


def _capture_or_joint(config: dict | None) -> bool:
    """Per-cell capture (nbvcp, zinbvcp) or several datasets: where pathfinder's intervals were narrowest."""
    c = config or {}
    return c.get("model") in CAPTURE_MODELS or c.get("dataset_key") is not None


def approximation_advice(method: str, pareto_k: float, *, config: dict | None = None, paths: int | None = None,
                         collapsed: bool = False) -> list[str]:
    """Remedies, most useful first, for an approximation whose Pareto k exceeds its threshold (or whose
    PSIS resample collapsed: ``collapsed``)."""
    tips: list[str] = []
    advi_first = method == "pathfinder" and _capture_or_joint(config)
    if advi_first:
        # bench/scale.py's rows (docs/performance.md), same model and size: ADVI's 90% intervals covered more of
        # the true means than pathfinder's on every simulated capture and joint model but nbvcp with a per-gene p
        # (there pathfinder 83%, ADVI 70%), the seed's horseshoe included; pathfinder's covered 16-83% in all.
        tips.append("try --method advi first: on simulated capture and joint models its 90% intervals covered more "
                    "of the true means than pathfinder's (joint zinbvcp 1,000 x 475: 86% against 25%, in 37 s "
                    "against 131 s; docs/performance.md)")
    hs = horseshoe_options(config)
    if hs:
        # spec/decisions.md 6: the horseshoe's pole at zero breaks Gaussian approximations; NEG has none.
        tips.append(f"replace the horseshoe by NEG for variational methods ({', '.join(f'{o} neg' for o in hs)}); "
                    "keep the horseshoe for NUTS")
    if method == "pathfinder":
        if pareto_k <= MORE_PATHS_K_MAX and not collapsed:
            more = 2 * (paths or 4)
            tips.append(f"run more paths (--chains {more}): PSIS then picks from more starting points")
        if not advi_first:
            tips.append("try --method advi (mean-field ADVI: its draws are not resampled, so they never collapse to "
                        "a few points, but its intervals are the approximation's)")
    elif method == "advi-fullrank":
        tips.append("try --method advi (mean-field) or --method pathfinder: full-rank ADVI fits n^2/2 covariance "
                    "entries by a noisy gradient")
    elif method == "advi":
        tips.append("try --method pathfinder (several paths, PSIS-resampled)")
    elif method == "laplace":
        tips.append("try --method pathfinder: the Laplace approximation is one Gaussian at the mode, which "
                    "no setting can widen")
    tips.append("for intervals you can trust, use --method nuts (exact up to Monte Carlo error; slower)")
    return tips


def silent_gene_advice(counts, config) -> str | None:
    """A warning when a zero-inflated model meets genes with no counts (in some dataset, for dataset-specific
    gates), else None.

    Why: such a gene's zeros are explained as well by a gate near 1 with any mean as by a small mean with no
    gate; the posterior has both modes, joined only through the priors' tails, and NUTS stays in one per chain.
    The joint zinbvcp 1,000 x 500 simulation has 3 all-zero genes: one chain's lowest bulk ESS (1.4) was such a
    gene, its gate wandering from 0.005 to 1 with log mu rising along it (docs/performance.md, session 19)."""
    import numpy as np

    if not config.zero_inflated:
        return None
    X = counts.X
    per_dataset = config.dataset_params and "gate" in config.dataset_priors() and counts.cell_dataset is not None
    groups = [counts.cell_dataset == d for d in range(len(counts.datasets))] if per_dataset else [None]
    silent = set()
    for cells in groups:
        Xd = X if cells is None else X[np.flatnonzero(cells)]
        silent |= set(np.flatnonzero(np.asarray(Xd.sum(axis=0)).ravel() == 0).tolist())
    if not silent:
        return None
    where = " in some dataset" if per_dataset else ""
    return (f"{len(silent)} gene(s) have no counts{where}: under zero inflation their gate and mean are not "
            "identified (a gate near 1 with any mean fits as well as no gate), which NUTS cannot mix; drop them "
            "(--min-cells 1, or per dataset before the run) or expect R-hat warnings on them")
