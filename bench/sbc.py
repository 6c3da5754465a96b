"""Simulation-based calibration (SBC) of every model, hierarchical prior family and dataset mode.

For each tiny configuration (CONFIGS: 30 cells x 5 genes, or 30 cells in 2 datasets) and each replicate i:
the truth is prior draw i (NUTS on the configuration's program with prior_only = 1, as `scribe run --prior-draws`, thinned
so that truths are close to independent); counts are simulated from it with the simulator of `scribe ppc`
(checked against the likelihood in tests/test_sbc.py); NUTS, pathfinder and ADVI fit those counts with the
options of METHODS in scribe_cli/calibration.py; the rank of each true value among L = 99 thinned posterior
draws is stored, one JSON file per (configuration, replicate, method) under --results (existing files are
skipped: the run is resumable and can be extended with more replicates). Replicates run in parallel
(--workers processes, one core each).

The report: per parameter group (a Stan variable, all its elements) a chi-square test of uniform ranks per
element, Bonferroni over the group's elements, then Holm over every group of every configuration of the same
method; a group is miscalibrated when its adjusted p-value is below 0.01. Rank histograms and ECDF-difference
plots per group go to docs/validation/sbc_<config>.png; the tables to bench/results/sbc_summary.json, from
which bench/validation_doc.py writes docs/validation.md (this script calls it). With --results elsewhere than the
default out/sbc (a partial or experimental run) the summary is printed instead, and the repository's files stay.

    nice -n 15 .venv/bin/python bench/sbc.py                               # every configuration, 100 replicates
    nice -n 15 .venv/bin/python bench/sbc.py --configs nbdm,zinb_gate_gaussian --replicates 200
    .venv/bin/python bench/sbc.py --report-only                            # tables, figures, doc from results
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from scribe_cli import calibration  # noqa: E402
from scribe_cli.atomic import atomic_write  # noqa: E402
from scribe_cli.config import ModelConfig, validate  # noqa: E402

C, G = 30, 5
# name: (ModelConfig options, datasets). Sizes: C cells x G genes, cells split in two datasets when D = 2.
# Run in this order (the base models first, then each hierarchical family per target, then the dataset modes).
CONFIGS = {
    "nbdm": (dict(model="nbdm"), 0),
    "zinb_gate_gaussian": (dict(model="zinb", gate_prior="gaussian"), 0),
    "nbvcp": (dict(model="nbvcp"), 0),
    "zinb": (dict(model="zinb"), 0),
    "mixture2": (dict(model="nbdm", components=2), 0),
    "bnb": (dict(model="nbdm", bnb=True, overdispersion_prior="horseshoe"), 0),
    "zinbvcp": (dict(model="zinbvcp"), 0),
    "zinb_gate_horseshoe": (dict(model="zinb", gate_prior="horseshoe"), 0),
    "zinb_gate_neg": (dict(model="zinb", gate_prior="neg"), 0),
    "nbdm_prob_gaussian": (dict(model="nbdm", prob_prior="gaussian"), 0),
    "nbdm_prob_horseshoe": (dict(model="nbdm", prob_prior="horseshoe"), 0),
    "nbdm_prob_neg": (dict(model="nbdm", prob_prior="neg"), 0),
    "mixture2_expression_gaussian": (dict(model="nbdm", components=2, expression_prior="gaussian"), 0),
    "mixture2_expression_horseshoe": (dict(model="nbdm", components=2, expression_prior="horseshoe"), 0),
    "mixture2_expression_neg": (dict(model="nbdm", components=2, expression_prior="neg"), 0),
    "bnb_overdispersion_neg": (dict(model="nbdm", bnb=True, overdispersion_prior="neg"), 0),
    "datasets_scalar": (dict(model="nbdm", dataset_key="dataset", expression_dataset_prior="gaussian",
                             prob_dataset_prior="gaussian", prob_dataset_mode="scalar"), 2),
    "datasets_gene_specific": (dict(model="nbdm", dataset_key="dataset", prob_dataset_prior="horseshoe",
                                    prob_dataset_mode="gene_specific"), 2),
    "datasets_two_level": (dict(model="nbdm", dataset_key="dataset", prob_dataset_prior="neg",
                                prob_dataset_mode="two_level"), 2),
}
METHODS = tuple(calibration.METHODS)
L = 99  # posterior draws each truth is ranked among: ranks 0..99, 100 values
PRIOR_THIN = 20  # keep every 20th prior draw: successive truths then have bulk ESS / n close to 1
PRIOR_BLOCK = 100  # replicates per prior run (replicate i is draw i % 100 of block i // 100)
MAX_COUNT = 10**6  # a simulated count above this (BNB's heaviest tails) would make the data tables huge
ALPHA = 0.01
RESULTS = REPO / "out" / "sbc"
SUMMARY = REPO / "bench" / "results" / "sbc_summary.json"
FIGURES = REPO / "docs" / "validation"

log = logging.getLogger("sbc")


def config_of(name: str) -> tuple[ModelConfig, int]:
    kw, D = CONFIGS[name]
    return validate(ModelConfig(**kw)), D


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode()) % 2**31


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj)))


def prior_block(name: str, block: int, results: Path):
    """Prior draws of one block of replicates, made once (NetCDF + a JSON of its checks) and reused."""
    import xarray as xr

    path = results / name / f"prior_{block}.nc"
    if not path.exists():
        config, D = config_of(name)
        counts = calibration.placeholder_counts(C, G, D)
        t = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="sbc-prior-") as tmp:
            prior, check = calibration.prior_draws(config, counts, PRIOR_BLOCK, _seed(name, "prior", block), Path(tmp),
                                                   thin=PRIOR_THIN)
        check["seconds"] = round(time.monotonic() - t, 2)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: prior.to_netcdf(tmp, engine="h5netcdf"))
        _write_json(path.with_suffix(".json"), check)
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def result_path(results: Path, name: str, method: str, rep: int) -> Path:
    return results / name / method / f"rep_{rep:04d}.json"


def run_replicate(name: str, rep: int, methods: list[str], results: str, retry_failed: bool = False) -> list[str]:
    """Simulate replicate ``rep`` of ``name`` and fit it with each method not done yet; one JSON per method."""
    logging.getLogger("cmdstanpy").setLevel(logging.ERROR)
    results = Path(results)
    config, D = config_of(name)
    counts = calibration.placeholder_counts(C, G, D)
    prior = prior_block(name, rep // PRIOR_BLOCK, results)
    truth = calibration.truth_at(prior, rep % PRIOR_BLOCK)
    data = calibration.simulate(truth, counts, np.random.default_rng(_seed(name, "data", rep)))
    done = []
    for method in methods:
        out = result_path(results, name, method, rep)
        if out.exists() and not (retry_failed and "failed" in json.loads(out.read_text())):
            continue
        record = {"config": name, "replicate": rep, "method": method, "max_count": int(data.X.max())}
        if record["max_count"] > MAX_COUNT:
            record["skipped"] = f"a simulated count of {record['max_count']} (> {MAX_COUNT})"
        else:
            with tempfile.TemporaryDirectory(prefix="sbc-fit-") as tmp:
                try:
                    fitted = config.for_method(method)  # pathfinder may sample NEG's local scales
                    post, diag = calibration.fit_posterior(fitted, calibration.compiled_model(fitted), data, method,
                                                           _seed(name, method, rep), Path(tmp))
                    skip = calibration.data_chosen_coordinates(config) | calibration.form_coordinates(config, method)
                    record["ranks"] = calibration.ranks(post, truth, L, np.random.default_rng(_seed(name, method, "ranks", rep)),
                                                        skip=skip)
                    record["diagnostics"] = diag
                except Exception as exc:  # a failed fit is a result too (counted in the report)
                    record["failed"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        _write_json(out, record)
        done.append(method)
    return done


# --- analysis -------------------------------------------------------------------------------------------

def load(results: Path, name: str, method: str) -> list[dict]:
    d = results / name / method
    return [json.loads(p.read_text()) for p in sorted(d.glob("rep_*.json"))] if d.is_dir() else []


def analyse(results: Path, names: list[str], methods: list[str]) -> dict:
    """Per configuration and method: replicates, failures, time, diagnostics, and per group the element-wise
    chi-square p-value (Bonferroni over elements); then Holm over all groups of a method."""
    out = {"L": L, "alpha": ALPHA, "cells": C, "genes": G, "configs": {}, "methods": methods}
    for name in names:
        kw, D = CONFIGS[name]
        entry = {"options": kw, "datasets": D, "methods": {}}
        prior_checks = sorted((results / name).glob("prior_*.json"))
        if prior_checks:
            checks = [json.loads(p.read_text()) for p in prior_checks]
            entry["prior"] = {"ess_bulk_over_n": min(c["ess_bulk_over_n"] for c in checks),
                              "worst": min(checks, key=lambda c: c["ess_bulk_over_n"])["worst"],
                              "divergences": sum(c["divergences"] for c in checks),
                              "seconds": round(sum(c["seconds"] for c in checks), 1)}
        for method in methods:
            recs = load(results, name, method)
            if not recs:
                continue
            ok = [r for r in recs if "ranks" in r]
            m = {"replicates": len(ok), "failed": sum("failed" in r for r in recs),
                 "skipped": sum("skipped" in r for r in recs)}
            if ok:
                secs = [r["diagnostics"]["seconds"] for r in ok]
                m["seconds_median"] = round(float(np.median(secs)), 2)
                m["seconds_total"] = round(float(np.sum(secs)), 1)
                if method == "nuts":
                    m["with_divergences"] = sum(r["diagnostics"]["divergences"] > 0 for r in ok)
                    m["rhat_over_1.01"] = sum(r["diagnostics"]["max_rhat"] > 1.01 for r in ok)
                else:
                    k = [r["diagnostics"]["pareto_k"] for r in ok]
                    m["pareto_k_median"] = round(float(np.nanmedian(k)), 2)
                groups = {}
                # records written before data_chosen_coordinates existed may hold them: not rankable
                skip = calibration.data_chosen_coordinates(config_of(name)[0])
                for g in (g for g in ok[0]["ranks"] if g not in skip):
                    r = np.array([rec["ranks"][g] for rec in ok])
                    groups[g] = {"elements": int(r.shape[1]), "p": calibration.group_pvalue(r, L + 1),
                                 "ranks": r.tolist()}
                m["groups"] = groups
            entry["methods"][method] = m
        out["configs"][name] = entry
    wall = results / "timings.tsv"  # wall time of each run of this script per configuration (main())
    if wall.exists():
        for line in wall.read_text().splitlines():
            n, reps, ms, secs, _ = line.split("\t")
            if n in out["configs"]:
                out["configs"][n].setdefault("runs", []).append({"replicates": int(reps), "methods": ms,
                                                                 "wall_seconds": float(secs)})
    for method in methods:
        tests = [(n, g) for n, e in out["configs"].items() for g, v in e["methods"].get(method, {}).get("groups", {}).items()
                 if np.isfinite(v["p"])]
        adjusted = calibration.holm([out["configs"][n]["methods"][method]["groups"][g]["p"] for n, g in tests])
        for (n, g), p in zip(tests, adjusted):
            out["configs"][n]["methods"][method]["groups"][g]["p_holm"] = p
        out.setdefault("tests", {})[method] = len(tests)
    return out


def plot_config(name: str, entry: dict, path: Path) -> None:
    """One column per parameter group: a rank histogram per method (ranks of all the group's elements pooled,
    10 bins, relative to uniform; grey: the 99% range of one element's bin), then the ECDF difference of
    every method with the 99% simultaneous band for one element (arviz, Säilynoja et al. 2022)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from arviz.stats.ecdf_utils import ecdf_confidence_band
    from scipy import stats

    methods = [m for m in entry["methods"] if entry["methods"][m].get("groups")]
    if not methods:
        return
    groups = list(entry["methods"][methods[0]]["groups"])
    colours = {"nuts": "tab:blue", "pathfinder": "tab:orange", "advi": "tab:green"}
    fig, axes = plt.subplots(len(methods) + 1, len(groups), figsize=(1.9 * len(groups) + 0.6, 1.45 * (len(methods) + 1) + 0.5),
                             squeeze=False, constrained_layout=True)
    bins = 10
    z = np.arange(1, L + 2) / (L + 1)
    for j, g in enumerate(groups):
        for i, method in enumerate(methods):
            ax = axes[i, j]
            grp = entry["methods"][method]["groups"].get(g)
            if grp is None:
                ax.axis("off")
                continue
            r = np.asarray(grp["ranks"])
            n = r.shape[0]
            lo, hi = stats.binom.ppf([0.005, 0.995], n, 1 / bins) / (n / bins)
            ax.axhspan(lo, hi, color="0.88")
            h = np.bincount(r.ravel() * bins // (L + 1), minlength=bins) / (r.size / bins)
            ax.bar(np.arange(bins), h, width=1.0, color=colours.get(method, "k"), alpha=0.75)
            ax.axhline(1.0, color="0.3", lw=0.6)
            ax.set_xticks([])
            ax.tick_params(labelsize=6)
            p = grp.get("p_holm", float("nan"))
            ax.set_title(f"{g}\n{method} p={p:.2g}" if i == 0 else f"{method} p={p:.2g}", fontsize=7,
                         color="tab:red" if p < ALPHA else "black")
        ax = axes[-1, j]
        n = len(entry["methods"][methods[0]]["groups"][g]["ranks"])
        lower, upper = ecdf_confidence_band(n, z, z, prob=0.99, method="simulated", num_trials=300,
                                            rvs=lambda size, random_state=None: np.random.default_rng(0).uniform(size=size))
        ax.fill_between(z, lower - z, upper - z, color="0.88", step="post")
        for method in methods:
            grp = entry["methods"][method]["groups"].get(g)
            if grp is None:
                continue
            r = np.asarray(grp["ranks"]).ravel()
            ecdf = (r[None, :] < (z * (L + 1))[:, None]).mean(axis=1)
            ax.step(z, ecdf - z, where="post", color=colours.get(method, "k"), lw=0.9, label=method)
        ax.axhline(0, color="0.3", lw=0.6)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("fractional rank", fontsize=6)
        if j == 0:
            ax.set_ylabel("ECDF - uniform", fontsize=7)
            ax.legend(fontsize=6, loc="lower left")
    fig.suptitle(f"SBC {name}: {json.dumps(entry['options'])}", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72, format="png")
    plt.close(fig)


def report(results: Path, names: list[str], methods: list[str], publish: bool = True) -> dict:
    """The tables, figures and docs/validation.md from the results; with ``publish`` False (a --results directory
    other than the default: a partial or experimental run) only the summary, printed, so that it does not replace
    the repository's record of every configuration."""
    summary = analyse(results, names, methods)
    slim = json.loads(json.dumps(summary))
    for entry in slim["configs"].values():
        for m in entry["methods"].values():
            for g in m.get("groups", {}).values():
                g.pop("ranks")
    if not publish:
        print(json.dumps(slim["configs"], indent=1))
        return slim
    for name, entry in summary["configs"].items():
        plot_config(name, entry, FIGURES / f"sbc_{name}.png")
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(SUMMARY, lambda tmp: Path(tmp).write_text(json.dumps(slim, indent=1) + "\n"))
    import validation_doc

    validation_doc.write()
    return slim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="all", help="comma-separated names of CONFIGS, or all")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--replicates", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--results", type=Path, default=RESULTS, help="one JSON per replicate (resumable)")
    ap.add_argument("--report-only", action="store_true", help="tables, figures and docs/validation.md from results")
    ap.add_argument("--retry-failed", action="store_true", help="refit the replicates whose fit failed")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("cmdstanpy").setLevel(logging.ERROR)
    names = list(CONFIGS) if args.configs == "all" else args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        sys.exit(f"sbc: error: unknown configuration(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    methods = args.methods.split(",")
    if not args.report_only:
        for name in names:
            t = time.monotonic()
            config, _ = config_of(name)
            for fitted in {config.for_method(m) for m in methods}:  # compile once, here, so workers only read the cache
                calibration.compiled_model(fitted)
            for b in range(-(-args.replicates // PRIOR_BLOCK)):
                prior_block(name, b, args.results)
            todo = [(name, rep) for rep in range(args.replicates)
                    if any(not result_path(args.results, name, m, rep).exists()
                           or (args.retry_failed and "failed" in json.loads(result_path(args.results, name, m, rep).read_text()))
                           for m in methods)]
            log.info("%s: compiled and prior ready (%.1f s); %d replicates to run", name, time.monotonic() - t, len(todo))
            with ProcessPoolExecutor(max_workers=args.workers) as pool:
                futures = [pool.submit(run_replicate, n, rep, methods, str(args.results), args.retry_failed) for n, rep in todo]
                for k, f in enumerate(as_completed(futures), 1):
                    f.result()
                    if k % 10 == 0 or k == len(futures):
                        log.info("%s: %d/%d replicates (%.0f s)", name, k, len(futures), time.monotonic() - t)
            with open(args.results / "timings.tsv", "a") as fh:
                fh.write(f"{name}\t{len(todo)}\t{','.join(methods)}\t{time.monotonic() - t:.1f}\t{os.cpu_count()}\n")
    all_names = [n for n in CONFIGS if (args.results / n).is_dir()]
    summary = report(args.results, all_names, list(METHODS), publish=args.results.resolve() == RESULTS.resolve())
    print(json.dumps({m: summary["tests"].get(m) for m in METHODS}))


if __name__ == "__main__":
    main()
