"""`scribe sweep`: grid expansion and validation, the dask-jobqueue job script, and one end-to-end sweep on the
local Dask cluster that has a worker killed mid-fit (the fit is retried, nothing is half-written), is stopped
with Ctrl-C, and is started again (finished fits are skipped, the rest complete).

Cheap by design: configurations that differ only in options that reach Stan as data or run options (method
optimize / pathfinder, seed, chains), so one program serves every fit, on two slices of the bundled data
(150 and 100 cells x 42 genes): 16 tasks where only the grid's expansion is checked, 8 fits end to end (each
fit is a `scribe run` process, a few seconds of start-up).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import arviz as az
import pandas as pd
import pytest

from scribe_cli.errors import UserInputError
from scribe_cli.sweep import assign_outputs, expand, make_cluster

GRID = """
model = "nbdm"
parameterization = "canonical"
prob_prior = "none"
method = ["optimize", "pathfinder"]
seed = [1, 2]
chains = [1, 2]
draws = 100
log_lik = true
"""
RUN_GRID = GRID.replace("chains = [1, 2]", "chains = 1")  # 4 configurations x 2 inputs: the sweep end to end


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, demo_h5ad):
    import anndata as ad

    tmp = tmp_path_factory.mktemp("sweep_data")
    demo = ad.read_h5ad(demo_h5ad)[:, ::12]
    paths = [tmp / "a.h5ad", tmp / "b.h5ad"]
    demo[:150].copy().write_h5ad(paths[0])
    demo[150:250].copy().write_h5ad(paths[1])
    return paths


def _grid(tmp_path, text=GRID) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def test_expand_grid(inputs, tmp_path):
    import tomllib

    tasks = expand(tomllib.loads(GRID), inputs)
    assert len(tasks) == 16
    assert {tuple(sorted(t.varied)) for t in tasks} == {("chains", "method", "seed")}
    assert all(t.options["warmup"] == 1000 and t.options["parallel_chains"] == 1 for t in tasks)  # defaults filled in
    assign_outputs(tasks, tmp_path)
    assert len({t.output for t in tasks}) == 16 and not any(t.skipped for t in tasks)
    argv = tasks[0].argv()
    assert argv[3:5] == ["run", str(inputs[0].resolve())] and "--log-lik" in argv and "--float32" not in argv


@pytest.mark.parametrize("grid, fragment", [
    ({"modle": "zinb"}, "unknown option(s) modle"),
    ({"model": "nbdm", "gate_prior": "neg"}, "--gate-prior needs a zero-inflated model"),
    ({"method": ["nuts", "hmc"]}, "method"),
    ({"seed": []}, "empty list"),
])
def test_bad_grid_is_refused_before_running(grid, fragment, inputs):
    with pytest.raises(UserInputError) as err:
        expand(grid, inputs)
    assert fragment in str(err.value)


def test_bad_grid_cli_one_line(inputs, tmp_path):
    res = subprocess.run([sys.executable, "-m", "scribe_cli.cli", "sweep", str(_grid(tmp_path, 'model = "nbdm"\nchains = 0\n')),
                          *map(str, inputs), "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert res.returncode == 2 and res.stdout == "" and len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith("scribe: error: ") and not (tmp_path / "out").exists()


def test_slurm_job_script_without_a_scheduler(inputs, tmp_path):
    """dask-jobqueue builds the batch script from the grid's [cluster] table; nothing is submitted."""
    settings = {"queue": "short", "account": "lab42", "cores": 4, "memory": "8GB", "walltime": "01:30:00",
                "job_extra_directives": ["--constraint=avx2"], "jobs": 3}
    cluster = make_cluster("slurm", settings, None, 1, scale=False)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p short", "#SBATCH -A lab42", "#SBATCH -n 1", "#SBATCH --cpus-per-task=4",
                 "#SBATCH -t 01:30:00", "#SBATCH --constraint=avx2"):
        assert line in script, (line, script)
    # one worker per job; each fit claims threads_per_chain of its 4 cores
    assert "distributed.cli.dask_worker" in script and "--nthreads 4" in script and "--resources cores=4" in script
    # The CLI prints the same script with --dry-run and lists the 16 fits
    grid = _grid(tmp_path, GRID + '\n[cluster]\nqueue = "short"\ncores = 4\nmemory = "8GB"\nwalltime = "01:30:00"\njobs = 3\n')
    res = subprocess.run([sys.executable, "-m", "scribe_cli.cli", "sweep", str(grid), *map(str, inputs), "--cluster",
                          "slurm", "--dry-run", "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert len(report["fits"]) == 16 and "#SBATCH -p short" in report["job_script"]


def _children_running_fits(out: Path) -> list[tuple[int, int]]:
    """(pid, parent pid) of `scribe run` processes writing into ``out`` (found through /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if b"scribe_cli.cli" in cmd and b"run" in cmd and any(str(out).encode() in c for c in cmd):
            found.append((int(entry), int(stat.rsplit(")", 1)[1].split()[1])))
    return found


def _wait(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_sweep_survives_a_killed_worker_and_resumes_after_ctrl_c(inputs, tmp_path):
    out = tmp_path / "fits"
    cmd = [sys.executable, "-m", "scribe_cli.cli", "sweep", str(_grid(tmp_path, RUN_GRID)), *map(str, inputs), "-o", str(out),
           "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # 1. Kill the worker running the first fit (SIGKILL: no clean-up of its own).
        child, worker = _wait(lambda: (_children_running_fits(out) or [None])[0], 300, "a fit to start")
        victim = next(a for a in Path(f"/proc/{child}/cmdline").read_text().split("\0") if a.endswith(".nc"))
        os.kill(worker, signal.SIGKILL)
        # the fit dies with its worker (PR_SET_PDEATHSIG) ...
        _wait(lambda: not Path(f"/proc/{child}").exists(), 60, "the killed worker's fit to stop")
        # ... and is retried: a new `scribe run` process writes the same output
        _wait(lambda: any(victim in Path(f"/proc/{pid}/cmdline").read_text() for pid, _ in _children_running_fits(out)
                          if pid != child and Path(f"/proc/{pid}").exists()), 300, "the killed fit's retry")
        # 2. Ctrl-C while the retried fit runs (so fits certainly remain: on a quiet machine the other 7 can all
        # finish before a retry that is scheduled last)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "finished fits are kept" in err
    finished = {p: p.stat().st_mtime_ns for p in out.glob("*.json") if not p.name.startswith("index")}
    assert Path(victim).with_suffix(".json") not in finished and len(finished) < 8
    assert not list(out.glob(".*.tmp")), "a temporary (half-written) file was left behind"
    for sidecar in finished:
        az.from_netcdf(sidecar.with_suffix(".nc"))  # every finished posterior is complete
    _wait(lambda: not _children_running_fits(out), 60, "no fit left running after Ctrl-C")

    # 3. Start again: finished fits are skipped (untouched), the others run, then the index and comparisons
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert (report["fits"], report["ok"], report["skipped"]) == (8, 8, len(finished))
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    index = pd.read_csv(report["index"], sep="\t")
    assert len(index) == 8 and (index.status == "ok").all() and index.output.map(lambda p: Path(p).is_file()).all()
    assert set(json.loads(index.config[0])) == {"method", "seed"}
    # pathfinder fits of the same input with --log-lik are compared (optimize fits hold one point and are left out)
    assert len(report["comparisons"]) == 2
    assert all(len(c["comparison"]) == 2 for c in report["comparisons"])
