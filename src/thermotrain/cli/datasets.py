"""``thermotrain datasets {list,verify,fetch}``: manage the image data sets (docs/science.md §6).

The main CLI calls :func:`register` with its sub-parsers and :func:`run` with the parsed
arguments (``register`` also sets ``func=run`` as the parser default, the usual argparse
idiom)::

    thermotrain datasets list [--data-dir DIR] [--no-verify]
    thermotrain datasets verify NAME [--data-dir DIR]
    thermotrain datasets fetch NAME [--data-dir DIR] [--base-url URL] [--force] [--no-progress]

Exit codes: 0 success; 1 a file is corrupt or a download failed; 2 a user mistake (unknown
data-set name, missing files). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from thermotrain.data import (
    DATASETS,
    DatasetCorruptError,
    DatasetDownloadError,
    DatasetError,
    DatasetNotFoundError,
    UnknownDatasetError,
    fetch,
    list_datasets,
    resolve_data_dir,
    verify,
)
from thermotrain.data.download import check_base_url

__all__ = ["register", "run"]

_PROG = "thermotrain datasets"


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="data root (default: $THERMOTRAIN_DATA, else ~/.cache/thermotrain)",
    )


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``datasets`` command (with ``list``, ``verify``, ``fetch``) to ``subparsers``.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        The ``datasets`` parser (its default ``func`` is :func:`run`).
    """
    names = ", ".join(DATASETS)
    parser = subparsers.add_parser(
        "datasets",
        help="list, verify or download the image data sets",
        description=f"Manage the image data sets ({names}).",
    )
    commands = parser.add_subparsers(dest="datasets_command", metavar="COMMAND")
    commands.required = True

    p_list = commands.add_parser("list", help="show every data set, where and whether present")
    _add_data_dir(p_list)
    p_list.add_argument(
        "--no-verify", action="store_true", help="only check that files exist (skip checksums)"
    )

    p_verify = commands.add_parser("verify", help="check a data set's files against checksums")
    p_verify.add_argument("name", metavar="NAME", help=f"data set: {names}")
    _add_data_dir(p_verify)

    p_fetch = commands.add_parser("fetch", help="download a data set and verify it")
    p_fetch.add_argument("name", metavar="NAME", help=f"data set: {names}")
    _add_data_dir(p_fetch)
    p_fetch.add_argument(
        "--base-url",
        metavar="URL",
        default=None,
        help="download from this base URL instead of the default mirrors",
    )
    p_fetch.add_argument(
        "--force", action="store_true", help="download even files that are present and verify"
    )
    p_fetch.add_argument("--no-progress", action="store_true", help="no progress bar")

    parser.set_defaults(func=run)
    return parser


def _error(message: object, stream: TextIO) -> None:
    text = " ".join(str(message).split())  # one line, whatever the exception said
    print(f"{_PROG}: error: {text}", file=stream)


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``datasets`` command; return the process exit code.

    0 on success, 1 if a file is corrupt or a download failed, 2 for user mistakes (unknown
    name, missing files, bad arguments). Problems are printed as one line on stderr.
    """
    command = getattr(args, "datasets_command", None)
    data_dir = getattr(args, "data_dir", None)
    try:
        root = resolve_data_dir(data_dir)
        if root.exists() and not root.is_dir():
            raise ValueError(f"the data root {root} is a file, not a folder; pass --data-dir DIR")
        if command == "fetch":
            check_base_url(getattr(args, "base_url", None))
            _check_writable(root)
    except (TypeError, ValueError) as exc:  # e.g. --data-dir "", --base-url notaurl
        _error(exc, sys.stderr)
        return 2
    try:
        if command == "list":
            return _list(data_dir, checksums=not getattr(args, "no_verify", False))
        if command == "verify":
            status = verify(args.name, data_dir)
            print(f"{status.name}: all {len(status.files)} files verified in {status.folder}")
            return 0
        if command == "fetch":
            report = fetch(
                args.name,
                data_dir,
                base_url=getattr(args, "base_url", None),
                progress=not getattr(args, "no_progress", False) and sys.stderr.isatty(),
                force=getattr(args, "force", False),
            )
            status = report.status
            print(
                f"{status.name}: downloaded {len(report.downloaded)}, already present "
                f"{len(report.already_present)}; all {len(status.files)} files verified in "
                f"{status.folder}"
            )
            return 0
        _error(f"unknown datasets command {command!r}; use list, verify or fetch", sys.stderr)
        return 2
    except (UnknownDatasetError, DatasetNotFoundError) as exc:
        _error(exc, sys.stderr)
        return 2
    except (DatasetCorruptError, DatasetDownloadError) as exc:
        _error(exc, sys.stderr)
        return 1
    except DatasetError as exc:
        _error(exc, sys.stderr)
        return 1
    except OSError as exc:  # e.g. the data root is not writable
        _error(f"{exc.strerror or exc}: {exc.filename or ''}", sys.stderr)
        return 1


def _check_writable(root: Path) -> None:
    """``fetch`` writes under ``root``: create it and try a file (else ValueError, exit 2)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=root)
    except OSError as exc:
        raise ValueError(f"cannot write in the data root {root} ({exc.strerror or exc}); "
                         "pass --data-dir DIR") from None
    os.close(fd)
    os.unlink(probe)


def _list(data_dir: str | None, *, checksums: bool) -> int:
    root = resolve_data_dir(data_dir)
    statuses = list_datasets(data_dir, checksums=checksums)
    print(f"data root: {root} (from {statuses[0].data_dir_source})")
    width = max(len(s.name) for s in statuses)
    for status in statuses:
        print(f"{status.name:<{width}}  {status.state:<8}  {status.folder}")
        print(f"{'':<{width}}  {status.description}")
        for file in status.files:
            if file.state not in ("ok", "present"):
                print(f"{'':<{width}}    {file.state}: {file.name}")
    return 0
