"""Bad input: one line on stderr naming the problem and the fix, exit code 2, no output file.

These checks happen before anything is compiled, so they need no toolchain.
"""

from __future__ import annotations

import anndata
import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from scribe_cli.cli import main


def _run(args):
    result = CliRunner().invoke(main, args)
    return result


def _h5ad(tmp_path, X, name="in.h5ad"):
    path = tmp_path / name
    anndata.AnnData(X=X).write_h5ad(path)
    return path


def _assert_clean_failure(result, out, fragment):
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("scribe: error:") and fragment in lines[0]
    assert result.stdout == ""
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*")), "temporary files left behind"


def test_missing_input(tmp_path):
    out = tmp_path / "post.nc"
    _assert_clean_failure(_run(["run", str(tmp_path / "nope.h5ad"), "-o", str(out)]), out, "does not exist")


def test_not_h5ad(tmp_path):
    bad = tmp_path / "table.h5ad"
    bad.write_text("this is a CSV,\n1,2\n")
    out = tmp_path / "post.nc"
    _assert_clean_failure(_run(["run", str(bad), "-o", str(out)]), out, "not a readable .h5ad")


@pytest.mark.parametrize(
    "X, fragment",
    [
        (sp.csr_matrix(np.array([[1, -1], [2, 0]], dtype=np.int32)), "negative"),
        (sp.csr_matrix(np.array([[0.5, 1.0], [2.0, 0.0]], dtype=np.float32)), "non-integer"),
        (sp.csr_matrix((0, 4), dtype=np.int32), "empty"),
    ],
)
def test_bad_counts(tmp_path, X, fragment):
    path = _h5ad(tmp_path, X)
    out = tmp_path / "post.nc"
    _assert_clean_failure(_run(["run", str(path), "-o", str(out)]), out, fragment)


def test_output_dir_missing(tmp_path, demo_h5ad):
    out = tmp_path / "no" / "such" / "dir" / "post.nc"
    result = _run(["run", str(demo_h5ad), "-o", str(out)])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert not out.exists()


def test_output_dir_unwritable(demo_h5ad):
    # /proc refuses new files even for root (os.access would say yes to root, hence the probe).
    from pathlib import Path

    out = Path("/proc/scribe-post.nc")
    result = _run(["run", str(demo_h5ad), "-o", str(out)])
    assert result.exit_code == 2 and "not writable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_existing_output_is_kept(tmp_path, demo_h5ad):
    out = tmp_path / "post.nc"
    out.write_text("precious")
    result = _run(["run", str(demo_h5ad), "-o", str(out)])
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    assert out.read_text() == "precious"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--chains", "0"], "--chains must be at least 1"),
        (["--adapt-delta", "1.5"], "--adapt-delta"),
        (["--prior", "r=gamma(1,2)"], "lognormal"),
        (["--prior", "nonsense"], "NAME=dist(a,b)"),
    ],
)
def test_bad_options(tmp_path, demo_h5ad, args, fragment):
    out = tmp_path / "post.nc"
    _assert_clean_failure(_run(["run", str(demo_h5ad), "-o", str(out), *args]), out, fragment)


def test_normalized_counts_are_refused(tmp_path):
    X = sp.random(30, 8, density=0.4, format="csr", random_state=3, dtype=np.float64) * 20
    X.data = np.log1p(np.round(X.data) + 1)  # log-normalized values: non-integer
    path = _h5ad(tmp_path, X.astype(np.float32))
    out = tmp_path / "post.nc"
    _assert_clean_failure(_run(["run", str(path), "-o", str(out)]), out, "normalized or log-transformed")


def test_wrong_layer(tmp_path, demo_h5ad):
    out = tmp_path / "post.nc"
    _assert_clean_failure(_run(["run", str(demo_h5ad), "-o", str(out), "--layer", "raw"]), out, "layer 'raw' not found")


def test_gene_list_with_unknown_genes(tmp_path, demo_h5ad):
    genes = tmp_path / "genes.txt"
    genes.write_text("NOT_A_GENE\n")
    out = tmp_path / "post.nc"
    _assert_clean_failure(_run(["run", str(demo_h5ad), "-o", str(out), "--genes", str(genes)]), out, "not in the data")


def test_missing_input_argument(tmp_path):
    out = tmp_path / "post.nc"
    _assert_clean_failure(_run(["run", "-o", str(out)]), out, "no input data")
