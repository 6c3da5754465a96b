"""DE error rates and power on simulated truth, for each way of forming the groups (spec de.md; docs/de.md).

Counts of two groups are simulated from NB(mu_g, r_g) with the same sizes r_g in both groups and known fold
changes on a fraction of the genes (mu_A = fc * mu_B; |log fc| in {log 2, log 3, log 4}, random sign); every
other gene is identical in the two groups (a null). Group A has fewer cells than group B (so that a mixture's
ordered weights put A in component 0). The posterior comes from one of these groupings:

- ``fits``: `scribe run` on each group separately (NBDM mean-disp: gene-specific mu and r), compared as two
  fits (`scribe de A.nc B.nc`: draws paired by index);
- ``datasets``: one joint fit of both groups with ``--dataset-key group --expression-dataset-prior gaussian``
  (each gene's mean per dataset around a shared mean), compared with ``--datasets A B``;
- ``components``: one 2-component NBDM mixture fit of the pooled cells, compared with ``--components 0 1``
  (the labels are not given to the fit; component 0 has the smaller weight, i.e. group A). The chains start
  at k-means clusters of the cells (``--mixture-init kmeans``, passed as ``scribe run --init FILE.json``):
  from Stan's random starts, or pathfinder's, one component takes every cell and the fit calls nothing;
- ``conjugate``: no Stan: r_g fixed at the truth and the conjugate posterior of p_g (p ~ Beta(1, 1)), so
  mu_g = r_g p_g / (1 - p_g). It ignores the uncertainty of r: a check of the DE arithmetic.

For every effect (clr-mu, lfc, lvr, clr-draws) and every --shrink (npmle, ash, none), the PEFP calls at each
target are compared with the truth: a call is false when the gene's true effect is zero or of the other
sign. Reported per grouping, effect and target: the mean realised false discovery proportion (FDP = false
calls / calls, 0 when nothing is called) over replicates with its Monte Carlo standard error, the pooled FDP
(all false calls / all calls), the mean number of calls and the power (true genes called / true genes). A
Welch t-test on log-normalised counts with Benjamini-Hochberg at the same target is the frequentist
reference (it tests the LFC's null hypothesis, without a threshold tau).

    .venv/bin/python bench/de_fdr.py --grouping conjugate --reps 50        # seconds a replicate, no Stan
    S="--cells-a 80 --cells-b 120 --genes 150 --warmup 200 --draws 300"    # the NUTS tables of docs/de.md:
    .venv/bin/python bench/de_fdr.py --grouping fits --reps 10 $S --keep K --json fits.json    # ~1 min a replicate
    .venv/bin/python bench/de_fdr.py --grouping components --frac-de 0.3 --reps 10 $S --keep K30 --json comp.json
    .venv/bin/python bench/de_fdr.py --from-json fits.json comp.json --markdown --only clr-mu:npmle lfc:npmle
    .venv/bin/python bench/de_fdr.py --from-json fits.json comp.json --plot fdp.png     # FDP and power figure
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scribe_cli.reports import de as D  # noqa: E402

TARGETS = (0.01, 0.05, 0.10, 0.20)
GROUPINGS = ("fits", "datasets", "components")
EFFECTS = tuple(D.EFFECTS)


def simulate(rng, cells_a: int, cells_b: int, genes: int, frac: float):
    r = rng.lognormal(math.log(4.0), 1.0, genes)
    mu_b = rng.lognormal(math.log(2.0), 1.2, genes)
    n_de = int(round(frac * genes))
    de_idx = rng.choice(genes, n_de, replace=False)
    log_fc = np.zeros(genes)
    log_fc[de_idx] = rng.choice([math.log(2), math.log(3), math.log(4)], n_de) * rng.choice([-1, 1], n_de)
    mu_a = mu_b * np.exp(log_fc)

    def counts(mu, cells):
        # numpy's negative_binomial(n, q): failures before n successes, mean n (1 - q) / q -> q = r / (r + mu)
        return rng.negative_binomial(r, r / (r + mu), size=(cells, genes)).astype(np.int32)

    return {"r": r, "mu_a": mu_a, "mu_b": mu_b, "log_fc": log_fc,
            "X_a": counts(mu_a, cells_a), "X_b": counts(mu_b, cells_b)}


def true_effects(sim) -> dict[str, np.ndarray]:
    """The simulation's effect per gene for each --effect (zero exactly on the null genes)."""
    lvr = D.lvr(sim["mu_a"], sim["r"], sim["mu_b"], sim["r"])
    lfc = sim["log_fc"]
    return {"clr-mu": lfc, "lfc": lfc, "clr-draws": lfc, "lvr": np.where(lfc == 0, 0.0, lvr)}


