"""What bounds NUTS's step size and trajectory length: the spectrum of the Hessian of -log density, in the
coordinates the adapted diagonal metric makes unit-scale, at draws of a chain.

Leapfrog with step e is stable only while e * sqrt(lambda_max) < 2, where lambda_max is the largest eigenvalue of
D H D (H the Hessian of -log p in the unconstrained coordinates, D = diag(sqrt(inverse metric)), i.e. each
coordinate scaled by its posterior sd as warmup estimated it); the trajectory needed to cross the posterior
grows with 1 / sqrt(lambda_min). So the stiff eigenvectors name what holds the step size down and the soft ones
what makes the trajectories long, which the lowest-ESS lists of bench/joint_coordinates.py only hint at.
Negative eigenvalues mark non-convex places (funnels).

1. One NUTS chain of the joint program (bench/joint_coordinates.py's configuration, `--set` as there; `--base none`
   for any other configuration), with
   Stan's diagnostic file, which holds the unconstrained draws; `--from DIR` reuses a chain kept with `--keep`.
2. At `--points` draws spread over the sampling phase, the Hessian by central differences of the gradient, each
   coordinate stepped by h times its metric sd: 2 n gradient evaluations per point through the driver's
   `method=log_prob` (one process per point), so D H D comes out directly.
3. Per point: the extreme eigenvalues, the step-size bound 2 / sqrt(lambda_max), the condition number, and the
   coordinates that carry the stiffest and the softest eigenvectors. One JSON line per point.

    python bench/hessian_spectrum.py /tmp/scribe-scale-data/zinbvcp_d2_1000x500_t20000_min3.h5ad --keep /tmp/hess1
    python bench/hessian_spectrum.py /tmp/scribe-scale-data/zinbvcp_d2_1000x500_t20000_min3.h5ad --from /tmp/hess1
    python bench/hessian_spectrum.py ../shared/data/pbmc_1k_v3.h5ad --base none --top-genes 1500 \
        --set model=zinb gate_prior=neg --warmup 300 --draws 100 --keep /tmp/hess_zinb
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from cmdstanpy import write_stan_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from joint_coordinates import JOINT, _value  # noqa: E402

from scribe_cli import centring  # noqa: E402
from scribe_cli.cache import compile_program  # noqa: E402
from scribe_cli.config import ModelConfig, validate  # noqa: E402
from scribe_cli.data import read_counts, select  # noqa: E402
from scribe_cli.fit import capture_starts  # noqa: E402
from scribe_cli.render import render  # noqa: E402
from scribe_cli.standata import stan_data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("h5ad", type=Path)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--keep", help="run the chain into this directory (kept)")
    ap.add_argument("--from", dest="from_dir", help="reuse a chain kept with --keep")
    ap.add_argument("--points", type=int, default=3, help="draws at which to take the Hessian")
    ap.add_argument("--h", type=float, default=1e-4, help="difference step, in metric sds")
    ap.add_argument("--top", type=int, default=8, help="eigenvectors reported at each end")
    ap.add_argument("--base", choices=["joint", "none"], default="joint",
                    help="joint: bench/joint_coordinates.py's configuration; none: ModelConfig's defaults")
    ap.add_argument("--top-genes", type=int, help="keep the genes with the most UMIs, as `scribe run --top-genes`")
    ap.add_argument("--centred-lr", type=float, help="centring.CENTRED_LR for this run (which gates are centred)")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="change the configuration (ModelConfig fields), e.g. model=zinb gate_prior=neg")
    args = ap.parse_args()
    base = JOINT if args.base == "joint" else {}
    options = {**base, **{k: _value(v) for k, v in (kv.split("=", 1) for kv in args.set)}}
    config = validate(ModelConfig(**options))
    counts = read_counts(args.h5ad, dataset_key=options.get("dataset_key"))
    if args.top_genes:
        counts = select(counts, top_genes=args.top_genes)
    if args.centred_lr is not None:
        centring.CENTRED_LR = args.centred_lr
    data = stan_data(config, counts)
    model = compile_program(render(config), name="hessian").model
    out = args.from_dir or args.keep or tempfile.mkdtemp()
    if not args.from_dir:
        inits = capture_starts(model, data, 1, args.seed)
        t = time.monotonic()
        model.sample(data=data, chains=1, inits=inits[0] if inits else None, iter_warmup=args.warmup,
                     iter_sampling=args.draws, seed=args.seed, output_dir=out, show_progress=False,
                     save_warmup=True, save_diagnostics=True)
        print(json.dumps({"chain_s": round(time.monotonic() - t, 1), "dir": out}), flush=True)
    draws, names, sd, stepsize = read_chain(out)
    data_file = [str(Path(out) / "data.json")]
    write_stan_json(data_file[0], data)
    picks = np.linspace(len(draws) // 4, len(draws) - 1, args.points).astype(int)
    for i in picks:
        hess = scaled_hessian(model.exe_file, data_file[0], draws[i], sd, args.h, names, out)
        print(json.dumps(spectrum(hess, names, stepsize, args.top) | {"draw": int(i)}), flush=True)


def sampling_csv(out: str) -> Path:
    """The chain's output CSV in a directory this script kept (not Stan's diagnostic file, not its own scratch)."""
    return Path([f for f in glob.glob(f"{out}/*.csv") if "diagnostic" not in f and not Path(f).name.startswith("hess_")][0])


def kept_warmup(csv: Path) -> int:
    """The warmup iterations saved at the top of a chain's CSVs (its config comments), so a reused chain is cut
    where it was run, whatever --warmup says now."""
    with open(csv) as f:
        config = {k.strip(): v.split("(")[0].strip() for k, v in
                  (line.lstrip("# ").split("=", 1) for line in f if line.startswith("#") and "=" in line)}
    return int(config["num_warmup"]) if config.get("save_warmup", "0") in ("1", "true") else 0


def read_chain(out: str):
    """The sampling phase's unconstrained draws (diagnostic file), their names, the adapted metric's sds and
    step size (the output CSV's adaptation comments)."""
    diag = [f for f in glob.glob(f"{out}/*diagnostic*.csv")]
    if not diag:
        sys.exit(f"no diagnostic file in {out}: run the chain with this script (--keep)")
    csv = sampling_csv(out)
    d = pd.read_csv(diag[0], comment="#")
    first = [c for c in d.columns if c.startswith("p_")][0]
    names = [c for c in d.columns[:d.columns.get_loc(first)] if not c.endswith("__")]
    draws = d[names].to_numpy()[kept_warmup(csv):]
    lines = csv.read_text().splitlines()
    at = next(i for i, l in enumerate(lines) if l.startswith("# Diagonal elements"))
    inv_metric = np.array([float(x) for x in lines[at + 1].lstrip("# ").split(",")])
    stepsize = float(next(l for l in lines if l.startswith("# Step size")).split("=")[1])
    return draws, names, np.sqrt(inv_metric), stepsize


def scaled_hessian(exe: str, data_file: str, x: np.ndarray, sd: np.ndarray, h: float, names, out: str) -> np.ndarray:
    """D H D by central differences of the gradient along each metric-scaled coordinate (2 n evaluations)."""
    n = x.size
    steps = np.diag(h * sd)
    pts = np.vstack([x + steps, x - steps])
    pfile = Path(out) / "hess_points.csv"
    pd.DataFrame(pts, columns=names).to_csv(pfile, index=False, float_format="%.17g")
    ofile = Path(out) / "hess_grads.csv"
    subprocess.run([exe, "log_prob", f"unconstrained_params={pfile}", "jacobian=1", "data", f"file={data_file}",
                    "output", f"file={ofile}"], check=True, stdout=subprocess.DEVNULL)
    g = pd.read_csv(ofile, comment="#").to_numpy()[:, 1:]
    pfile.unlink()
    ofile.unlink()  # ~0.5-1 GB each at a few thousand parameters
    # row j of -(g(x + h sd_j e_j) - g(x - h sd_j e_j)) / (2 h) is column j of H times sd_j (H of -log p);
    # scaling its rows by sd gives D H D
    hcols = -(g[:n] - g[n:]) / (2 * h)
    hess = hcols.T * sd[:, None]
    return (hess + hess.T) / 2


def spectrum(hess: np.ndarray, names, stepsize: float, top: int) -> dict:
    w, v = np.linalg.eigh(hess)

    def carriers(k):
        vec = v[:, k]
        idx = np.argsort(-np.abs(vec))[:5]
        return {names[i]: round(float(vec[i]), 2) for i in idx}

    pos = w[w > 0]
    return {"n": int(w.size), "lambda_max": float(w[-1]), "step_bound": float(2 / np.sqrt(w[-1])),
            "adapted_step": stepsize, "lambda_min_pos": float(pos.min()) if pos.size else None,
            "negative": int((w < 0).sum()), "most_negative": float(w[0]),
            "cond": float(w[-1] / pos.min()) if pos.size else None,
            "quantiles": {q: round(float(np.quantile(w, q)), 3) for q in (0.01, 0.1, 0.5, 0.9, 0.99)},
            "stiffest": [{"lambda": round(float(w[-1 - k]), 2), "carriers": carriers(-1 - k)} for k in range(top)],
            "most_negative_vectors": [{"lambda": round(float(w[k]), 4), "carriers": carriers(k)} for k in range(top)],
            "softest_positive": [{"lambda": round(float(w[k]), 5), "carriers": carriers(k)}
                                 for k in np.flatnonzero(w > 0)[:top]]}


if __name__ == "__main__":
    main()
