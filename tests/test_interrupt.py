"""Ctrl-C during sampling: exit 130, nothing half-written (no output, no temporary files)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def test_ctrl_c_during_sampling_leaves_nothing(tmp_path, demo_h5ad, toolchain):
    out = tmp_path / "post.nc"
    # A run long enough to be interrupted mid-sampling. A terminal's Ctrl-C signals the whole foreground
    # process group (scribe and its Stan processes): reproduce that with a session of our own.
    proc = subprocess.Popen(
        [sys.executable, "-m", "scribe_cli.cli", "run", str(demo_h5ad), "-o", str(out), "--warmup", "20000",
         "--draws", "20000", "--seed", "1", "--verbose"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 300  # includes a possible cold compile of the NBDM program
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if "running nuts" in line or not line:
            break
    assert "running nuts" in seen, seen
    time.sleep(3)  # let the chains start
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
    assert "interrupted" in stderr
    assert stdout == ""
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
