"""`scribe sweep`: a grid of `scribe run` configurations over input files, each fit a Dask task.

The grid is a TOML file whose top-level keys are `scribe run` option names (underscores); a list means
alternatives, and the grid is their Cartesian product, crossed with the inputs. ``[cluster]`` holds the settings
of a dask-jobqueue cluster (``--cluster slurm|pbs|sge``; ``jobs`` = how many batch jobs to start), ``[sweep]``
the sweep's own defaults (``output_dir``, ``retries``, ``workers``).

Why this shape:
- Each fit runs `scribe run` in a subprocess of a Dask worker: the fit gets the CLI's guarantees (atomic output,
  one JSON object on stdout, exit codes), and a killed worker takes its fit down with it (the child is asked to
  die with its parent, PR_SET_PDEATHSIG), so the scheduler's retry starts from a clean state.
- Each distinct program is compiled once in this process before fanning out; the tasks find it in the shared
  content-hash cache (and its lock serialises any compile a task still needs).
- An output is named by a hash of the resolved configuration and the input's SHA-256, and is finished when its
  posterior and its result sidecar (``.json``, written after it) both exist: a restarted sweep skips it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserInputError

log = logging.getLogger("scribe_cli")

CLUSTERS = ("local", "slurm", "pbs", "sge")
# Options a grid cannot set: the sweep chooses them per task.
_NOT_IN_GRID = {"input_file", "output", "overwrite", "quiet", "verbose", "output_format", "print_config", "config"}
_SIDE_TABLES = ("cluster", "sweep")
_SWEEP_KEYS = {"output_dir", "retries", "workers"}


@dataclass
class Task:
    """One fit: an input and a fully resolved set of `scribe run` options."""

    input: Path
    input_sha256: str
    options: dict  # resolved: every run option (defaults filled in), as `scribe run --print-config` names them
    varied: dict  # the grid keys that vary, for the index table
    key: str = ""
    output: Path = Path()
    skipped: bool = False
    result: dict = field(default_factory=dict)

    @property
    def sidecar(self) -> Path:
        return self.output.with_suffix(".json")

    def argv(self) -> list[str]:
        """`scribe run` command line of this task."""
        # absolute paths: a batch job's worker may start in another directory
        args = [sys.executable, "-m", "scribe_cli.cli", "run", str(self.input.resolve()), "-o", str(self.output.resolve()), "--overwrite",
                "--quiet", "--format", "json"]
        for name, value in self.options.items():
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                args += [flag] if value else []
            elif isinstance(value, (list, tuple)):
                for v in value:
                    args += [flag, str(v)]
            elif value is not None:
                args += [flag, str(value)]
        return args


def read_grid(path: Path) -> tuple[dict, dict, dict]:
    """(grid, cluster settings, sweep settings) from the TOML file; one-line errors for unreadable files."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except FileNotFoundError:
        raise UserInputError(f"grid file {path} does not exist; pass a TOML file of `scribe run` options") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserInputError(f"{path} is not valid TOML ({exc}); fix the file") from None
    cluster, settings = table.pop("cluster", {}), table.pop("sweep", {})
    if not isinstance(cluster, dict) or not isinstance(settings, dict):
        raise UserInputError(f"[cluster] and [sweep] in {path} must be tables; see `scribe sweep --help`")
    unknown = sorted(set(settings) - _SWEEP_KEYS)
    if unknown:
        raise UserInputError(f"unknown key(s) {', '.join(unknown)} in [sweep] of {path}; use {', '.join(sorted(_SWEEP_KEYS))}")
    return table, cluster, settings


def run_defaults() -> dict:
    """Every `scribe run` option with its default (the click command is the one definition of them): the
    parameters click resolves for a command line without options."""
    from .cli import run

    with run.make_context("run", [], resilient_parsing=True) as ctx:
        params = dict(ctx.params)
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items() if k not in _NOT_IN_GRID}
    # a sweep's fits share the machine (workers = cores // threads per chain): one thread each unless the grid
    # or --threads-per-chain says otherwise, not `scribe run`'s every-core default for one-process methods
    params["threads_per_chain"] = params["threads_per_chain"] or 1
    return params


