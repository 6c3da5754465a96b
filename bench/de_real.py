"""DE on real data with known populations: null splits and replication across protocols (docs/de.md).

Data: ../shared/data/cellbench_3cl_two_protocols.h5ad (three lung cancer cell lines, labels from genotypes,
each profiled by CEL-seq2 and by Drop-seq: two independent batches of the same populations). Genes: 500
drawn at random (seeded) among those detected in at least 10% of the cells of each protocol. Every group is
fitted separately (NBDM mean-disp, NUTS) and compared as two fits (`scribe de A.nc B.nc`).

- Null: the cells of one cell line in one protocol are split at random into two halves; every call is false.
- Replication: cell line A against cell line B in each protocol; a call replicates when the other protocol
  calls the same gene with the same sign. Welch t-test + BH on log-normalised counts is the reference.

    .venv/bin/python bench/de_real.py                 # ~12 fits of ~100 cells x 500 genes
    .venv/bin/python bench/de_real.py --markdown      # the tables of docs/de.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from de_fdr import TARGETS, run_scribe, welch_bh  # noqa: E402

from scribe_cli.reports import de as D  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "cellbench_3cl_two_protocols.h5ad"
EFFECTS = tuple(D.EFFECTS)


def load(path: Path, genes: int, seed: int):
    import anndata
    import scipy.sparse as sp

    ad = anndata.read_h5ad(path)
    X = sp.csr_matrix(ad.X)
    keep = np.ones(ad.n_vars, bool)
    for prot in ad.obs["protocol"].unique():
        sel = (ad.obs["protocol"] == prot).to_numpy()
        keep &= np.asarray((X[sel] > 0).mean(axis=0)).ravel() >= 0.10
    idx = np.sort(np.random.default_rng(seed).choice(np.flatnonzero(keep), genes, replace=False))
    return ad[:, idx].copy(), np.asarray(X[:, idx].todense(), dtype=np.int32)


def fit_groups(groups: dict[str, np.ndarray], var_names, args, tmp: Path) -> dict:
    """Fit each group's counts (cells x genes) separately; the posteriors by group name. With --keep DIR the
    posteriors are kept there and an existing one is reused (same settings: the caller's responsibility)."""
    import arviz as az

    out = {}
    for name, X in groups.items():
        path = (args.keep or tmp) / f"{name}.nc"
        t0 = time.monotonic()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            run_scribe(X, path, args, tmp, var_names=var_names)
        print(f"  {name}: {X.shape[0]} cells, {time.monotonic() - t0:.0f} s", file=sys.stderr)
        out[name] = az.from_netcdf(path).posterior.load()
    return out


def calls(post_a, post_b, args, name: str) -> dict:
    """Called genes (set of (gene, sign)) per (effect, shrink, target)."""
    comp = D.fits_comparison(post_a, post_b, name + "_A", name + "_B", seed=args.seed)
    out = {}
    for shrink in D.SHRINK:
        table = D.run_de(comp, seed=args.seed, shrink=shrink).table
        genes = table["gene"].to_numpy()
        for effect in EFFECTS:
            lt, mean = table[D.column(effect, "lfsr_tau")].to_numpy(), table[D.column(effect, "mean")].to_numpy()
            order = D.table_order(lt, mean)
            for target in TARGETS:
                c = D.pefp_calls(lt, target, order)
                out[(effect, shrink, target)] = {(g, int(np.sign(m))) for g, m in zip(genes[c], mean[c])}
    return out


def welch_calls(Xa, Xb, genes) -> dict:
    sign = np.sign(np.log1p(Xa).mean(axis=0) - np.log1p(Xb).mean(axis=0)).astype(int)
    return {("welch-t+BH", "-", t): {(g, s) for g, s, c in zip(genes, sign, welch_bh(Xa, Xb, t)) if c}
            for t in TARGETS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--genes", type=int, default=500)
    ap.add_argument("--lines", nargs=2, default=["H1975", "H2228"], help="the two cell lines compared")
    ap.add_argument("--null-line", default="H1975", help="the cell line split at random")
    ap.add_argument("--splits", type=int, default=1, help="random splits per protocol")
    ap.add_argument("--null-protocols", nargs="+", help="protocols whose --null-line is split [default: all]")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--method", default="nuts")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--keep", type=Path, help="keep the posteriors here and reuse them on the next run")
    ap.add_argument("--json", type=Path, help="write the call counts to this JSON file")
    args = ap.parse_args()
    t_start = time.monotonic()
    ad, X = load(args.data, args.genes, args.seed)
    genes = list(ad.var_names)
    obs = ad.obs
    protocols = sorted(obs["protocol"].unique())
    rng = np.random.default_rng([args.seed, 99])
    results = {"null": {}, "between": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for prot in protocols:
            in_prot = (obs["protocol"] == prot).to_numpy()
            groups = {f"{prot}_{line}": X[in_prot & (obs["cell_line"] == line).to_numpy()] for line in args.lines}
            null_cells = X[in_prot & (obs["cell_line"] == args.null_line).to_numpy()]
            for s in range(args.splits):
                perm = rng.permutation(null_cells.shape[0])  # drawn for every protocol: same splits whatever is run
                if args.null_protocols and prot not in args.null_protocols:
                    continue
                half = null_cells.shape[0] // 2
                groups[f"{prot}_split{s}_a"] = null_cells[perm[:half]]
                groups[f"{prot}_split{s}_b"] = null_cells[perm[half:]]
            posts = fit_groups(groups, genes, args, tmp)
            a, b = (f"{prot}_{line}" for line in args.lines)
            results["between"][prot] = {**calls(posts[a], posts[b], args, prot),
                                        **welch_calls(groups[a], groups[b], genes)}
            for s in range(args.splits if not args.null_protocols or prot in args.null_protocols else 0):
                a, b = f"{prot}_split{s}_a", f"{prot}_split{s}_b"
                results["null"][f"{prot}_split{s}"] = {**calls(posts[a], posts[b], args, a),
                                                       **welch_calls(groups[a], groups[b], genes)}
    keys = list(next(iter(results["between"].values())))
    p1, p2 = protocols
    rows = []
    for key in keys:
        c1, c2 = results["between"][p1][key], results["between"][p2][key]
        both = c1 & c2
        nulls = [len(v[key]) for v in results["null"].values()]
        rows.append({"effect": key[0], "shrink": key[1], "target": key[2], f"calls_{p1}": len(c1), f"calls_{p2}": len(c2),
                     "in_both": len(both), "replicated_frac": len(both) / max(min(len(c1), len(c2)), 1),
                     "null_calls": nulls})
    head = ["effect", "shrink", "target", f"calls {p1}", f"calls {p2}", "in both (same sign)",
            "replicated / smaller", "null-split calls"]
    print(f"\nDE on {args.data.name}: {args.lines[0]} vs {args.lines[1]} in each protocol, {args.null_line} split "
          f"{args.splits}x per protocol; {args.genes} genes; separate NBDM mean-disp fits ({args.chains} x {args.draws} "
          f"draws, {args.method}); {time.monotonic() - t_start:.0f} s")
    if args.markdown:
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        vals = [r["effect"], r["shrink"], f"{r['target']:.2f}", str(r[f"calls_{p1}"]), str(r[f"calls_{p2}"]),
                str(r["in_both"]), f"{r['replicated_frac']:.2f}", " ".join(map(str, r["null_calls"]))]
        print(("| " + " | ".join(vals) + " |") if args.markdown else "\t".join(vals))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