def conjugate_group(rng, X, r, draws: int) -> D.Group:
    C = X.shape[0]
    p = rng.beta(1 + X.sum(axis=0), 1 + C * r, size=(draws, X.shape[1]))
    return D.Group("", r * p / (1 - p), np.broadcast_to(r, p.shape).copy())


def run_scribe(X, path: Path, args, tmp: Path, extra=(), groups=None, var_names=None) -> None:
    """`scribe run` (NBDM mean-disp) on the counts X (cells x genes), writing the posterior to ``path``."""
    import anndata
    import pandas as pd
    import scipy.sparse as sp

    h5 = tmp / f"{path.stem}.h5ad"
    ad = anndata.AnnData(X=sp.csr_matrix(X))
    ad.var_names = list(var_names) if var_names is not None else [f"g{i}" for i in range(X.shape[1])]
    if groups is not None:
        ad.obs = pd.DataFrame({"group": groups}, index=[f"c{i}" for i in range(X.shape[0])])
    ad.write_h5ad(h5)
    cmd = [sys.executable, "-m", "scribe_cli.cli", "run", str(h5), "-o", str(path), "--model", "nbdm",
           "--parameterization", "mean-disp", "--method", args.method, "--chains", str(args.chains),
           "--warmup", str(args.warmup), "--draws", str(args.draws), "--seed", str(args.seed), "--quiet", *extra]
    if "--init" not in extra:
        cmd += ["--init", getattr(args, "init", "random")]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        raise SystemExit(f"scribe run failed:\n{res.stderr}")
    diag = json.loads(res.stdout)["diagnostics"]
    print(f"  fit {path.name}: max R-hat {diag.get('max_rhat')}, min bulk ESS {diag.get('min_ess_bulk')}, "
          f"divergences {diag.get('divergences')}", file=sys.stderr)


def comparison(grouping: str, sim, args, rng) -> D.Comparison:
    genes = [f"g{i}" for i in range(sim["r"].size)]
    if grouping == "conjugate":
        S = args.chains * args.draws
        ga, gb = conjugate_group(rng, sim["X_a"], sim["r"], S), conjugate_group(rng, sim["X_b"], sim["r"], S)
        return D.Comparison("fits", "A", "B", [(ga, gb)], np.ones(1), genes)
    import arviz as az

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if grouping == "fits":
            run_scribe(sim["X_a"], tmp / "A.nc", args, tmp)
            run_scribe(sim["X_b"], tmp / "B.nc", args, tmp)
            pa, pb = (az.from_netcdf(tmp / f"{x}.nc").posterior.load() for x in "AB")
            return D.fits_comparison(pa, pb, "A.nc", "B.nc", seed=args.seed)
        X = np.vstack([sim["X_a"], sim["X_b"]])
        labels = ["A"] * sim["X_a"].shape[0] + ["B"] * sim["X_b"].shape[0]
        if grouping == "datasets":
            run_scribe(X, tmp / "joint.nc", args, tmp, groups=labels,
                       extra=["--dataset-key", "group", "--expression-dataset-prior", "gaussian"])
            post = az.from_netcdf(tmp / "joint.nc").posterior.load()
            return D.datasets_comparison(post, ["A"], ["B"])
        extra = ["--components", "2"]
        if args.mixture_init == "kmeans":
            extra += ["--init", str(kmeans_init(X, tmp / "init.json", args.seed))]
        run_scribe(X, tmp / "mix.nc", args, tmp, extra=extra)
        post = az.from_netcdf(tmp / "mix.nc").posterior.load()
        return D.components_comparison(post, ["0"], ["1"])


