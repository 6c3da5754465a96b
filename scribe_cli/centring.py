"""Which genes of a gate hierarchy are sampled centred: chosen from the data before sampling.

A hierarchical prior's element theta_g = centre + scale_g z_g can be sampled through z_g (non-centred) or
theta_g itself (centred); the prior is the same, the geometry is not. Where the data say little about
theta_g (most genes: no sign of zero inflation) the non-centred form is the good one; where they pin it down
(genes with clear excess zeros: markers of a sub-population, on real data the PBMC HLA genes) the
non-centred form turns the posterior into a thin curved ridge scale_g z_g = constant, which forces NUTS into
tiny steps for every parameter. That ridge, not the likelihood, was what made `--model zinb --gate-prior neg`
saturate its tree depth on real droplet data.

So each gene gets the form that suits it (Papaspiliopoulos, Roberts & Skold 2007 call the mixed choice
partial non-centring). The choice is made from per-gene fits by maximum penalised likelihood on the gene's
count histogram, a zero-inflated NB and an NB (gate fixed at ~0): the gene is centred when its zeros demand
a gate (likelihood ratio above CENTRED_LR: a one-sided posterior that lets the gate go to 0 is the
non-centred form's case, however steep its wall) and the ZINB fit's standard error of logit(gate) is below
CENTRED_SD (the data alone pin the gate within about one unit on the logit scale, well inside the spread
the gate prior allows). With variable capture the fits ignore capture: they only rank how informative
each gene's zeros are.

Hand-written because no library fits 3-parameter ZINBs to thousands of genes at once; the genes are
independent, so one L-BFGS over all of them with an analytic gradient takes a second or two.

The same per-gene evidence also sets the units of the coordinates that the data pin far below what Stan's
warmup can learn (log_mean_scales, prob_hyper_scales; plan.scales_log_mean).
"""

from __future__ import annotations

import hashlib

import numpy as np
import scipy.sparse as sp
from scipy import optimize, special

CENTRED_SD = 1.0
CENTRED_LR = 10.0  # 2 x log likelihood ratio, ZINB against NB; chi-square(1) tail ~ 0.002
NO_GATE = -30.0  # logit of a gate of ~1e-13: the NB fit
# Weak normal penalties on (log mu, log r, logit gate) keep the fit finite for genes with no zeros, no
# excess zeros or few counts; the gate's penalty (centre -2, sd 3) leaves a gene with no evidence of zero
# inflation a standard error near 3, far above CENTRED_SD.
PENALTY = ((0.0, 10.0), (0.0, 3.0), (-2.0, 3.0))


def _gene_loglik(x: np.ndarray, zeros, gene, count, weight, nnz, G: int):
    """ZINB log likelihood of every gene (a G-vector, log(u!) left out) and its gradient (3 G: d/d log mu,
    d/d log r, d/d logit gate), at x = (log mu, log r, logit gate) stacked."""
    a, b, c = x[:G], x[G:2 * G], x[2 * G:]
    mu, r = np.exp(a), np.exp(b)
    s = r / (r + mu)  # 1 - p
    q = 1.0 - s
    log_s = -np.log1p(mu / r)
    log_f0 = r * log_s
    f0 = np.exp(log_f0)
    pi = special.expit(c)
    log_p0 = np.logaddexp(np.log(pi), np.log1p(-pi) + log_f0)
    p0 = np.exp(log_p0)
    rg, sg, qg = r[gene], s[gene], q[gene]
    ll_pairs = weight * (special.gammaln(count + rg) - special.gammaln(rg) + rg * log_s[gene] + count * np.log(qg))
    ll = zeros * log_p0 + nnz * np.log1p(-pi) + np.bincount(gene, ll_pairs, minlength=G)
    g_a = zeros * (1 - pi) * f0 * (-r * q) / p0 + np.bincount(gene, weight * (-rg * qg + count * sg), minlength=G)
    g_b = (zeros * (1 - pi) * f0 * (r * log_s + r * q) / p0
           + np.bincount(gene, weight * (rg * (special.digamma(count + rg) - special.digamma(rg))
                                         + rg * log_s[gene] + rg * qg - count * sg), minlength=G))
    g_c = zeros * pi * (1 - pi) * (1 - f0) / p0 - nnz * pi
    return ll, np.concatenate([g_a, g_b, g_c])


