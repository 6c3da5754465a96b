"""Where a NUTS run's "write" phase goes: reading the chains' CSVs, building the InferenceData, convergence
diagnostics, shrinkage and the NetCDF, each timed on the same CSVs.

The draws' quality does not matter here, only their shape, so the CSVs come from a short, cheap run (--warmup
iterations, tree depth --max-treedepth) with the full number of draws: 4 chains x 1000 draws of the full PBMC
matrix's CLI-default NBDM are ~90,000 columns each, as in the 10-minute target's run.

    python bench/write_phase.py ../shared/data/pbmc_1k_v3.h5ad
    python bench/write_phase.py ../shared/data/pbmc_1k_v3.h5ad --csv-dir /tmp/pbmc_csv   # reuse its CSVs
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from unittest import mock
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import cmdstanpy

    from scribe_cli.cache import compile_program
    from scribe_cli.cli_options import model_config_from_options
    from scribe_cli.data import read_counts
    from scribe_cli.diagnostics import convergence
    from scribe_cli.idata import to_inference_data, variable_dims, write_netcdf
    from scribe_cli.render import render
    from scribe_cli.shrinkage import shrinkage
    from scribe_cli.standata import stan_data

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("h5ad", type=Path)
    ap.add_argument("--options", default='{"model": "nbdm"}', help="model options as JSON (CLI defaults otherwise)")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--max-treedepth", type=int, default=4)
    ap.add_argument("--csv-dir", type=Path, help="keep the CSVs here, and reuse them when it already holds some")
    ap.add_argument("--profile", type=int, default=0, help="print the N costliest functions of the whole phase")
    args = ap.parse_args()

    config = model_config_from_options(**json.loads(args.options))
    counts = read_counts(args.h5ad)
    data = stan_data(config, counts)
    program = render(config)
    out_dir = args.csv_dir or Path(tempfile.mkdtemp(prefix="write-phase-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    csvs = sorted(out_dir.glob("*.csv"))
    if not csvs:
        model = compile_program(program, name=config.model).model
        t = time.monotonic()
        model.sample(data=data, chains=args.chains, parallel_chains=args.chains, iter_warmup=args.warmup,
                     iter_sampling=args.draws, max_treedepth=args.max_treedepth, seed=1, output_dir=str(out_dir),
                     show_progress=False)
        print(f"sampled in {time.monotonic() - t:.1f} s (not part of the phase)", file=sys.stderr)
        csvs = sorted(out_dir.glob("*.csv"))
    print(f"{len(csvs)} CSVs, {sum(p.stat().st_size for p in csvs) / 2**20:.0f} MB", file=sys.stderr)

    coords = {"gene": counts.genes, "cell": counts.cells}
    dims_of = lambda arrays: variable_dims(config, arrays, data)  # noqa: E731
    times: dict[str, float] = {}
    prof = cProfile.Profile() if args.profile else None
    if prof:
        prof.enable()
    t = time.monotonic()
    # from_csv also reads every draw (fit.draws()); model.sample, which `scribe run` calls, only validates
    # (CmdStanMCMC's constructor): keep the draws unread here too, so that the next step reads them as in a run
    with mock.patch.object(cmdstanpy.CmdStanMCMC, "draws", lambda self, *a, **k: None):
        fit = cmdstanpy.from_csv([str(p) for p in csvs])
    times["validation (cmdstanpy, as at the end of model.sample)"] = time.monotonic() - t
    t = time.monotonic()
    idata = to_inference_data(fit, "nuts", dims_of, coords, n_draws=args.draws)
    times["to_inference_data (reads the draws)"] = time.monotonic() - t
    t = time.monotonic()
    convergence(idata, "nuts", 10, config=config.to_dict(), paths=args.chains)
    times["convergence (rank diagnostics)"] = time.monotonic() - t
    t = time.monotonic()
    shrinkage(idata.posterior)
    times["shrinkage"] = time.monotonic() - t
    t = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        write_netcdf(idata, Path(tmp) / "posterior.nc")
    times["write_netcdf"] = time.monotonic() - t
    if prof:
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(args.profile)
    scalars = sum(int(v.size // (v.sizes["chain"] * v.sizes["draw"])) for v in idata.posterior.data_vars.values())
    print(json.dumps({"options": json.loads(args.options), "chains": args.chains, "draws": args.draws,
                      "posterior_scalars": scalars, "seconds": {k: round(v, 2) for k, v in times.items()},
                      "total": round(sum(times.values()), 2)}, indent=2))


if __name__ == "__main__":
    main()
