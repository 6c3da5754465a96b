#!/usr/bin/env python3
"""scribe-cli's stand-ins for CmdStan's ``bin/stansummary`` and ``bin/diagnose``.

``make build`` writes two small sh scripts, ``bin/stansummary`` and ``bin/diagnose``, that run this
file with the Python named at call time (``$SCRIBE_PYTHON``, which scribe sets to its own interpreter,
else ``python3``) and name the tool in ``$SCRIBE_STAN_TOOL``: the toolchain cache records no interpreter,
so it outlives the virtual environment that built it.

stansummary [--percentiles=5,50,95] [--sig_figs=N] [--csv_filename=OUT] [--autocorr=N] FILE.csv ...
    Summary statistics of the sampling draws of one or more Stan CSV files (one per chain):
    Mean, MCSE, StdDev, MAD, the percentiles, ESS_bulk, ESS_tail and R_hat (rank-normalized
    split R-hat and effective sample sizes, Vehtari et al. 2021). With --csv_filename the
    table is also written as CSV (what cmdstanpy's ``CmdStanMCMC.summary()`` reads).
diagnose FILE.csv ...
    Checks the sampler output for divergences, tree-depth saturation, low E-BFMI, low ESS
    and high R-hat, like CmdStan's ``diagnose`` utility.

Only numpy and scipy are needed (no ArviZ import: it costs ~2 s per call).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Optional

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata


# --------------------------------------------------------------------------------------
# Reading Stan CSV files
# --------------------------------------------------------------------------------------
class Chain:
    def __init__(self, path: str):
        self.path = path
        self.config: dict[str, str] = {}
        self.header: list[str] = []
        self.warmup_rows: list[list[float]] = []
        self.rows: list[list[float]] = []
        self.warmup_time = 0.0
        self.sampling_time = 0.0
        self._read()

    def _read(self) -> None:
        rows: list[list[float]] = []
        adapt_at: Optional[int] = None
        in_timing = False
        with open(self.path, "r") as fh:
            for line in fh:
                if line.startswith("#"):
                    body = line.lstrip("#").strip()
                    if self.header and body.startswith("Adaptation terminated") and adapt_at is None:
                        adapt_at = len(rows)
                    if body.startswith("Elapsed Time"):
                        in_timing = True
                    if in_timing and "seconds" in body:
                        try:
                            secs = float(body.split("seconds")[0].split()[-1])
                        except ValueError:
                            secs = 0.0
                        if "(Warm-up)" in body:
                            self.warmup_time = secs
                        elif "(Sampling)" in body:
                            self.sampling_time = secs
                    if not self.header and " = " in body:
                        key, _, val = body.partition(" = ")
                        self.config[key.strip()] = val.replace("(Default)", "").strip()
                    continue
                if not line.strip():
                    continue
                if not self.header:
                    self.header = [h.strip().strip('"') for h in line.strip().split(",")]
                    continue
                rows.append([_to_float(v) for v in line.strip().split(",")])
        if not self.header:
            raise ValueError(f"{self.path}: no header row found")
        if adapt_at is not None:
            self.warmup_rows, self.rows = rows[:adapt_at], rows[adapt_at:]
        else:
            self.rows = rows


def _to_float(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        v = v.strip().lower()
        if v in ("inf", "+inf"):
            return math.inf
        if v == "-inf":
            return -math.inf
        return math.nan


def load_chains(paths: list[str]) -> tuple[list[str], np.ndarray, list[Chain]]:
    """Returns (column names, draws[chain, draw, column], chains); OSError / ValueError on bad files."""
    chains = [Chain(p) for p in paths]
    header = chains[0].header
    for c in chains[1:]:
        if c.header != header:
            raise ValueError(f"{c.path}: columns differ from {chains[0].path}")
    n = min(len(c.rows) for c in chains)
    if any(len(c.rows) != n for c in chains):
        print(f"Warning: chains have different numbers of draws; using the first {n} of each", file=sys.stderr)
    arr = np.empty((len(chains), n, len(header)))
    for i, c in enumerate(chains):
        arr[i] = np.asarray(c.rows[:n], dtype=float).reshape(n, len(header))
    return header, arr, chains


def _load_or_report(paths: list[str]) -> Optional[tuple[list[str], np.ndarray, list[Chain]]]:
    """load_chains for the command-line tools: None (and the reason on stderr) when the files are bad."""
    try:
        return load_chains(paths)
    except (OSError, ValueError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return None


# --------------------------------------------------------------------------------------
# Convergence diagnostics: rank-normalized split R-hat and ESS (Vehtari et al. 2021)
# --------------------------------------------------------------------------------------
def _split(x: np.ndarray) -> np.ndarray:
    """(chains, draws) -> (2*chains, draws//2); drops the middle draw of odd-length chains."""
    n = x.shape[1]
    half = n // 2
    if half < 1:
        return x
    return np.vstack([x[:, :half], x[:, n - half:]])


def _z_scale(x: np.ndarray) -> np.ndarray:
    r = rankdata(x, method="average").reshape(x.shape)
    return ndtri((r - 0.375) / (x.size + 0.25))


def _rhat_basic(x: np.ndarray) -> float:
    m, n = x.shape
    if m < 2 or n < 2 or not np.all(np.isfinite(x)) or np.all(np.ptp(x, axis=1) == 0):
        return math.nan
    w = np.mean(np.var(x, axis=1, ddof=1))
    if w == 0:
        return math.nan
    b = n * np.var(np.mean(x, axis=1), ddof=1)
    var_hat = (n - 1) / n * w + b / n
    return float(math.sqrt(var_hat / w))


def _autocov(x: np.ndarray) -> np.ndarray:
    """Biased autocovariance of each row, via FFT."""
    m, n = x.shape
    xc = x - x.mean(axis=1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(xc, n=size, axis=1)
    ac = np.fft.irfft(f * np.conjugate(f), n=size, axis=1)[:, :n]
    return ac / n


def _ess_basic(x: np.ndarray) -> float:
    m, n = x.shape
    if n < 4 or not np.all(np.isfinite(x)):
        return math.nan
    if np.ptp(x) == 0:
        return math.nan
    acov = _autocov(x)
    chain_mean = x.mean(axis=1)
    mean_var = np.mean(acov[:, 0]) * n / (n - 1)
    var_plus = mean_var * (n - 1) / n
    if m > 1:
        var_plus += np.var(chain_mean, ddof=1)
    if var_plus <= 0:
        return math.nan
    mean_acov = acov.mean(axis=0)
    rho = np.zeros(n)
    rho[0] = 1.0
    rho_even = 1.0
    rho_odd = 1.0 - (mean_var - mean_acov[1]) / var_plus
    rho[1] = rho_odd
    t = 1
    while t < n - 3 and (rho_even + rho_odd) > 0:
        rho_even = 1.0 - (mean_var - mean_acov[t + 1]) / var_plus
        rho_odd = 1.0 - (mean_var - mean_acov[t + 2]) / var_plus
        if rho_even + rho_odd >= 0:
            rho[t + 1] = rho_even
            rho[t + 2] = rho_odd
        t += 2
    max_t = t - 2
    if rho_even > 0:
        rho[max_t + 1] = rho_even
    # Geyer's initial monotone sequence
    t = 1
    while t <= max_t - 2:
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
            rho[t + 1] = (rho[t - 1] + rho[t]) / 2.0
            rho[t + 2] = rho[t + 1]
        t += 2
    total = m * n
    tau = -1.0 + 2.0 * np.sum(rho[: max_t + 1]) + np.sum(rho[max_t + 1: max_t + 2])
    tau = max(tau, 1.0 / math.log10(total))
    return float(total / tau)


def _needs_spread(stat):
    """A diagnostic of draws x is NaN when a draw is not finite or all draws are equal (as CmdStan's)."""

    def guarded(x: np.ndarray) -> float:
        if not np.all(np.isfinite(x)) or np.ptp(x) == 0:
            return math.nan
        return stat(x)

    guarded.__name__ = stat.__name__
    guarded.__doc__ = stat.__doc__
    return guarded


@_needs_spread
def rhat_rank(x: np.ndarray) -> float:
    s = _split(x)
    bulk = _rhat_basic(_z_scale(s))
    folded = np.abs(x - np.median(x))
    tail = _rhat_basic(_z_scale(_split(folded)))
    return max(bulk, tail)


@_needs_spread
def ess_bulk(x: np.ndarray) -> float:
    return _ess_basic(_z_scale(_split(x)))


@_needs_spread
def ess_tail(x: np.ndarray) -> float:
    out = []
    for p in (0.05, 0.95):
        q = np.quantile(x, p)
        ind = (x <= q).astype(float)
        out.append(_ess_basic(_split(ind)))
    if any(math.isnan(v) for v in out):
        return math.nan
    return min(out)


@_needs_spread
def ess_mean(x: np.ndarray) -> float:
    return _ess_basic(_split(x))


# --------------------------------------------------------------------------------------
# stansummary
# --------------------------------------------------------------------------------------
def summarize(header: list[str], draws: np.ndarray, percentiles: list[float]) -> list[list[float]]:
    rows = []
    for j, _ in enumerate(header):
        x = draws[:, :, j]
        flat = x.reshape(-1)
        if flat.size == 0:
            rows.append([math.nan] * (7 + len(percentiles)))
            continue
        finite = np.all(np.isfinite(flat))
        mean = float(np.mean(flat))
        sd = float(np.std(flat, ddof=1)) if flat.size > 1 else math.nan
        med = float(np.median(flat))
        mad = float(1.4826 * np.median(np.abs(flat - med)))
        qs = [float(np.quantile(flat, p / 100.0)) for p in percentiles] if finite else [math.nan] * len(percentiles)
        e_mean = ess_mean(x)
        mcse = sd / math.sqrt(e_mean) if e_mean and not math.isnan(e_mean) and e_mean > 0 else math.nan
        rows.append([mean, mcse, sd, mad] + qs + [ess_bulk(x), ess_tail(x), rhat_rank(x)])
    return rows


def _fmt(v: float, sig: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{sig}g}"


def munge_name(name: str) -> str:
    """Stan CSV column name -> summary row name: ``a.1.2`` -> ``a[1,2]``, tuples ``t:1.2`` -> ``t.1[2]``
    (CmdStan's stansummary and cmdstanpy use the bracket form)."""
    if "." not in name and ":" not in name:
        return name
    parts = name.split(":")
    for i, part in enumerate(parts):
        if "." in part:
            head, _, idx = part.partition(".")
            parts[i] = f"{head}[{idx.replace('.', ',')}]"
    return ".".join(parts)


def _pct_label(p: float) -> str:
    return f"{p:g}%"


def stansummary_main(argv: list[str]) -> int:
    percentiles = [5.0, 50.0, 95.0]
    sig_figs: Optional[int] = None
    csv_out: Optional[str] = None
    files: list[str] = []
    it = iter(argv)
    for a in it:
        if a in ("-h", "--help"):
            print(__doc__)
            return 0
        if a.startswith("--"):
            key, eq, val = a[2:].partition("=")
            if not eq:
                try:
                    val = next(it)
                except StopIteration:
                    print(f"Error: option --{key} needs a value", file=sys.stderr)
                    return 1
            val = val.strip()
            if key == "percentiles":
                try:
                    percentiles = [float(p) for p in val.replace(" ", "").split(",") if p]
                except ValueError:
                    print(f"Error: bad --percentiles value: {val}", file=sys.stderr)
                    return 1
                if not percentiles or any(not (0 < p < 100) for p in percentiles) or percentiles != sorted(percentiles):
                    print("Error: percentiles must be an increasing list of numbers in (0, 100)", file=sys.stderr)
                    return 1
            elif key == "sig_figs":
                try:
                    sig_figs = int(val)
                except ValueError:
                    sig_figs = -1
                if not 1 <= sig_figs <= 18:
                    print("Error: --sig_figs must be an integer between 1 and 18", file=sys.stderr)
                    return 1
            elif key in ("csv_filename", "csv_file"):
                csv_out = val
            elif key == "autocorr":
                pass  # accepted for compatibility; not implemented
            else:
                print(f"Error: unknown option --{key}", file=sys.stderr)
                return 1
        else:
            files.append(a)
    if not files:
        print("Usage: stansummary [--percentiles=5,50,95] [--sig_figs=N] [--csv_filename=OUT] FILE.csv ...",
              file=sys.stderr)
        return 1
    for f in files:
        if not os.path.isfile(f):
            print(f"Error: file not found: {f}", file=sys.stderr)
            return 1
    loaded = _load_or_report(files)
    if loaded is None:
        return 1
    header, draws, chains = loaded
    stats = summarize(header, draws, percentiles)
    cols = ["Mean", "MCSE", "StdDev", "MAD"] + [_pct_label(p) for p in percentiles] + ["ESS_bulk", "ESS_tail", "R_hat"]
    sig = sig_figs if sig_figs is not None else 6

    cfg = chains[0].config
    model = cfg.get("model", "?")
    n_draws = draws.shape[1]
    intro = [
        f"Inference for Stan model: {model}",
        f"{len(chains)} chains: each with iter={cfg.get('num_samples', '?')}; warmup={cfg.get('num_warmup', '?')}; "
        f"thin={cfg.get('thin', '?')}; {n_draws} iterations saved.",
        "",
        "Warmup took (" + ", ".join(f"{c.warmup_time:.2g}" for c in chains) + f") seconds, "
        f"{sum(c.warmup_time for c in chains):.2g} seconds total",
        "Sampling took (" + ", ".join(f"{c.sampling_time:.2g}" for c in chains) + f") seconds, "
        f"{sum(c.sampling_time for c in chains):.2g} seconds total",
    ]
    outro = [
        "Samples were drawn using hmc with nuts.",
        "For each parameter, ESS_bulk and ESS_tail measure the effective sample size for the",
        "entire sample (bulk) and for the .05 and .95 tails (tail), and R_hat measures the",
        "potential scale reduction on split chains. At convergence R_hat will be very close to 1.00.",
    ]

    # console table
    cells = [[_fmt(v, sig if sig_figs is not None else 3) for v in row] for row in stats]
    width = [max(len(c), *(len(r[k]) for r in cells)) if cells else len(c) for k, c in enumerate(cols)]
    names = [munge_name(h) for h in header]
    name_w = max([len(h) for h in names] + [4])
    out = sys.stdout
    for line in intro:
        out.write(line + "\n")
    out.write("\n" + " " * name_w + "  " + "  ".join(c.rjust(width[k]) for k, c in enumerate(cols)) + "\n\n")
    for h, r in zip(names, cells):
        out.write(h.ljust(name_w) + "  " + "  ".join(v.rjust(width[k]) for k, v in enumerate(r)) + "\n")
    out.write("\n" + "\n".join(outro) + "\n")

    if csv_out:
        try:
            with open(csv_out, "w") as fh:
                for line in intro:
                    fh.write(f"# {line}\n" if line else "#\n")
                fh.write("name," + ",".join(f'"{c}"' if "%" in c else c for c in cols) + "\n")
                for h, row in zip(header, stats):
                    fh.write(f'"{munge_name(h)}",' + ",".join(_fmt(v, sig) for v in row) + "\n")
                for line in outro:
                    fh.write(f"# {line}\n")
        except OSError as exc:
            print(f"Error: cannot write {csv_out}: {exc}", file=sys.stderr)
            return 1
    return 0


# --------------------------------------------------------------------------------------
# diagnose
# --------------------------------------------------------------------------------------
def diagnose_main(argv: list[str]) -> int:
    files = [a for a in argv if not a.startswith("-")]
    if not files:
        print("Usage: diagnose FILE.csv ...", file=sys.stderr)
        return 1
    loaded = _load_or_report(files)
    if loaded is None:
        return 1
    header, draws, chains = loaded
    idx = {h: j for j, h in enumerate(header)}
    total = draws.shape[0] * draws.shape[1]
    out: list[str] = []
    problems = []  # one flag per check that ran

    def check(title: Optional[str], problem: list[str], fine: str) -> None:
        """One paragraph of the report: the problem's lines, or the line saying the check passed."""
        if title:
            out.append(title)
        out.extend(problem or [fine])
        out.append("")
        problems.append(bool(problem))

    if "treedepth__" in idx:
        max_depth = int(float(chains[0].config.get("max_depth", "10")))
        hits = int(np.sum(draws[:, :, idx["treedepth__"]] >= max_depth))
        check("Checking sampler transitions treedepth.", [
            f"{hits} of {total} ({100.0 * hits / total:.2g}%) transitions hit the maximum treedepth limit of {max_depth}.",
            "Trajectories that are prematurely terminated due to this limit will result in slow exploration.",
            "For optimal performance, increase this limit.",
        ] if hits else [], "Treedepth satisfactory for all transitions.")
    if "divergent__" in idx:
        div = int(np.sum(draws[:, :, idx["divergent__"]]))
        check("Checking sampler transitions for divergences.", [
            f"{div} of {total} ({100.0 * div / total:.2g}%) transitions ended with a divergence.",
            "These divergent transitions indicate that HMC is not fully able to explore the posterior distribution.",
            "Try increasing adapt delta closer to 1.",
            "If this doesn't remove all divergences, try to reparameterize the model.",
        ] if div else [], "No divergent transitions found.")
    if "energy__" in idx:
        bad = []
        for i, c in enumerate(chains):
            e = draws[i, :, idx["energy__"]]
            if e.size > 1 and np.var(e) > 0:
                ebfmi = float(np.sum(np.diff(e) ** 2) / e.size / np.var(e))
                if ebfmi < 0.3:
                    bad.append(ebfmi)
        check("Checking E-BFMI - sampler transitions HMC potential energy.", [
            "The E-BFMI, " + ", ".join(f"{v:.2f}" for v in bad) + ", is below the nominal threshold of 0.30 which suggests that HMC may have trouble exploring the target distribution.",
            "If possible, try to reparameterize the model.",
        ] if bad else [], "E-BFMI satisfactory.")
    low_ess, high_rhat = [], []
    for h in (h for h in header if not h.endswith("__")):
        x = draws[:, :, idx[h]]
        eb, et, rh = ess_bulk(x), ess_tail(x), rhat_rank(x)
        thr = 100 * draws.shape[0]
        if (not math.isnan(eb) and eb < thr) or (not math.isnan(et) and et < thr):
            low_ess.append(h)
        if not math.isnan(rh) and rh > 1.01:
            high_rhat.append(h)
    check(None, [
        "The following parameters had fewer than 100 effective draws per chain:",
        "  " + ", ".join(low_ess),
        "Such low values indicate that the effective sample size estimators may be biased high and actual performance may be substantially lower than quoted.",
    ] if low_ess else [], "Rank-normalized split effective sample size satisfactory for all parameters.")
    check(None, [
        "The following parameters had rank-normalized split R-hat greater than 1.01:",
        "  " + ", ".join(high_rhat),
        "Such high values indicate incomplete mixing and biased estimation.",
        "You should consider regularizating your model with additional prior information or a more effective parameterization.",
    ] if high_rhat else [], "Rank-normalized split R-hat values satisfactory for all parameters.")
    out.append("Processing complete" + (".", ", no problems detected.")[not any(problems)])
    print("\n".join(out))
    return 0


def main() -> int:
    prog = os.environ.get("SCRIBE_STAN_TOOL") or os.path.basename(sys.argv[0])
    if prog.startswith("diagnose"):
        return diagnose_main(sys.argv[1:])
    return stansummary_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