def kmeans_init(X, path: Path, seed: int, k: int = 2, restarts: int = 10) -> Path:
    """Starting values for a k-component NBDM mean-disp mixture from k-means (best of ``restarts``) on the top
    10 principal components of log-normalised counts, as a user would cluster before fitting: from Stan's
    random starts one component takes every cell and the other stays empty (R-hat ~1.8, no calls).
    Components are numbered by increasing size, as the fit orders them by weight."""
    from scipy.cluster.vq import kmeans2

    X = np.asarray(X, dtype=float)
    L = np.log1p(X / np.maximum(X.sum(axis=1, keepdims=True), 1) * X.sum(axis=1).mean())
    L -= L.mean(axis=0)
    U, s, _ = np.linalg.svd(L, full_matrices=False)
    Z = U[:, :10] * s[:10]
    best = None
    for i in range(restarts):
        centres, lab = kmeans2(Z, k, seed=seed * 1000 + i, minit="++")
        inertia = float(((Z - centres[lab]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, lab)
    lab = best[1]
    order = np.argsort(np.bincount(lab, minlength=k), kind="stable")
    mu, r = np.empty((X.shape[1], k)), np.empty((X.shape[1], k))
    for j, c in enumerate(order):
        Xc = X[lab == c]
        m, v = Xc.mean(axis=0) + 0.05, Xc.var(axis=0)
        mu[:, j] = m
        # moment estimate of the NB size, kept in a range the prior and the sampler start well from
        r[:, j] = np.clip(m ** 2 / np.maximum(v - m, 1e-3), 0.1, 100.0)
    sizes = np.sort(np.bincount(lab, minlength=k)).astype(float)
    weights_raw = sizes / sizes.sum() + 1e-3 * np.arange(k)  # strictly increasing (positive_ordered)
    path.write_text(json.dumps({"mu": mu.tolist(), "r": r.tolist(), "weights_raw": weights_raw.tolist()}))
    return path


def welch_bh(X_a, X_b, target: float) -> np.ndarray:
    """The usual frequentist reference: Welch t-test per gene on log1p(counts / library size x 10^4), BH at
    ``target`` (scipy's false_discovery_control)."""
    from scipy import stats

    def lognorm(X):
        X = np.asarray(X, dtype=float)
        return np.log1p(X / np.maximum(X.sum(axis=1, keepdims=True), 1) * 1e4)

    t = stats.ttest_ind(lognorm(X_a), lognorm(X_b), equal_var=False)
    p = np.where(np.isfinite(t.pvalue), t.pvalue, 1.0)
    return stats.false_discovery_control(p) <= target


def score(called: np.ndarray, truth: np.ndarray, est_sign: np.ndarray) -> dict:
    is_true = truth != 0
    false = called & (~is_true | (np.sign(est_sign) != np.sign(truth)))
    n = int(called.sum())
    return {"called": n, "false": int(false.sum()), "fdp": false.sum() / max(n, 1),
            "power": float((called & is_true & ~false).sum() / max(is_true.sum(), 1))}


def kept_comparison(grouping: str, rep: int, sim, args, rng) -> D.Comparison:
    """comparison(), or the one saved by an earlier run with the same --keep directory (the draws of mu and r
    of the two groups), so that the DE settings can be revisited without refitting."""
    if not args.keep:
        return comparison(grouping, sim, args, rng)
    path = args.keep / f"{grouping}_rep{rep}_seed{args.seed}.npz"
    if path.exists():
        z = np.load(path)
        ga, gb = D.Group("A", z["mu_a"], z["r_a"]), D.Group("B", z["mu_b"], z["r_b"])
        return D.Comparison(grouping, "A", "B", [(ga, gb)], np.ones(1), [f"g{i}" for i in range(z["mu_a"].shape[1])])
    comp = comparison(grouping, sim, args, rng)
    (ga, gb), = comp.pairs
    args.keep.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu_a=ga.mu, r_a=ga.r, mu_b=gb.mu, r_b=gb.r)
    return comp


def replicate(grouping: str, rep: int, args) -> list[dict]:
    rng = np.random.default_rng([args.seed, rep])
    sim = simulate(rng, args.cells_a, args.cells_b, args.genes, args.frac_de)
    t0 = time.monotonic()
    comp = kept_comparison(grouping, rep, sim, args, rng)
    t_post = time.monotonic() - t0
    truth = true_effects(sim)
    # the check `scribe de` warns on (chains in different modes); draws are stored chain after chain
    max_rhat = float(np.nanmax([D.split_rhat(np.log(g.mu).reshape(args.chains, -1, g.mu.shape[1]))
                                for g in comp.pairs[0]]))
    gene_idx = np.array([int(g[1:]) for g in comp.genes])
    rows = []
    t0 = time.monotonic()
    for shrink in D.SHRINK:
        # one run_de per shrink setting gives every effect's evidence; calls at each target from lfsr_tau
        table = D.run_de(comp, tau=args.tau, seed=args.seed, shrink=shrink).table
        table_idx = gene_idx[[comp.genes.index(g) for g in table["gene"]]]
        for effect in EFFECTS:
            lt = table[D.column(effect, "lfsr_tau")].to_numpy()
            order = D.table_order(lt, table[D.column(effect, "mean")].to_numpy())
            for target in TARGETS:
                called = D.pefp_calls(lt, target, order)
                rows.append({"grouping": grouping, "rep": rep, "effect": effect, "shrink": shrink, "target": target,
                             "max_rhat": max_rhat, "clr_centre": float(truth["lfc"].mean()),
                             **score(called, truth[effect][table_idx], table[D.column(effect, "mean")].to_numpy())})
    for target in TARGETS:
        called = welch_bh(sim["X_a"], sim["X_b"], target)
        rows.append({"grouping": grouping, "rep": rep, "effect": "welch-t+BH", "shrink": "-", "target": target,
                     "max_rhat": max_rhat, **score(called, truth["lfc"], sim["X_a"].mean(axis=0) - sim["X_b"].mean(axis=0))})
    print(f"{grouping} rep {rep}: posterior {t_post:.1f} s (max split R-hat of log mu {max_rhat:.3f}), "
          f"DE {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return rows


def aggregate(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["grouping"], r["effect"], r["shrink"], r["target"]) for r in rows},
                  key=lambda k: (k[0], list(EFFECTS).index(k[1]) if k[1] in EFFECTS else 99, k[2], k[3]))
    for key in keys:
        sel = [r for r in rows if (r["grouping"], r["effect"], r["shrink"], r["target"]) == key]
        fdp = np.array([r["fdp"] for r in sel])
        calls = sum(r["called"] for r in sel)
        out.append({"grouping": key[0], "effect": key[1], "shrink": key[2], "target": key[3], "reps": len(sel),
                    "fdp": float(fdp.mean()), "fdp_se": float(fdp.std(ddof=1) / math.sqrt(len(sel))) if len(sel) > 1 else float("nan"),
                    "pooled_fdp": sum(r["false"] for r in sel) / max(calls, 1),
                    "called": calls / len(sel), "power": float(np.mean([r["power"] for r in sel])),
                    # replicates `scribe de` warns about (rows saved before the check count as not flagged)
                    "flagged": sum(r.get("max_rhat", 1.0) > D.RHAT_WARN for r in sel)})
    return out


