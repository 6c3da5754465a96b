"""How `scribe run` scales: wall time, time per gradient, peak memory, ESS per second and recovery against
truth, per model and method, over cells and genes; writes docs/performance.md (tables + a log-log plot).

Every case is one `scribe run` process under GNU time (peak RSS is the largest of scribe and the Stan
processes it waits for). Results go to a JSON-lines file, one line per case, so an interrupted sweep
resumes where it stopped (`--redo` reruns). A case that exceeds `--timeout` is recorded as such, and larger
sizes of the same model and method are then skipped (they would time out too).

Cases (model configurations as a user would run them; the capture models with the biology-informed capture
prior `--organism human`, which bench/simulate.py's story follows):
  nbdm, zinb (--gate-prior neg), nbvcp, zinbvcp, and the seed's joint two-dataset model (zinbvcp, horseshoe on
  expression, gaussian on p, NEG on the gate), simulated with known truth over cells x genes; and the real
  datasets of ../shared/data (recovery there is against the observed gene means).
The zero-inflated capture simulations (zinbvcp, joint) keep the genes with at least 3 non-zero cells in every
dataset, as a user filters before a run (MIN_CELLS; their rows read "sim CxG, min 3").

    python bench/scale.py                       # the default grid (a few hours on 2 cores)
    python bench/scale.py --grid quick          # the smallest sizes only (minutes)
    python bench/scale.py --only nbvcp --methods nuts --sizes 10000x2000
    python bench/scale.py --report              # rewrite docs/performance.md from the results file

Time per gradient is measured inside Stan on the same program and data (NUTS with a unit metric and a fixed
tiny step, max depth 5: sampling time / leapfrog steps), as bench/likelihood_scaling.py does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "scale.jsonl"
DOC = ROOT / "docs" / "performance.md"
FIGURE = ROOT / "docs" / "performance_scaling.png"
sys.path.insert(0, str(ROOT / "bench"))

from simulate import simulate  # noqa: E402

MODELS = {  # as users run them; the CLI's default p is per gene for canonical (README "Choosing a model")
    "nbdm": ["--model", "nbdm"],
    "zinb": ["--model", "zinb", "--gate-prior", "neg"],
    # the other gene-level prior families on zinb's two targets (issue 9: each family on each target)
    "zinb-gate-gaussian": ["--model", "zinb", "--gate-prior", "gaussian"],
    "zinb-gate-horseshoe": ["--model", "zinb", "--gate-prior", "horseshoe"],
    "zinb-prob-horseshoe": ["--model", "zinb", "--prob-prior", "horseshoe"],
    "zinb-prob-neg": ["--model", "zinb", "--prob-prior", "neg"],
    # the CLI default zinb (gate without a hierarchy, p per gene with the Gaussian one)
    "zinb-default": ["--model", "zinb"],
    # one shared p: the likelihood follows C + G + T (capture_shared_p)
    "nbvcp": ["--model", "nbvcp", "--organism", "human", "--prob-prior", "none"],
    # the default p per gene: C x G zero terms (capture_cells)
    "nbvcp-pgene": ["--model", "nbvcp", "--organism", "human"],
    "zinbvcp": ["--model", "zinbvcp", "--organism", "human"],
    "joint": ["--model", "zinbvcp", "--organism", "human", "--dataset-key", "dataset",
              "--expression-dataset-prior", "horseshoe", "--prob-dataset-prior", "gaussian",
              "--zero-inflation-dataset-prior", "neg"],
}
SIM_MODEL = {"joint": "zinbvcp", "nbvcp-pgene": "nbvcp", **{m: "zinb" for m in MODELS if m.startswith("zinb-")}}
# the simulated grid's models (the zinb prior-family variants run on the real data: --only NAME --real-only)
SIMULATED = [m for m in MODELS if not m.startswith("zinb-")]
# Zero-inflated capture simulations keep only the genes with at least MIN_CELLS non-zero cells in every dataset,
# as scanpy's filter_genes(min_cells=3) per batch does. A (gene, dataset) with no counts under a gate is
# explained as well by a gate near 1 with any mean as by a small mean with no gate: its posterior is bimodal
# and no sampler mixes it (docs/performance.md, session 19; `scribe run` says so: advice.silent_gene_advice).
# The transcriptome subset leaves such genes at 1,000 cells (25 of 500 in the joint simulation); the models
# without a gate keep every gene. Their rows are labelled "sim CxG, min 3" (G as simulated, before the filter).
MIN_CELLS = 3
FILTERED = ("zinbvcp",)
TRANSCRIPTOME = 20000
GRIDS = {
    "quick": [(1000, 500)],
    "default": [(1000, 500), (1000, 2000), (10000, 500), (10000, 2000), (50000, 2000), (10000, 10000)],
}
REAL = {  # name -> (file, extra options)
    "pbmc_1k_v3 (906 x 14561)": ("pbmc_1k_v3.h5ad", []),
    "pbmc_1k_v3 top 1500 genes": ("pbmc_1k_v3.h5ad", ["--top-genes", "1500"]),
    "cellbench two protocols": ("cellbench_3cl_two_protocols.h5ad", []),
}
METHODS = ("nuts", "pathfinder", "advi")


def case_key(c: dict) -> str:
    threads = c.get("threads", 1)
    return f"{c['model']}|{c['data']}|{c['method']}" + (f"|t{threads}" if threads > 1 else "")


def method_label(c: dict) -> str:
    threads = c.get("threads", 1)
    return c["method"] + (f" ({threads} threads)" if threads > 1 else "")


def simulated_file(model: str, cells: int, genes: int, cache: Path) -> tuple[Path, Path]:
    """The h5ad of a simulated case and its truth (.npz), written once per (model, size)."""
    import anndata
    import pandas as pd

    sim_model = SIM_MODEL.get(model, model)
    datasets = 2 if model == "joint" else 1
    # capture models: the genes are a subset of a 20,000-gene transcriptome, so that the data are as sparse as
    # droplet data (~15% non-zero at 2,000 genes) rather than the whole of M_0 over the simulated genes
    transcriptome = TRANSCRIPTOME if sim_model in ("nbvcp", "zinbvcp") else None
    filtered = sim_model in FILTERED
    stem = cache / (f"{sim_model}_d{datasets}_{cells}x{genes}{f'_t{transcriptome}' if transcriptome else ''}"
                    + (f"_min{MIN_CELLS}" if filtered else ""))
    h5, npz = stem.with_suffix(".h5ad"), stem.with_suffix(".npz")
    if not h5.exists():
        sim = simulate(sim_model, cells, genes, seed=cells + genes, datasets=datasets, shared_p=True,
                       transcriptome=transcriptome)
        obs = pd.DataFrame(sim.obs, index=[f"c{i}" for i in range(cells)])
        if "dataset" in obs:
            obs["dataset"] = obs["dataset"].astype("category")
        X, truth = sim.X, {k: np.asarray(v) for k, v in sim.truth.items()}
        keep = np.arange(genes)
        if filtered:
            keep = expressed_genes(X, obs["dataset"].cat.codes.to_numpy() if "dataset" in obs else np.zeros(cells, int))
            X = X[:, keep]
            truth = {k: v[keep] if v.ndim and v.shape[0] == genes and k != "capture" else v for k, v in truth.items()}
        ad = anndata.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in keep]))
        ad.write_h5ad(h5)
        np.savez(npz, **truth)
    return h5, npz


def expressed_genes(X, cell_dataset: np.ndarray) -> np.ndarray:
    """Indices of the genes with at least MIN_CELLS non-zero cells in every dataset."""
    import scipy.sparse as sp

    X = sp.csr_matrix(X)
    nonzero = [np.diff(X[cell_dataset == d].tocsc().indptr) for d in np.unique(cell_dataset)]
    return np.flatnonzero(np.min(nonzero, axis=0) >= MIN_CELLS)


def recovery(post_path: Path, truth: dict | None, observed_mean: np.ndarray | None, vcp: bool) -> dict:
    """Log gene-mean correlation, median relative error and 90% / 50% interval coverage of the true means.

    With capture only mu_g x capture is identified by the likelihood: the capture prior pins the scale, but
    the comparison stays on the identified quantity, each draw's mu divided by its geometric mean (and the
    truth by its own). Real data: the posterior mean of the observed-scale mean against the observed mean.

    Zero-inflated models also report ``coverage90_after_gate``: the same coverage for (1 - gate) mu, the mean the
    counts pin. A gene with a handful of non-zeros cannot tell its gate from its mu (docs/performance.md, session
    22: those genes' gate posterior follows its prior), so mu's coverage mixes the approximation's error with
    the prior's; this one measures the approximation on an identified quantity.
    """
    import arviz as az

    post = az.from_netcdf(post_path).posterior
    if "mu" not in post:
        return {}
    mu = post["mu"].values.reshape(-1, post["mu"].shape[-1]) if post["mu"].ndim == 3 else None
    if mu is None:  # per dataset: the first dataset's column
        mu = post["mu"].values[..., 0].reshape(-1, post["mu"].shape[2])
    out = {}

    def identified(draws: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not vcp:
            return draws, true
        return draws / np.exp(np.log(draws).mean(axis=1, keepdims=True)), true / np.exp(np.log(true).mean())

    if truth is not None:
        mu, true = identified(mu, truth["mu"])
        est = mu.mean(axis=0)
        lo90, hi90 = np.quantile(mu, [0.05, 0.95], axis=0)
        lo50, hi50 = np.quantile(mu, [0.25, 0.75], axis=0)
        out.update(log_mean_corr=float(np.corrcoef(np.log(est), np.log(true))[0, 1]),
                   median_rel_err=float(np.median(np.abs(est - true) / true)),
                   coverage90=float(np.mean((lo90 <= true) & (true <= hi90))),
                   coverage50=float(np.mean((lo50 <= true) & (true <= hi50))),
                   median_ci90_width=float(np.median((hi90 - lo90) / true)))
        if "gate" in truth and "gate" in post and post["gate"].ndim == 3:
            kept, true_kept = identified((1.0 - post["gate"].values.reshape(mu.shape)) * mu, (1.0 - truth["gate"]) * true)
            lo90, hi90 = np.quantile(kept, [0.05, 0.95], axis=0)
            out["coverage90_after_gate"] = float(np.mean((lo90 <= true_kept) & (true_kept <= hi90)))
    elif observed_mean is not None and not vcp:
        est = mu.mean(axis=0)
        out.update(median_ratio_to_observed=float(np.median(est / np.maximum(observed_mean, 1e-12))),
                   log_mean_corr=float(np.corrcoef(np.log(est), np.log(np.maximum(observed_mean, 1e-12)))[0, 1]))
    return out


def per_gradient_ms(options: list[str], data: Path) -> float:
    """One log-density gradient of the case's program on its data, timed inside Stan (see the module doc).

    The configuration comes from `scribe run`'s own option parser, so it is the program the case ran.
    """
    from likelihood_scaling import per_gradient_seconds  # bench/ is on sys.path

    from scribe_cli.cache import compile_program
    from scribe_cli.cli import run as run_command
    from scribe_cli.cli_options import MODEL_OPTION_NAMES, model_config_from_options
    from scribe_cli.data import assign_datasets, read_counts, select
    from scribe_cli.render import render
    from scribe_cli.standata import stan_data

    params = run_command.make_context("run", [str(data), *options]).params
    config = model_config_from_options(**{k: v for k, v in params.items() if k in MODEL_OPTION_NAMES})
    counts = read_counts(data)
    if config.dataset_key:
        counts = assign_datasets(counts, config.dataset_key)
    counts = select(counts, top_genes=params.get("top_genes"))
    model = compile_program(render(config), name="scale").model
    standata = stan_data(config, counts)
    probe = per_gradient_seconds(model, standata, iters=2)
    iters = int(np.clip(20.0 / max(probe * 31, 1e-6), 2, 40))  # about 20 s of gradients at most
    return 1e3 * per_gradient_seconds(model, standata, iters=iters)


def run_case(case: dict, data: Path, truth: dict | None, timeout: float, warmup: int, draws: int,
             keep: Path | None = None) -> dict:
    options = MODELS[case["model"]] + case.get("extra", [])
    if case.get("threads", 1) > 1:
        options = options + ["--threads-per-chain", str(case["threads"])]
    method = case["method"]
    if method == "nuts":
        options = options + ["--warmup", str(warmup), "--draws", str(draws)]
    with tempfile.TemporaryDirectory(prefix="scribe-scale-") as tmp:
        out = Path(tmp) / "post.nc"
        cmd = ["/usr/bin/time", "-f", "TIME %e %U %S %M", sys.executable, "-m", "scribe_cli.cli", "run", str(data),
               "--method", method, "-o", str(out), "--quiet", "--seed", "1", *options]
        t0 = time.monotonic()
        # its own process group: on timeout the whole run goes (time, scribe and the Stan processes under it),
        # not only /usr/bin/time, which once left a sampler running for an hour after its case was recorded
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
            return {**case, "status": "timeout", "wall_s": round(time.monotonic() - t0, 1)}
        proc = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
        m = re.search(r"TIME ([0-9.]+) ([0-9.]+) ([0-9.]+) ([0-9]+)", proc.stderr)
        if proc.returncode not in (0, 3) or not m:
            said = [line for line in proc.stderr.strip().splitlines()  # without GNU time's own lines
                    if not line.startswith(("TIME ", "Command exited with"))]
            return {**case, "status": f"exit {proc.returncode}", "error": said[-1:]}
        res = json.loads(proc.stdout)
        diag = res["diagnostics"]
        sample_s = res["timings"].get("sample") or res["timings"].get("fit")
        row = {**case, "options": " ".join(options), "status": "ok", "wall_s": float(m[1]), "cpu_s": float(m[2]) + float(m[3]),
               "peak_rss_gb": int(m[4]) / 1024**2, "fit_s": sample_s, "timings": res["timings"],
               "diagnostics": {k: diag.get(k) for k in ("max_rhat", "min_ess_bulk", "min_ess_tail", "divergences",
                                                        "treedepth_hits", "pareto_k", "ok", "worst")}}
        if method == "nuts" and diag.get("min_ess_bulk") and sample_s:
            row["ess_bulk_per_s"] = diag["min_ess_bulk"] / sample_s
        observed = None
        if truth is None:
            import anndata

            X = anndata.read_h5ad(data).X
            observed = np.asarray(X.mean(axis=0)).ravel()
        if case.get("extra"):  # gene selection on real data: recovery on the same genes would need them; skip
            observed = None
        row.update(recovery(out, truth, observed, vcp=SIM_MODEL.get(case["model"], case["model"]) in ("nbvcp", "zinbvcp")))
        if keep is not None:  # the posterior, to look into a case's diagnostics afterwards
            keep.mkdir(parents=True, exist_ok=True)
            shutil.move(out, keep / (re.sub(r"[^A-Za-z0-9._-]+", "_", case_key(case)) + ".nc"))
    return row


def load_results() -> dict:
    rows = {}
    if RESULTS.exists():
        for line in RESULTS.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows[case_key(r)] = r
    return rows


def append_result(row: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")


def cases(args) -> list[dict]:
    out = []
    sizes = [tuple(map(int, s.split("x"))) for s in args.sizes] if args.sizes else GRIDS[args.grid]
    if args.real_only:
        sizes = []
    for model in args.only or SIMULATED:
        for cells, genes in sizes:
            for method in args.methods:
                label = f"sim {cells}x{genes}" + (f", min {MIN_CELLS}" if SIM_MODEL.get(model, model) in FILTERED else "")
                out.append({"model": model, "data": label, "cells": cells, "genes": genes,
                            "method": method})
                if args.threads_per_chain > 1:
                    out[-1]["threads"] = args.threads_per_chain
    if args.real or args.real_only:
        for label, (file, extra) in REAL.items():
            if args.datasets and label not in args.datasets:
                continue
            for model in args.only or ("nbdm", "zinb"):
                for method in args.methods:
                    out.append({"model": model, "data": label, "file": file, "extra": extra, "method": method})
                    if args.threads_per_chain > 1:
                        out[-1]["threads"] = args.threads_per_chain
    return out


def case_data(case: dict, cache: Path) -> tuple[Path, dict | None]:
    """The case's h5ad and its truth (None for the real datasets)."""
    if "file" in case:
        return SHARED / case["file"], None
    data, npz = simulated_file(case["model"], case["cells"], case["genes"], cache)
    return data, dict(np.load(npz))


def sweep(args) -> None:
    done = load_results()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    for case in cases(args):
        key = case_key(case)
        if args.gradient_only:
            if done.get(key, {}).get("status") == "ok":
                row = dict(done[key])
                data, _ = case_data(case, cache)
                row["ms_per_gradient"] = per_gradient_ms(MODELS[case["model"]] + case.get("extra", []), data)
                print(f"scale: {key}: {row['ms_per_gradient']:.3f} ms per gradient", file=sys.stderr, flush=True)
                append_result(row)
            continue
        if key in done and not args.redo:
            continue
        # (not the case itself: --redo reruns a case that timed out)
        bigger_than_failed = [r for r in done.values() if r.get("status") == "timeout" and r["model"] == case["model"]
                              and case_key(r) != key
                              and case_key(r).split("|")[2:] == key.split("|")[2:] and "cells" in case and "cells" in r
                              and case["cells"] >= r["cells"] and case["genes"] >= r["genes"]]
        if bigger_than_failed:
            row = {**case, "status": "skipped", "why": f"{bigger_than_failed[0]['data']} timed out"}
        else:
            data, truth = case_data(case, cache)
            print(f"scale: {key} ...", file=sys.stderr, flush=True)
            row = run_case(case, data, truth, args.timeout, args.warmup, args.draws,
                           keep=Path(args.keep) if args.keep else None)
            row["warmup"], row["draws"] = args.warmup, args.draws
            if row["status"] == "ok" and not args.no_gradient:
                row["ms_per_gradient"] = per_gradient_ms(MODELS[case["model"]] + case.get("extra", []), data)
        print(json.dumps(row), file=sys.stderr, flush=True)
        append_result(row)
        done[key] = row


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def report() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(load_results().values())
    lines = ["| model | data | method | status | wall (s) | fit (s) | ms / gradient | peak RSS (GB) | max R-hat | "
             "min bulk ESS | ESS/s | divergences | Pareto k | log-mean corr | 90% cover | 50% cover | "
             "90% cover, (1 - gate) mu |",
             "|---" * 17 + "|"]
    for r in sorted(rows, key=lambda r: (r["model"], r.get("cells", 0) * r.get("genes", 0), r["data"], r["method"])):
        d = r.get("diagnostics", {})
        lines.append(
            f"| {r['model']} | {r['data']} | {method_label(r)} | {r['status']} | {_fmt(r.get('wall_s'), '.0f')} | "
            f"{_fmt(r.get('fit_s'), '.0f')} | {_fmt(r.get('ms_per_gradient'), '.2f')} | {_fmt(r.get('peak_rss_gb'), '.2f')} | "
            f"{_fmt(d.get('max_rhat'), '.3f')} | {_fmt(d.get('min_ess_bulk'), '.0f')} | {_fmt(r.get('ess_bulk_per_s'), '.2f')} | "
            f"{_fmt(d.get('divergences'), 'd')} | {_fmt(d.get('pareto_k'), '.2f')} | {_fmt(r.get('log_mean_corr'), '.4f')} | "
            f"{_fmt(r.get('coverage90'), '.2f')} | {_fmt(r.get('coverage50'), '.2f')} | "
            f"{_fmt(r.get('coverage90_after_gate'), '.2f')} |")
    fig, axes = plt.subplots(1, len(METHODS), figsize=(5 * len(METHODS), 4), sharey=True)
    for ax, method in zip(axes, METHODS):
        for model in MODELS:
            pts = sorted((r["cells"] * r["genes"], r["wall_s"]) for r in rows if r["model"] == model
                         and r["method"] == method and r["status"] == "ok" and "cells" in r)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=model)
        ax.set(xscale="log", yscale="log", xlabel="cells x genes", title=method)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("wall time of scribe run (s)")
    axes[0].legend()
    fig.tight_layout()
    DOC.parent.mkdir(exist_ok=True)
    fig.savefig(FIGURE, dpi=110)
    head = DOC.read_text().split("<!-- scale.py table -->")[0] if DOC.exists() else "# Performance\n\n"
    DOC.write_text(head + "<!-- scale.py table -->\n" + "\n".join(lines) + "\n\n"
                   f"![wall time against size]({FIGURE.name})\n")
    print(f"wrote {DOC} and {FIGURE}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", choices=list(GRIDS), default="default")
    ap.add_argument("--sizes", nargs="*", help="CELLSxGENES sizes, in place of the grid")
    ap.add_argument("--only", nargs="*", choices=list(MODELS), help="models (default: all)")
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    ap.add_argument("--real", action="store_true", help="also the real datasets of ../shared/data")
    ap.add_argument("--real-only", action="store_true", help="only the real datasets")
    ap.add_argument("--datasets", nargs="*", help="which real datasets (labels of REAL; default all)")
    ap.add_argument("--threads-per-chain", type=int, default=1,
                    help="passed to scribe run (reduce_sum threads; for ADVI its one process's threads)")
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "scribe-scale-data"))
    ap.add_argument("--redo", action="store_true", help="rerun cases already in the results file")
    ap.add_argument("--keep", help="move each finished case's posterior (NetCDF) into this directory")
    ap.add_argument("--no-gradient", action="store_true", help="skip the per-gradient timing")
    ap.add_argument("--gradient-only", action="store_true",
                    help="only re-measure the time per gradient of the selected cases already in the results")
    ap.add_argument("--report", action="store_true", help="only rewrite docs/performance.md from the results")
    args = ap.parse_args()
    if not args.report:
        sweep(args)
    report()


if __name__ == "__main__":
    main()
