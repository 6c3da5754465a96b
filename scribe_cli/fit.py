"""Run one inference method through cmdstanpy: one small function per method, one table of them."""

from __future__ import annotations

import json
import logging
import os
import re
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import UserInputError

INITS = ("random", "pathfinder")
METHODS = ("nuts", "pathfinder", "advi", "advi-fullrank", "optimize", "laplace")
ONE_PROCESS = ("advi", "advi-fullrank", "optimize", "laplace")  # one Stan process, one chain of work


@dataclass(frozen=True)
class RunOptions:
    method: str = "nuts"
    chains: int = 4
    parallel_chains: int | None = None
    threads_per_chain: int | None = None  # None: ONE_PROCESS methods take every core, the others 1
    warmup: int = 1000
    draws: int = 1000
    seed: int = 0
    adapt_delta: float = 0.8
    max_treedepth: int = 10
    init: str = "random"
    show_progress: bool = True

    def __post_init__(self):
        if self.threads_per_chain is None:
            # NUTS's chains and pathfinder's paths fill the cores; ADVI, optimize and laplace are one process,
            # whose reduce_sum would otherwise leave all but one core idle (zinbvcp 2,000 x 500, ADVI: 56 s on
            # one thread, 38 s on two; bench/scale.py --threads-per-chain)
            threads = len(os.sched_getaffinity(0)) if self.method in ONE_PROCESS else 1
            object.__setattr__(self, "threads_per_chain", threads)  # frozen: set once, here

    def validate(self) -> "RunOptions":
        if self.method not in METHODS:
            raise UserInputError(f"unknown --method '{self.method}'; use one of {', '.join(METHODS)}")
        for name in ("chains", "draws", "threads_per_chain"):
            if getattr(self, name) < 1:
                raise UserInputError(f"--{name.replace('_', '-')} must be at least 1")
        if self.warmup < 0:
            raise UserInputError("--warmup must be 0 or more")
        if not 0 < self.adapt_delta < 1:
            raise UserInputError("--adapt-delta must be strictly between 0 and 1 (e.g. 0.8 or 0.95)")
        if self.max_treedepth < 1:
            raise UserInputError("--max-treedepth must be at least 1")
        if self.init not in INITS:
            if not self.init.endswith(".json"):
                raise UserInputError(f"unknown --init '{self.init}'; use one of {', '.join(INITS)} or a .json file "
                                     "of starting values")
            if not Path(self.init).is_file():
                raise UserInputError(f"--init {self.init}: no such file")
        if not 0 <= self.seed < 2**31:
            raise UserInputError("--seed must be between 0 and 2147483647")
        return self