def print_table(agg: list[dict], markdown: bool, only: list[str] | None = None) -> None:
    if only:
        agg = [a for a in agg if f"{a['effect']}:{a['shrink']}" in only]
    head = ["grouping", "effect", "shrink", "target", "reps", "mean FDP", "+- SE", "pooled FDP", "calls", "power",
            "R-hat > 1.1"]
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
    else:
        print("\t".join(head))
    for a in agg:
        vals = [a["grouping"], a["effect"], a["shrink"], f"{a['target']:.2f}", str(a["reps"]), f"{a['fdp']:.3f}",
                f"{a['fdp_se']:.3f}", f"{a['pooled_fdp']:.3f}", f"{a['called']:.1f}", f"{a['power']:.3f}", str(a["flagged"])]
        print(("| " + " | ".join(vals) + " |") if markdown else "\t".join(vals))


def plot(agg: list[dict], path: Path) -> None:
    """Realised FDP (+- 2 Monte Carlo SE) and power against the target, per grouping, for the default shrink."""
    import matplotlib
    matplotlib.use("Agg")  # headless: write the file, never open a window
    import matplotlib.pyplot as plt

    fig, (ax_fdp, ax_pow) = plt.subplots(1, 2, figsize=(10, 4.2))
    groupings = [g for g in (*GROUPINGS, "conjugate") if any(a["grouping"] == g for a in agg)]
    for i, g in enumerate(groupings):
        for effect, style in (("lfc", "-"), ("clr-mu", "--")):
            sel = sorted((a for a in agg if (a["grouping"], a["effect"], a["shrink"]) == (g, effect, "npmle")),
                         key=lambda a: a["target"])
            if not sel:
                continue
            # nudge each curve sideways so that error bars at the same target do not hide each other
            x = np.array([a["target"] for a in sel]) + 0.002 * (2 * i + (effect == "clr-mu") - len(groupings) + 0.5)
            kw = dict(color=f"C{i}", ls=style, marker="o", ms=4, label=f"{g}, {effect}")
            ax_fdp.errorbar(x, [a["fdp"] for a in sel], yerr=[2 * np.nan_to_num(a["fdp_se"]) for a in sel],
                            capsize=3, **kw)
            ax_pow.plot(x, [a["power"] for a in sel], **kw)
    ax_fdp.plot([0, 0.22], [0, 0.22], color="grey", lw=1, label="FDP = target")
    for ax, ylabel in ((ax_fdp, "mean realised FDP (+- 2 SE)"), (ax_pow, "power")):
        ax.set_xticks(TARGETS)
        ax.set_xlabel("target (npmle shrinkage)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax_fdp.set_title("realised FDP against target")
    ax_pow.set_title("power (true genes called / true genes)")
    ax_fdp.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grouping", choices=[*GROUPINGS, "conjugate", "all"], default="fits",
                    help="how the groups are formed (all = fits, datasets and components)")
    ap.add_argument("--cells-a", type=int, default=150, help="cells of group A (the smaller group)")
    ap.add_argument("--cells-b", type=int, default=250, help="cells of group B")
    ap.add_argument("--genes", type=int, default=300)
    ap.add_argument("--frac-de", type=float, default=0.1)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--method", default="nuts", help="scribe run --method")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=500, help="draws per chain (conjugate: chains x draws draws)")
    ap.add_argument("--init", choices=["random", "pathfinder"], default="random",
                    help="scribe run --init (pathfinder starts a mixture's chains near a mode instead of anywhere)")
    ap.add_argument("--mixture-init", choices=["kmeans", "random"], default="kmeans",
                    help="components: start the mixture at k-means clusters (written as scribe run --init FILE.json) "
                    "or where --init says")
    ap.add_argument("--tau", type=float, default=D.DEFAULT_TAU)
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown (for docs/de.md)")
    ap.add_argument("--keep", type=Path, help="save each replicate's posterior draws of mu and r here, and reuse them")
    ap.add_argument("--json", type=Path, help="write every replicate's rows to this JSON file as they come "
                    "(a long run interrupted keeps what it did)")
    ap.add_argument("--from-json", type=Path, nargs="+", help="only print the tables of rows saved with --json")
    ap.add_argument("--only", nargs="+", metavar="EFFECT:SHRINK",
                    help="print only these rows (e.g. clr-mu:npmle welch-t+BH:-); all are computed and saved")
    ap.add_argument("--plot", type=Path, metavar="FILE.png",
                    help="also draw FDP and power against the target (lfc and clr-mu, npmle) to this PNG")
    args = ap.parse_args()
    groupings = GROUPINGS if args.grouping == "all" else (args.grouping,)
    if args.from_json:
        rows = [row for f in args.from_json for row in json.loads(f.read_text())]
        print_table(aggregate(rows), args.markdown, args.only)
        if args.plot:
            plot(aggregate(rows), args.plot)
        return

    t_start = time.monotonic()
    rows = []
    for g in groupings:
        for rep in range(args.reps):
            rows += replicate(g, rep, args)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    print(f"\nDE error rates: {', '.join(groupings)}; {args.reps} replicate(s) of {args.cells_a} + {args.cells_b} cells x "
          f"{args.genes} genes, {args.frac_de:.0%} DE (|log fc| in log 2..log 4), tau = {args.tau:.4f}, "
          f"{args.chains} x {args.draws} draws ({args.method}); {time.monotonic() - t_start:.0f} s")
    print_table(aggregate(rows), args.markdown, args.only)
    if args.plot:
        plot(aggregate(rows), args.plot)


if __name__ == "__main__":
    main()
