"""PSIS resampling of pathfinder's approximate draws, and what to write when resampling collapses.

Pathfinder's draws come from a Gaussian approximation q; importance ratios target / q, Pareto-smoothed
(ArviZ's psislw), turn them into draws of the target by resampling with replacement, as Stan's own
psis_resample does. When a few ratios dominate (large Pareto k, typical with thousands of parameters),
the resample is a handful of points repeated: its quantiles are single atoms and its intervals have
(near) zero width. Such a set is not written as a posterior sample: ``resample`` then keeps distinct raw
draws of q instead, flagged as such, with their smoothed log weights, and the diagnostics say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import arviz as az
import numpy as np

# A resample is refused below max(MIN_DISTINCT_FLOOR, MIN_DISTINCT_FRACTION * draws) distinct draws. Why:
# - the floor: a 90% interval's ends are the 5% and 95% quantiles. With S distinct values each tail holds
#   about 0.05 S of them, so below 20 distinct values each end is a single repeated value (one atom),
#   not an estimate. The Monte Carlo sd of an estimated tail probability q from S independent draws is
#   sqrt(q (1 - q) / S): at S = 20 and q = 0.05 that is 0.049, as large as q itself.
# - the fraction: with S_eff effective draws, n resampled draws hold about S_eff distinct ones when n >> S_eff.
#   5% of the draws (50 of the default 1000) keeps the Monte Carlo error of a posterior mean at sd / sqrt(50)
#   = 14% of a posterior sd or less; fewer would make two runs' means differ visibly at the posterior's own scale.
MIN_DISTINCT_FLOOR = 20
MIN_DISTINCT_FRACTION = 0.05


def min_distinct(n_draws: int) -> int:
    """Fewest distinct draws a resampled posterior of ``n_draws`` draws may hold (half of them for fewer than
    40 draws, where the floor could never be met: such short runs are smoke tests, not posteriors)."""
    return min(max(MIN_DISTINCT_FLOOR, math.ceil(MIN_DISTINCT_FRACTION * n_draws)), max(1, n_draws // 2))


def smoothed_weights(log_ratio: np.ndarray) -> tuple[np.ndarray, float, float]:
    """PSIS-smoothed normalised log weights, Pareto k and the effective sample size 1 / sum w^2."""
    log_ratio = np.asarray(log_ratio, dtype=float)
    smoothed, khat = az.psislw(log_ratio - np.max(log_ratio))
    w = np.exp(smoothed - np.max(smoothed))
    w /= w.sum()
    return smoothed, float(khat), float(1.0 / np.sum(w**2))


def _weighted_pick(smoothed: np.ndarray, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    w = np.exp(smoothed - smoothed.max())
    return rng.choice(smoothed.size, size=n_draws, replace=True, p=w / w.sum())


def resample_indices(log_ratio: np.ndarray, n_draws: int, seed: int) -> np.ndarray:
    """The PSIS resample itself (indices, with replacement), as ``resample`` draws it before judging it."""
    smoothed, _, _ = smoothed_weights(np.asarray(log_ratio, dtype=float).ravel())
    return _weighted_pick(smoothed, n_draws, np.random.default_rng(seed))


@dataclass(frozen=True)
class Resample:
    pick: np.ndarray       # indices of the written draws among the raw ones
    pareto_k: float
    ess: float             # PSIS effective sample size of the raw draws
    raw_draws: int
    distinct: int          # distinct draws the PSIS resample held
    min_distinct: int
    resampled: bool        # False: the resample collapsed; ``pick`` holds distinct raw draws of q instead
    log_weight: np.ndarray  # PSIS-smoothed log weights of the picked draws (normalised over all raw draws)

    def attrs(self) -> dict:
        """What the posterior file records (sample_stats attrs): read back by diagnostics.convergence."""
        return {"pareto_k": self.pareto_k, "pareto_k_draws": self.raw_draws, "psis_ess": self.ess,
                "distinct_draws": self.distinct, "min_distinct_draws": self.min_distinct,
                "psis_resampled": int(self.resampled)}


def resample(log_ratio: np.ndarray, n_draws: int, seed: int) -> Resample:
    """PSIS-resample ``n_draws`` of the raw draws (with replacement, weights = smoothed ratios); when fewer
    than ``min_distinct(n_draws)`` distinct draws come out, pick ``n_draws`` raw draws without replacement."""
    log_ratio = np.asarray(log_ratio, dtype=float).ravel()
    n = log_ratio.size
    smoothed, khat, ess = smoothed_weights(log_ratio)
    rng = np.random.default_rng(seed)
    pick = _weighted_pick(smoothed, n_draws, rng)
    distinct = int(np.unique(pick).size)
    need = min_distinct(n_draws)
    ok = distinct >= need
    if not ok:
        pick = np.sort(rng.choice(n, size=min(n_draws, n), replace=False))
    return Resample(pick=pick, pareto_k=khat, ess=ess, raw_draws=n, distinct=distinct, min_distinct=need,
                    resampled=ok, log_weight=smoothed[pick])