def capture_starts(model, data: dict, chains: int, seed: int) -> list[dict] | None:
    """Per chain, starting values of the capture shift, the deviations and log mu of a program that samples
    them (params/capture_organism.stan.j2), else None. Each shifted cell's eta starts within 0.1 of its prior
    centre: Stan's random starts, uniform in (-2, 2) on the unconstrained scale, give deviations of about +-1
    per cell, and with thousands of cells some fall below the bound eta >= 0 on every try. Each gene's log mu
    (under a gate, its mean after the gate: plan.gates_log_mean) starts within 0.1 of log(mean count / mean prior
    capture), where the data put it: from a random start
    (mu ~ 1 against counts ~ 1 / capture ~ 40 times larger) warmup spent its first windows, and on a
    simulated 1,000 x 500 every transition of a 300-iteration warmup, crossing that gap. A joint program's log
    mu per (gene, dataset) starts at its dataset's mean count over its dataset's mean prior capture. The other
    parameters keep Stan's random starts."""
    if "capture_n_shifted" not in data or not re.search(r"\bcapture_dev\s*;", model.code() or ""):
        return None
    import numpy as np

    from .standata import observed_log_mean, prior_mean_capture

    all_loc = np.asarray(data["capture_eta_loc"], float)
    loc = all_loc[np.asarray(data["capture_shifted_idx"], int) - 1]
    G, C = int(data["G"]), int(data["C"])
    log_mu = None
    if "pair_gene" in data:
        totals = np.asarray(data["pair_count"], float) * np.asarray(data["pair_weight"], float)
        if "D" in data and re.search(r"\[G, D\] log_mu_shifted\b", model.code() or ""):
            # joint programs: pairs are indexed by column (d - 1) G + g; each dataset has its cells and capture
            D = int(data["D"])
            ds = np.asarray(data["cell_dataset"], int) - 1
            totals = np.bincount(np.asarray(data["pair_gene"], int) - 1, totals, minlength=G * D).reshape(D, G)
            log_mu = np.column_stack([observed_log_mean(totals[d], int((ds == d).sum()), prior_mean_capture(data, ds == d))
                                      for d in range(D)])
        elif "D" not in data:
            log_mu = observed_log_mean(np.bincount(np.asarray(data["pair_gene"], int) - 1, totals, minlength=G), C,
                                       prior_mean_capture(data))
    rng = np.random.default_rng(seed)
    starts = []
    for _ in range(chains):
        offset = rng.uniform(-0.1, 0.1, loc.size)
        shift = float(offset.mean()) if loc.size else 0.0
        start = {"capture_shift": [shift] if loc.size else [],
                 "capture_dev": (offset - shift).tolist() if loc.size else [0.0]}  # no shifted cell: one 0
        if log_mu is not None:
            start["log_mu_shifted"] = (log_mu - shift + rng.uniform(-0.1, 0.1, log_mu.shape)).tolist()
        starts.append(start)
    return starts


def _with_starts(inits: list[dict] | None, starts: list[dict] | None, chains: int) -> list[dict] | None:
    """The user's (or pathfinder's) starting values, with the program's required ones where they give none."""
    if starts is None:
        return inits
    return [{**starts[i], **(inits[i] if inits else {})} for i in range(chains)]


def _nuts(model, data, opts: RunOptions, output_dir: Path, tuning: dict | None = None):
    inits = None
    if opts.init == "pathfinder":
        # One pathfinder path per chain; each chain starts at a different approximate draw, so
        # chains stay overdispersed enough for R-hat to mean something.
        (output_dir / "init").mkdir(exist_ok=True)
        pf = _pathfinder(model, data, opts, output_dir / "init")
        inits = pf.create_inits(seed=opts.seed, chains=opts.chains)
    elif opts.init not in INITS:
        # A file of starting values (any subset of the parameters; Stan draws the rest at random). Every chain
        # starts there, e.g. a mixture's components at the clusters of a clustering: from random starts one
        # component can take every cell and the other stay empty for the whole run.
        # (one dict per chain: cmdstanpy then writes the per-chain files <f>_1.json... the driver reads)
        try:
            start = json.loads(Path(opts.init).read_text())
        except (OSError, ValueError) as exc:
            raise UserInputError(f"--init {opts.init}: not a JSON file of starting values ({exc})") from None
        if not isinstance(start, dict):
            raise UserInputError(f"--init {opts.init}: expected a JSON object of parameter names to values")
        inits = [start] * opts.chains
    return model.sample(
        inits=_with_starts(inits, capture_starts(model, data, opts.chains, opts.seed), opts.chains),
        data=data,
        chains=opts.chains,
        parallel_chains=opts.parallel_chains or opts.chains,
        threads_per_chain=opts.threads_per_chain,
        iter_warmup=opts.warmup,
        iter_sampling=opts.draws,
        seed=opts.seed,
        adapt_delta=opts.adapt_delta,
        max_treedepth=opts.max_treedepth,
        output_dir=str(output_dir),
        show_progress=opts.show_progress,
        show_console=False,
    )


