"""Wall time and peak memory of `scribe run` on the largest bundled-reference dataset.

CellBench two protocols (../shared/data/cellbench_3cl_two_protocols.h5ad): 499 cells x 15073 genes, 3.1 M
non-zeros. Each method runs as its own `scribe run` process under GNU time (`/usr/bin/time -f`), so the peak
resident memory is the maximum over scribe and the Stan processes it waits for (GNU time reports the largest
of the process and its reaped children); the stage timings come from scribe's own JSON.

    python bench/large_dataset.py                          # pathfinder, then NUTS 4 x (1000 + 1000)
    python bench/large_dataset.py --methods nuts --warmup 500 --draws 500

Run it on a quiet machine: the numbers are wall times.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cellbench_3cl_two_protocols.h5ad"


def run(method: str, data: Path, extra: list[str], out_dir: Path) -> dict:
    out = out_dir / f"{method}.nc"
    cmd = ["/usr/bin/time", "-f", "TIME %e %U %S %M", sys.executable, "-m", "scribe_cli.cli", "run", str(data),
           "--method", method, "-o", str(out), "--overwrite", "--quiet", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"TIME ([0-9.]+) ([0-9.]+) ([0-9.]+) ([0-9]+)", proc.stderr)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"{method} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout)
    wall, user, system, rss_kb = float(m[1]), float(m[2]), float(m[3]), int(m[4])
    return {"method": method, "wall_s": wall, "cpu_s": user + system, "peak_rss_gb": rss_kb / 1024**2,
            "timings": result["timings"], "diagnostics": result["diagnostics"],
            "output_mb": out.stat().st_size / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--methods", nargs="+", default=["pathfinder", "nuts"])
    ap.add_argument("--parameterization", default="mean-disp",
                    help="mean-disp: the demo's model; a gene-specific p fits real data (README)")
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    common = ["--parameterization", args.parameterization, "--seed", str(args.seed)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            extra = common + (["--warmup", str(args.warmup), "--draws", str(args.draws)] if method == "nuts" else [])
            rows.append(run(method, args.data, extra, Path(tmp)))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"data: {args.data.name}, --parameterization {args.parameterization}")
    print("| method | settings | wall (s) | CPU (s) | sampling (s) | peak RSS (GB) | output (MB) | diagnostics |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        settings = f"4 x ({args.warmup} + {args.draws})" if r["method"] == "nuts" else "4 paths"
        d = r["diagnostics"]
        verdict = ", ".join(f"{k} {d[k]:.3g}" if isinstance(d[k], float) else f"{k} {d[k]}"
                            for k in ("max_rhat", "min_ess_bulk", "divergences", "pareto_k") if k in d)
        print(f"| {r['method']} | {settings} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['timings'].get('sample', 0):.0f} "
              f"| {r['peak_rss_gb']:.2f} | {r['output_mb']:.0f} | {verdict} |")


if __name__ == "__main__":
    main()
