"""Time the C++ capture terms (stan/cpp/capture_cells.hpp) outside Stan, zero terms and non-zeros apart.

Compiles bench/native/terms.cpp with the toolchain's compiler flags, simulates a cells x genes matrix with the
given non-zero fraction, and prints ms per call (value and gradient) for NB and ZINB:

    python bench/native_terms.py --cells 10000 --genes 2000 --nonzero 0.1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scribe_cli.toolchain import use_toolchain  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=10000)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--nonzero", type=float, default=0.1)
    args = ap.parse_args()
    tc = use_toolchain()
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "terms"
        # the toolchain's own compile flags (its CPU flags included: the PCH and the driver's alignment follow them)
        toolchain_flags = subprocess.run(["make", "-s", "print-SCRIBE_CXXFLAGS"], cwd=tc, capture_output=True,
                                         text=True, check=True).stdout.partition("=")[2].split()
        flags = [*toolchain_flags, f"-I{ROOT / 'stan' / 'cpp'}", "-w", "-include", str(tc / "build" / "model_header.hpp")]
        subprocess.run(["g++", *flags, str(ROOT / "bench" / "native" / "terms.cpp"), "-o", str(exe), f"-L{tc / 'lib'}",
                        "-ltbb", f"-Wl,-rpath,{tc / 'lib'}", "-lpthread"], check=True)
        rng = np.random.default_rng(0)
        X = sp.random(args.cells, args.genes, density=args.nonzero, format="csr", random_state=1,
                      data_rvs=lambda n: 1 + rng.poisson(1.0, n))
        X.sort_indices()
        data = Path(tmp) / "data.txt"
        data.write_text(f"{args.cells} {args.genes} {X.nnz}\n" + "\n".join(
            " ".join(map(str, a)) for a in (X.indptr + 1, X.indices + 1, X.data.astype(int),
                                              np.asarray(X.sum(axis=1)).ravel().astype(int))) + "\n")
        for kind, zi in (("nb", "0"), ("zinb", "1")):
            out = json.loads(subprocess.run([str(exe), str(data), zi], check=True, capture_output=True, text=True).stdout)
            print(json.dumps({"kind": kind, "cells": args.cells, "genes": args.genes, "nonzero": args.nonzero, **out}))


if __name__ == "__main__":
    main()