def _first_start(model, data, opts: RunOptions) -> dict | None:
    """The required starting values of a one-start method (pathfinder's paths share them; the rest is random)."""
    starts = capture_starts(model, data, 1, opts.seed)
    return starts[0] if starts else None


# Stan arguments of the approximate methods beyond what RunOptions sets; bench/variational_defaults.py
# measures the alternatives (recovery and interval coverage against a simulation's truth, wall time) and
# passes its own values through run_method(..., tuning=...). The figures behind each choice: docs/variational.md.
# Pathfinder: Stan's history 5 with one path per --chains, and 5 ELBO draws per L-BFGS iteration instead of
# Stan's 25 (they only rank the iterations; the draws written are num_draws from the best one): the same
# recovery in 0.5-0.67x the time; 8 paths, history 15 or 100 ELBO draws gave the same recovery at 1.3-4.5x.
# ADVI: Stan's tol_rel_obj 0.01 stops on a 1% relative change of the ELBO, which on large data (an ELBO
# summing over ~1e6 counts) comes while the scales still shrink: 90% intervals covered 99% of the true means;
# at 0.001 they cover 95% and are a third narrower, under the same 10,000-iteration cap (0.0001 with 30,000
# iterations, or 5 gradient draws: 92-93%, at 2-3x the time). 25 ELBO draws per convergence check instead of
# Stan's 100: the check compares ELBO estimates 100 iterations apart, whose Monte Carlo error (~sd(log p - log q)
# / 5) stays far below 0.001 of |ELBO| on real data; the same iterations and recovery in 0.74x the time on
# zinbvcp 10,000 x 2,000, where each estimate costs 100 log densities (docs/variational.md).
PATHFINDER_TUNING: dict = {"num_elbo_draws": 5}
ADVI_TUNING: dict = {"tol_rel_obj": 0.001, "elbo_samples": 25}


def _pathfinder(model, data, opts: RunOptions, output_dir: Path, tuning: dict | None = None):
    # num_paths follows --chains so that "4 chains" means 4 independent starting points for every method.
    # psis_resample=False: we keep the raw draws of the approximation so that the Pareto k of the
    # importance ratios can be computed on them; psis.py then does the PSIS resampling (with ArviZ).
    return model.pathfinder(
        data=data,
        inits=_first_start(model, data, opts),
        num_paths=opts.chains,
        num_single_draws=opts.draws,
        psis_resample=False,
        seed=opts.seed,
        num_threads=min(opts.chains, 2) * opts.threads_per_chain,
        output_dir=str(output_dir),
        show_console=False,
        **{**PATHFINDER_TUNING, **(tuning or {})},
    )


# ADVI starts from one random point, and from some the ELBO cannot be estimated or its step size adapted (the
# initial approximation, sd 1 around the start, reaches where the log density overflows): nbvcp with a p per gene
# and --organism human on bench/scale.py's 1,000 x 500 simulation stops from seeds 3 and 4 ("calc_grad: The number
# of dropped evaluations has reached its maximum") and runs from seeds 1, 2 and 5. Those failures belong to
# the start, not the model, so ADVI tries again from the next seeds, as Stan itself retries unusable starting
# points before sampling; after a retry the seed that worked is recorded (fit.scribe_seed, the posterior's
# method_seed).
ADVI_ATTEMPTS = 3
# The reasons ADVI stops, as Stan prints them, each with its advice in _what_to_do; the retry takes those that
# depend on the start: the ELBO not computable (at the start or later), no step size, a non-finite gradient.
_ADVI_STEP_SIZE = r"step-size|adapt"
_ADVI_INITIAL = r"Cannot compute ELBO using the initial"
_ADVI_NOT_FINITE = r"dropped evaluations|calc_grad|non-finite|NaN"
_START_FAILURE = re.compile(rf"Cannot compute ELBO|step-size|{_ADVI_NOT_FINITE}", re.I)


