"""Build data/cellbench_two_protocols_200genes.h5ad from the shared CellBench two-protocols file.

All 499 cells (CEL-seq2 274, Drop-seq 225) and 200 genes spread evenly over the detection range of the genes
seen in at least 5% of cells (the same rule as the demo's PBMC subset), with obs `protocol` and `cell_line`.
Small enough to bundle, so the multi-dataset tests do not depend on ../shared being present.

    python scripts/build_two_protocols_subset.py ../shared/data/cellbench_3cl_two_protocols.h5ad data/
"""

import sys
from pathlib import Path

import anndata
import numpy as np
import scipy.sparse as sp

src, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
a = anndata.read_h5ad(src)
X = sp.csr_matrix(a.X)
detected = np.asarray((X > 0).mean(axis=0)).ravel()
candidates = np.flatnonzero(detected >= 0.05)
order = candidates[np.argsort(detected[candidates], kind="stable")]
keep = np.sort(order[np.round(np.linspace(0, order.size - 1, 200)).astype(int)])
sub = anndata.AnnData(X=X[:, keep].astype(np.int32), obs=a.obs[["protocol", "cell_line"]].copy(),
                      var=a.var.iloc[keep].copy())
sub.uns["source"] = str(a.uns.get("source", ""))
sub.uns["note"] = ("All cells and 200 genes (evenly over the detection range of genes in >= 5% of cells) of "
                   f"{src.name}; built by scripts/build_two_protocols_subset.py")
out = out_dir / "cellbench_two_protocols_200genes.h5ad"
sub.write_h5ad(out, compression="gzip")
print(out, sub.shape, X[:, keep].nnz)
