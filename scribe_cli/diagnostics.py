"""Convergence verdicts from an InferenceData: rank-normalised R-hat and ESS (rank_diagnostics.py, ArviZ's
algorithm vectorised), E-BFMI by ArviZ, Pareto k by PSIS."""

from __future__ import annotations

import math

import arviz as az
import numpy as np

from . import rank_diagnostics
from .advice import approximation_advice
from .psis import smoothed_weights

# Thresholds follow current practice (Vehtari et al. 2021 for R-hat / ESS; Betancourt for E-BFMI;
# Vehtari et al. 2024 for Pareto k, whose sample-size-dependent bound is min(1 - 1/log10(S), 0.7)).
RHAT_MAX = 1.01
ESS_MIN_PER_CHAIN = 100
EBFMI_MIN = 0.3


def _extreme(arrays, labels, largest: bool) -> tuple[float, str | None]:
    """The largest (or smallest) figure over ``arrays`` (one per variable, NaN ignored) and the label of the scalar
    that holds it (``labels``: per variable, a function from a scalar's flat index to its label)."""
    best, where = float("nan"), None
    for a, label in zip(arrays, labels):
        if not a.size or np.isnan(a).all():
            continue
        i = int(np.nanargmax(a) if largest else np.nanargmin(a))
        if where is None or (a[i] > best if largest else a[i] < best):
            best, where = float(a[i]), label(i)
    return best, where


def convergence(idata: az.InferenceData, method: str, max_treedepth: int | None = None, *,
                config: dict | None = None, paths: int | None = None,
                rank_figures: tuple[np.ndarray, np.ndarray, np.ndarray, list[str]] | None = None) -> dict:
    """Verdicts and the figures behind them; ``problems`` lists what failed. For approximations, ``advice``
    lists what to do about it (``config``: the run's ModelConfig.to_dict(), ``paths``: pathfinder's paths).
    ``rank_figures``: (R-hat, bulk ESS, tail ESS, labels) over every posterior scalar already computed (the
    summary table's), so that they are not computed twice. NUTS verdicts name the scalar behind each extreme
    (``worst``): with thousands of genes, "max R-hat 1.012" alone does not say where to look."""
    post = idata.posterior
    out: dict = {}
    if method == "nuts":
        n_chains = post.sizes["chain"]
        if rank_figures is not None:
            per_var = [rank_figures[:3]]
            labels = [rank_figures[3].__getitem__]
        else:
            # the same figures as az.rhat / az.ess, vectorised: ArviZ's per-scalar loop took minutes on gene-level
            # fits; monotone copies (mu of log_mu) have the same rank figures and are skipped
            arrays = rank_diagnostics.distinct(rank_diagnostics.scalars(post))
            per_var = [rank_diagnostics.diagnose(x) for x in arrays.values()]
            labels = [lambda i, n=n: rank_diagnostics.scalar_labels(n, post[n])[i] for n in arrays]
        out["worst"] = {}
        for j, (key, largest) in enumerate((("max_rhat", True), ("min_ess_bulk", False), ("min_ess_tail", False))):
            out[key], out["worst"][key.split("_", 1)[1]] = _extreme([d[j] for d in per_var], labels, largest)
        stats = idata.sample_stats
        out["divergences"] = int(stats["diverging"].values.sum())
        if max_treedepth is not None and "tree_depth" in stats:
            out["treedepth_hits"] = int((stats["tree_depth"].values >= max_treedepth).sum())
        bfmi = az.bfmi(idata)
        out["min_ebfmi"] = float(np.min(bfmi))
        problems = []
        if not out["max_rhat"] <= RHAT_MAX:
            problems.append(f"max R-hat {out['max_rhat']:.3f} > {RHAT_MAX} ({out['worst']['rhat']})")
        if not out["min_ess_bulk"] >= ESS_MIN_PER_CHAIN * n_chains:
            problems.append(f"min bulk ESS {out['min_ess_bulk']:.0f} < {ESS_MIN_PER_CHAIN * n_chains} "
                            f"({out['worst']['ess_bulk']})")
        if not out["min_ess_tail"] >= ESS_MIN_PER_CHAIN * n_chains:
            problems.append(f"min tail ESS {out['min_ess_tail']:.0f} < {ESS_MIN_PER_CHAIN * n_chains} "
                            f"({out['worst']['ess_tail']})")
        if out["divergences"]:
            problems.append(f"{out['divergences']} divergent transitions")
        if out.get("treedepth_hits"):
            problems.append(f"{out['treedepth_hits']} transitions hit max tree depth")
        if out["min_ebfmi"] < EBFMI_MIN:
            problems.append(f"E-BFMI {out['min_ebfmi']:.2f} < {EBFMI_MIN}")
    elif method == "optimize":
        problems = []
        out["note"] = "posterior mode (point estimate): no uncertainty and no convergence diagnostics"
    else:
        problems = _approximation(idata, method, out, config=config, paths=paths)
    out["ok"] = not problems
    out["problems"] = problems
    return out


def _approximation(idata: az.InferenceData, method: str, out: dict, *, config: dict | None, paths: int | None) -> list:
    """Pareto k, PSIS ESS and (pathfinder) distinct resampled draws into ``out``; returns the problems."""
    khat, n, ess = pareto_k(idata)
    out["pareto_k"] = khat
    bound = min(1 - 1 / math.log10(n), 0.7) if n > 10 else 0.7
    out["pareto_k_threshold"] = bound
    out["psis_ess"] = ess
    attrs = idata.sample_stats.attrs
    problems = []
    collapsed = False
    if "distinct_draws" in attrs:  # pathfinder: written by psis.resample
        out["distinct_draws"] = int(attrs["distinct_draws"])
        out["min_distinct_draws"] = int(attrs["min_distinct_draws"])
        collapsed = not int(attrs["psis_resampled"])
        out["draws_written"] = "raw approximation (not resampled)" if collapsed else "PSIS-resampled"
        if collapsed:
            problems.append(
                f"PSIS resampling kept {out['distinct_draws']} distinct draw(s) (at least {out['min_distinct_draws']} "
                f"needed; PSIS ESS {ess:.1f}): wrote {idata.posterior.sizes['draw']} raw draws of the approximation "
                "instead, NOT a posterior sample (sample_stats.log_weight holds their importance weights)")
    if khat > bound:
        problems.append(f"Pareto k {khat:.2f} > {bound:.2f}: the approximation is unreliable")
    if problems:
        out["advice"] = approximation_advice(method, khat, config=config, paths=paths, collapsed=collapsed)
    return problems


def pareto_k(idata: az.InferenceData) -> tuple[float, int, float | None]:
    """PSIS Pareto k of the importance ratios target / approximation over the approximate draws, their
    number and the PSIS effective sample size (None for files written before it was recorded)."""
    stats = idata.sample_stats
    if "pareto_k" in stats.attrs:  # computed before resampling (pathfinder): resampled draws would hide it
        ess = stats.attrs.get("psis_ess")
        return float(stats.attrs["pareto_k"]), int(stats.attrs["pareto_k_draws"]), None if ess is None else float(ess)
    log_w = (stats["lp"].values - stats["lp_approx"].values).ravel()
    log_w = log_w[np.isfinite(log_w)]
    if log_w.size < 10:
        return float("nan"), int(log_w.size), None
    _, khat, ess = smoothed_weights(log_w)
    return khat, int(log_w.size), ess
