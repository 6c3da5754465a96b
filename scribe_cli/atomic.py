"""Write-then-rename: readers never see a partial file, and an interrupted write leaves nothing behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:  # including KeyboardInterrupt: Ctrl-C must not leave a temporary file
        Path(tmp).unlink(missing_ok=True)
        raise
