"""Shared fixtures: one toolchain and one compile cache for the whole test session.

Compiled models are cached by content hash (scribe_cli.cache), so a program used by several tests,
or by a previous run of the suite, is compiled once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


@pytest.fixture(scope="session")
def toolchain() -> Path:
    from scribe_cli.toolchain import use_toolchain

    return use_toolchain()


@pytest.fixture(scope="session")
def compile_stan(toolchain):
    """compile_stan(program_text, name) -> cmdstanpy.CmdStanModel, through the content-hash cache."""
    from scribe_cli.cache import compile_program

    def _compile(program: str, name: str = "model"):
        return compile_program(program, name=name).model

    return _compile


@pytest.fixture(scope="session")
def demo_h5ad() -> Path:
    return DATA / "demo_pbmc_500genes.h5ad"
