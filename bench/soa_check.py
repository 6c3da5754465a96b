"""Would stanc's --O1 (struct-of-arrays autodiff for whole vectors) speed up the NBDM gradient? One measurement.

stanc --O1 keeps a vector as one autodiff node (SoA) only when every use of it allows that; `--debug-mem-patterns`
says which do. In the shipped NBDM program none does: the C++ rise sum (an external function) and lgamma_ratio's
element loop (the rising-factorial tail) force every gene vector back to one node per element (AoS). So this
script builds three programs from the rendered one (CLI defaults) and times their gradients on the same counts:

- `shipped`: the program as `scribe run` compiles it (C++ rise sum, AoS);
- `soa_O1`: the rise sum in Stan (dot_product of logs) and the tail left out, compiled with --O1, where stanc
  makes every vector SoA (the report is printed; the tail's few terms change the density, not the cost);
- `aos_O0`: that same edited program without --O1.

Per-gradient time as bench/likelihood_scaling.py measures it (unit metric, fixed tiny step, depth 5).

    python bench/soa_check.py ../shared/data/pbmc_1k_v3.h5ad --iters 30 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SHIPPED_RISE = """    return rise_table_sum(x, rise_gene, rise_k, rise_weight)
           + dot_product(tail_weight, lgamma_ratio(x[tail_gene] + rise_limit, tail_count - rise_limit));"""
SOA_RISE = "    return dot_product(rise_weight, log(x[rise_gene] + rise_k));"


def main() -> None:
    import anndata
    import cmdstanpy
    import scipy.sparse as sp
    from likelihood_scaling import per_gradient_seconds

    from scribe_cli.cache import CPP_OPTIONS, compile_program, native_sources
    from scribe_cli.cli_options import default_prob_prior
    from scribe_cli.config import ModelConfig, validate
    from scribe_cli.render import render
    from scribe_cli.standata import stan_data
    from scribe_cli.toolchain import use_toolchain

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("h5ad", type=Path)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    config = validate(ModelConfig(model="nbdm", prob_prior=default_prob_prior("canonical")))
    shipped = render(config)
    if SHIPPED_RISE not in shipped:
        raise SystemExit("the rendered rise_sum changed: update SHIPPED_RISE")
    edited = shipped.replace(SHIPPED_RISE, SOA_RISE)
    tc = use_toolchain()
    models = {"shipped": compile_program(shipped, name="nbdm").model}
    with tempfile.TemporaryDirectory() as tmp:
        for label, o1 in (("soa_O1", True), ("aos_O0", False)):
            d = Path(tmp) / label
            d.mkdir()
            (d / "m.stan").write_text(edited)
            for source in native_sources():  # the edited program still declares the C++ functions it no longer calls
                shutil.copy(source, d / source.name)
            if o1:
                report = subprocess.run([str(tc / "bin" / "stanc"), "--O1", "--allow-undefined", "--debug-mem-patterns",
                                         "--o", str(d / "check.hpp"), str(d / "m.stan")], capture_output=True, text=True)
                print("stanc --O1 memory patterns of the edited program:\n" + report.stdout.strip(), file=sys.stderr)
            models[label] = cmdstanpy.CmdStanModel(stan_file=str(d / "m.stan"), cpp_options=dict(CPP_OPTIONS),
                                                   stanc_options={"O1": True} if o1 else {},
                                                   user_header=str(d / "native.hpp"))
        X = sp.csr_matrix(anndata.read_h5ad(args.h5ad).X)
        data = stan_data(config, X)
        times = {k: [] for k in models}
        for _ in range(args.repeats):
            for label, model in models.items():
                times[label].append(round(1e3 * per_gradient_seconds(model, data, iters=args.iters), 3))
    print(json.dumps({"cells": X.shape[0], "genes": X.shape[1], "ms_per_gradient": times,
                      "median": {k: float(np.median(v)) for k, v in times.items()}}, indent=2))


if __name__ == "__main__":
    main()
