"""Coverage of 50% and 90% posterior intervals, correlation and error against the truth, per model, method and
data size, on data simulated from the spec's generative story (spec/models.md) with realistic values rather
than prior draws:

- gene means mu_g ~ LogNormal(0, 1.2) (UMI means from ~0.1 to ~10), one shared p = 0.3 (NBDM's scalar p),
  r_g = mu_g (1 - p) / p (canonical parameterization, the default);
- ZINB: 70% of the genes with gate 0.02, 30% with gate ~ Uniform(0.1, 0.5);
- VCP: capture nu_c ~ Beta(6, 4) (mean 0.6);
- 2-component mixture: weights (0.35, 0.65), half the genes 3x up or down in the second component;
- BNB: 80% of the genes with omega = exp(-5) (close to NB), 20% with omega ~ Uniform(0.5, 2) (heavy tails).

Each (model, size, replicate) simulates counts with the simulator of `scribe ppc` (reports.ppc.simulate_counts)
and fits them with NUTS, pathfinder and ADVI (scribe_cli/calibration.py METHODS); one JSON per fit under
--results (resumable), in parallel over --workers processes. Coverage is pooled over elements and replicates;
correlation and error use posterior means (log scale for positive quantities). The truth is not a prior draw, so
coverage is nominal only where the data dominate the prior (identified quantities); the VCP models identify
nu_c mu_g, not each factor, and their mu and capture coverage shows the prior's pull.

    nice -n 15 .venv/bin/python bench/coverage.py              # 6 models x 2 sizes x 3 replicates x 3 methods
    nice -n 15 .venv/bin/python bench/coverage.py --models bnb --sizes 50x10 --replicates 1
    .venv/bin/python bench/coverage.py --report-only
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from scribe_cli import calibration  # noqa: E402
from scribe_cli.atomic import atomic_write  # noqa: E402
from scribe_cli.config import ModelConfig, validate  # noqa: E402

MODELS = {
    "nbdm": dict(model="nbdm"),
    "zinb": dict(model="zinb"),
    "nbvcp": dict(model="nbvcp"),
    "zinbvcp": dict(model="zinbvcp"),
    "mixture2": dict(model="nbdm", components=2),
    "bnb": dict(model="nbdm", bnb=True, overdispersion_prior="horseshoe"),
}
SIZES = ((50, 10), (200, 20))  # (cells, genes)
POSITIVE = {"mu", "r", "kappa", "omega"}  # compared on the log scale
RESULTS = REPO / "out" / "coverage"
SUMMARY = REPO / "bench" / "results" / "coverage_summary.json"


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode()) % 2**31


def story(config: ModelConfig, C: int, G: int, rng: np.random.Generator) -> tuple[dict, dict]:
    """True values (Stan names and shapes) and their dims, from the generative story of the module doc."""
    K = config.components
    p = 0.3
    mu = rng.lognormal(0.0, 1.2, G)
    if K > 1:
        fold = np.where(rng.random(G) < 0.5, np.where(rng.random(G) < 0.5, 3.0, 1 / 3), 1.0)
        mu = np.column_stack([mu, mu * fold])
    r = mu * (1 - p) / p
    gdims = ("gene", "component") if K > 1 else ("gene",)
    values = {"p": p, "mu": mu, "r": r}
    dims = {"p": (), "mu": gdims, "r": gdims}
    if config.zero_inflated:
        gate = np.where(rng.random(G) < 0.3, rng.uniform(0.1, 0.5, G), 0.02)
        values["gate"], dims["gate"] = (np.column_stack([gate] * K) if K > 1 else gate), gdims
    if config.variable_capture:
        values["capture"], dims["capture"] = rng.beta(6, 4, C), ("cell",)
    if config.bnb:
        omega = np.where(rng.random(G) < 0.2, rng.uniform(0.5, 2.0, G), np.exp(-5))
        values["omega"], dims["omega"] = omega, ("gene",)
        values["kappa"], dims["kappa"] = 2 + (r + 1) / omega, gdims
    if K > 1:
        values["weights"], dims["weights"] = np.array([0.35, 0.65]), ("component",)  # ordered, as the program's
    return values, dims


def run_case(model: str, C: int, G: int, rep: int, methods: list[str], results: str) -> None:
    logging.getLogger("cmdstanpy").setLevel(logging.ERROR)
    config = validate(ModelConfig(**MODELS[model]))
    values, dims = story(config, C, G, np.random.default_rng(_seed(model, C, G, rep)))
    truth = xr.Dataset({k: (("chain", "draw", *dims[k]), np.asarray(v, dtype=float)[None, None]) for k, v in values.items()})
    counts = calibration.simulate(truth, calibration.placeholder_counts(C, G), np.random.default_rng(_seed("data", model, C, G, rep)))
    compiled = calibration.compiled_model(config)
    for method in methods:
        out = Path(results) / f"{model}_{C}x{G}" / method / f"rep_{rep:03d}.json"
        if out.exists():
            continue
        record = {"model": model, "cells": C, "genes": G, "replicate": rep, "method": method}
        with tempfile.TemporaryDirectory(prefix="coverage-fit-") as tmp:
            try:
                post, diag = calibration.fit_posterior(config, compiled, counts, method, _seed(model, method, rep), Path(tmp))
                record["diagnostics"] = diag
                record["variables"] = calibration.interval_hits(post, values)
            except Exception as exc:  # a failed fit is reported, not hidden
                record["failed"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(record)))


def summarise(results: Path) -> dict:
    rows = []
    for case in sorted(p for p in results.iterdir() if p.is_dir()):
        for mdir in sorted(p for p in case.iterdir() if p.is_dir()):
            recs = [json.loads(f.read_text()) for f in sorted(mdir.glob("rep_*.json"))]
            ok = [r for r in recs if "variables" in r]
            if not recs:
                continue
            base = {"model": recs[0]["model"], "cells": recs[0]["cells"], "genes": recs[0]["genes"],
                    "method": recs[0]["method"], "replicates": len(ok), "failed": len(recs) - len(ok)}
            if not ok:
                rows.append(base)
                continue
            base["seconds_median"] = round(float(np.median([r["diagnostics"]["seconds"] for r in ok])), 2)
            for name in ok[0]["variables"]:
                v = [r["variables"][name] for r in ok]
                t = np.concatenate([x["truth"] for x in v])
                m = np.concatenate([x["mean"] for x in v])
                n = sum(x["n"] for x in v)
                row = dict(base, variable=name, n=n,
                           cover_50=sum(x["inside_50"] for x in v) / n, cover_90=sum(x["inside_90"] for x in v) / n)
                if name in POSITIVE:
                    row["corr"] = _corr(np.log(t), np.log(m))
                    row["error"] = float(np.median(np.abs(np.log(m / t))))
                    row["error_kind"] = "median |log(mean / truth)|"
                else:
                    row["corr"] = _corr(t, m)
                    row["error"] = float(np.median(np.abs(m - t)))
                    row["error_kind"] = "median |mean - truth|"
                rows.append(row)
    return {"sizes": SIZES, "models": MODELS, "rows": rows}


def _corr(a, b) -> float | None:
    if a.size < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None  # one shared value (p, weights): correlation is meaningless
    return float(np.corrcoef(a, b)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="all", help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--methods", default=",".join(calibration.METHODS))
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--sizes", default=",".join(f"{c}x{g}" for c, g in SIZES), help="cells x genes, comma-separated")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("cmdstanpy").setLevel(logging.ERROR)
    models = list(MODELS) if args.models == "all" else args.models.split(",")
    methods = args.methods.split(",")
    sizes = [tuple(int(x) for x in size.split("x")) for size in args.sizes.split(",")]
    t = time.monotonic()
    if not args.report_only:
        for model in models:
            calibration.compiled_model(validate(ModelConfig(**MODELS[model])))
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = [pool.submit(run_case, m, C, G, rep, methods, str(args.results))
                       for m in models for C, G in sizes for rep in range(args.replicates)]
            for k, f in enumerate(as_completed(futures), 1):
                f.result()
                logging.info("coverage: %d/%d cases (%.0f s)", k, len(futures), time.monotonic() - t)
    summary = summarise(args.results)
    summary["wall_seconds_last_run"] = round(time.monotonic() - t, 1)
    if args.report_only:  # keep the wall time of the run that made the results (unknown if it was interrupted)
        summary["wall_seconds_last_run"] = json.loads(SUMMARY.read_text()).get("wall_seconds_last_run") if SUMMARY.exists() else None
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(SUMMARY, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1) + "\n"))
    import validation_doc

    validation_doc.write()
    print(json.dumps({"rows": len(summary["rows"]), "wall_seconds": summary["wall_seconds_last_run"]}))


if __name__ == "__main__":
    main()
