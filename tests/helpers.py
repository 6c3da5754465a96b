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