def _neg_log_post(x: np.ndarray, *args, fixed_gate: bool = False, shared_p: bool = False):
    """The penalised objective summed over genes and its gradient; with ``fixed_gate`` the gate coordinates
    (and a shared p) do not move (the NB fit, started from the ZINB fit). With ``shared_p`` (the model's NB has one p for all genes, as under
    canonical, mean-prob and mean-odds) x = (log r, logit gate, log odds(p)) and log mu = log r + log odds:
    the genes then share one coordinate, as in the model, and the fit says what the model's geometry is."""
    G = args[-1]
    if shared_p:
        b, c, t = x[:G], x[G:2 * G], x[2 * G]
        full = np.concatenate([b + t, b, c])
    else:
        full = x
    ll, grad = _gene_loglik(full, *args)
    total = ll.sum()
    for k, (m, sd) in enumerate(PENALTY):
        v = full[k * G:(k + 1) * G]
        total -= 0.5 * np.sum(((v - m) / sd) ** 2)
        grad[k * G:(k + 1) * G] -= (v - m) / sd ** 2
    if shared_p:
        g_a, g_b, g_c = grad[:G], grad[G:2 * G], grad[2 * G:]
        grad = np.concatenate([g_a + g_b, g_c, [g_a.sum()]])
        gate = slice(G, 2 * G)
    else:
        gate = slice(2 * G, 3 * G)
    if fixed_gate:
        grad[gate] = 0.0
        if shared_p:
            grad[-1] = 0.0  # and p stays at the ZINB fit's: the per-gene ratio then compares like with like
    return -total, -grad


def _with_gate(x: np.ndarray, G: int, shared_p: bool) -> np.ndarray:
    """(log mu, log r, logit gate) stacked, from the fit's coordinates."""
    return np.concatenate([x[:G] + x[2 * G], x[:G], x[G:2 * G]]) if shared_p else x


def _histograms(X: sp.csr_matrix) -> tuple[tuple, np.ndarray]:
    """Each gene's count histogram as the fits' arguments (zeros, pair gene, count, weight, non-zeros, G) and
    the log mean counts they start from."""
    X = sp.csr_matrix(X)
    C, G = X.shape
    coo = X.tocoo()
    span = int(coo.data.max()) + 1 if coo.nnz else 1
    keys, weight = np.unique(coo.col.astype(np.int64) * span + coo.data.astype(np.int64), return_counts=True)
    gene, count, weight = keys // span, (keys % span).astype(float), weight.astype(float)
    nnz = np.bincount(gene, weight, minlength=G)
    log_mean = np.log(np.asarray(X.sum(axis=0)).ravel() / C + 0.1)
    return (C - nnz, gene, count, weight, nnz, G), log_mean


def _hessians(x: np.ndarray, coords: tuple, objective) -> np.ndarray:
    """Every gene's Hessian in ``coords`` (slices of x, one element per gene each) at x: the genes are
    independent, so one central difference of the gradient per coordinate gives all of them at once."""
    h = 1e-4
    n = len(coords)
    H = np.empty((len(x[coords[0]]), n, n))
    for k, sl in enumerate(coords):
        step = np.zeros_like(x)
        step[sl] = h
        diff = (objective(x + step)[1] - objective(x - step)[1]) / (2 * h)
        H[:, :, k] = np.stack([diff[c] for c in coords], axis=1)
    return 0.5 * (H + H.transpose(0, 2, 1))


