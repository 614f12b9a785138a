"""Where the study files live and how a name becomes a file.

The studies are the ``*.toml`` files of the repository's ``studies/`` folder. It is found,
in order, from ``$THERMOTRAIN_STUDIES``, the package's own ``thermotrain/studies`` (a wheel
that ships them as package data), or the source tree (``<repo>/studies`` next to ``src/``,
which is what an editable install sees).
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import ConfigError, read_toml

__all__ = ["ENV_VAR", "studies_dir", "list_studies", "find_study"]

ENV_VAR = "THERMOTRAIN_STUDIES"


def _candidates() -> list[Path]:
    here = Path(__file__).resolve()
    out = []
    if os.environ.get(ENV_VAR):
        out.append(Path(os.environ[ENV_VAR]))
    out.append(here.parents[1] / "studies")  # thermotrain/studies (package data)
    out.append(here.parents[3] / "studies")  # <repo>/src/thermotrain/experiments -> <repo>
    return out


def studies_dir() -> Path:
    """The folder holding the study files.

    Raises:
        ConfigError: none of the candidate folders exists.
    """
    for path in _candidates():
        if path.is_dir():
            return path
    looked = ", ".join(str(p) for p in _candidates())
    raise ConfigError(f"no studies folder found (looked in {looked}); set {ENV_VAR}=DIR")


def list_studies() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every study file, sorted by name."""
    out = []
    for path in sorted(studies_dir().glob("*.toml")):
        raw = read_toml(path)
        text = " ".join(str(raw.get("description", "")).split())
        out.append((path.stem, text))
    return out


def find_study(name_or_path: str | os.PathLike[str]) -> Path:
    """A study file from a study name (``fig8``) or a path to a TOML file.

    Raises:
        ConfigError: no such study; the message lists the known ones.
    """
    text = str(name_or_path)
    path = Path(text)
    if path.suffix == ".toml" or os.sep in text or path.is_file():
        if not path.is_file():
            raise ConfigError(f"study file {text} does not exist")
        return path
    candidate = studies_dir() / f"{text}.toml"
    if candidate.is_file():
        return candidate
    known = ", ".join(p.stem for p in sorted(studies_dir().glob("*.toml")))
    raise ConfigError(f"unknown study {text!r} (known: {known}); or pass a path to a .toml file")