def expand(grid: dict, inputs: list[Path], defaults: dict | None = None) -> list[Task]:
    """The Cartesian product of the grid's lists, crossed with the inputs, each validated (model rules and run
    options) before anything runs. ``priors`` (repeatable) is a list of strings; a list of lists means
    alternatives."""
    from .data import file_sha256

    defaults = run_defaults() if defaults is None else defaults
    unknown = sorted(set(grid) - set(defaults))
    if unknown:
        raise UserInputError(f"unknown option(s) {', '.join(unknown)} in the grid; use `scribe run` option names "
                             "with underscores (model, method, seed, ...)")
    axes = {}
    for name, value in sorted(grid.items()):
        if name == "priors":
            alts = value if value and all(isinstance(v, list) for v in value) else [value]
        else:
            alts = value if isinstance(value, list) else [value]
        if not alts:
            raise UserInputError(f"grid option {name} is an empty list; give at least one value")
        axes[name] = alts
    if "seed" not in axes:
        axes["seed"] = [defaults.get("seed") or 1]  # a sweep is reproducible: never a random seed
    if "parallel_chains" not in axes:
        axes["parallel_chains"] = [1]  # one core per worker x threads per chain (see make_cluster)
    names = list(axes)
    tasks = []
    for inp in inputs:
        if not Path(inp).exists():
            raise UserInputError(f"input {inp} does not exist; check the path")
        sha = file_sha256(inp) if Path(inp).is_file() else _dir_digest(Path(inp))
        for combo in itertools.product(*(axes[n] for n in names)):
            chosen = dict(zip(names, combo))
            options = {**defaults, **chosen}
            _validate(options)
            varied = {n: chosen[n] for n in names if len(axes[n]) > 1}
            tasks.append(Task(Path(inp), sha, options, varied))
    return tasks


def _dir_digest(path: Path) -> str:
    from .data import _dir_sha256

    return _dir_sha256(path)


def _validate(options: dict) -> None:
    """The checks `scribe run` makes before reading data (model rules, run options), so a bad grid fails at once."""
    from .cli_options import MODEL_OPTION_NAMES, model_config_from_options
    from .fit import RunOptions

    model_config_from_options(**{k: options[k] for k in MODEL_OPTION_NAMES})
    RunOptions(method=options["method"], chains=options["chains"], parallel_chains=options["parallel_chains"],
               threads_per_chain=options["threads_per_chain"], warmup=options["warmup"], draws=options["draws"],
               seed=options["seed"], init=options["init"], adapt_delta=options["adapt_delta"],
               max_treedepth=options["max_treedepth"]).validate()


