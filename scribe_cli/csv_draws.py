"""A NUTS fit's draws read from its chains' CSV files in parallel, one process per chain.

Why not leave it to cmdstanpy: CmdStanMCMC parses the chains one after another with numpy.loadtxt, which holds
the GIL, so threads cannot share the work. On the full PBMC matrix (4 chains x 1000 draws x ~87,000 columns,
3 GB of text) that was ~90 s on one core while the other idled (bench/write_phase.py). polars, which
cmdstanpy uses when installed, parsed these very wide files only ~15% faster than loadtxt, not worth a
dependency. Here each chain goes through cmdstanpy's own parsing functions in a process of its own and comes
back as a .npy file beside its CSV; the arrays are then placed where cmdstanpy's _assemble_draws puts them
(_draws, _step_size, _metric), so az.from_cmdstanpy and stan_variables read them unchanged. That layout is
cmdstanpy 1.3's (pinned in constraints.txt); on anything unexpected cmdstanpy reads the files itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

log = logging.getLogger(__name__)


def _read_chain(path: str) -> tuple[str, int, float | None, np.ndarray | None]:
    from cmdstanpy.utils import stancsv

    comments, header, lines = stancsv.parse_comments_header_and_draws(path)
    draws = stancsv.csv_bytes_list_to_numpy(lines)
    if draws.shape[0] == 0:
        draws = np.empty((0, header.count(",") + 1 if header else 0))
    step_size, metric = stancsv.parse_hmc_adaptation_lines(comments)
    out = f"{path}.draws.npy"
    np.save(out, draws)
    return out, draws.shape[0], step_size, metric


# Below this much CSV text cmdstanpy reads the files itself: starting the worker processes (~1 s, numpy and
# cmdstanpy imported in each) costs more than loadtxt does on ~100 MB (~3 s on one core).
MIN_BYTES = 100 * 2**20


def assemble(fit, workers: int | None = None, min_bytes: int = MIN_BYTES) -> bool:
    """Fill a CmdStanMCMC's draws from its CSVs with up to ``workers`` processes (default: the cores); True when
    done here, False when left to cmdstanpy (one worker, files under ``min_bytes`` in all, draws already read,
    or a layout this does not know)."""
    files = [str(p) for p in fit.runset.csv_files]
    workers = min(len(files), workers or os.cpu_count() or 1)
    if workers < 2 or getattr(fit, "_draws", None) is None or fit._draws.shape != (0,):
        return False
    if sum(os.path.getsize(f) for f in files) < min_bytes:
        return False
    try:
        n_draws = fit.num_draws_sampling + (fit.num_draws_warmup if fit._save_warmup else 0)
        shape = (n_draws, fit.chains, len(fit.column_names))
        fixed_param = fit._is_fixed_param
    except AttributeError as exc:
        log.debug("cmdstanpy reads the draws itself (%s)", exc)
        return False
    draws = np.empty(shape, dtype=np.float64, order="F")
    step_sizes = np.empty(fit.chains, dtype=np.float64)
    metrics = []
    # spawn, not fork: the parent may hold threads (and their locks) that a forked child would inherit mid-use
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = pool.map(_read_chain, files)
        for chain, (path, rows, step_size, metric) in enumerate(results):
            try:
                if rows != n_draws:
                    raise ValueError(f"chain {chain + 1} has {rows} draws, expected {n_draws}")
                draws[:, chain, :] = np.load(path)
            finally:
                os.remove(path)
            if not fixed_param:
                step_sizes[chain] = step_size
                metrics.append(metric)
    fit._draws = draws
    fit._step_size = step_sizes
    if metrics and all(m is not None for m in metrics):
        fit._metric = np.array(metrics)
    return True
