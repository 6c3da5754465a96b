"""Content-hash compile cache: each Stan program is compiled at most once per toolchain and flags.

Key = sha256(program text, toolchain id, compiler options). The executable lives in
``<cache>/models/<key>/`` and is reused by every process that shares the cache (HPC job arrays).
Concurrent compiles of the same program are serialised by a per-key lock; the compile happens in a
private temporary directory that is renamed into place only when complete, so a reader never sees
a half-written executable and a killed compile leaves nothing that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ScribeError, UserInputError
from .locking import file_lock
from .resources import NATIVE_SRC
from .toolchain import cache_dir, toolchain_id, use_toolchain

log = logging.getLogger(__name__)

# One set of C++ options for every model: our driver is always built threaded (reduce_sum and
# parallel chains need it), so STAN_THREADS is part of the key only to keep real-CmdStan builds honest.
CPP_OPTIONS = {"STAN_THREADS": "true"}

# Functions a rendered program may declare without a body, all reached from one header under stan/cpp/
# (stanc --allow-undefined, USER_HEADER: how CmdStan takes external C++, so a real CmdStan builds them too),
# which includes its siblings.
NATIVE_HEADER = NATIVE_SRC / "native.hpp"
NATIVE_FUNCTIONS = ("capture_nb_zero_terms", "capture_zinb_zero_terms", "capture_nb_nonzero_terms",
                    "capture_zinb_nonzero_terms", "native_grainsize", "rise_table_sum", "nb_logit_gene_sum",
                    "zinb_logit_gene_sum", "zinb_gate_quadrature", "zinb_gate_draw_rng")
_NATIVE_DECLARATION = re.compile(rf"\b(real|int|vector) ({'|'.join(NATIVE_FUNCTIONS)})\([^{{}};]*\);")

# The pair-statistics likelihoods' functions, and the header that holds only them (with its includes).
PAIR_FUNCTIONS = {"rise_table_sum", "nb_logit_gene_sum", "zinb_logit_gene_sum", "zinb_gate_quadrature",
                  "zinb_gate_draw_rng"}
PAIRS_HEADER = NATIVE_SRC / "pairs.hpp"
PAIRS_SOURCES = [PAIRS_HEADER, NATIVE_SRC / "gate_quadrature.hpp", NATIVE_SRC / "logit_gene_sum.hpp",
                 NATIVE_SRC / "rise_sum.hpp"]


def native_header(program: str) -> Path | None:
    """The C++ header a program needs, or None. A declaration is `real name(...);`: the name followed
    by its argument list and a semicolon, never a body. A program that declares only the pair forms' functions
    (every pair-statistics likelihood) gets their own header: the capture terms' Eigen code, unused there, added
    about 8 s to each such compile (7.7 s for an empty file including it on this machine)."""
    declared = {m.group(2) for m in _NATIVE_DECLARATION.finditer(program)}
    if not declared:
        return None
    return PAIRS_HEADER if declared <= PAIR_FUNCTIONS else NATIVE_HEADER


def native_sources(header: Path | None = None) -> list[Path]:
    """The C++ files ``header`` compiles (pairs.hpp and its two includes; native.hpp includes every sibling), or
    every one of them, in a fixed order. A program's cache key holds only its own header's text, so a change
    to the capture terms leaves the pair programs' binaries valid."""
    if header == PAIRS_HEADER:
        return PAIRS_SOURCES
    return sorted(NATIVE_SRC.glob("*.hpp"))


@dataclass
class CompiledModel:
    model: "object"  # cmdstanpy.CmdStanModel
    key: str
    cached: bool
    seconds: float


def models_dir() -> Path:
    return cache_dir() / "models"


