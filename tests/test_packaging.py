"""The package as a user installs it (issue 11): a wheel built from the sources, installed (not editable)
into a fresh virtual environment outside the source tree, run from another directory.

To stay cheap (~30 s) nothing is downloaded: the wheel is built without build isolation (setuptools comes
with the test extra), installed with --no-deps, and the fresh environment reaches the dependencies
through a .pth naming this environment's site-packages. A .pth inside a directory added that way is not
processed, so this environment's editable install of scribe_cli stays invisible there: the fresh
environment imports the wheel's copy. The toolchain and compiled models come from the shared cache, as
they would for a user who installed scribe-cli next to an existing cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo_pbmc_500genes.h5ad"


def _stan_files() -> set[str]:
    return {str(p.relative_to(REPO)) for p in (REPO / "stan").rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("build")
    # Build from a clean copy of what the build reads: an in-tree build would leave build/ in the checkout,
    # and stale files there could slip into the wheel.
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "scribe_cli", src / "scribe_cli", ignore=skip)
    shutil.copytree(REPO / "stan", src / "stan", ignore=skip)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(root / "dist")], check=True, capture_output=True, text=True)
    (path,) = (root / "dist").glob("scribe_cli-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """bin/ of a fresh virtual environment holding the wheel."""
    env = tmp_path_factory.mktemp("env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    py = env / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, text=True)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "scribe_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env / "bin"


def test_wheel_carries_the_templates_and_driver_sources(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    packaged = {n.removeprefix("scribe_cli/") for n in names if n.startswith("scribe_cli/stan/")}
    assert packaged == _stan_files(), packaged ^ _stan_files()
    assert "scribe_cli/reports/summary.py" in names  # subpackages too


def test_installed_scribe_renders_and_fits_outside_the_tree(installed, toolchain, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()

    def scribe(*args):
        res = subprocess.run([str(installed / "scribe"), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, (args, res.stderr)
        return res

    where = subprocess.run([str(installed / "python"), "-c", "import scribe_cli.resources as r; print(r.STAN_DIR)"],
                           cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(installed.parent) and not Path(where).is_relative_to(REPO), where

    from scribe_cli.config import ModelConfig, validate
    from scribe_cli.render import render

    # the installed templates render the very program the checkout renders (so they share compiled models)
    assert scribe("render", "--model", "nbdm", "--prob-prior", "none").stdout.strip() == render(validate(ModelConfig(model="nbdm"))).strip()
    # the shared cache's toolchain (same driver sources and CPU flags): found, not rebuilt
    doctor = json.loads(scribe("doctor", "--build").stdout)
    from scribe_cli.toolchain import arch, user_cmdstan

    assert doctor["cpu_flags"] == (None if user_cmdstan() else arch()[1])
    out = tmp_path / "post.nc"
    scribe("run", DEMO, "--model", "nbdm", "--method", "optimize", "--seed", "1", "-o", out)

    import arviz as az

    idata = az.from_netcdf(out)
    assert idata.posterior["mu"].sizes["gene"] == 500
    assert float(idata.posterior["mu"].min()) > 0
