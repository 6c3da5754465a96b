"""The main job, one straight line: counts -> program -> compiled model -> fit -> InferenceData -> NetCDF."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .cache import compile_program
from .config import ModelConfig
from .data import Counts
from .diagnostics import convergence
from .shrinkage import shrinkage
from .fit import RunOptions, run_method
from .idata import attach_attrs, check_output_path, to_inference_data, write_netcdf
from .render import render, stan_data, variable_dims
from .toolchain import STAN_VERSION, stanc_version, use_toolchain

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    output: str
    method: str
    seed: int
    cached_model: bool
    timings: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)
    shrinkage: dict = field(default_factory=dict)

    def summary(self) -> dict:
        d = asdict(self)
        d["wall_time_s"] = round(sum(self.timings.values()), 3)
        return d


def run(counts: Counts, config: ModelConfig, opts: RunOptions, output: Path, *, overwrite: bool = False,
        program: str | None = None, command_line: str = "", float32: bool = False) -> RunResult:
    check_output_path(output, overwrite)
    timings: dict[str, float] = {}

    t = time.monotonic()
    program = program if program is not None else render(config)
    data = stan_data(config, counts)
    timings["render"] = time.monotonic() - t

    t = time.monotonic()
    toolchain = use_toolchain()
    compiled = compile_program(program, name=config.model)
    timings["compile"] = time.monotonic() - t
    log.info("model %s (%s)", compiled.key, "cached, not recompiled" if compiled.cached else f"compiled in {compiled.seconds:.1f} s")

    workdir = Path(tempfile.mkdtemp(prefix="scribe-run-"))
    try:
        t = time.monotonic()
        log.info("running %s", opts.method)
        fit = run_method(compiled.model, data, opts, workdir)
        timings["sample"] = time.monotonic() - t

        t = time.monotonic()
        coords = {"gene": counts.genes, "cell": counts.cells}
        idata = to_inference_data(fit, opts.method, lambda arrays: variable_dims(config, arrays, data), coords,
                                  n_draws=opts.draws, seed=opts.seed)
        diagnostics = convergence(idata, opts.method, opts.max_treedepth)
        shrink = shrinkage(idata.posterior)
        attach_attrs(idata, {
            "scribe_version": __version__,
            "stan_version": STAN_VERSION,
            "stanc_version": stanc_version(toolchain),
            "toolchain": str(toolchain),
            "command_line": command_line,
            "config": config.to_dict(),
            "run_options": asdict(opts),
            "method": opts.method,
            "seed": opts.seed,
            "stan_program": program,
            "input_file": str(counts.source),
            "input_sha256": counts.sha256,
            "input_layer": counts.layer or "X",
            "n_cells": counts.n_cells,
            "n_genes": counts.n_genes,
            "selection": counts.selection,
        })
        write_netcdf(idata, output, float32=float32)
        timings["write"] = time.monotonic() - t
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return RunResult(
        output=str(output),
        method=opts.method,
        seed=opts.seed,
        cached_model=compiled.cached,
        timings={k: round(v, 3) for k, v in timings.items()},
        diagnostics=diagnostics,
        shrinkage=shrink,
    )
