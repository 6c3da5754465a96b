"""Run one inference method through cmdstanpy: one small function per method, one table of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import UserInputError

INITS = ("random", "pathfinder")
METHODS = ("nuts", "pathfinder", "advi", "advi-fullrank", "optimize", "laplace")


@dataclass(frozen=True)
class RunOptions:
    method: str = "nuts"
    chains: int = 4
    parallel_chains: int | None = None
    threads_per_chain: int = 1
    warmup: int = 1000
    draws: int = 1000
    seed: int = 0
    adapt_delta: float = 0.8
    max_treedepth: int = 10
    init: str = "random"
    show_progress: bool = True

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
            raise UserInputError(f"unknown --init '{self.init}'; use one of {', '.join(INITS)}")
        if not 0 <= self.seed < 2**31:
            raise UserInputError("--seed must be between 0 and 2147483647")
        return self


def _nuts(model, data, opts: RunOptions, output_dir: Path):
    inits = None
    if opts.init == "pathfinder":
        # One pathfinder path per chain; each chain starts at a different approximate draw, so
        # chains stay overdispersed enough for R-hat to mean something.
        (output_dir / "init").mkdir(exist_ok=True)
        pf = _pathfinder(model, data, opts, output_dir / "init")
        inits = pf.create_inits(seed=opts.seed, chains=opts.chains)
    return model.sample(
        inits=inits,
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


def _pathfinder(model, data, opts: RunOptions, output_dir: Path):
    # num_paths follows --chains so that "4 chains" means 4 independent starting points for every method.
    # psis_resample=False: we keep the raw draws of the approximation so that the Pareto k of the
    # importance ratios can be computed on them; idata.py then does the PSIS resampling (with ArviZ).
    return model.pathfinder(
        data=data,
        num_paths=opts.chains,
        num_single_draws=opts.draws,
        psis_resample=False,
        seed=opts.seed,
        num_threads=min(opts.chains, 2) * opts.threads_per_chain,
        output_dir=str(output_dir),
        show_console=False,
    )


def _advi(algorithm: str):
    def run(model, data, opts: RunOptions, output_dir: Path):
        return model.variational(
            data=data,
            algorithm=algorithm,
            draws=opts.draws,
            seed=opts.seed,
            output_dir=str(output_dir),
            show_console=False,
            require_converged=False,
        )

    return run


def _optimize(model, data, opts: RunOptions, output_dir: Path):
    # The posterior mode on the constrained scale (jacobian=False): a MAP point estimate, no uncertainty.
    return model.optimize(data=data, seed=opts.seed, algorithm="lbfgs", jacobian=False, iter=10000,
                          output_dir=str(output_dir), show_console=False)


def _laplace(model, data, opts: RunOptions, output_dir: Path):
    # A normal approximation at the mode of the unconstrained posterior (jacobian=True), as Stan's laplace does.
    mode = model.optimize(data=data, seed=opts.seed, algorithm="lbfgs", jacobian=True, iter=10000,
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


def run_method(model, data: dict, opts: RunOptions, output_dir: Path):
    """Run ``opts.method`` on a compiled model; Stan's own errors become one-line UserInputErrors."""
    try:
        return RUNNERS[opts.method](model, data, opts, output_dir)
    except RuntimeError as exc:
        raise UserInputError(f"Stan could not run {opts.method}: {_stan_message(str(exc))}") from None


def _stan_message(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keep = [ln for ln in lines if any(w in ln for w in ("Exception", "Error", "error", "Rejecting", "failed"))]
    return " | ".join((keep or lines)[:3])
