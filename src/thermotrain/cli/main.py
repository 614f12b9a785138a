"""The ``thermotrain`` command line.

::

    thermotrain list
    thermotrain run STUDY|FILE [--seeds N] [--steps N] [--quick] [--set key=value ...]
                    [--methods NAME,...] [--out DIR] [--resume] [--backend local|ray]
                    [--address ADDR] [--data-dir DIR] [--log csv|tensorboard ...]
                    [--no-progress] [--no-report]
    thermotrain report RUN_DIR
    thermotrain datasets {list,verify,fetch} ...

Exit codes: 0 success, 1 a failure while running (e.g. a corrupt data file, NaNs, out of
memory), 2 a user mistake (unknown study or key, bad value, a study too large for this
machine, ``--out`` a file or not writable, run folder in use), 130 interrupted (the run can be
continued with ``--resume``). Every error is one line on stderr, never a traceback (a bug in
thermotrain itself still shows its traceback).

``--set methods.NAME.key=value`` on a swept key replaces that key's sweep list (see
:func:`thermotrain.experiments.config.apply_overrides`); ``--log`` picks the metric loggers
(``csv``, the default, writes ``metrics.csv``; ``tensorboard`` needs the optional extra
``thermotrain[tensorboard]``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from ..perf import tune_malloc
from . import datasets as datasets_cli

__all__ = ["main", "build_parser"]

PROG = "thermotrain"

#: metric loggers of ``run --log`` (csv: metrics.csv in the run folder; tensorboard: events)
LOGGERS = ("csv", "tensorboard")


class UsageError(Exception):
    """A user mistake detected by the CLI itself (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(2)


def _error(message: object) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)


@contextlib.contextmanager
def _one_line_warnings():
    """Show warnings as ``thermotrain: warning: ...`` lines (e.g. a corrupt checkpoint that
    was skipped, docs/runs.md), not Python's two-line file:line form."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{PROG}: warning: {' '.join(str(message).split())}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``thermotrain`` command."""
    parser = _Parser(prog=PROG, description="Thermodynamic training of neural networks: "
                     "reproducible studies of the papers' experiments.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p_list = sub.add_parser("list", help="list the studies with one-line descriptions")
    p_list.set_defaults(func=_cmd_list)

    p_run = sub.add_parser("run", help="train a study and write its run folder and report")
    p_run.add_argument("study", metavar="STUDY|FILE", help="study name (see `list`) or a .toml")
    p_run.add_argument("--seeds", type=_positive_int, metavar="N", help="number of seeds K")
    p_run.add_argument("--steps", type=_positive_int, metavar="N", help="steps per run")
    p_run.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    p_run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       dest="overrides", help="override a config value, e.g. "
                       "training.batch_size=50 or methods.AdLaLa.lr=0.1 (repeatable); on a "
                       "swept key it replaces the sweep (methods.NAME.sweep.KEY=[...] sets one)")
    p_run.add_argument("--methods", metavar="NAME,...", help="only these methods")
    p_run.add_argument("--out", metavar="DIR", help="run folder (default runs/STUDY[-quick])")
    p_run.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p_run.add_argument("--backend", choices=("local", "ray"), default="local",
                       help="local (default) or ray (needs `pip install thermotrain[ray]`)")
    p_run.add_argument("--address", metavar="ADDR", help="ray cluster address (--backend ray)")
    p_run.add_argument("--data-dir", metavar="DIR", help="data root for MNIST-like sets")
    p_run.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                       help="torch threads (default: torch's, all cores; with --backend ray: "
                            "per task, default 1)")
    p_run.add_argument("--log", action="append", default=None, metavar="LOGGER[,LOGGER]",
                       help=f"metric loggers: {', '.join(LOGGERS)} (repeatable or a comma list; "
                            "default csv)")
    p_run.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_run.add_argument("--no-report", action="store_true", help="skip report.md and figures")
    p_run.set_defaults(func=_cmd_run)

    p_report = sub.add_parser("report", help="write report.md and figures of a run folder")
    p_report.add_argument("run_dir", metavar="RUN_DIR")
    p_report.set_defaults(func=_cmd_report)

    datasets_cli.register(sub)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _loggers(values: Sequence[str] | None) -> tuple[str, ...]:
    """The ``--log`` values as a tuple of known logger names (default ``("csv",)``)."""
    if not values:
        return ("csv",)
    names = [v.strip() for item in values for v in item.split(",")]
    for name in names:
        if name not in LOGGERS:
            raise UsageError(f"--log must be one of {', '.join(LOGGERS)} (or a comma list), "
                             f"got {name!r}")
    return tuple(dict.fromkeys(names))