def program_key(program: str, cpp_options: dict | None = None) -> str:
    opts = json.dumps(cpp_options or CPP_OPTIONS, sort_keys=True)
    header = native_header(program)
    sources = native_sources(header) if header else []  # their text is part of what gets compiled
    h = hashlib.sha256()
    for part in (toolchain_id(), opts, program, *(f.read_text() for f in sources)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def check_program(program: str) -> dict:
    """Parse and type-check a program with stanc, without compiling C++: its `stanc --info` (data, parameters
    and the other blocks' variables), or UserInputError with stanc's message. `stanc --info` stops after the
    type check (no C++ is generated): about a quarter faster than a translation, which counts when the tests
    check thousands of renderable programs."""
    tc = use_toolchain()
    with tempfile.TemporaryDirectory(prefix="scribe-stanc-") as tmp:
        src = Path(tmp) / "check.stan"
        src.write_text(program)
        undefined = ["--allow-undefined"] if native_header(program) else []
        res = subprocess.run([str(tc / "bin" / "stanc"), *undefined, "--info", str(src)], capture_output=True, text=True)
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip()
        raise UserInputError(f"stanc rejected the Stan program: {msg}")
    return json.loads(res.stdout)


def compile_program(program: str, name: str = "model", cpp_options: dict | None = None) -> CompiledModel:
    """Return a compiled CmdStanModel for ``program``, compiling only on a cache miss."""
    import cmdstanpy

    use_toolchain()
    key = program_key(program, cpp_options)
    final = models_dir() / key
    t0 = time.monotonic()
    hit = _load(final, name)
    if hit is not None:
        log.info("compiled model found in cache (%s): no compile", key)
        return CompiledModel(hit, key, True, time.monotonic() - t0)
    models_dir().mkdir(parents=True, exist_ok=True)
    with file_lock(models_dir() / f"{key}.lock"):
        hit = _load(final, name)  # another process may have finished while we waited for the lock
        if hit is not None:
            log.info("compiled model found in cache (%s) after waiting for another compile", key)
            return CompiledModel(hit, key, True, time.monotonic() - t0)
        log.info("compiling Stan program %s (once per program: 30-90 s on two cores)", key)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=models_dir()))
        try:
            stan_file = tmp / f"{name}.stan"
            stan_file.write_text(program)
            header = native_header(program)
            extra = {}
            if header is not None:  # the entry keeps the C++ it was built from beside the program
                for source in native_sources(header):
                    shutil.copy(source, tmp / source.name)
                extra["user_header"] = str(tmp / header.name)
            try:
                # a copy: cmdstanpy writes USER_HEADER into the dict it is given
                cmdstanpy.CmdStanModel(stan_file=str(stan_file), cpp_options=dict(cpp_options or CPP_OPTIONS), **extra)
            except (ValueError, RuntimeError) as exc:
                raise ScribeError(f"compiling the Stan program failed: {_first_error(str(exc))}") from exc
            (tmp / ".complete").write_text(json.dumps({"name": name, "toolchain": toolchain_id()}) + "\n")
            if final.exists():  # a stale, incomplete entry (no .complete): replace it
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    model = _load(final, name)
    assert model is not None
    return CompiledModel(model, key, False, time.monotonic() - t0)


def _load(path: Path, name: str):
    import cmdstanpy

    marker = path / ".complete"
    if not marker.is_file():
        return None
    stored = json.loads(marker.read_text())["name"]
    return cmdstanpy.CmdStanModel(stan_file=str(path / f"{stored}.stan"), exe_file=str(path / stored))


def _first_error(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if "error" in ln.lower() or "Semantic" in ln or "Syntax" in ln:
            return " ".join(lines[i:i + 4])
    return " ".join(lines[-4:])


def count_cached_models() -> int:
    d = models_dir()
    if not d.is_dir():
        return 0
    return sum(1 for p in d.iterdir() if (p / ".complete").is_file())


def check_user_program(path: Path) -> str:
    if not path.is_file():
        raise UserInputError(f"Stan file {path} does not exist; pass an existing .stan file to --stan-file")
    return path.read_text()
