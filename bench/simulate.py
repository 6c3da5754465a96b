"""Simulated UMI matrices with known truth, from the generative story of spec/models.md and datasets.md.

Used by bench/scale.py (and importable by other benches). Conventions: NB(mean mu, size r) with
p = mu / (mu + r); numpy's negative_binomial(n, q) counts failures before n successes with success
probability q, so q = r / (r + mean) gives mean `mean` and size r.

The capture story follows the biology-informed prior (models.md): each cell holds about M_0 = 200000
molecules spread over the genes (sum_g mu_g = M_0, so the genes simulated are the whole transcriptome) and
captures a fraction nu_c = exp(-eta_c), eta_c ~ Normal(log 40, 0.3): nu ~ 2.5%, a few thousand UMIs per
cell as in 10x droplet data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

M0 = 200000.0


@dataclass
class Simulated:
    X: sp.csr_matrix  # cells x genes int32 counts
    truth: dict  # parameter name -> true value (mu, r, p, gate, capture, ...)
    obs: dict = field(default_factory=dict)  # obs columns (e.g. the dataset of each cell)


def _nb(rng, mean: np.ndarray, r: np.ndarray) -> np.ndarray:
    return rng.negative_binomial(r, r / (r + mean))


def _chunked(rng, cells: int, genes: int, draw, chunk: int = 2000) -> sp.csr_matrix:
    """Build the CSR matrix a block of cells at a time, so that 50,000 x 10,000 never exists densely."""
    blocks = []
    for start in range(0, cells, chunk):
        idx = np.arange(start, min(cells, start + chunk))
        blocks.append(sp.csr_matrix(draw(idx).astype(np.int32)))
    return sp.vstack(blocks, format="csr")


def simulate(model: str, cells: int, genes: int, seed: int = 0, datasets: int = 1, gate_fraction: float = 0.1,
             shared_p: bool = True, transcriptome: int | None = None) -> Simulated:
    """Counts and truth for nbdm, zinb, nbvcp or zinbvcp (optionally two or more datasets).

    Gene means: mu_g = M_0 w_g with log w_g ~ Normal(0, 1.5) normalised to sum to 1 (capture models), or
    log mu_g ~ Normal(0, 1.5) (models without capture, whose means are the observed scale). With
    ``shared_p`` one p for all genes (r_g = mu_g (1 - p) / p, the NBDM / canonical story) with p chosen so
    that the median r is 1; otherwise r_g ~ LogNormal(0, 0.5). Zero-inflated models: a fraction
    ``gate_fraction`` of genes has gate ~ Uniform(0.1, 0.5), the rest 0. Datasets: each gene's log mean
    shifts by Normal(0, 0.3) in dataset d > 0 for 10% of genes (and p differs per dataset by +-0.2 on the
    logit scale). ``transcriptome``: capture models spread M_0 over that many genes and simulate the first
    ``genes`` of them (a random subset of a cell's transcriptome: real droplet data over 2,000 genes are 5-45%
    non-zero); None: the simulated genes are the whole transcriptome (denser data).
    """
    rng = np.random.default_rng(seed)
    vcp = model in ("nbvcp", "zinbvcp")
    zi = model in ("zinb", "zinbvcp")
    w = rng.lognormal(0.0, 1.5, size=max(genes, transcriptome or 0))
    mu = (M0 * w / w.sum() if vcp else w)[:genes]
    if shared_p:
        odds = 1.0 / np.median(mu)  # r = mu / odds(p): median r = 1
        p = odds / (1 + odds)
        r = mu * (1 - p) / p
    else:
        r = rng.lognormal(0.0, 0.5, size=genes)
        p = mu / (mu + r)
    gate = np.zeros(genes)
    if zi:
        inflated = rng.random(genes) < gate_fraction
        gate[inflated] = rng.uniform(0.1, 0.5, size=inflated.sum())
    capture = np.exp(-np.abs(rng.normal(np.log(40.0), 0.3, size=cells))) if vcp else np.ones(cells)
    cell_dataset = np.sort(rng.integers(0, datasets, size=cells)) if datasets > 1 else np.zeros(cells, int)
    mu_d = np.repeat(mu[:, None], datasets, axis=1)
    if datasets > 1:
        shifted = rng.random(genes) < 0.1
        for d in range(1, datasets):
            mu_d[shifted, d] *= np.exp(rng.normal(0.0, 0.3, size=shifted.sum()))
    r_d = np.repeat(r[:, None], datasets, axis=1) * (mu_d / mu_d[:, :1])  # keep each dataset's p = the gene's p

    def draw(idx):
        m = capture[idx, None] * mu_d[:, cell_dataset[idx]].T
        size = r_d[:, cell_dataset[idx]].T
        u = _nb(rng, m, size)
        if zi:
            u[rng.random(u.shape) < gate[None, :]] = 0
        return u

    X = _chunked(rng, cells, genes, draw)
    truth = {"mu": mu, "r": r, "p": p, "mu_dataset": mu_d}
    if zi:
        truth["gate"] = gate
    if vcp:
        truth["capture"] = capture
    obs = {"dataset": np.array([f"d{d}" for d in cell_dataset])} if datasets > 1 else {}
    return Simulated(X=X, truth=truth, obs=obs)
