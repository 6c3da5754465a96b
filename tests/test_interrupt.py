"""Ctrl-C (exit 130) or SIGTERM (exit 143) during sampling: nothing half-written (no output, no temporary files)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_during_sampling_leaves_nothing(tmp_path, demo_h5ad, toolchain, sig, code, word):
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
    # SIGINT goes to the whole group (a terminal's Ctrl-C); SIGTERM to scribe alone, as a scheduler's kill does
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, (proc.returncode, stderr[-2000:])
    assert word in stderr
    assert stdout == ""
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
