"""Rank-normalised split R-hat and bulk / tail ESS (Vehtari et al. 2021), vectorised over a fit's scalars.

Why not ArviZ: arviz 0.23 (and arviz-stats 0.8) compute these one scalar at a time in Python, about 7 ms per
scalar for 4 x 1000 draws: 41 s of a 2000 x 1000 NBDM run's 113 s went there (6,000 gene-level scalars), and
minutes on a full-gene matrix. These functions compute the same numbers as az.rhat(method="rank") and
az.ess(method="bulk" / "tail"), the same algorithm step for step (Geyer's initial positive and monotone
sequences included), with array operations over blocks of scalars; tests/test_rank_diagnostics.py holds
them to ArviZ's values.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import fft, special

BLOCK_BYTES = 32 * 2**20  # scalars per block: small blocks stay in memory bandwidth's sweet spot (measured)

# Internally a block is a copy (scalar, chain, draw), C-contiguous: sorts and FFTs run along its last axis.


def _blocks(x: np.ndarray):
    """Column slices of x (chain, draw, scalar) small enough to keep memory bounded."""
    per = max(1, BLOCK_BYTES // max(1, x.shape[0] * x.shape[1] * 8))
    return [slice(start, min(start + per, x.shape[2])) for start in range(0, x.shape[2], per)]


def _split(x: np.ndarray) -> np.ndarray:
    half = x.shape[2] // 2
    return np.concatenate([x[:, :, :half], x[:, :, x.shape[2] - half:]], axis=1)


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Normal scores of the pooled ranks, per scalar (Blom's offset 3/8, as ArviZ), ties given their average
    rank (scipy's rankdata method="average", whose axis= form is several times slower here).

    Continuous draws rarely tie, and without ties a scalar's scores are a permutation of one table, the scores
    of ranks 1..S: they are scattered from it, and only the tied rows go through ranks and ndtri (on full PBMC,
    ndtri over every draw of every scalar was ~10% of the diagnostics)."""
    e, c, n = x.shape
    s = c * n
    v = x.reshape(e, s)
    order = np.argsort(v, axis=1)  # ties get averaged below, so no stable sort
    sorted_v = np.take_along_axis(v, order, axis=1)
    same = sorted_v[:, 1:] == sorted_v[:, :-1]
    z_sorted = np.broadcast_to(special.ndtri((np.arange(1.0, s + 1.0) - 0.375) / (s + 0.25)), (e, s))
    tied = np.flatnonzero(same.any(axis=1))
    if tied.size:
        pos = np.broadcast_to(np.arange(s), (tied.size, s))
        new_run = np.ones((tied.size, s), dtype=bool)
        new_run[:, 1:] = ~same[tied]
        run_start = np.maximum.accumulate(np.where(new_run, pos, 0), axis=1)
        run_end_flag = np.ones((tied.size, s), dtype=bool)
        run_end_flag[:, :-1] = new_run[:, 1:]
        run_end = np.minimum.accumulate(np.where(run_end_flag, pos, s - 1)[:, ::-1], axis=1)[:, ::-1]
        z_sorted = z_sorted.copy()
        z_sorted[tied] = special.ndtri(((run_start + run_end) / 2.0 + 1.0 - 0.375) / (s + 0.25))
    z = np.empty((e, s))
    np.put_along_axis(z, order, z_sorted, axis=1)
    return z.reshape(e, c, n)


def _rhat(x: np.ndarray) -> np.ndarray:
    n = x.shape[2]
    between = n * x.mean(axis=2).var(axis=1, ddof=1)
    within = x.var(axis=2, ddof=1).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((between / within + n - 1) / n)


