"""Calibration machinery shared by bench/sbc.py, bench/coverage.py and tests/test_sbc.py.

Simulation-based calibration (Talts et al. 2018): draw parameters from the prior, simulate counts from them,
fit, and rank each true value among L posterior draws; over replicates a calibrated method gives ranks
uniform on 0..L. Everything here goes through the code `scribe run` uses, so the check is of what users run:

- prior draws: NUTS on ``render(config)`` with its data switch prior_only, as `--prior-draws` samples it
  (pipeline.sample_prior), so the prior and the fitted model come from one rendered text (one compiled program);
- counts: reports.ppc.simulate_counts, the simulator of `scribe ppc` (tests/test_sbc.py checks its pmf
  against the per-cell likelihood, which tests/test_likelihoods.py ties to Stan's);
- fits: fit.run_method and idata.to_inference_data (pathfinder's PSIS resampling included).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import xarray as xr
from scipy import stats

from .cache import compile_program
from .config import ModelConfig
from .data import Counts
from .diagnostics import convergence
from .fit import RunOptions, run_method
from .pipeline import sample_prior
from .idata import data_coords, to_inference_data, variable_dims
from .render import render
from .standata import stan_data
from .reports.ppc import draw_parameters, simulate_counts

# Sampled coordinates that are monotone one-to-one transforms of a reported variable (tau_u -> tau,
# psi_raw -> psi, x_raw -> x) rank exactly like it: testing both would only spend the multiplicity budget.
_SKIP_SUFFIXES = ("_raw", "_u")
_SKIP = {"lp__", "log_lik", "assignment_prob"}


def ranked_variables(ds: xr.Dataset) -> list[str]:
    return [v for v in ds.data_vars if v not in _SKIP and not v.endswith(_SKIP_SUFFIXES)]


def data_chosen_coordinates(config) -> set[str]:
    """Sampled coordinates whose layout the data choose (a split gate or p hierarchy: which genes are centred,
    scribe_cli/centring.py): the truth's (from the prior program) and a fit's need not hold the same genes, so
    they cannot be ranked element by element. The gate and p themselves (one per gene) are ranked."""
    from .plan import splits_dataset_gate

    return ({"gate_z", "gate_centred"} if config.gate_split else set()) | \
        ({"prob_z", "prob_centred"} if config.prob_split else set()) | \
        ({"gate_dataset_z", "gate_dataset_centred"} if splits_dataset_gate(config) else set())


def form_coordinates(config, method: str) -> set[str]:
    """Sampled coordinates that mean different things in the truth's program (the prior of ``config``) and in
    ``method``'s (ModelConfig.for_method): T_z of a NEG target whose local scales the method samples while the
    prior program integrates them out (asinh of the deviation there, a standard normal here). The target's own
    parameter and psi have one meaning in both and are ranked."""
    from .plan import marginal_neg

    fitted = config.for_method(method)
    return {f"{t}_z" for t in config.hierarchical() if marginal_neg(config, t) and not marginal_neg(fitted, t)}


def placeholder_counts(n_cells: int, n_genes: int, n_datasets: int = 0) -> Counts:
    """An all-zero Counts of the right shape (the prior program reads only the sizes); with n_datasets >= 2 the
    cells are split into consecutive, nearly equal datasets ``d0``, ``d1``, ..."""
    key, datasets, cell_dataset = None, [], None
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n_cells)])
    if n_datasets:
        cell_dataset = (np.arange(n_cells) * n_datasets) // n_cells
        datasets = [f"d{d}" for d in range(n_datasets)]
        key = "dataset"
        obs[key] = pd.Categorical([datasets[d] for d in cell_dataset], categories=datasets)
    return Counts(X=sp.csr_matrix((n_cells, n_genes), dtype=np.int64), genes=[f"g{g}" for g in range(n_genes)],
                  cells=list(obs.index), obs=obs, source=Path("simulated"), dataset_key=key, datasets=datasets,
                  cell_dataset=cell_dataset)


def _dims_of(config: ModelConfig, data: dict):
    return lambda arrays: variable_dims(config, arrays, data)


def prior_draws(config: ModelConfig, counts: Counts, n: int, seed: int, workdir: Path, chains: int = 4,
                thin: int = 10, warmup: int = 1000) -> tuple[xr.Dataset, dict]:
    """``n`` prior draws (dims chain = 1, draw = n) from NUTS on the program with prior_only, every ``thin``-th
    draw of ``chains`` chains, so that successive truths are close to independent; also the bulk ESS of the
    kept draws over n (about 1 when they are), worst variable first."""
    import arviz as az

    per_chain = -(-n // chains)
    opts = RunOptions(method="nuts", chains=chains, parallel_chains=1, warmup=warmup, draws=per_chain * thin,
                      seed=seed, show_progress=False)
    data = stan_data(config, counts)
    idata = sample_prior(compiled_model(config), config, counts, opts, per_chain * thin, workdir, _dims_of(config, data),
                         data_coords(counts, data))
    prior = idata.prior.isel(draw=slice(thin - 1, None, thin))
    kept = prior[ranked_variables(prior)]
    ess = az.ess(kept, method="bulk")
    finite = [(float(np.min(x)), v) for v in ess.data_vars if (x := ess[v].values[np.isfinite(ess[v].values)]).size]
    worst = min(finite) if finite else (float("nan"), "")  # NaN: too few draws per chain for an ESS
    divergences = int(idata.sample_stats_prior["diverging"].values.sum())
    flat = prior.stack(sample=("chain", "draw")).isel(sample=slice(0, n))
    flat = flat.drop_vars(["sample", "chain", "draw"]).rename(sample="draw").expand_dims(chain=1)
    flat = flat.transpose("chain", "draw", ...)
    return flat, {"ess_bulk_over_n": worst[0] / kept.sizes["chain"] / kept.sizes["draw"], "worst": worst[1],
                  "divergences": divergences}


def truth_at(prior: xr.Dataset, i: int) -> xr.Dataset:
    """Draw i as a one-draw dataset (chain = 1, draw = 1): the form reports.ppc reads."""
    return prior.isel(chain=[0], draw=[i])


def simulate(truth: xr.Dataset, counts: Counts, rng: np.random.Generator) -> Counts:
    """Counts simulated from the one-draw ``truth`` with the cells (and datasets) of ``counts``."""
    draws = draw_parameters(truth, counts)
    X = simulate_counts(draws, 0, counts.n_cells, rng, cell_dataset=counts.cell_dataset)
    return replace(counts, X=sp.csr_matrix(X))


@dataclass(frozen=True)
class Method:
    """A method and the run options SBC uses for it (the CLI's, with shorter NUTS chains)."""

    name: str
    opts: RunOptions


METHODS = {
    # 2 chains x 500 draws, thinned to L: tiny models mix fast; parallel_chains=1 keeps a worker on one core.
    "nuts": Method("nuts", RunOptions(method="nuts", chains=2, parallel_chains=1, warmup=500, draws=500,
                                      show_progress=False)),
    # The CLI's defaults: 4 paths, 1000 draws PSIS-resampled; meanfield ADVI with 1000 draws, on one thread (the
    # CLI's all-core default for one-process methods would oversubscribe the one-core workers).
    "pathfinder": Method("pathfinder", RunOptions(method="pathfinder", chains=4, draws=1000, show_progress=False)),
    "advi": Method("advi", RunOptions(method="advi", draws=1000, threads_per_chain=1, show_progress=False)),
}


def compiled_model(config: ModelConfig):
    """The program `scribe run` renders for ``config``, through the content-hash cache."""
    return compile_program(render(config), name=config.model).model


def fit_posterior(config: ModelConfig, model, counts: Counts, method: str, seed: int, workdir: Path
                  ) -> tuple[xr.Dataset, dict]:
    """Posterior draws (chain, draw, ...) of ``method`` on ``counts`` and its convergence diagnostics."""
    opts = replace(METHODS[method].opts, seed=seed)
    data = stan_data(config, counts)
    workdir.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    fit = run_method(model, data, opts, workdir)
    idata = to_inference_data(fit, method, _dims_of(config, data), data_coords(counts, data), n_draws=opts.draws,
                              seed=seed)
    diag = convergence(idata, method, opts.max_treedepth)
    diag["seconds"] = round(time.monotonic() - t, 3)
    return idata.posterior, diag


def thin_flat(posterior: xr.Dataset, name: str, n_draws: int) -> np.ndarray:
    """(L, elements): ``n_draws`` draws of ``name`` evenly spread over all chains' draws."""
    x = posterior[name].values
    x = x.reshape(x.shape[0] * x.shape[1], -1)
    idx = np.unique(np.round(np.linspace(0, x.shape[0] - 1, n_draws)).astype(int))
    return x[idx]


def ranks(posterior: xr.Dataset, truth: xr.Dataset, n_draws: int, rng: np.random.Generator,
          skip: set[str] = frozenset()) -> dict[str, list[int]]:
    """Rank of each true element among ``n_draws`` thinned posterior draws (0..n_draws), ties broken at random
    (approximations resample with replacement; NUTS repeats a draw after a rejection). ``skip``: see
    data_chosen_coordinates."""
    out = {}
    for name in ranked_variables(truth):
        if name not in posterior or name in skip:
            continue
        draws = thin_flat(posterior, name, n_draws)
        t = truth[name].values.reshape(-1)
        below = (draws < t).sum(axis=0)
        ties = (draws == t).sum(axis=0)
        out[name] = (below + rng.integers(0, ties + 1)).astype(int).tolist()
    return out


def uniformity_pvalue(r: np.ndarray, n_ranks: int) -> float:
    """Chi-square test of ranks (0..n_ranks-1) against the discrete uniform, over equal bins (Talts et al.):
    as many bins as keep >= 5 expected per bin, at most 20, each bin an equal number of rank values."""
    r = np.asarray(r)
    n = r.size
    divisors = [b for b in range(2, 21) if n_ranks % b == 0 and n / b >= 5]
    if not divisors:
        return float("nan")
    bins = max(divisors)
    counts = np.bincount(r * bins // n_ranks, minlength=bins)
    return float(stats.chisquare(counts).pvalue)


def group_pvalue(r: np.ndarray, n_ranks: int) -> float:
    """One p-value for a parameter group, ranks (replicates, elements): each element tested on its own, the
    smallest p times the number of elements (Bonferroni: valid whatever the dependence between elements,
    which within a replicate is strong: they share the data and the hyperparameters)."""
    p = [uniformity_pvalue(r[:, e], n_ranks) for e in range(r.shape[1])]
    p = [x for x in p if np.isfinite(x)]
    return min(1.0, min(p) * len(p)) if p else float("nan")


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control under any dependence)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    m = p.size
    adj = np.empty(m)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, (m - i) * p[j])
        adj[j] = min(1.0, running)
    return adj.tolist()


def interval_hits(posterior: xr.Dataset, truth: dict[str, np.ndarray], levels=(0.5, 0.9)) -> dict:
    """Per variable: for each level, how many true elements lie inside the central posterior interval, the
    number of elements, the posterior means (for correlation and error against the truth)."""
    out = {}
    for name, t in truth.items():
        if name not in posterior:
            continue
        x = posterior[name].values
        x = x.reshape(x.shape[0] * x.shape[1], -1)
        t = np.asarray(t, dtype=float).reshape(-1)
        entry = {"n": int(t.size), "truth": t.tolist(), "mean": x.mean(axis=0).tolist()}
        for level in levels:
            lo, hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2], axis=0)
            entry[f"inside_{round(level * 100)}"] = int(((lo <= t) & (t <= hi)).sum())
        out[name] = entry
    return out