def assign_outputs(tasks: list[Task], output_dir: Path) -> None:
    """Name each output by the hash of its resolved options and input SHA-256; mark finished ones skipped."""
    seen = {}
    for t in tasks:
        text = json.dumps({"options": t.options, "input_sha256": t.input_sha256}, sort_keys=True, default=str)
        t.key = hashlib.sha256(text.encode()).hexdigest()[:12]
        stem = t.input.name.removesuffix(".h5ad").removesuffix(".h5")
        t.output = output_dir / f"{stem}.{t.options['model']}.{t.options['method']}.{t.key}.nc"
        if t.key in seen:
            raise UserInputError(f"the grid gives the same configuration twice for {t.input} ({t.varied}); remove the duplicate")
        seen[t.key] = t
        if t.output.exists() and t.sidecar.exists():
            try:
                done = json.loads(t.sidecar.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if done.get("key") == t.key and done.get("status") == "ok":
                t.skipped, t.result = True, done


def compile_programs(tasks: list[Task]) -> int:
    """Render and compile each distinct program of the pending tasks once (the shared cache makes the tasks'
    own compile step a lookup). Returns how many distinct programs there are."""
    from .cache import compile_program
    from .cli_options import MODEL_OPTION_NAMES, model_config_from_options
    from .render import render

    programs = {}
    for t in tasks:
        if t.skipped or t.options.get("stan_file"):
            continue
        config = model_config_from_options(**{k: t.options[k] for k in MODEL_OPTION_NAMES})
        config = config.for_method(t.options["method"])  # as pipeline.run will render it
        # --prior-draws is a data switch of the program; --log-lik renders one more
        programs.setdefault(render(config, log_lik=bool(t.options["log_lik"])), config.model)
    for i, (program, name) in enumerate(programs.items(), 1):
        compiled = compile_program(program, name=name)
        log.info("sweep: program %d/%d %s (%s)", i, len(programs), compiled.key,
                 "cached" if compiled.cached else f"compiled in {compiled.seconds:.1f} s")
    return len(programs)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent (the Dask worker) dies, so a killed worker never leaves
    a fit running (`scribe run` turns SIGTERM into a clean exit that writes nothing)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the fit may outlive a killed worker, but its output is still atomic


class FitInterrupted(RuntimeError):
    """The `scribe run` process died from a signal: the task is worth retrying."""


def run_task(argv: list[str], sidecar: str, key: str) -> dict:
    """Run one fit (a Dask task, executed in a worker). Returns the result record; raises FitInterrupted when
    the fit was killed (Dask then retries it). Bad input (exit 2) and failed diagnostics are results, not retries."""
    t = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, preexec_fn=_die_with_parent)
    wall = time.monotonic() - t
    if proc.returncode < 0 or proc.returncode in (130, 143):
        raise FitInterrupted(f"scribe run was stopped (exit {proc.returncode}); retrying")
    record = {"key": key, "wall_s": round(wall, 2), "exit_code": proc.returncode}
    if proc.returncode in (0, 3):  # 3: written, but the diagnostics failed under --strict (the verdict says so)
        record.update(status="ok", **json.loads(proc.stdout.strip().splitlines()[-1]))
        from .atomic import atomic_write

        atomic_write(Path(sidecar), lambda p: Path(p).write_text(json.dumps(record, indent=1, default=str) + "\n"))
    else:
        record.update(status="failed", error=(proc.stderr.strip().splitlines() or ["(no message)"])[-1])
    return record


def make_cluster(kind: str, settings: dict, workers: int | None, threads_per_chain: int, scale: bool = True):
    """A Dask cluster: LocalCluster (one single-threaded worker process per `threads_per_chain` cores, as each fit
    runs its chains one after the other unless the grid sets parallel_chains) or a dask-jobqueue cluster built from
    the TOML's [cluster] table (its ``jobs`` key: how many batch jobs to start; ``scale=False`` starts none)."""
    settings = dict(settings)
    jobs = settings.pop("jobs", None)
    if kind == "local":
        from dask.distributed import LocalCluster

        n = workers or max(1, (os.cpu_count() or 1) // max(1, threads_per_chain))
        return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
    import dask_jobqueue

    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster, "sge": dask_jobqueue.SGECluster}[kind]
    # One Dask worker per job, whose `cores` are a resource each fit claims threads_per_chain of (run_tasks): a job
    # runs cores // threads_per_chain fits at once, each running its chains one after another.
    settings.setdefault("processes", 1)
    cores = settings.get("cores")
    if cores:
        settings["worker_extra_args"] = [*settings.get("worker_extra_args", []), "--resources", f"cores={cores}"]
    try:
        cluster = cls(**settings)
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"[cluster] settings for {kind} are not accepted by dask-jobqueue ({exc}); "
                             "use the keyword arguments of dask_jobqueue's cluster (cores, memory, queue, walltime, ...)") from None
    if scale:  # submits the batch jobs (sbatch / qsub); not for --dry-run, which only prints the job script
        cluster.scale(jobs=jobs or workers or 1)
    return cluster