def _ess(x: np.ndarray) -> np.ndarray:
    """ESS of each scalar of x (scalar, chain, draw): ArviZ's _ess, its while loops as masks and cumulative
    minima over the pairs of lags."""
    e, c, n = x.shape
    m = fft.next_fast_len(2 * n)
    centred = x - x.mean(axis=2, keepdims=True)
    spec = fft.rfft(centred, n=m, axis=2)
    acov = fft.irfft(spec.real ** 2 + spec.imag ** 2, n=m, axis=2)[:, :, :n] / n
    acov_mean = acov.mean(axis=1)  # (scalar, lag)
    mean_var = acov_mean[:, 0] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if c > 1:
        var_plus = var_plus + x.mean(axis=2).var(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var[:, None] - acov_mean) / var_plus[:, None]
    rho[:, 0] = 1.0
    n_pairs = max(1, (n - 3) // 2 + 1)  # pairs (2k, 2k + 1) the loop can reach: k = 0 .. (n - 3) // 2
    pairs = rho[:, 0:2 * n_pairs:2] + rho[:, 1:2 * n_pairs:2]  # (scalar, pair)
    rows = np.arange(e)
    # The positive sequence stops at the first pair whose sum is <= 0 (or at the last reachable pair).
    nonpos = pairs <= 0
    first = np.where(nonpos.any(axis=1), nonpos.argmax(axis=1), n_pairs)
    end = np.minimum(first, n_pairs - 1)  # the last pair the loop computed (0: none)
    even = np.where(end >= 1, rho[rows, 2 * end], 1.0)
    kept_end = (end >= 1) & (pairs[rows, end] >= 0)
    last = np.where((even > 0) | kept_end, even, 0.0)
    monotone = np.minimum.accumulate(pairs, axis=1)
    before_end = np.arange(n_pairs)[None, :] < end[:, None]
    tau = -1.0 + 2.0 * np.where(before_end, monotone, 0.0).sum(axis=1) + last
    tau = np.maximum(tau, 1 / np.log10(c * n))
    ess = c * n / tau
    ess[np.isnan(rho).any(axis=1)] = np.nan
    flat = x.reshape(e, c * n)
    constant = (flat.max(axis=1) - flat.min(axis=1)) < np.finfo(float).resolution
    ess[constant] = c * n
    return ess


def _valid(x: np.ndarray) -> np.ndarray:
    """Scalars with finite draws and at least 4 draws per chain (R-hat also needs 2 chains: checked where used)."""
    return np.isfinite(x).all(axis=(1, 2)) & (x.shape[2] >= 4)


def _diagnose_block(x: np.ndarray, s: slice) -> np.ndarray:
    b = np.ascontiguousarray(x[:, :, s].transpose(2, 0, 1), dtype=np.float64)
    out = np.full((3, b.shape[0]), np.nan)
    ok = _valid(b)
    if not ok.any():
        return out
    b = b[ok]
    split = _split(b)
    z = _z_scale(split)
    out[1, ok] = _ess(z)
    q = np.quantile(b.reshape(b.shape[0], -1), (0.05, 0.95), axis=1)
    out[2, ok] = np.minimum(*(_ess(_split((b <= qi[:, None, None]).astype(np.float64))) for qi in q))
    if b.shape[1] >= 2:
        folded = np.abs(split - np.median(split.reshape(split.shape[0], -1), axis=1)[:, None, None])
        out[0, ok] = np.maximum(_rhat(z), _rhat(_z_scale(folded)))
    return out


def diagnose(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R-hat, bulk ESS, tail ESS) of each scalar of x (chain, draw, scalar), as az.rhat (method "rank") and
    az.ess (methods "bulk", "tail"): R-hat is the larger of the bulk and folded-tail rank-normalised split
    R-hats; tail ESS the smaller ESS of the indicators x <= q05 and x <= q95. NaN where a scalar is not finite,
    or there are fewer than 4 draws (R-hat: or fewer than 2 chains)."""
    x = np.asarray(x)
    out = np.full((3, x.shape[2]), np.nan)
    # numpy's sorts and ufuncs release the GIL: threads over blocks use the cores a finished fit left idle
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        blocks = _blocks(x)
        for s, res in zip(blocks, pool.map(lambda s: _diagnose_block(x, s), blocks)):
            out[:, s] = res
    return out[0], out[1], out[2]


def _steps(a: np.ndarray) -> np.ndarray | None:
    """The signs of a's draw-to-draw steps (int8), or None when a step is 0 somewhere (a flat stretch of a copy
    could hide a non-monotone map)."""
    if a.shape[1] < 3:
        return None
    s = np.sign(np.diff(a, axis=1)).astype(np.int8)
    return s if (s != 0).all() else None


def _monotone_copy(sa: np.ndarray | None, sb: np.ndarray | None) -> bool:
    """Whether b is a monotone function of a, scalar by scalar (mu = exp(log_mu), p = inv_logit(prob_link)),
    from their step signs (_steps): every draw-to-draw step then has the same sign in both (or the opposite sign
    in every scalar). Checking steps costs one pass where ranking costs a sort; thousands of agreeing signs do
    not happen by chance."""
    if sa is None or sb is None or sa.shape != sb.shape:
        return False
    return bool(np.array_equal(sa, sb) or np.array_equal(sa, -sb))


def distinct(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays less those that are monotone copies of an earlier one: R-hat and ESS are rank statistics,
    the same for a variable and any monotone transform of it, so the copies need not be ranked again. Each
    array's step signs are computed once (on the full PBMC matrix, recomputing them per pair took 12 s)."""
    kept: dict[str, np.ndarray] = {}
    kept_steps: list[np.ndarray] = []
    for name, x in arrays.items():
        sx = _steps(x)
        if not any(_monotone_copy(sy, sx) for sy in kept_steps):
            kept[name] = x
            if sx is not None:
                kept_steps.append(sx)
    return kept


