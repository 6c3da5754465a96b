"""Helpers shared by test modules (imported as `helpers`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import scipy.sparse as sp


def scribe(*args, check: bool = True) -> subprocess.CompletedProcess:
    """Run the CLI as a user does (a subprocess: real stdout/stderr separation and exit codes)."""
    res = subprocess.run([sys.executable, "-m", "scribe_cli.cli", *map(str, args)], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"scribe {' '.join(map(str, args))} exited {res.returncode}:\n{res.stderr}")
    return res


def reference_program(config, **kw) -> str:
    """The test programs' text: the configuration's program plus its likelihood checks (log_lik_fast, log_lik_dense)
    and each cell's log_lik. Every test that evaluates a
    configuration's likelihood renders it this way, so one compiled program (content-hash cache) serves the dense,
    per-cell, gradient and recovery tests of a configuration: a compile costs 40-90 CPU-s (the C++ front end's
    template instantiation; -O0 in place of -O3 saves ~10%), the extra generated quantities ~15% of that and nothing
    at run time on these small matrices."""
    from scribe_cli.render import render

    return render(config, check_loglik=True, log_lik=True, **kw)


def reference_data(config, counts, **kw) -> dict:
    """The data of reference_program: the full matrix for the dense check and the cells x pairs CSR for log_lik."""
    from scribe_cli.standata import stan_data

    return stan_data(config, counts, dense=True, log_lik=True, **kw)


def small_counts(seed: int) -> sp.csr_matrix:
    """40 cells x 15 genes, ~70% zeros, a few large counts, cell 3 and gene 5 all zero."""
    rng = np.random.default_rng(seed)
    C, G = 40, 15
    mean = rng.lognormal(0.0, 1.2, size=G)[None, :] * rng.uniform(0.3, 1.5, size=C)[:, None]
    U = rng.negative_binomial(1.5, 1.5 / (1.5 + mean))
    U[rng.uniform(size=U.shape) < 0.4] = 0
    U[3, :] = 0
    U[:, 5] = 0
    U[0, 0], U[7, 2] = 150, 61
    return sp.csr_matrix(U)


def bnb_logpmf(u, r, kappa, alpha):
    """models.md: Gamma(r + u) / (u! Gamma(r)) * B(alpha + u, kappa + r) / B(alpha, kappa). (scipy's betanbinom
    needs an integer r.)"""
    from scipy.special import betaln, gammaln

    return gammaln(u + r) - gammaln(u + 1) - gammaln(r) + betaln(alpha + u, kappa + r) - betaln(alpha, kappa)


def dense_cell_loglik(config, v: dict, U: np.ndarray, cell_dataset: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Reference log likelihood with scipy, entry by entry: per cell (components marginalised) and the
    per-cell, per-component terms (C x K). ``v`` holds one draw's Stan variables.

    Multi-dataset programs (``cell_dataset``: 0-based dataset of each cell): a genes x datasets parameter
    (shape (G, D)) is taken at each cell's dataset, a per-gene one (shape (G,)) is shared; mixture weights
    are each cell's dataset's ``dataset_weights`` row."""
    from scipy import stats
    from scipy.special import logsumexp

    C, G = U.shape
    K = config.components
    datasets = cell_dataset is not None and config.dataset_params

    def gk(name):  # -> broadcastable to (C, G, K)
        x = np.asarray(v[name], dtype=float)
        if datasets:
            x = x[:, None] if x.shape == (G,) else x  # shared by the datasets
            assert x.shape[0] == G and x.ndim == 2, (name, x.shape)
            return x[:, cell_dataset].T[:, :, None] if x.shape[1] > 1 else x.T[:, :, None]
        return x.reshape(G, K)[None]

    mu, r = gk("mu"), gk("r")
    capture = np.asarray(v["capture"], dtype=float) if config.variable_capture else np.ones(C)
    m = capture[:, None, None] * mu
    u = U[:, :, None]
    if config.bnb:
        kappa = gk("kappa")
        lp = bnb_logpmf(u, r, kappa, (kappa - 1) * m / r)
    else:
        lp = stats.nbinom.logpmf(u, r, r / (r + m))
    if config.zero_inflated:
        gate = gk("gate")
        lp = np.where(u == 0, np.logaddexp(np.log(gate), np.log1p(-gate) + lp), np.log1p(-gate) + lp)
    cell = lp.sum(axis=1)  # C x K
    if K > 1:
        if cell_dataset is not None:  # per-dataset weights (--dataset-key with a mixture)
            log_w = np.log(np.asarray(v["dataset_weights"], dtype=float))[cell_dataset]
        else:
            log_w = np.log(np.asarray(v["weights"], dtype=float))[None, :]
        cell = cell + log_w
        return logsumexp(cell, axis=1), cell
    return cell[:, 0], cell


def assert_cell_loglik_matches_scipy(config, v: dict, U, rel_tol: float, label: str, cell_dataset=None) -> float:
    """The generated per-cell log_lik of one parameter point ``v`` against dense_cell_loglik (scipy), and
    assignment_prob against the normalised per-component terms; returns the sum of log_lik."""
    import numpy as np
    from scipy.special import logsumexp

    expected, cell_k = dense_cell_loglik(config, v, U, cell_dataset)
    np.testing.assert_allclose(v["log_lik"], expected, rtol=rel_tol, err_msg=label)
    assert np.all(v["log_lik"] < 0)  # every value is a log pmf
    if config.assignments:
        np.testing.assert_allclose(v["assignment_prob"], np.exp(cell_k - logsumexp(cell_k, axis=1, keepdims=True)),
                                   atol=1e-7)
    return float(v["log_lik"].sum())