def prob_evidence(X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per gene, logit(p) = log mu - log r of a penalised NB fit with the gene's own p, and its standard error
    (inf where the curvature says nothing). What pins p is the overdispersion a gene's counts show: plenty of
    counts pin it, a handful leave it to the prior."""
    args, log_mean = _histograms(X)
    G = args[-1]
    x0 = np.concatenate([log_mean, np.zeros(G), np.full(G, NO_GATE)])

    def objective(x):
        return _neg_log_post(x, *args, fixed_gate=True)

    nb = optimize.minimize(objective, x0, jac=True, method="L-BFGS-B", options={"maxiter": 5000}).x
    H = _hessians(nb, (slice(0, G), slice(G, 2 * G)), objective)
    se = np.full(G, np.inf)
    ok = np.all(np.linalg.eigvalsh(H) > 0, axis=1)
    V = np.linalg.inv(H[ok])
    se[ok] = np.sqrt(np.maximum(V[:, 0, 0] + V[:, 1, 1] - 2 * V[:, 0, 1], 0.0))
    return nb[:G] - nb[G:2 * G], se


def population_scale(theta: np.ndarray, se: np.ndarray) -> tuple[float, float]:
    """Centre and spread (m, sigma) of the per-gene estimates theta (standard errors se) under the normal
    hierarchy theta_g ~ N(m, sigma^2 + se_g^2), by maximum marginal likelihood (empirical Bayes): what the
    data say the hierarchy's centre and scale are, before any sampling. Genes with infinite se say nothing."""
    ok = np.isfinite(se) & np.isfinite(theta)
    t, v = theta[ok], se[ok] ** 2
    if t.size < 2:
        return (float(t.mean()) if t.size else 0.0), 0.0

    spread = float(np.std(t)) + 1e-3
    res = optimize.minimize_scalar(lambda ls: _profile(ls, t, v)[0], bounds=(np.log(1e-4), np.log(10 * spread)),
                                   method="bounded")
    return float(_profile(res.x, t, v)[1]), float(np.exp(res.x))


def _profile(log_sigma: float, t: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """population_scale's objective: the negative log marginal likelihood of estimates t (variances v) at
    log_sigma, the centre profiled out (at its weighted mean, returned second)."""
    w = 1.0 / (np.exp(2 * log_sigma) + v)
    m = np.sum(w * t) / np.sum(w)
    return 0.5 * np.sum(w * (t - m) ** 2 - np.log(w)), m


def gate_evidence(X: sp.csr_matrix, shared_p: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per gene, the standard error of logit(gate) of a penalised ZINB fit (inf where the curvature says
    nothing: a flat or non-concave direction) and 2 x the log likelihood ratio of that fit against the NB
    (``shared_p``: with one p for all genes, as the model has it)."""
    args, log_mean = _histograms(X)
    G = args[-1]
    x0 = (np.concatenate([log_mean, np.full(G, -2.0), [0.0]]) if shared_p
          else np.concatenate([log_mean, np.zeros(G), np.full(G, -2.0)]))
    gate = slice(G, 2 * G) if shared_p else slice(2 * G, 3 * G)

    def fit(x_start, fixed_gate):
        return optimize.minimize(lambda x: _neg_log_post(x, *args, fixed_gate=fixed_gate, shared_p=shared_p),
                                 x_start, jac=True, method="L-BFGS-B", options={"maxiter": 5000}).x

    zinb = fit(x0, False)
    x_nb = zinb.copy()
    x_nb[gate] = NO_GATE
    nb = fit(x_nb, True)
    lr = 2 * (_gene_loglik(_with_gate(zinb, G, shared_p), *args)[0] - _gene_loglik(_with_gate(nb, G, shared_p), *args)[0])
    # Conditional on a shared p the genes are independent: (log mu or log r, logit gate) per gene.
    k_coords = (slice(0, G), gate) if shared_p else (slice(0, G), slice(G, 2 * G), gate)
    H = _hessians(zinb, k_coords, lambda x: _neg_log_post(x, *args, shared_p=shared_p))
    se = np.full(G, np.inf)
    ok = np.all(np.linalg.eigvalsh(H) > 0, axis=1)
    se[ok] = np.sqrt(np.linalg.inv(H[ok])[:, -1, -1])
    return se, lr


# stan_data runs more than once per `scribe run` with --prior-draws (the model and its prior-only program), and
# the per-gene fits take seconds per hundred genes: their answers are kept per matrix content (a few entries).
_EVIDENCE: dict = {}


def _content_key(X: sp.csr_matrix, shared_p: bool) -> tuple:
    X = sp.csr_matrix(X)
    h = hashlib.sha256()
    for a in (X.indptr, X.indices, X.data):
        h.update(np.ascontiguousarray(a).tobytes())
    return X.shape, shared_p, h.hexdigest()


def _kept(key: tuple, compute):
    if key not in _EVIDENCE:
        if len(_EVIDENCE) >= 4:
            _EVIDENCE.pop(next(iter(_EVIDENCE)))
        _EVIDENCE[key] = compute()
    return _EVIDENCE[key]


def index_split(mask: np.ndarray, count: str, inside: str, outside: str) -> dict:
    """Stan data of a split of elements into two sets: how many are in ``mask``, and the 1-based indices in
    and out of it (the split hierarchies here; the capture shift's cells in standata)."""
    return {count: int(mask.sum()), inside: np.flatnonzero(mask) + 1, outside: np.flatnonzero(~mask) + 1}


def _split(name: str, centred: np.ndarray) -> dict:
    """The data of a split hierarchy (priors/_target.stan.j2): the centred genes and the rest."""
    return index_split(centred, f"{name}_n_centred", f"{name}_centred_idx", f"{name}_noncentred_idx")


def gate_split_data(X: sp.csr_matrix, shared_p: bool, name: str = "gate") -> dict:
    """Genes with a gate the data demand and pin down are centred."""
    se, lr = _kept(("gate",) + _content_key(X, shared_p), lambda: gate_evidence(X, shared_p=shared_p))
    return _split(name, (se < CENTRED_SD) & (lr > CENTRED_LR))


def dataset_gate_split_data(X: sp.csr_matrix, cell_dataset: np.ndarray, shared_p: bool,
                            name: str = "gate_dataset") -> dict:
    """The split of a dataset-level gate over its (gene, dataset) columns, numbered (d - 1) G + g as Stan's
    to_vector of a genes x datasets matrix: gate_split_data's test on each dataset's cells, and each column's
    gene (its local scale's index)."""
    X = sp.csr_matrix(X)
    G = X.shape[1]
    D = int(cell_dataset.max()) + 1
    centred = []
    for d in range(D):
        Xd = X[cell_dataset == d]
        se, lr = _kept(("gate",) + _content_key(Xd, shared_p), lambda: gate_evidence(Xd, shared_p=shared_p))
        centred.append((se < CENTRED_SD) & (lr > CENTRED_LR))
    mask = np.concatenate(centred)
    genes = np.tile(np.arange(1, G + 1), D)
    return {**_split(name, mask), f"{name}_centred_gene": genes[mask], f"{name}_noncentred_gene": genes[~mask]}


def prob_centred(theta: np.ndarray, se: np.ndarray, family: str) -> np.ndarray:
    """Which genes' logit(p) to sample centred: those the data pin more tightly than the prior they get.

    The textbook criterion (Betancourt & Girolami 2015) compares a gene's likelihood width se_g with its prior
    scale. Under the Gaussian family that scale is the population's sigma, estimated by population_scale: when
    the genes share one p (sigma near 0) every gene is non-centred, however many counts it has; a fixed bound
    on se_g centred them all and sent prob_sigma into its funnel (bench/nbdm_speed.py: R-hat 1.05, E-BFMI
    0.10). Under horseshoe and NEG a gene's local scale grows to cover its distance from the centre: there the
    bulk's scale is estimated robustly, and a gene is also centred when its distance from the centre exceeds
    twice its standard error."""
    if family == "gaussian":
        return se < population_scale(theta, se)[1]
    # The bulk's scale, robust to the few far genes that the local scales are there for (a normal fit would
    # let them widen it and centre every gene): the MAD of the estimates less their typical error.
    ok = np.isfinite(se) & np.isfinite(theta)
    if not ok.any():  # no gene's curvature says anything: none is pinned
        return np.zeros(se.shape, dtype=bool)
    m = float(np.median(theta[ok]))
    mad = 1.4826 * float(np.median(np.abs(theta[ok] - m)))
    sigma = float(np.sqrt(max(mad ** 2 - float(np.median(se[ok] ** 2)), 0.0)))
    return se < np.maximum(sigma, np.abs(theta - m) - se)


def prob_split_data(X: sp.csr_matrix, family: str, name: str = "prob") -> dict:
    """The centred and non-centred genes of a gene-level p hierarchy (prob_centred). Non-centred p for genes
    the data pin made the hierarchy's centre and scale crawl: prob_loc and prob_sigma can only move with every
    z at once (PBMC, 2,000 genes, default nbdm, 1 chain x (150 + 100): bulk ESS of prob_sigma 1.5 all
    non-centred, 14 split, and 63 -> 31 leapfrog steps per draw)."""
    theta, se = _kept(("prob",) + _content_key(X, False), lambda: prob_evidence(X))
    return _split(name, prob_centred(theta, se, family))


def prob_hyper_scales(X: sp.csr_matrix, family: str, name: str = "prob") -> dict:
    """The offsets and multipliers of a gene-level logit p hierarchy's centre and, under the Gaussian family,
    of its scale's coordinate sigma_raw = log(expm1(sigma)) (plan.scales_prob_hyper), from the empirical-Bayes
    fit of the per-gene estimates (population_scale): the centre's standard error is 1 / sqrt(sum_g 1 / (sigma^2
    + se_g^2)), log sigma's is the inverse root curvature of the profile marginal likelihood, carried to
    sigma_raw by d sigma_raw = sigma d log sigma / inv_logit(sigma_raw). Under horseshoe and NEG the normal
    fit's sigma is widened by the far genes, so the centre's scale errs large, which costs little. Scales are
    capped at 1 (the centre's prior sd; a flat profile, as when the genes share one p, says nothing finer)."""
    theta, se = _kept(("prob",) + _content_key(X, False), lambda: prob_evidence(X))
    ok = np.isfinite(se) & np.isfinite(theta)
    out = {f"{name}_loc_offset": 0.0, f"{name}_loc_scale": 1.0}
    # The centred genes' own coordinates: they are centred because their counts pin logit p to within se_g, as
    # tight as 0.05 on PBMC's top genes, and Stan's first 100 warmup iterations run on the unit metric, where
    # the tightest coordinate sets the step (zinb --gate-prior neg, PBMC top 1,500: 21,000-22,000 of ~55,000
    # warmup steps, bench/warmup_metric.py). In units of se_g every coordinate starts near 1. (A multiplier must be
    # positive: a degenerate fit's se of 0 gets 1e-3, far below any logit p a handful of genes' counts can pin.)
    centred = prob_centred(theta, se, family)
    out[f"{name}_centred_offset"] = theta[centred]
    out[f"{name}_centred_scale"] = np.clip(se[centred], 1e-3, 1.0)
    if family == "gaussian":
        out.update({f"{name}_sigma_raw_offset": 0.0, f"{name}_sigma_raw_scale": 1.0})
    if not ok.any():
        return out
    m, sigma = population_scale(theta, se)
    out[f"{name}_loc_offset"] = float(m)
    out[f"{name}_loc_scale"] = float(min(1.0 / np.sqrt(np.sum(1.0 / (sigma ** 2 + se[ok] ** 2))), 1.0))
    if family == "gaussian":
        t, v = theta[ok], se[ok] ** 2

        def nll(log_sigma):
            return _profile(log_sigma, t, v)[0]

        h, ls = 1e-3, np.log(max(sigma, 1e-4))
        curvature = (nll(ls + h) - 2 * nll(ls) + nll(ls - h)) / h ** 2
        raw = float(np.log(np.expm1(max(sigma, 1e-4))))
        raw_scale = sigma / (special.expit(raw) * np.sqrt(curvature)) if curvature > 0 else 1.0
        out[f"{name}_sigma_raw_offset"] = raw
        out[f"{name}_sigma_raw_scale"] = float(min(raw_scale, 1.0))
    return out


def log_mean_scales(X: sp.csr_matrix) -> dict:
    """The offset and multiplier of each gene's log mean (plan.scales_log_mean): the log of its mean count and
    that log's standard error, sqrt(var / C) / mean with the variance at least the mean (Poisson). A gene with
    no counts gets log(0.5 / C) and 1, and no scale exceeds 1 (a handful of counts leaves log mu to its prior,
    whose spread is wider still). Under a gate the sampled coordinate is the mean after it (plan.gates_log_mean),
    which these are of; under a BNB tail, or with --ungated-mean, the observed mean is off the model's mu by
    the tail's or the gate's share: the offset is a location only."""
    X = sp.csr_matrix(X)
    C = X.shape[0]
    mean = np.asarray(X.sum(axis=0), dtype=np.float64).ravel() / C
    square = np.asarray(X.multiply(X).sum(axis=0), dtype=np.float64).ravel() / C
    seen = mean > 0
    safe = np.where(seen, mean, 1.0)
    var = np.maximum(square - mean ** 2, mean)
    offset = np.where(seen, np.log(safe), np.log(0.5 / C))
    scale = np.where(seen, np.minimum(np.sqrt(var / C) / safe, 1.0), 1.0)
    return {"log_mu_offset": offset, "log_mu_scale": scale}