def scalar_labels(name: str, var) -> list[str]:
    """az.summary's label of each scalar of a posterior variable (a DataArray with chain and draw dims), in the
    order of its flattened non-sample axes: r[CD74], capture[AAAC-1], or the bare name of a scalar variable."""
    dims = [d for d in var.dims if d not in ("chain", "draw")]
    if not dims:
        return [name]
    coords = [var.coords[d].values if d in var.coords else np.arange(var.sizes[d]) for d in dims]
    return [f"{name}[{', '.join(map(str, combo))}]" for combo in itertools.product(*coords)]


def scalars(ds) -> dict[str, np.ndarray]:
    """Each variable of an ArviZ posterior dataset as (chain, draw, scalar)."""
    out = {}
    for name, var in ds.data_vars.items():
        if var.size == 0:
            continue
        v = var.transpose("chain", "draw", ...).values
        out[name] = v.reshape(v.shape[0], v.shape[1], -1)
    return out


def mcse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo standard errors of each scalar's mean and sd (x: chain, draw, scalar), as az.summary's
    mcse_mean and mcse_sd: the draws' variance over the split-chain ESS of the draws, and the variance of the
    squared deviations over their own ESS (delta method for the sd). NaN where a scalar is not finite or has
    fewer than 4 draws per chain."""
    x = np.asarray(x)
    out = np.full((2, x.shape[2]), np.nan)
    for s in _blocks(x):
        b = np.ascontiguousarray(x[:, :, s].transpose(2, 0, 1), dtype=np.float64)
        ok = _valid(b)
        if not ok.any():
            continue
        b = b[ok]
        e = b.shape[0]
        n = b.shape[1] * b.shape[2]
        c2 = (b - b.reshape(e, -1).mean(axis=1)[:, None, None]) ** 2
        c2_sum = c2.reshape(e, -1).sum(axis=1)
        evar = c2_sum / n
        varvar = ((c2 ** 2).reshape(e, -1).mean(axis=1) - evar ** 2) / _ess(_split(c2))
        cols = np.arange(s.start, s.stop)[ok]
        with np.errstate(divide="ignore", invalid="ignore"):  # a constant scalar: 0 / 0, as ArviZ gives
            out[0, cols] = np.sqrt(c2_sum / (n - 1) / _ess(_split(b)))
            out[1, cols] = np.sqrt(varvar / evar / 4)
    return out[0], out[1]


def hdi(x: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Each scalar's shortest interval holding ``prob`` of its draws (x: chain, draw, scalar), as az.hdi
    (multimodal=False): over the sorted draws, the narrowest window of floor(prob n) steps."""
    flat = np.sort(np.asarray(x, dtype=np.float64).reshape(-1, x.shape[2]), axis=0)
    n = flat.shape[0]
    inc = int(np.floor(prob * n))
    if inc >= n:
        raise ValueError("too few draws for an interval")
    lo = np.argmin(flat[inc:] - flat[:n - inc], axis=0)
    cols = np.arange(flat.shape[1])
    return flat[lo, cols], flat[lo + inc, cols]
