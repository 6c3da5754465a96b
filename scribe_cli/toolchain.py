"""Locate or build the Stan toolchain that cmdstanpy drives.

CmdStan cannot be downloaded here, but PyPI's httpstan wheel carries stanc and every Stan header.
We download that wheel (download only: its Python part needs 3.12 and we do not use it), unpack the
compiler, headers and libtbb into a versioned directory in the cache, copy our own driver sources
(``stan/driver``) beside them and build there a directory that looks like CmdStan to cmdstanpy:
a ``makefile`` with ``CMDSTAN_VERSION``, ``bin/stanc``, ``bin/stansummary`` and a prebuilt driver
object that each model links against.

If the environment variable ``CMDSTAN`` names a real CmdStan installation, that one is used as is.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from .errors import ToolchainError
from .locking import file_lock
from .resources import DRIVER_SRC

log = logging.getLogger(__name__)

HTTPSTAN_VERSION = "4.17.0"
STAN_VERSION = "2.39.0"
_WHEEL_PLATFORM = "manylinux2014_x86_64"
_WHEEL_PYTHON = "3.12"

# What the driver build needs out of the wheel; the rest (httpstan's Python server) is left behind.
_WHEEL_MEMBERS = ("httpstan/stanc", "httpstan/include/", "httpstan/lib/libtbb")



def cache_dir() -> Path:
    """The user cache: ``$SCRIBE_CACHE_DIR``, else ``$XDG_CACHE_HOME/scribe-cli``, else ``~/.cache/scribe-cli``."""
    env = os.environ.get("SCRIBE_CACHE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(xdg) / "scribe-cli").resolve()


def driver_digest() -> str:
    """Hash of our driver sources: a change to the driver makes a new toolchain directory."""
    h = hashlib.sha256()
    for path in sorted(DRIVER_SRC.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(DRIVER_SRC)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


# The CPU's vector instructions, on the x86-64 machines that have them (since 2013): Eigen then evaluates
# the capture models' logs and exps four doubles at a time instead of two. zinbvcp at 10,000 x 2,000: 81 -> 56 ms
# per gradient on two threads (docs/performance.md, "Session 23").
_ARCH_LEVELS = (("avx2", ("avx2", "fma"), "-mavx2 -mfma"),)


@functools.lru_cache(maxsize=1)
def _cpu_features() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: the portable build
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def arch() -> tuple[str, str]:
    """The (tag, compiler flags) every object of the toolchain and every model is built with.

    All of them share the flags: Eigen's heap alignment follows them (16 bytes for SSE2, 32 for AVX), and a vector
    allocated under one setting and freed under the other corrupts the heap. The tag is part of the toolchain's id,
    so a machine without the instructions (say, an older node sharing the cache) builds its own toolchain and
    models instead of running these. ``SCRIBE_CPU_FLAGS`` overrides the detection ("" for the portable build)."""
    env = os.environ.get("SCRIBE_CPU_FLAGS")
    if env is not None:
        flags = " ".join(env.split())
        if not flags:
            return "base", ""
        return "flags-" + hashlib.sha256(flags.encode()).hexdigest()[:8], flags
    have = _cpu_features()
    for tag, needs, flags in _ARCH_LEVELS:
        if have.issuperset(needs):
            return tag, flags
    return "base", ""


def user_cmdstan() -> str | None:
    """The real CmdStan named by ``CMDSTAN``, if any.

    cmdstanpy.set_cmdstan_path() itself exports CMDSTAN, and child processes inherit it: a directory
    that is one of our embedded toolchains (it carries our ``.complete`` marker) is not a user's CmdStan.
    """
    real = os.environ.get("CMDSTAN")
    if not real or (Path(real) / ".complete").is_file():
        return None
    return real


def toolchain_id() -> str:
    """Identifies the compiler, headers and driver: part of every compiled model's cache key."""
    real = user_cmdstan()
    if real:
        return f"cmdstan:{Path(real).resolve()}"
    return f"httpstan-{HTTPSTAN_VERSION}-stan-{STAN_VERSION}-driver-{driver_digest()}-{arch()[0]}"


def embedded_dir() -> Path:
    return cache_dir() / "toolchain" / toolchain_id()


def _is_complete(path: Path) -> bool:
    return (path / ".complete").is_file()


def ensure_toolchain(build: bool = True) -> Path:
    """Return a CmdStan-compatible directory, building the embedded one if needed.

    Builds are serialised with a lock in the cache: the driver object alone takes ~3 GB of RAM to
    compile, and two processes building at once would also race on the same directory.
    """
    real = user_cmdstan()
    if real:
        path = Path(real).expanduser().resolve()
        if not (path / "makefile").is_file():
            raise ToolchainError(
                f"CMDSTAN={real} is not a CmdStan directory (no makefile); unset CMDSTAN to use the embedded toolchain"
            )
        return path
    target = embedded_dir()
    if _is_complete(target):
        return target
    if not build:
        raise ToolchainError("the Stan toolchain is not built yet; run `make toolchain` or `scribe doctor --build`")
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / ".build.lock"):
        if _is_complete(target):  # another process finished it while we waited
            return target
        _build(target)
    return target


def _download_wheel(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    pattern = f"httpstan-{HTTPSTAN_VERSION}-*{_WHEEL_PLATFORM.split('_', 1)[0]}*.whl"
    found = sorted(dest.glob(pattern))
    if found:
        return found[0]
    _say(f"downloading httpstan=={HTTPSTAN_VERSION} (stanc and Stan headers, ~35 MB) from the package index")
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--python-version", _WHEEL_PYTHON, "--platform", _WHEEL_PLATFORM,
        f"httpstan=={HTTPSTAN_VERSION}", "-d", str(dest),
    ]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = sorted(dest.glob(pattern))
    if res.returncode != 0 or not found:
        raise ToolchainError(f"could not download httpstan=={HTTPSTAN_VERSION} with pip: {res.stdout.strip().splitlines()[-1:]}")
    return found[0]


