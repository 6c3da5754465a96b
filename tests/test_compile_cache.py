"""The content-hash compile cache (scribe_cli.cache): hits, misses, races between processes, keys.

Each test gets a fresh, private SCRIBE_CACHE_DIR for its models. The toolchain is NOT rebuilt: the
toolchain directory is cache_dir()/toolchain/<id>, so the private cache gets a `toolchain` symlink
to the parent of the session's real toolchain, and every step refuses to build (build=False).

The environment variable CMDSTAN is removed for each test (and for the child processes), as in a
fresh `scribe` process: cmdstanpy.set_cmdstan_path(), called by use_toolchain(), sets it as a side
effect, and scribe_cli.toolchain reads CMDSTAN as "use this real CmdStan" (see
test_key_does_not_depend_on_call_order).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Posterior mode of mu: prior N(0, 10^2), one observation y ~ N(mu, 1)  =>  mode = y * 100 / 101.
PROGRAM = """
data {
  real y;
}
parameters {
  real mu;
}
model {
  mu ~ normal(0, 10);
  y ~ normal(mu, 1);
}
"""
DATA = {"y": 3.03}
MODE = DATA["y"] * 100 / 101

# Compiling a model is ~10-20 s of C++; loading a cached one only parses a marker file and
# constructs a CmdStanModel. 1 s separates the two by an order of magnitude each way.
HIT_SECONDS = 1.0

CHILD = r"""
import json, sys, time
from scribe_cli.toolchain import ensure_toolchain
ensure_toolchain(build=False)  # a test must never build the toolchain
from scribe_cli.cache import compile_program, program_key
program = open(sys.argv[1]).read()
if sys.argv[2] == "key":
    print(json.dumps({"key": program_key(program)}))
    sys.exit(0)
res = compile_program(program, name="cachetest")
out = {"cached": res.cached, "key": res.key, "seconds": res.seconds, "exe": res.model.exe_file}
if sys.argv[2] == "run":
    mle = res.model.optimize(data=json.loads(sys.argv[3]), seed=1)
    out["mu"] = float(mle.stan_variable("mu"))
print(json.dumps(out))
"""


@pytest.fixture
def private_cache(toolchain, tmp_path, monkeypatch):
    """A fresh cache dir whose `toolchain` entry is the session's already-built toolchain."""
    import cmdstanpy
    from scribe_cli import toolchain as tc

    monkeypatch.delenv("CMDSTAN", raising=False)  # restored at teardown
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "toolchain").symlink_to(toolchain.parent, target_is_directory=True)
    monkeypatch.setenv("SCRIBE_CACHE_DIR", str(cache))
    if not (tc.embedded_dir() / ".complete").is_file():
        pytest.skip("the driver sources changed during this session (new toolchain id); not rebuilding in a test")
    assert tc.ensure_toolchain(build=False) == cache / "toolchain" / tc.toolchain_id()
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "program.stan").write_text(PROGRAM)
    yield cache
    cmdstanpy.set_cmdstan_path(str(toolchain))  # undo the switch to the symlinked path


