"""Time per log-density gradient of one configuration at two revisions of scribe-cli, on the same data.

Each revision is checked out into a temporary git worktree; its own render and standata write the program
and its data (so a change to either is measured as users get it), both programs are compiled with the
current toolchain, and each gradient is timed inside Stan as bench/likelihood_scaling.py does (unit
metric, fixed tiny step, max depth 5: sampling time / leapfrog steps), alternating A, B, A, B.

    python bench/gradient_ab.py 1da12d9 HEAD --model zinbvcp --cells 2000 --genes 500
    python bench/gradient_ab.py 1da12d9 HEAD --model nbvcp --parameterization mean-disp --cells 10000 --genes 2000
    python bench/gradient_ab.py 3cf6f2d HEAD --model nbdm --options '{"prob_prior": "gaussian"}' \
        --h5ad ../shared/data/pbmc_1k_v3.h5ad      # real counts (all genes) in place of a simulation

`--cpu-flags-a` / `--cpu-flags-b` compile that side on the toolchain built with those CPU flags (as
SCRIBE_CPU_FLAGS; "" is the portable build, built on first use) instead of the detected ones:

    python bench/gradient_ab.py HEAD HEAD --model zinbvcp --cpu-flags-a "" \
        --options '{"organism": "human", "prob_prior": "gaussian"}' \
        --h5ad /tmp/scribe-scale-data/zinbvcp_d1_10000x2000_t20000_min3.h5ad
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

_WRITE = """
import json, sys
import numpy as np, scipy.sparse as sp
from scribe_cli.config import ModelConfig, validate
from scribe_cli.render import render
from scribe_cli.standata import stan_data
config = validate(ModelConfig(**json.loads(sys.argv[1])))
X = sp.load_npz(sys.argv[2])
open(sys.argv[3] + ".stan", "w").write(render(config))
data = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in stan_data(config, X).items()}
json.dump(data, open(sys.argv[3] + ".json", "w"))
"""


def program_at(rev: str, config: dict, X_path: Path, out: Path) -> tuple[Path, Path]:
    tree = Path(tempfile.mkdtemp(prefix="scribe-ab-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
    try:
        subprocess.run([sys.executable, "-c", _WRITE, json.dumps(config), str(X_path), str(out)], check=True,
                       env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, cwd=str(tree))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)
    return out.with_suffix(".stan"), out.with_suffix(".json")


def main() -> None:
    import scipy.sparse as sp
    from likelihood_scaling import per_gradient_seconds
    from simulate import simulate

    from scribe_cli.cache import compile_program
    from scribe_cli.toolchain import use_toolchain

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev_a")
    ap.add_argument("rev_b")
    ap.add_argument("--model", default="zinbvcp")
    ap.add_argument("--parameterization", default="canonical")
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--genes", type=int, default=500)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--transcriptome", type=int, default=None,
                    help="capture models: spread M_0 over this many genes, simulate the first --genes (sparser data)")
    ap.add_argument("--options", default="{}", help="more ModelConfig options, as JSON (the CLI defaults are not applied)")
    ap.add_argument("--h5ad", type=Path, default=None, help="time on this file's counts (X) instead of a simulation")
    ap.add_argument("--cpu-flags-a", default=None, help="SCRIBE_CPU_FLAGS for A's toolchain (default: detected)")
    ap.add_argument("--cpu-flags-b", default=None, help="SCRIBE_CPU_FLAGS for B's toolchain (default: detected)")
    args = ap.parse_args()
    config = {"model": args.model, "parameterization": args.parameterization, **json.loads(args.options)}
    if args.h5ad is not None:
        import anndata

        X = sp.csr_matrix(anndata.read_h5ad(args.h5ad).X)
        where = f"{args.h5ad.stem} {X.shape[0]} x {X.shape[1]}"
    else:
        X = simulate(args.model, args.cells, args.genes, seed=3, transcriptome=args.transcriptome).X
        where = f"simulated {args.cells} x {args.genes}"
    with tempfile.TemporaryDirectory() as tmp:
        X_path = Path(tmp) / "X.npz"
        sp.save_npz(X_path, X)
        models = {}
        for label, rev, flags in (("A", args.rev_a, args.cpu_flags_a), ("B", args.rev_b, args.cpu_flags_b)):
            stan, data = program_at(rev, config, X_path, Path(tmp) / label)
            if flags is None:
                os.environ.pop("SCRIBE_CPU_FLAGS", None)
            else:
                os.environ["SCRIBE_CPU_FLAGS"] = flags
            use_toolchain()  # the toolchain of these flags (built if missing): compile_program keys on it
            models[label] = (compile_program(stan.read_text(), name=args.model).model, json.loads(data.read_text()))
        times = {"A": [], "B": []}
        for _ in range(args.repeats):
            for label in ("A", "B"):
                model, data = models[label]
                times[label].append(1e3 * per_gradient_seconds(model, data, iters=args.iters))
    a, b = np.median(times["A"]), np.median(times["B"])
    cpu = "".join(f", {label} on CPU flags {flags!r}" for label, flags in (("A", args.cpu_flags_a), ("B", args.cpu_flags_b))
                  if flags is not None)
    print(f"{args.model} ({args.parameterization}, {args.options}{cpu}), {where} "
          f"(zero fraction {1 - X.nnz / (X.shape[0] * X.shape[1]):.2f}): "
          f"{args.rev_a} {a:.2f} ms/gradient, {args.rev_b} {b:.2f} ms/gradient ({a / b:.2f}x)")
    print(json.dumps(times), file=sys.stderr)


if __name__ == "__main__":
    main()