def _extract(wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            name = info.filename
            if not name.startswith(_WHEEL_MEMBERS) or name.endswith("/"):
                continue
            rel = Path(name).relative_to("httpstan")
            out = target / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    # zipfile drops permission bits; stanc must be executable.
    (target / "stanc").chmod(0o755)


def _build(target: Path) -> None:
    if target.exists():  # a build that died half way: start again
        shutil.rmtree(target)
    target.mkdir(parents=True)
    t0 = time.monotonic()
    wheel = _download_wheel(cache_dir() / "downloads")
    _say(f"building the Stan toolchain in {target} (once; about 3-4 minutes on 2 cores)")
    _extract(wheel, target)
    for item in DRIVER_SRC.iterdir():
        if item.name == "__pycache__":
            continue
        dst = target / item.name
        if item.is_dir():
            shutil.copytree(item, dst)
        else:
            shutil.copy2(item, dst)
    # read by the makefile for the driver, the precompiled header and every model compiled here
    (target / "arch.mk").write_text(f"SCRIBE_ARCH_FLAGS := {arch()[1]}\n")
    jobs = str(min(2, os.cpu_count() or 1))
    res = subprocess.run(
        ["make", "-j", jobs, "build"],
        cwd=target, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if res.returncode != 0:
        tail = "\n".join(res.stdout.strip().splitlines()[-30:])
        raise ToolchainError(f"building the Stan driver failed (make build in {target}):\n{tail}")
    (target / ".complete").write_text(toolchain_id() + "\n")
    _say(f"Stan toolchain ready in {time.monotonic() - t0:.0f} s")


def _say(msg: str) -> None:
    print(f"scribe: {msg}", file=sys.stderr, flush=True)


def stanc_version(path: Path) -> str:
    res = subprocess.run([str(path / "bin" / "stanc"), "--version"], capture_output=True, text=True)
    return res.stdout.strip() or res.stderr.strip()


def use_toolchain(build: bool = True) -> Path:
    """Point cmdstanpy at our toolchain (quietly) and return its path."""
    import cmdstanpy

    path = ensure_toolchain(build=build)
    # The toolchain's bin/stansummary and bin/diagnose run with this interpreter (it has numpy and
    # scipy); they fall back to python3 when it is unset (stan/driver/makefile).
    os.environ["SCRIBE_PYTHON"] = sys.executable
    if not _cmdstanpy_level_set:
        set_cmdstanpy_log_level(logging.WARNING)
    cmdstanpy.set_cmdstan_path(str(path))
    return path


_cmdstanpy_level_set = False


def set_cmdstanpy_log_level(level: int) -> None:
    """cmdstanpy sets its logger to DEBUG with an INFO handler on first use: initialise it, then override."""
    global _cmdstanpy_level_set
    from cmdstanpy.utils import get_logger

    logger = get_logger()
    logger.setLevel(level)
    for kind in (_FutureBehaviourFilter, _RejectionFilter, _ExitCodeFilter):
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
    _cmdstanpy_level_set = True


# Stan's services return sysexits.h codes (stan/services/error_codes.hpp), which our driver and CmdStan pass on.
STAN_EXIT_CODES = {64: "usage error", 65: "data error", 66: "input not found", 70: "the algorithm failed",
                   73: "output not writable", 78: "configuration error"}


class _ExitCodeFilter(logging.Filter):
    """cmdstanpy names a non-zero exit code by os.strerror, as if it were an errno: Stan's 70 (the algorithm
    failed, e.g. pathfinder's L-BFGS) then reads "Communication error on send". Say what Stan means instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "%s error: code '%d' %s" and len(record.args or ()) == 3:
            prefix, code, _ = record.args
            record.msg = "%s error: Stan exited with code %d (%s)"
            record.args = (prefix, code, STAN_EXIT_CODES.get(code, "see the message below"))
        return True


class _RejectionFilter(logging.Filter):
    """Turns cmdstanpy's three-line "Non-fatal error during sampling" warning into one scribe line.

    Stan rejects a proposal whose log density throws (a scale that underflowed to 0 on a wild early leapfrog
    step, say); in warmup that is routine, and the run's own diagnostics (divergences, R-hat) say whether the
    posterior suffered. The reason is kept; the timestamped cmdstanpy lines and the advice to rerun with
    show_console, which a scribe user cannot follow, are not.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Non-fatal error during sampling" not in message:
            return True
        reason = next((ln.split("Exception:", 1)[1].strip() for ln in message.splitlines() if "Exception:" in ln),
                      "see --verbose")
        logging.getLogger("scribe_cli.fit").info(
            "Stan rejected some proposals (%s); routine early in warmup, the diagnostics below say whether it "
            "mattered", reason)
        return False


class _FutureBehaviourFilter(logging.Filter):
    """Drops cmdstanpy 1.x's "the default behavior of ... will change in a future release" warnings.

    They come from stan_variable(s) on scalars of optimize and ADVI fits and say nothing to a scribe user:
    idata.posterior_arrays turns either return type into an array. Anything else cmdstanpy says passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "will change in a future release" not in record.getMessage()


if __name__ == "__main__":  # `python -m scribe_cli.toolchain`: what `make toolchain` runs
    try:
        print(use_toolchain())
    except ToolchainError as exc:
        print(f"scribe: error: {exc}", file=sys.stderr)
        sys.exit(1)
