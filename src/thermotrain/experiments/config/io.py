"""Reading study files: :func:`read_toml` (one-line errors) and :func:`load_study` (read,
override, validate)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .overrides import apply_overrides
from .parse import parse_study
from .schema import ConfigError
from .study import StudyConfig

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["read_toml", "load_study"]


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file, turning syntax errors, non-UTF-8 bytes and unreadable files into a
    one-line :class:`ConfigError`."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {' '.join(str(exc).split())}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (TOML files are UTF-8): byte "
                          f"{exc.object[exc.start]:#04x} at offset {exc.start}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def load_study(path: str | Path, *, quick: bool = False, overrides: Sequence[str] = (),
               seeds: int | None = None, steps: int | None = None,
               methods: Sequence[str] | None = None) -> StudyConfig:
    """Read, override and validate a study file.

    Args:
        path: the TOML file.
        quick: apply its ``[quick]`` table (tiny settings for smoke tests).
        overrides: ``key=value`` strings (see :func:`apply_overrides`), applied after
            ``quick``.
        seeds, steps: shortcuts for ``training.seeds`` / ``training.steps``.
        methods: keep only these methods (names before or after sweep expansion).

    Raises:
        ConfigError: with a one-line message naming the file and the key.
    """
    path = Path(path)
    raw = read_toml(path)
    file = str(path)
    explicit = [item.split("=", 1)[0].strip() for item in overrides]
    raw = apply_overrides(raw, overrides, file)
    for key, value in (("seeds", seeds), ("steps", steps)):
        if value is not None:
            table = raw.setdefault("training", {})
            if isinstance(table, dict):  # else parse_study names the bad [training]
                table[key] = value
            explicit.append(f"training.{key}")
    quick_table = raw.get("quick")
    if quick and isinstance(quick_table, Mapping):
        # explicit command-line values win over [quick]
        for key in explicit:
            parts = key.split(".")
            if len(parts) == 2 and isinstance(quick_table.get(parts[0]), dict):
                quick_table[parts[0]].pop(parts[1], None)
    study = parse_study(raw, file, quick=quick, name=path.stem)
    if methods:
        wanted = list(dict.fromkeys(methods))
        known = {m.name for m in study.methods} | {m.base for m in study.methods}
        unknown = [m for m in wanted if m not in known]
        if unknown:
            raise ConfigError(
                f"{file}: no method named {', '.join(map(repr, unknown))} (methods: "
                f"{', '.join(dict.fromkeys(m.base for m in study.methods))})"
            )
        kept = tuple(m for m in study.methods if m.name in wanted or m.base in wanted)
        study = StudyConfig(**{**study.__dict__, "methods": kept})
    return study
