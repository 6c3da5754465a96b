"""The toolchain cache does not depend on the environment that built it (issue 11).

bin/stansummary and bin/diagnose (what cmdstanpy runs for summaries) used to start with `#!<the building
venv's python>`: deleting that venv broke every checkout sharing the cache. They are now sh scripts that
pick the interpreter at call time ($SCRIBE_PYTHON, which scribe exports, else python3). No Stan run here:
the makefile's rule builds the scripts in a copy, the building environment is deleted, and the scripts
summarise a small Stan CSV written by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scribe_cli import toolchain as tc


def _stan_csv(path: Path, draws: np.ndarray) -> None:
    lines = ["# model = fake_model", "# method = sample (Default)", "#   num_samples = %d" % len(draws),
             "lp__,accept_stat__,theta"]
    lines += [f"{-0.5 * x * x:.6f},0.9,{x:.6f}" for x in draws]
    path.write_text("\n".join(lines) + "\n")


def test_installed_tools_name_no_interpreter(toolchain):
    for tool in ("stansummary", "diagnose"):
        text = (toolchain / "bin" / tool).read_text()
        assert text.startswith("#!/bin/sh\n") and sys.executable not in text, text


def test_tools_outlive_the_environment_that_built_them(toolchain, tmp_path):
    build_env = tmp_path / "build-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(build_env)], check=True)
    copy = tmp_path / "toolchain"
    copy.mkdir()
    for name in ("makefile", "stansummary.py"):
        shutil.copy2(toolchain / name, copy / name)
    building = {**os.environ, "PATH": f"{build_env / 'bin'}:{os.environ['PATH']}",
                "SCRIBE_PYTHON": str(build_env / "bin" / "python")}
    subprocess.run(["make", "-s", "-C", str(copy), f"{copy}/bin/stansummary", f"{copy}/bin/diagnose"], env=building,
                   check=True, capture_output=True)
    shutil.rmtree(build_env)  # the environment that built the toolchain is gone

    rng = np.random.default_rng(4)
    chains = [rng.normal(1.5, 2.0, size=400) for _ in range(2)]
    files = [tmp_path / f"fit_{i}.csv" for i in (1, 2)]
    for f, x in zip(files, chains):
        _stan_csv(f, x)
    # another interpreter, as scribe names it; then a stale SCRIBE_PYTHON (the deleted one) falling back to
    # the python3 on PATH (here a link to this interpreter: the system python3 may lack numpy)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "python3").symlink_to(sys.executable)
    for python, path in ((sys.executable, os.environ["PATH"]),
                         (str(build_env / "bin" / "python"), f"{shim}:{os.environ['PATH']}")):
        env = {**os.environ, "SCRIBE_PYTHON": python, "PATH": path}
        out_csv = tmp_path / "summary.csv"
        res = subprocess.run([str(copy / "bin" / "stansummary"), f"--csv_filename={out_csv}", *map(str, files)],
                             env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        row = next(ln for ln in out_csv.read_text().splitlines() if ln.startswith('"theta"'))
        assert float(row.split(",")[1]) == pytest.approx(np.concatenate(chains).mean(), abs=1e-4)
        res = subprocess.run([str(copy / "bin" / "diagnose"), *map(str, files)], env=env, capture_output=True,
                             text=True)
        assert res.returncode == 0 and "Processing complete" in res.stdout, res.stderr


def test_toolchain_id_follows_the_driver_sources(tmp_path, monkeypatch):
    before = tc.toolchain_id()
    copy = tmp_path / "driver"
    shutil.copytree(tc.DRIVER_SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(tc, "DRIVER_SRC", copy)
    assert tc.toolchain_id() == before  # same bytes, same id
    (copy / "makefile").write_text((copy / "makefile").read_text() + "\n# changed\n")
    assert tc.toolchain_id() != before


def test_stan_exit_codes_are_not_named_as_errnos():
    """cmdstanpy logs a failed run's exit code with os.strerror: Stan's 70 read "Communication error on send".
    The filter rewrites that record; the format it matches must still be the pinned cmdstanpy's."""
    import inspect
    import logging

    import cmdstanpy.model

    from scribe_cli.toolchain import _ExitCodeFilter

    assert "\"%s error: code '%d' %s\"" in inspect.getsource(cmdstanpy.model)
    record = logging.LogRecord("cmdstanpy", logging.ERROR, __file__, 1, "%s error: code '%d' %s",
                               ("Chain [1]", 70, "Communication error on send"), None)
    assert _ExitCodeFilter().filter(record)
    assert record.getMessage() == "Chain [1] error: Stan exited with code 70 (the algorithm failed)"


def test_cpu_flags_are_part_of_the_toolchain_id(monkeypatch):
    """Every object of a toolchain and every model share one set of CPU flags (Eigen's heap alignment follows
    them: a vector allocated under AVX's 32 bytes and freed under SSE2's 16 corrupted the heap), and a machine
    without the instructions must get its own toolchain, not run these: the flags' tag is in the id."""
    monkeypatch.setattr(tc, "_cpu_features", lambda: frozenset({"sse2", "avx", "avx2", "fma"}))
    monkeypatch.delenv("SCRIBE_CPU_FLAGS", raising=False)
    assert tc.arch() == ("avx2", "-mavx2 -mfma")
    vector_id = tc.toolchain_id()
    monkeypatch.setattr(tc, "_cpu_features", lambda: frozenset({"sse2", "avx"}))  # AVX without AVX2
    assert tc.arch() == ("base", "")
    assert tc.toolchain_id() != vector_id
    monkeypatch.setenv("SCRIBE_CPU_FLAGS", " -mavx2  -mfma ")  # the override wins, whatever the CPU
    tag, flags = tc.arch()
    assert flags == "-mavx2 -mfma" and tag.startswith("flags-") and tc.toolchain_id() != vector_id
    monkeypatch.setenv("SCRIBE_CPU_FLAGS", "")
    assert tc.arch() == ("base", "")


def test_the_built_toolchain_compiles_with_its_cpu_flags():
    """The makefile reads the flags the toolchain was built with (arch.mk) into every compile line."""
    path = tc.ensure_toolchain(build=False)
    if tc.user_cmdstan():
        pytest.skip("CMDSTAN names a real CmdStan: its own makefile sets its flags")
    res = subprocess.run(["make", "-s", "print-SCRIBE_CXXFLAGS"], cwd=path, capture_output=True, text=True, check=True)
    compiled = res.stdout.split()
    assert all(flag in compiled for flag in tc.arch()[1].split()), (tc.arch(), res.stdout)
    assert "-O3" in compiled
