"""Ctrl-C (exit 130) or SIGTERM (exit 143) during sampling: nothing half-written (no output, no temporary files)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


# SIGINT to the whole group is a terminal's Ctrl-C; SIGTERM or SIGINT to scribe alone is a scheduler's or a
# user's `kill`: the Stan processes then learn of it only from scribe.
@pytest.mark.parametrize("sig, to_group, code, word", [(signal.SIGINT, True, 130, "interrupted"),
                                                       (signal.SIGINT, False, 130, "interrupted"),
                                                       (signal.SIGTERM, False, 143, "terminated")])
def test_signal_during_sampling_leaves_nothing(tmp_path, demo_h5ad, toolchain, sig, to_group, code, word):
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
    if to_group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, (proc.returncode, stderr[-2000:])
    assert word in stderr
    assert stdout == ""
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
    # no Stan process of the run outlives it (they share scribe's session and process group)
    for _ in range(50):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("a Stan process of the interrupted run is still running")