def _logger_argument(run: object, loggers: tuple[str, ...]) -> dict[str, object]:
    """The keyword argument that hands ``loggers`` to ``run`` (``run_study``): its
    ``loggers=`` parameter when it has one. Without it only the default CSV logging exists,
    and asking for more is a usage error rather than silently ignored."""
    params = inspect.signature(run).parameters  # type: ignore[arg-type]
    for name in ("loggers", "log_to"):
        if name in params:
            return {name: loggers}
    if loggers != ("csv",):
        raise UsageError("tensorboard logging needs a runner with a loggers= argument, which "
                         "this version does not have; use --log csv")
    return {}


def _check_out(out: Path) -> None:
    """``--out`` must be a folder we can create and write in (else exit 2, before training)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out)
    except OSError as exc:
        raise UsageError(f"--out {out} cannot be created or written ({exc.strerror or exc})"
                         ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def _default_out(name: object, quick: bool) -> Path:
    """``runs/NAME[-quick]``; ``NAME`` must be a safe folder name (never ``../x``)."""
    from ..experiments.config import check_name

    return Path("runs") / (check_name(name) + ("-quick" if quick else ""))


# --------------------------------------------------------------------------- commands
def _cmd_list(args: argparse.Namespace) -> int:
    from ..experiments import list_studies, studies_dir

    studies = list_studies()
    width = max((len(name) for name, _ in studies), default=0)
    print(f"studies in {studies_dir()}:")
    for name, text in studies:
        print(f"  {name:<{width}}  {text}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ..experiments import find_study, load_study, run_study
    from ..experiments.report import comparison_table, write_report

    if args.address and args.backend != "ray":
        raise UsageError("--address only applies to --backend ray")
    loggers = _loggers(args.log)
    for flag, value in (("--out", args.out), ("--data-dir", args.data_dir)):
        if value is not None and not value.strip():
            raise UsageError(f"{flag} must not be empty (got {value!r}); give a folder")
    path = find_study(args.study)
    from ..experiments.config import read_toml

    if "experiment" in read_toml(path):
        return _run_experiment(args, path)
    methods = None
    if args.methods is not None:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if not methods:
            raise UsageError("--methods needs at least one method name")
    study = load_study(path, quick=args.quick, overrides=args.overrides, seeds=args.seeds,
                       steps=args.steps, methods=methods)
    out = Path(args.out) if args.out else _default_out(study.name, args.quick)
    progress = False if args.no_progress else None
    if args.backend == "ray" and loggers != ("csv",):
        raise UsageError("--log tensorboard applies to --backend local only")
    extra = _logger_argument(run_study, loggers) if args.backend == "local" else {}
    _check_out(out)
    tune_malloc()  # keep freed activations in the process: no page faults every step
    if args.backend == "ray":
        if importlib.util.find_spec("ray") is None:
            raise UsageError("--backend ray needs ray: pip install thermotrain[ray]")
        from ..experiments.distributed import run_study_ray

        summary = run_study_ray(study, out, resume=args.resume, data_dir=args.data_dir,
                                address=args.address, threads=args.threads, log=print)
    else:
        summary = run_study(study, out, resume=args.resume, data_dir=args.data_dir,
                            progress=progress, threads=args.threads, log=print, **extra)
    print()
    print(comparison_table(summary))
    if not args.no_report:
        report = write_report(out)
        print(f"\nrun folder: {out}  (report: {report})")
    else:
        print(f"\nrun folder: {out}")
    return 0


def _run_experiment(args: argparse.Namespace, path: Path) -> int:
    """``run`` for a study file with ``experiment = NAME`` (:mod:`..experiments.kinds`)."""
    from ..experiments.kinds import RunContext, get_experiment, load_spec

    for flag, value in (("--methods", args.methods), ("--seeds", args.seeds),
                        ("--steps", args.steps)):
        if value is not None:
            raise UsageError(f"{flag} does not apply to {path.stem} (an experiment study); "
                             "use --set with its own keys")
    if args.backend != "local":
        raise UsageError(f"--backend {args.backend} does not apply to {path.stem}")
    if _loggers(args.log) != ("csv",):
        raise UsageError(f"--log applies to method studies; {path.stem} is an experiment study")
    spec = load_spec(path, quick=args.quick, overrides=args.overrides)
    experiment = get_experiment(spec.get("experiment"), str(path))
    out = Path(args.out) if args.out else _default_out(spec["name"], args.quick)
    _check_out(out)
    progress = (not args.no_progress) and sys.stderr.isatty()
    ctx = RunContext(out=out, quick=args.quick, resume=args.resume, data_dir=args.data_dir,
                     progress=progress, log=print)
    tune_malloc()
    from ..experiments.run_folder import RunFolder

    with RunFolder(out).lock(), _sigterm_interrupts():  # a second process: exit 2, its PID
        summary = experiment.run(spec, ctx)
    if experiment.table is not None:
        print()
        print(experiment.table(summary))
    if not args.no_report:
        report = experiment.report(out)
        print(f"\nrun folder: {out}  (report: {report})")
    else:
        print(f"\nrun folder: {out}")
    return 0


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM stops an experiment-kind run like Ctrl-C: raised at once as
    :class:`~thermotrain.training.Interrupted` (a KeyboardInterrupt: one line, exit 130, as
    the method runner's loop does at the end of its step). Every write is atomic and the
    finished stages are kept, so ``--resume`` continues (docs/runs.md). Main thread only."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from ..training import Interrupted

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cmd_report(args: argparse.Namespace) -> int:
    import json

    from ..experiments.report import ReportError, write_report

    run_dir = Path(args.run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    if isinstance(config, dict) and "experiment" in config:
        from ..experiments.kinds import get_experiment

        try:
            experiment = get_experiment(config["experiment"], str(run_dir / "config.json"))
        except ValueError as exc:
            raise ReportError(str(exc)) from None
        report = experiment.report(run_dir)
    else:
        report = write_report(run_dir)
    print(f"wrote {report}")
    return 0


# --------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``thermotrain`` command with ``argv`` (default ``sys.argv[1:]``); return the
    exit code (0 ok, 1 failure, 2 user mistake, 130 interrupted)."""
    from ..data import DatasetError, DatasetNotFoundError, UnknownDatasetError
    from ..experiments import ConfigError, RunError
    from ..experiments.report import ReportError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, already printed)
        return int(exc.code or 0)
    try:
        with _one_line_warnings():
            return int(args.func(args))
    except (UsageError, ConfigError, RunError, ReportError, UnknownDatasetError,
            DatasetNotFoundError) as exc:
        _error(exc)
        return 2
    except DatasetError as exc:
        _error(exc)
        return 1
    except FloatingPointError as exc:
        _error(f"{exc} (the run diverged; lower the step size)")
        return 1
    except KeyboardInterrupt:
        _error("interrupted; continue with the same command plus --resume")
        return 130
    except MemoryError:
        _error("out of memory; use fewer seeds, a smaller network or fewer points")
        return 1
    except RuntimeError as exc:  # torch's allocator reports running out of memory this way
        if "can't allocate memory" not in str(exc) and "out of memory" not in str(exc):
            raise
        import re

        size = re.search(r"allocate (\d+) bytes", str(exc))
        what = f"torch could not allocate {int(size.group(1)) / 2**20:.0f} MiB" if size \
            else "torch could not allocate memory"
        _error(f"out of memory ({what}); use fewer seeds, a smaller network or fewer points")
        return 1
    except OSError as exc:
        _error(f"{exc.strerror or exc}: {exc.filename or ''}")
        return 1
    except Exception as exc:  # a Ray worker crash is a runtime failure, not a bug of ours
        if type(exc).__module__.split(".")[0] != "ray":
            raise
        _error(f"the Ray cluster failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