def _advi(algorithm: str):
    def run(model, data, opts: RunOptions, output_dir: Path, tuning: dict | None = None):
        log = logging.getLogger(__name__)
        for attempt in range(ADVI_ATTEMPTS):
            seed, next_seed = ((opts.seed + k) % 2**31 for k in (attempt, attempt + 1))
            where = output_dir / f"retry{attempt}" if attempt else output_dir
            where.mkdir(parents=True, exist_ok=True)
            try:
                fit = model.variational(
                    data=data,
                    inits=_first_start(model, data, replace(opts, seed=seed)),
                    algorithm=algorithm,
                    draws=opts.draws,
                    seed=seed,
                    output_dir=str(where),
                    show_console=False,
                    require_converged=False,
                    **{**ADVI_TUNING, **(tuning or {})},
                )
            except RuntimeError as exc:
                reason = _console_reason(where) or _stan_message(str(exc))
                if attempt + 1 == ADVI_ATTEMPTS or not _START_FAILURE.search(reason):
                    raise
                log.warning("ADVI from seed %d stopped (%s); trying again from seed %d (attempt %d of %d)",
                            seed, reason, next_seed, attempt + 2, ADVI_ATTEMPTS)
                continue
            if attempt:
                fit.scribe_seed = seed  # the seed that ran; the posterior's attrs record it as method_seed
            return fit

    return run


def _optimize(model, data, opts: RunOptions, output_dir: Path, tuning: dict | None = None):
    # The posterior mode on the constrained scale (jacobian=False): a MAP point estimate, no uncertainty.
    return model.optimize(data=data, inits=_first_start(model, data, opts), seed=opts.seed, algorithm="lbfgs",
                          jacobian=False, iter=10000,
                          output_dir=str(output_dir), show_console=False)


def _laplace(model, data, opts: RunOptions, output_dir: Path, tuning: dict | None = None):
    # A normal approximation at the mode of the unconstrained posterior (jacobian=True), as Stan's laplace does.
    mode = model.optimize(data=data, inits=_first_start(model, data, opts), seed=opts.seed, algorithm="lbfgs",
                          jacobian=True, iter=10000,
                          output_dir=str(output_dir), show_console=False)
    return model.laplace_sample(data=data, mode=mode, draws=opts.draws, seed=opts.seed, jacobian=True,
                                output_dir=str(output_dir), show_console=False)


RUNNERS = {
    "nuts": _nuts,
    "pathfinder": _pathfinder,
    "advi": _advi("meanfield"),
    "advi-fullrank": _advi("fullrank"),
    "optimize": _optimize,
    "laplace": _laplace,
}


@contextmanager
def _stan_threads(n: int):
    """STAN_NUM_THREADS=n for the Stan processes started inside. cmdstanpy's sample and pathfinder take a
    thread count; variational, optimize and laplace do not, and run with the environment's (our driver and
    CmdStan both read STAN_NUM_THREADS), so without this --threads-per-chain left ADVI's reduce_sum on one
    thread."""
    before = os.environ.get("STAN_NUM_THREADS")
    os.environ["STAN_NUM_THREADS"] = str(n)
    try:
        yield
    finally:
        if before is None:
            del os.environ["STAN_NUM_THREADS"]
        else:
            os.environ["STAN_NUM_THREADS"] = before


def run_method(model, data: dict, opts: RunOptions, output_dir: Path, tuning: dict | None = None):
    """Run ``opts.method`` on a compiled model; Stan's own errors become one-line UserInputErrors.

    ``tuning``: extra Stan arguments of pathfinder / ADVI (over PATHFINDER_TUNING / ADVI_TUNING), for benchmarks."""
    try:
        threads = _stan_threads(opts.threads_per_chain) if opts.method in ONE_PROCESS else nullcontext()
        with threads:
            return RUNNERS[opts.method](model, data, opts, output_dir, tuning)
    except RuntimeError as exc:
        # ADVI and pathfinder print their reason without the prefix cmdstanpy looks for: read the transcript.
        console = _console_reason(output_dir) if opts.method in ("pathfinder", "advi", "advi-fullrank") else ""
        reason = console or _stan_message(str(exc))
        raise UserInputError(f"Stan could not run {opts.method}: {reason or 'no reason given'}"
                             f"{_what_to_do(opts.method, reason)}") from None


