"""Where the Stan sources are: the Jinja templates, the C++ driver and the C++ user functions.

The top-level ``stan/`` directory of the source tree is their only copy. A wheel (or sdist) carries it
as package data ``scribe_cli/stan`` (pyproject.toml maps it there at build time), so an installed
package finds it next to its modules; a source checkout or an editable install has no such directory
and reads ``stan/`` beside the package instead.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def stan_dir() -> Path:
    packaged = _PACKAGE / "stan"
    return packaged if packaged.is_dir() else _PACKAGE.parent / "stan"


STAN_DIR = stan_dir()
TEMPLATES = STAN_DIR / "templates"
DRIVER_SRC = STAN_DIR / "driver"
NATIVE_SRC = STAN_DIR / "cpp"  # C++ user functions that rendered programs may declare (USER_HEADER)