def _child(tmp_path: Path, cache: Path, mode: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "SCRIBE_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    env.pop("CMDSTAN", None)  # a fresh process, not one that inherits our cmdstanpy state
    return subprocess.Popen(
        [sys.executable, str(tmp_path / "child.py"), str(tmp_path / "program.stan"), mode, *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _result(proc: subprocess.Popen, timeout: float = 600) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def _entries(cache: Path) -> tuple[list[str], list[str]]:
    models = cache / "models"
    dirs = sorted(p.name for p in models.iterdir() if p.is_dir())
    files = sorted(p.name for p in models.iterdir() if not p.is_dir())
    return dirs, files


def test_miss_then_hit_in_process_and_in_fresh_process(private_cache, tmp_path):
    from scribe_cli.cache import compile_program, models_dir, program_key
    from scribe_cli.toolchain import use_toolchain

    use_toolchain(build=False)  # what compile_program does first (see the call-order test)
    key = program_key(PROGRAM)
    # A compile that died half way leaves <key>/ without .complete: it must count as a miss.
    stale = models_dir() / key
    stale.mkdir(parents=True)
    (stale / "leftover.o").write_text("half-written")

    first = compile_program(PROGRAM, name="cachetest")
    assert first.cached is False and first.key == key
    assert first.seconds > HIT_SECONDS, f"a miss that took {first.seconds:.2f} s did not compile anything"
    exe = Path(first.model.exe_file)
    assert exe.parent == models_dir() / key and os.access(exe, os.X_OK)
    assert (models_dir() / key / ".complete").is_file()
    assert not (models_dir() / key / "leftover.o").exists()

    t0 = time.monotonic()
    second = compile_program(PROGRAM, name="cachetest")
    assert time.monotonic() - t0 < HIT_SECONDS
    assert second.cached is True and second.seconds < HIT_SECONDS
    assert second.model.exe_file == first.model.exe_file

    child = _result(_child(tmp_path, private_cache, "compile"))
    assert child["cached"] is True and child["seconds"] < HIT_SECONDS, child
    assert child["key"] == key and child["exe"] == first.model.exe_file

    assert _entries(private_cache) == ([key], [f"{key}.lock"])  # no temp dirs left over
    mle = second.model.optimize(data=DATA, seed=1)
    assert float(mle.stan_variable("mu")) == pytest.approx(MODE, abs=1e-4)


def test_two_processes_compiling_the_same_new_program(private_cache, tmp_path):
    from scribe_cli.cache import program_key
    from scribe_cli.toolchain import use_toolchain

    use_toolchain(build=False)
    key = program_key(PROGRAM)
    procs = [_child(tmp_path, private_cache, "run", json.dumps(DATA)) for _ in range(2)]
    results = [_result(p) for p in procs]

    assert sorted(r["cached"] for r in results) == [False, True], results  # exactly one compiled
    assert {r["key"] for r in results} == {key}
    assert len({r["exe"] for r in results}) == 1
    # The one that got a hit really raced: it waited for the other's compile rather than arriving
    # after it (both started within milliseconds; a compile takes > HIT_SECONDS).
    waited = next(r for r in results if r["cached"])
    assert waited["seconds"] > HIT_SECONDS, results
    for r in results:  # both got a working model
        assert r["mu"] == pytest.approx(MODE, abs=1e-4)

    dirs, files = _entries(private_cache)
    assert dirs == [key], f"expected exactly one cache entry, found {dirs}"
    assert (private_cache / "models" / key / ".complete").is_file()
    assert files == [f"{key}.lock"]


def test_failed_compile_leaves_nothing(private_cache):
    from scribe_cli.cache import compile_program, count_cached_models, models_dir
    from scribe_cli.errors import ScribeError

    bad = PROGRAM.replace("real mu;", "real mu")  # syntax error: stanc fails before any C++
    with pytest.raises(ScribeError) as info:
        compile_program(bad, name="broken")
    assert "compiling the Stan program failed" in str(info.value)
    assert count_cached_models() == 0
    dirs, _ = _entries(private_cache)
    assert dirs == [], f"leftovers after a failed compile: {dirs}"
    assert models_dir().is_dir()


def test_keys(private_cache, monkeypatch):
    import scribe_cli.cache as cache
    from scribe_cli.toolchain import use_toolchain

    use_toolchain(build=False)
    key = cache.program_key(PROGRAM)
    assert len(key) == 20 and all(c in "0123456789abcdef" for c in key)
    assert cache.program_key(PROGRAM) == key
    # Program text: any change, even whitespace, is a different program text.
    assert cache.program_key(PROGRAM.replace("normal(0, 10)", "normal(0, 5)")) != key
    assert cache.program_key(PROGRAM + "\n") != key
    # C++ options: the defaults spelled out give the same key, any other option a new one.
    assert cache.program_key(PROGRAM, dict(cache.CPP_OPTIONS)) == key
    assert cache.program_key(PROGRAM, {**cache.CPP_OPTIONS, "STAN_NO_RANGE_CHECKS": "true"}) != key
    assert cache.program_key(PROGRAM, {"STAN_THREADS": "false"}) != key
    # Toolchain: a new driver/compiler is a new key.
    monkeypatch.setattr(cache, "toolchain_id", lambda: "some-other-toolchain")
    assert cache.program_key(PROGRAM) != key


def test_key_does_not_depend_on_call_order(private_cache, tmp_path):
    """program_key(P) is the key compile_program(P) stores P under, whenever it is asked.

    A fresh process that has not yet pointed cmdstanpy at the toolchain must compute the same key
    as one that has (e.g. `scribe cache ls` vs a running fit, or a key computed before compiling).
    """
    import scribe_cli.cache as cache
    from scribe_cli.toolchain import use_toolchain

    before = cache.program_key(PROGRAM)  # fresh-process state: nothing has called use_toolchain
    fresh = _result(_child(tmp_path, private_cache, "key"))["key"]  # another fresh process
    assert fresh == before  # no per-process hash randomisation
    use_toolchain(build=False)
    after = cache.program_key(PROGRAM)
    assert after == before, (
        "program_key changed after use_toolchain(): cmdstanpy.set_cmdstan_path() sets "
        f"CMDSTAN={os.environ.get('CMDSTAN')}, and toolchain_id() then reports a user-supplied CmdStan"
    )
