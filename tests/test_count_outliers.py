"""Inputs that used to exhaust memory or crash, and input hygiene (issue 11).

- One count of 10^8 in a 50 x 20 matrix: the rising-factorial table grew with the largest count (10^8
  terms, 445 s and 11.7 GB before failing); it now stops at standata.RISE_LIMIT terms per gene and the fit
  takes seconds.
- A count above 2^31 - 1 (what a Stan int holds): one-line error, exit 2, nothing written.
- Duplicate gene or cell names: refused with a one-line error naming the fix (anndata's own warning
  silenced, so that the line is all stderr holds).
- A normal run's stderr holds only scribe's log lines and progress bars (no third-party warnings).

Each runs the CLI as a subprocess (real stderr). The refusals need no toolchain; the two fits reuse the
compiled default NBDM program (content-hash cache), tiny data, short chains.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings

import anndata
import numpy as np
import pytest
import scipy.sparse as sp

from scribe_cli.config import ModelConfig, validate
from scribe_cli.render import render

INT32_MAX = 2**31 - 1
# scribe's own lines and cmdstanpy's progress bars (tqdm: "chain 1:  40%|████| 80/200 [...]", redrawn with
# carriage returns and cursor-movement escapes, which are removed before matching).
OURS = re.compile(r"^(scribe: |chain \d+[:| ])")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _foreign_lines(stderr: str) -> list[str]:
    lines = (ANSI.sub("", ln).strip() for ln in stderr.replace("\r", "\n").splitlines())
    return [ln for ln in lines if ln and not OURS.match(ln)]


def _scribe(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "scribe_cli.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def _write(tmp_path, X, genes=None, cells=None, name="in.h5ad"):
    with warnings.catch_warnings():  # anndata warns while we build the duplicate-name inputs on purpose
        warnings.simplefilter("ignore", UserWarning)
        adata = anndata.AnnData(X=sp.csr_matrix(X))
        if genes is not None:
            adata.var_names = genes
        if cells is not None:
            adata.obs_names = cells
        path = tmp_path / name
        adata.write_h5ad(path)
    return path


def _counts(seed=3, C=50, G=20):
    rng = np.random.default_rng(seed)
    return rng.negative_binomial(2.0, 0.4, size=(C, G)).astype(np.int64)


def _assert_refused(res, out, fragment):
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines  # no warning, no traceback: the error line only
    assert lines[0].startswith("scribe: error:") and fragment in lines[0], lines[0]
    assert res.stdout == ""
    assert not out.exists()


@pytest.mark.parametrize("value", [INT32_MAX + 1, 2**40])
def test_count_above_int32_is_refused(tmp_path, value):
    U = _counts()
    U[7, 3] = value
    out = tmp_path / "post.nc"
    res = _scribe("run", _write(tmp_path, U), "--method", "optimize", "-o", out)
    _assert_refused(res, out, "2147483647")  # before: an 8 TiB allocation and a 39-line traceback


@pytest.mark.parametrize("axis", ["gene", "cell"])
def test_duplicate_names_are_refused(tmp_path, axis):
    U = _counts()
    genes = [f"g{i}" for i in range(U.shape[1])]
    cells = [f"c{i}" for i in range(U.shape[0])]
    if axis == "gene":
        genes[4] = genes[11] = "MT-ND1"
    else:
        cells[0] = cells[30] = "AAACCTG-1"
    out = tmp_path / "post.nc"
    res = _scribe("run", _write(tmp_path, U, genes, cells), "-o", out)
    fix = "var_names_make_unique" if axis == "gene" else "obs_names_make_unique"
    _assert_refused(res, out, fix)
    assert ("'MT-ND1'" if axis == "gene" else "'AAACCTG-1'") in res.stderr


def _run_and_measure(*args):
    """The CLI in a fresh interpreter that reports the CPU time and peak memory of its child processes
    (scribe and the Stan executable it waits for), so that this test process's earlier children do not
    count. CPU time, unlike wall time, does not depend on how loaded the machine is."""
    code = ("import resource, subprocess, sys, json;"
            "r = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
            "u = resource.getrusage(resource.RUSAGE_CHILDREN);"
            "print(json.dumps(dict(rc=r.returncode, out=r.stdout, err=r.stderr,"
            " cpu_s=u.ru_utime + u.ru_stime, rss_kb=u.ru_maxrss)))")
    res = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "scribe_cli.cli", *map(str, args)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_one_huge_count_fits_in_seconds(tmp_path, compile_stan):
    compile_stan(render(validate(ModelConfig(model="nbdm"))), name="nbdm")  # the run's program, compiled (or cached) here
    U = _counts()
    U[7, 3] = 10**8
    out = tmp_path / "post.nc"
    # seed 2: with one p shared by all genes the outlier drives p to 1, and from some random inits (seed 1)
    # L-BFGS meets a non-finite gradient on the way and scribe exits 2 in seconds; this start reaches the mode
    r = _run_and_measure("run", _write(tmp_path, U), "--model", "nbdm", "--prob-prior", "none", "--method", "optimize",
                         "--seed", "2", "-o", out)  # --prob-prior none: the shared-p program compiled above
    assert r["rc"] == 0, r["err"]
    assert out.is_file() and json.loads(r["out"])["method"] == "optimize"
    # before: 445 s and 11.7 GB. Now the table has at most 20 x 1024 terms: the run is imports, a cached
    # program and a sub-second optimisation, ~5 CPU s; 60 s is an order of magnitude below the old cost.
    assert r["cpu_s"] < 60, r["cpu_s"]
    # peak RSS of the run's processes, ~0.3 GB; 2 GB separates it from the 11.7 GB of the unbounded table.
    assert r["rss_kb"] < 2 * 1024**2, r["rss_kb"]
    assert not _foreign_lines(r["err"]), r["err"]


def test_normal_run_stderr_holds_only_our_lines(tmp_path, toolchain):
    """A default NUTS run (short chains) on clean data: every stderr line is scribe's or a progress bar."""
    U = _counts(seed=9)
    out = tmp_path / "post.nc"
    res = _scribe("run", _write(tmp_path, U), "--chains", "2", "--warmup", "100", "--draws", "100", "--seed", "2",
                  "-o", out)
    assert res.returncode in (0, 3), res.stderr
    assert res.stderr.startswith("scribe: ") and not _foreign_lines(res.stderr), _foreign_lines(res.stderr)
    assert out.is_file()
