"""Does starting NUTS from pathfinder draws shorten warmup? Measures it on real data.

For each setting, runs `scribe run --method nuts` (4 chains) and records the sampling wall time (including
the pathfinder run when used), max R-hat and min bulk/tail ESS. Pathfinder inits help when they let a
shorter warmup reach the same diagnostics in less total time.

    .venv/bin/python bench/pathfinder_init.py [DATA.h5ad] [--model nbdm] [--extra "--top-genes 200"]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = [("random", 1000), ("pathfinder", 1000), ("random", 300), ("pathfinder", 300), ("pathfinder", 150)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default=str(Path(__file__).resolve().parents[1] / "data" / "demo_pbmc_500genes.h5ad"))
    ap.add_argument("--extra", default="", help="more `scribe run` options, e.g. the model flags")
    ap.add_argument("--seeds", default="1,2,3")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for init, warmup in SETTINGS:
            for seed in args.seeds.split(","):
                out = Path(tmp) / f"{init}-{warmup}-{seed}.nc"
                cmd = [sys.executable, "-m", "scribe_cli.cli", "run", args.data, "-o", str(out), "--init", init,
                       "--warmup", str(warmup), "--draws", "1000", "--seed", seed, "--quiet", *shlex.split(args.extra)]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode not in (0, 3):
                    sys.exit(res.stderr)
                s = json.loads(res.stdout)
                d = s["diagnostics"]
                rows.append({"init": init, "warmup": warmup, "seed": seed, "sample_s": s["timings"]["sample"],
                             "max_rhat": round(d["max_rhat"], 4), "min_ess_bulk": round(d["min_ess_bulk"]),
                             "min_ess_tail": round(d["min_ess_tail"]), "divergences": d["divergences"]})
                print(json.dumps(rows[-1]), file=sys.stderr)
    print("| init | warmup | seed | sampling s | max R-hat | min bulk ESS | min tail ESS | divergences |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['init']} | {r['warmup']} | {r['seed']} | {r['sample_s']:.1f} | {r['max_rhat']} | {r['min_ess_bulk']} | {r['min_ess_tail']} | {r['divergences']} |")


if __name__ == "__main__":
    main()