def run_tasks(tasks: list[Task], client, retries: int, progress, claim_cores: bool = False) -> None:
    """Submit the pending tasks, report each as it completes (progress(text)), store results on the tasks.
    ``claim_cores``: each task claims threads_per_chain of its worker's ``cores`` resource (batch clusters)."""
    from dask.distributed import as_completed

    pending = [t for t in tasks if not t.skipped]
    futures = {}
    for t in pending:
        resources = {"cores": int(t.options["threads_per_chain"])} if claim_cores else None
        fut = client.submit(run_task, t.argv(), str(t.sidecar), t.key, key=f"fit-{t.key}", pure=False, retries=retries,
                            resources=resources)
        futures[fut] = t
    done = len(tasks) - len(pending)
    for fut in as_completed(futures):
        t = futures[fut]
        try:
            t.result = fut.result()
        except Exception as exc:  # noqa: BLE001 - a task that kept failing is a row of the index, not a crash
            t.result = {"key": t.key, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        done += 1
        status = t.result.get("status")
        verdict = _verdict(t.result)
        progress(f"[{done}/{len(tasks)}] {status} {t.output.name} ({t.result.get('wall_s', '?')} s{', ' + verdict if verdict else ''})")


def _verdict(result: dict) -> str:
    diag = result.get("diagnostics") or {}
    if result.get("status") != "ok" or not diag:
        return ""
    return "diagnostics ok" if diag.get("ok", True) else "diagnostics: " + "; ".join(diag.get("problems", []))


def index_rows(tasks: list[Task]) -> list[dict]:
    rows = []
    for t in tasks:
        r = t.result
        diag = r.get("diagnostics") or {}
        rows.append({
            "input": str(t.input), "key": t.key, "config": json.dumps(t.varied, sort_keys=True, default=str),
            "output": str(t.output) if r.get("status") == "ok" else "", "status": r.get("status", "not run"),
            "skipped": t.skipped, "verdict": _verdict(r) or r.get("error", ""),
            "max_rhat": diag.get("max_rhat"), "pareto_k": diag.get("pareto_k"),
            "wall_s": r.get("wall_s"), "timings": json.dumps(r.get("timings", {}), default=str),
            "options": t.options,
        })
    return rows


def write_index(rows: list[dict], output_dir: Path) -> tuple[Path, Path]:
    """index.tsv (one row per fit, options as JSON) and index.json, written atomically."""
    import pandas as pd

    from .atomic import atomic_write

    tsv, js = output_dir / "index.tsv", output_dir / "index.json"
    table = pd.DataFrame([{**r, "options": json.dumps(r["options"], sort_keys=True, default=str)} for r in rows])
    atomic_write(tsv, lambda p: table.to_csv(p, sep="\t", index=False))
    atomic_write(js, lambda p: Path(p).write_text(json.dumps(rows, indent=1, default=str) + "\n"))
    return tsv, js


def compare_groups(tasks: list[Task], output_dir: Path) -> list[dict]:
    """For each input with two or more finished --log-lik fits that hold draws: the `scribe compare` table
    (PSIS-LOO, stacking weights) written as <input>.compare.tsv; returns one record per input."""
    from .errors import ScribeError
    from .reports import compare as cmp

    groups: dict[str, list[Task]] = {}
    for t in tasks:
        if t.result.get("status") == "ok" and t.options.get("log_lik") and t.options["method"] != "optimize":
            groups.setdefault(t.input_sha256, []).append(t)
    out = []
    for group in groups.values():
        if len(group) < 2:
            continue
        try:
            fits = cmp.load_fits([t.output for t in group])
            cmp.check_same_data(fits)
            res = cmp.compare_fits(fits)
        except ScribeError as exc:
            log.warning("sweep: no comparison for %s: %s", group[0].input, exc)
            continue
        stem = group[0].input.name.removesuffix(".h5ad").removesuffix(".h5")
        path = output_dir / f"{stem}.compare.tsv"
        from .atomic import atomic_write

        atomic_write(path, lambda p: res["table"].drop(columns=["warning", "scale"], errors="ignore")
                     .to_csv(p, sep="\t", float_format="%.6g"))
        out.append({"input": str(group[0].input), "table": str(path), "comparison": cmp.table_records(res["table"])})
    return out