# Full-rank ADVI fits a mean and an n x n Cholesky factor: n (n + 1) / 2 variational parameters, driven by a
# stochastic gradient of rank grad_samples per iteration, at O(n^2) time and memory per iteration on top of
# the model's gradient. bench/advi_fullrank_size.py (simulated NBDM, docs/variational.md): 101 -> 301 parameters
# took 13x the time, with gene-mean correlations of 0.5 against mean-field's 0.995; 1,001 did not finish in 15
# minutes (mean-field: 96 s). Beyond this bound it is refused before anything is compiled or run.
FULLRANK_MAX_PARAMS = 1000


def check_method_size(method: str, program: str, data: dict) -> None:
    """Refuse, before compiling or running, a method that cannot work with this many parameters."""
    if method != "advi-fullrank":
        return
    from .param_count import unconstrained_size

    n = unconstrained_size(program, data)
    if n is not None and n > FULLRANK_MAX_PARAMS:
        raise UserInputError(
            f"--method advi-fullrank cannot fit {n:,} parameters: its covariance has {n * (n + 1) // 2:,} entries "
            f"(it works up to about {FULLRANK_MAX_PARAMS:,} parameters); use --method advi (mean-field), "
            "--method pathfinder or --method nuts")


def _stan_message(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # cmdstanpy's own prefix is not a reason: "Error during variational inference:" followed by nothing.
    lines = [ln for ln in lines if not re.fullmatch(r"Error during [a-z ]+:", ln)]
    keep = [ln for ln in lines if any(w in ln for w in ("Exception", "Error", "error", "Rejecting", "failed"))]
    return " | ".join((keep or lines)[:3])


# Lines of Stan's console output that give the reason a run stopped (ADVI and pathfinder print them
# without the "Error"/"Exception" prefix cmdstanpy looks for, so its message ends in nothing).
_REASON = re.compile(r"stan::|failed|ill-conditioned|misspecified|dropped evaluations|step-size|Exception|Error|"
                     r"non-finite|NaN|inf\b|cannot|Line search", re.I)


def _console_reason(output_dir: Path) -> str:
    """The reason Stan printed, from the console transcripts cmdstanpy saves in the run's output directory."""
    reasons: list[str] = []
    for path in sorted(Path(output_dir).rglob("*stdout*.txt")):  # rglob: ADVI's retries (retry1/, ...) too
        for line in path.read_text(errors="replace").splitlines():
            line = line.strip()
            if line and _REASON.search(line) and line not in reasons:
                reasons.append(line)
    return " | ".join(reasons[-3:])


def _what_to_do(method: str, reason: str) -> str:
    if method.startswith("advi"):
        if re.search(_ADVI_STEP_SIZE, reason, re.I):
            return ("; ADVI's step-size adaptation found no step size that improves the ELBO from its start: "
                    "try --method pathfinder (or --method nuts)")
        if re.search(_ADVI_INITIAL, reason):
            return ("; the log density is not finite around ADVI's random starting point: try --method pathfinder "
                    "(it starts with an optimisation), or --method nuts")
        if re.search(_ADVI_NOT_FINITE, reason, re.I):
            fix = "--method advi (mean-field) or " if method == "advi-fullrank" else ""
            return (f"; the ELBO's gradient was not finite at the approximation's draws (the approximation "
                    f"spread into regions where the log density overflows): try {fix}--method pathfinder, "
                    "or --method nuts")
        return "; try --method pathfinder or --method nuts"
    if method == "pathfinder":
        return "; try more paths (--chains), --method advi or --method nuts"
    return ""
