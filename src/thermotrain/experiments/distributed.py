"""The ``ray`` backend: a study's cells (method × chunk of seeds) as ray tasks.

Each cell trains its chunk of seeds as one vectorised ensemble with
:func:`~.runner.train_method` in a ray task with one torch thread (exactly what the local
backend does for all seeds at once: member k depends only on its seed, so the split does not
change the results) into ``methods/<method>/part-<i>/``. The driver gathers the metric rows,
snapshots and final parameters into the same run folder layout as a local run
(``config.json``, ``metrics.csv``, ``summary.json``, ``methods/<method>/snapshots.pt`` and a
finished ``methods/<method>/checkpoint.pt`` with the final parameters of all seeds), so
``thermotrain report`` works unchanged. Every file is read and written through
:mod:`.run_folder` (workers and driver alike; docs/runs.md); the driver holds the folder's lock
(:meth:`~.run_folder.RunFolder.lock`) for the whole run. Cells are spread over the nodes
(ray's ``SPREAD`` scheduling); the node id of every cell is recorded in ``summary.json``
(``methods.<name>.ray_cells``: part, seeds, node, seconds).

Without an address the backend starts a private local ray (all CPUs, or ``num_cpus``) and
shuts it down at the end; with ``address`` (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``) it
joins that cluster, whose nodes need thermotrain (and the data, for ``--data-dir``)
installed. If ray is already initialised in this process, that session is used and left
running. Workers write their part checkpoints into the run folder (an absolute path), so
``--resume`` of a multi-node run needs a folder that all nodes share (always true on one
machine) and the same seed chunks.

Install with ``pip install thermotrain[ray]``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..data import resolve_data_dir
from .builders import load_data
from .config import StudyConfig
from .run_folder import MethodFolder, RunError, RunFolder
from .runner import (
    _fingerprint,
    check_folder,
    finish_run,
    record_data_dir,
    train_method,
)

__all__ = ["run_study_ray", "split_seeds", "ray_session", "check_address"]

#: seconds to wait for a TCP connection to a cluster address before giving up
CONNECT_TIMEOUT = 5.0
#: seconds to let cancelled cells save their checkpoints after Ctrl-C
CANCEL_GRACE = 15.0


def split_seeds(seeds: list[int], chunk: int) -> list[list[int]]:
    """Consecutive chunks of at most ``chunk`` seeds."""
    return [seeds[i : i + chunk] for i in range(0, len(seeds), chunk)]


# --------------------------------------------------------------------------- connecting
def check_address(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail fast on a cluster address nobody answers at.

    ``ray.init`` waits minutes for an unreachable GCS, so ``HOST:PORT`` and
    ``ray://HOST:PORT`` are first tried with a plain TCP connection (``timeout`` seconds).
    Other forms (``auto``, other schemes, no port) are left to ray.

    Raises:
        RunError: the address is malformed or nothing listens there (one line).
    """
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "", address
    if scheme not in ("", "ray") or address in ("auto", "local"):
        return
    host, colon, port = rest.rstrip("/").rpartition(":")
    if not colon:
        if scheme:  # ray://HOST: ray's default client port
            return
        raise RunError(f"bad ray address {address!r}: expected HOST:PORT, ray://HOST:PORT "
                       "or auto")
    if not port.isdigit() or not host:
        raise RunError(f"bad ray address {address!r}: expected HOST:PORT, ray://HOST:PORT "
                       "or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise RunError(f"cannot reach the ray cluster at {address}: {reason}") from None


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Connect to ray for the duration of the block; yield the ``ray`` module.

    ``address=None`` starts a new local ray (``num_cpus`` CPUs, default all; no dashboard,
    worker output not forwarded) and shuts it down on exit, also on errors; an address joins
    that cluster (disconnecting on exit). An existing session of this process is reused and
    left running.

    Raises:
        RunError: ray is not installed or the cluster cannot be reached.
    """
    try:
        import ray
    except ImportError:
        raise RunError("--backend ray needs ray: pip install thermotrain[ray]") from None
    if ray.is_initialized():
        yield ray
        return
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        # "local": a new private instance, never an ambient RAY_ADDRESS or `ray start` one
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **quiet)
    else:
        check_address(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
            ray.shutdown()
            raise RunError(f"cannot connect to the ray cluster at {address}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------- one cell
def _cell(study: StudyConfig, index: int, seeds: list[int], folder: str, resume: bool,
          data_dir: str | None, threads: int) -> dict[str, Any]:
    """A ray task: train ``seeds`` of method ``index`` as one ensemble into ``folder``;
    return its metric rows, time, snapshots, final parameters and the id of its node."""
    import ray

    torch.set_num_threads(threads)
    method = study.methods[index]
    data = load_data(study.data, data_dir)
    outcome = train_method(study, method, data, Path(folder), seeds=seeds, resume=resume)
    part = MethodFolder(folder)
    snaps, final = part.load_snapshots(), part.load_checkpoint()
    if snaps is None or final is None:
        raise RunError(f"{folder} holds no finished checkpoint and snapshots after training")
    return {"rows": outcome.rows, "seconds": outcome.seconds, "snapshots": snaps["snapshots"],
            "model_spec": snaps.get("model"), "model": final["model"],
            "node": ray.get_runtime_context().get_node_id()}


# --------------------------------------------------------------------------- gathering
def _merge_snapshots(parts: list[list[dict]], saved: int) -> list[dict]:
    """One method's snapshots from its parts (in seed order), as one ensemble would have
    written them: all members' first layer, the first ``saved`` members' parameters."""
    merged = []
    for snaps in zip(*parts, strict=True):
        if len({s["step"] for s in snaps}) != 1:
            raise RunError("the parts of a ray run have different snapshot steps")
        snap: dict[str, Any] = {
            "step": snaps[0]["step"],
            "first_weight": torch.cat([s["first_weight"] for s in snaps]),
            "first_bias": torch.cat([s["first_bias"] for s in snaps]),
            "members": {k: torch.cat([s["members"][k] for s in snaps])[:saved]
                        for k in snaps[0]["members"]},
        }
        if "window" in snaps[0]:  # snapshot_average: (W, saved, ...) per parameter
            snap["window"] = {
                "steps": snaps[0]["window"]["steps"],
                "members": {k: torch.cat([s["window"]["members"][k] for s in snaps],
                                         dim=1)[:, :saved]
                            for k in snaps[0]["window"]["members"]},
            }
        merged.append(snap)
    return merged


def _raise_task_error(ray: Any, exc: BaseException) -> None:
    """Re-raise a task's own exception (RunError, FloatingPointError, ...) so the CLI maps
    it to its exit code; the remote traceback stays attached as ``__cause__``."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, Exception):
        raise cause from exc
    raise exc


def run_study_ray(
    study: StudyConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    data_dir: str | os.PathLike[str] | None = None,
    address: str | None = None,
    seeds_per_task: int | None = None,
    threads: int | None = 1,
    num_cpus: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Like :func:`~.runner.run_study`, with the cells run as ray tasks.

    Args:
        address: ray cluster address (``None``: start a local ray for this run).
        seeds_per_task: seeds per cell (default: the K seeds in chunks of at most 10).
        threads: torch threads (and ray CPUs) per task (``None``: 1).
        num_cpus: CPUs of the local ray started when ``address`` is ``None`` (default all).
        log: where to print one line per finished cell (default: nowhere).
        Other arguments as :func:`~.runner.run_study`.

    Raises:
        RunError: ray missing, cluster unreachable, or the run folder/checkpoints do not
            match; a task's own exception is re-raised as itself.
    """
    out = Path(out)
    run = RunFolder(out)
    threads = threads or 1
    seeds = list(study.training.run_seeds)
    chunk = seeds_per_task or max(1, math.ceil(len(seeds) / math.ceil(len(seeds) / 10)))
    chunks = split_seeds(seeds, chunk)
    if data_dir is not None:
        data_arg: str | None = str(Path(data_dir).resolve())  # workers' cwd differs
    elif address is None:  # our own machine: the data root as resolved here
        data_arg = str(resolve_data_dir(None))
    else:  # a cluster's nodes resolve their own default data root
        data_arg = None

    if run.config_path.exists():
        check_folder(out, study, resume)  # a folder in use fails before ray starts
    if address is not None:
        check_address(address)  # an unreachable cluster leaves no folder behind
    with run.lock():
        with ray_session(address, num_cpus=num_cpus) as ray:
            check_folder(out, study, resume)  # written only once connected
            if not study.data.binary:  # data.json for the report, as run_study
                record_data_dir(out, data_dir)
            cell = ray.remote(num_cpus=threads, scheduling_strategy="SPREAD")(_cell)
            study_ref = ray.put(study)
            futures: dict[Any, tuple[int, int]] = {}
            for i, method in enumerate(study.methods):
                # an absolute path: the workers' cwd differs
                base = MethodFolder(run.method_dir(method.name).resolve())
                for j, part in enumerate(chunks):
                    ref = cell.remote(study_ref, i, part, str(base.part(j).path), resume,
                                      data_arg, threads)
                    futures[ref] = (i, j)
            results: dict[tuple[int, int], dict[str, Any]] = {}
            pending = list(futures)
            try:
                while pending:
                    ready, pending = ray.wait(pending, num_returns=1)
                    try:
                        result = ray.get(ready[0])
                    except ray.exceptions.RayTaskError as exc:
                        _raise_task_error(ray, exc)
                    i, j = futures[ready[0]]
                    results[(i, j)] = result
                    if log is not None:
                        log(f"{study.methods[i].name}: seeds {chunks[j][0]}–{chunks[j][-1]} "
                            f"done ({len(results)}/{len(futures)} ray tasks)")
            except KeyboardInterrupt:
                # cancelled cells get a KeyboardInterrupt and save a checkpoint (--resume)
                for ref in pending:
                    ray.cancel(ref)
                ray.wait(pending, num_returns=len(pending), timeout=CANCEL_GRACE)
                raise
            except BaseException:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise

        rows, timings = _gather(study, run, results, chunks)
        return finish_run(study, out, rows, timings)


def _gather(study: StudyConfig, run: RunFolder,
            results: dict[tuple[int, int], dict[str, Any]], chunks: list[list[int]]
            ) -> tuple[list[tuple], dict[str, dict[str, Any]]]:
    """Write the parts' snapshots and final parameters as one run (snapshots, finished
    checkpoints); return all metric rows (sorted as the local backend writes them) and the
    per-method timings with the cells' nodes."""
    seeds = [s for c in chunks for s in c]
    rows: list[tuple] = []
    timings: dict[str, dict[str, Any]] = {}
    position = {seed: k for k, seed in enumerate(seeds)}
    steps = study.training.steps
    saved = min(study.training.saved_members, len(seeds))
    for i, method in enumerate(study.methods):
        parts = [results[(i, j)] for j in range(len(chunks))]
        method_rows = [tuple(r) for p in parts for r in p["rows"]]
        # the local order: by step, then in the order the loop logs (split, metric), then seed
        logged: dict[tuple[str, str], int] = {}
        for r in method_rows:
            logged.setdefault((r[4], r[5]), len(logged))
        method_rows.sort(key=lambda r: (r[3], logged[(r[4], r[5])], position.get(r[2], -1)))
        rows.extend(method_rows)
        seconds = sum(p["seconds"] for p in parts)
        timings[method.name] = {
            "seconds": seconds,
            "steps_per_second": steps * len(chunks) / seconds if seconds > 0 else float("nan"),
            "ray_tasks": len(chunks),
            "ray_cells": [{"part": j, "seeds": chunks[j], "node": p["node"],
                           "seconds": p["seconds"]} for j, p in enumerate(parts)],
        }
        snaps = _merge_snapshots([p["snapshots"] for p in parts], saved)
        run.save_snapshots(method.name, snaps, seeds=seeds, model=parts[0]["model_spec"])
        # a finished checkpoint as the local backend writes it (the optimizer and batcher
        # states stay in the parts): `run_study(..., resume=True)` sees the method as done
        model = {k: torch.cat([p["model"][k] for p in parts]) for k in parts[0]["model"]}
        run.save_checkpoint(method.name, {
            "fingerprint": _fingerprint(study, method, seeds), "step": steps, "done": True,
            "seconds": seconds, "model": model, "optimizer": None, "batcher": None,
            "rows": method_rows, "snapshots": snaps,
            "parts": [f"part-{j}" for j in range(len(chunks))]})
    return rows, timings
