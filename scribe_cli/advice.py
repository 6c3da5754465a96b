"""What to do when an approximation's diagnostics fail: one sentence per remedy, for the run's JSON
(``diagnostics.advice``), its warnings and `scribe summary`."""

from __future__ import annotations

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


def approximation_advice(method: str, pareto_k: float, *, config: dict | None = None, paths: int | None = None,
                         collapsed: bool = False) -> list[str]:
    """Remedies, most useful first, for an approximation whose Pareto k exceeds its threshold (or whose
    PSIS resample collapsed: ``collapsed``)."""
    tips: list[str] = []
    hs = horseshoe_options(config)
    if hs:
        # spec/decisions.md 6: the horseshoe's pole at zero breaks Gaussian approximations; NEG has none.
        tips.append(f"replace the horseshoe by NEG for variational methods ({', '.join(f'{o} neg' for o in hs)}); "
                    "keep the horseshoe for NUTS")
    if method == "pathfinder":
        if pareto_k <= MORE_PATHS_K_MAX and not collapsed:
            more = 2 * (paths or 4)
            tips.append(f"run more paths (--chains {more}): PSIS then picks from more starting points")
        tips.append("try --method advi (mean-field ADVI: its draws are not resampled, so they never collapse to a "
                    "few points, but its intervals are the approximation's)")
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
