"""``--set key=value`` overrides, applied to the raw study document before validation."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .schema import ConfigError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["apply_overrides", "parse_value"]


def parse_value(text: str) -> Any:
    """A TOML value (``1e-4``, ``[1e-4, 1e-5]``, ``true``, ``"normal"``) or a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def _method_table(out: dict, name: str, item: str, file: str) -> dict:
    methods = out.get("methods")
    tables = [m for m in methods if isinstance(m, dict)] if isinstance(methods, list) else []
    found = [m for m in tables if m.get("name") == name]
    if not found:
        names = ", ".join(str(m.get("name")) for m in tables) or "none"
        raise ConfigError(f"--set {item!r}: {file} has no method {name!r} (methods: {names})")
    return found[0]


def apply_overrides(raw: Mapping[str, Any], assignments: Sequence[str], file: str = "<study>"
                    ) -> dict[str, Any]:
    """Apply ``--set key=value`` overrides to the raw document (before validation).

    ``key`` is dotted: ``training.steps=500``, ``data.n_train=200``,
    ``methods.AdLaLa.lr=0.1`` (a method by name), ``methods.AdLaLa.sweep.noise=[0.01, 0.1]``
    (a sweep list), ``quick.training.steps=50``. ``value`` is TOML (``1e-4``,
    ``[1e-4, 1e-5]``, ``true``, ``"normal"``) or a bare string.

    **Swept keys.** ``methods.NAME.key=value`` on a key that the method sweeps (``key`` or an
    entry ``key[i]`` in its ``sweep`` table) *replaces the sweep*: the key is removed from
    the sweep and every cell uses ``value`` (the expanded method names then no longer carry
    ``key=...``). Nothing is silently ignored.
    """
    out = copy.deepcopy(dict(raw))
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. training.steps=500")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ConfigError(f"--set {item!r}: bad key {key!r}")
        value = parse_value(text.strip())
        if parts[0] == "methods":
            if len(parts) == 4 and parts[2] == "sweep":
                table = _method_table(out, parts[1], item, file)
                sweep = table.setdefault("sweep", {})
                if not isinstance(sweep, dict):
                    raise ConfigError(f"--set {item!r}: methods.{parts[1]}.sweep is not a table")
                sweep[parts[3]] = value
                table.pop(parts[3], None)  # the sweep now decides this key
                continue
            if len(parts) != 3:
                raise ConfigError(f"--set {item!r}: use methods.NAME.key=value or "
                                  "methods.NAME.sweep.key=[...]")
            table = _method_table(out, parts[1], item, file)
            table[parts[2]] = value
            sweep = table.get("sweep")
            if isinstance(sweep, dict):
                bare = re.sub(r"\[\d+\]$", "", parts[2])
                for swept in list(sweep):
                    if swept == parts[2] or re.sub(r"\[\d+\]$", "", swept) == bare:
                        del sweep[swept]
                if not sweep:
                    del table["sweep"]
            continue
        node: Any = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is not a table")
            node = nxt
        node[parts[-1]] = value
    return out
