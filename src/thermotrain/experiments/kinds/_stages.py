r"""Finished units of work of an experiment-kind run, kept so that ``--resume`` skips them.

An experiment kind (docs/runs.md, "Experiment kinds resume by stage") splits its work into
*stages*: a grid cell, a method, a step size, an arm, a measurement. :meth:`Stages.run`
computes a stage once and stores its result under ``RUN/stages/NAME.json`` (plain results)
or ``RUN/stages/NAME.pt`` (results holding tensors, a ``torch.save`` payload read back with
``weights_only=True``), written atomically through :mod:`..run_folder` (a kill leaves the
old file or the new one, never half of one). With ``resume`` a stored stage is returned
instead of computed again, so a resumed run redoes at most the stage it was interrupted in.

Every file is an envelope ``{"stage": NAME, "config": DIGEST, "result": ...}``; ``DIGEST`` is
the SHA-256 of the run's ``config.json`` (without ``notes`` and ``description``, which
:func:`..prepare_folder` also ignores). A file that is unreadable (truncated, corrupt, not an
envelope), belongs to another stage name or to another configuration is reported in one
:class:`StageWarning` line naming it and the stage is computed again — a stage is never
half-reused. (``prepare_folder`` already refuses ``--resume`` with a different
configuration; the digest also catches a stage file copied in from another run.)

Stage names are made file-safe with :func:`..config.slug`; two names of one run that map to
the same file are a :class:`ValueError`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import slug
from ..run_folder import (
    RunError,
    _jsonable,
    _load_torch,
    _reason,
    atomic_save,
    atomic_write_text,
)

__all__ = ["Stages", "StageWarning", "config_digest"]

#: config.json keys that do not change results (also ignored by ``prepare_folder``)
_IGNORED = ("notes", "description")


class StageWarning(UserWarning):
    """A stored stage was unusable (unreadable, another stage's or another configuration's);
    it is computed again."""


def config_digest(config: Any) -> str:
    """SHA-256 of a resolved configuration (JSON, sorted keys, without notes/description)."""
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k not in _IGNORED}
    text = json.dumps(config, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()


class Stages:
    """The stages of one run folder (module docstring).

    Args:
        out: the run folder (``config.json`` already written by ``prepare_folder``).
        resume: return stored stages (``--resume``); without it every stage is computed and
            any stored file of the same name is overwritten.
        folder: the sub-folder (``"stages"``; the swap studies keep ``"cells"``).
        say: called with ``"NAME: done before (resumed)"`` for every reused stage.
        legacy: accept a JSON file that is not an envelope as the result itself (files
            written before envelopes existed: the swap studies' ``cells/``).

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> stages = Stages(out, resume=True)
        >>> stages.run("a", lambda: {"x": 1.5})
        {'x': 1.5}
        >>> Stages(out, resume=True).run("a", lambda: {"x": 0.0})  # stored: not recomputed
        {'x': 1.5}
    """

    def __init__(self, out: str | Path, resume: bool, *, folder: str = "stages",
                 say: Callable[[str], None] | None = None, legacy: bool = False):
        self.out = Path(out)
        self.dir = self.out / folder
        self.resume = resume
        self.say = say
        self.legacy = legacy
        self.digest = self._digest()
        self._names: dict[str, str] = {}
        self.reused: list[str] = []   # names returned from disk, in order (for the report/tests)
        self.computed: list[str] = []  # names computed by this process

    def _digest(self) -> str | None:
        try:
            return config_digest(json.loads((self.out / "config.json").read_text()))
        except (OSError, ValueError):
            return None

    def path(self, name: str, tensors: bool = False) -> Path:
        """The file of stage ``name`` (``.pt`` with ``tensors``, else ``.json``).

        Raises:
            ValueError: another stage name of this run maps to the same file."""
        file = slug(name)
        other = self._names.setdefault(file, name)
        if other != name:
            raise ValueError(f"stage names {other!r} and {name!r} map to the same file "
                             f"{file}; give the stages distinct names")
        return self.dir / (file + (".pt" if tensors else ".json"))

    # ---------------------------------------------------------------- read / write
    def get(self, name: str, *, tensors: bool = False) -> tuple[bool, Any]:
        """``(True, result)`` for a stored, usable stage (only with ``resume``), else
        ``(False, None)``; an unusable file gives one :class:`StageWarning` line."""
        path = self.path(name, tensors)
        if not self.resume or not path.exists():
            return False, None
        try:
            obj = _load_torch(path) if tensors else json.loads(path.read_text())
        except Exception as exc:  # json and torch.load raise many types for a corrupt file
            return self._unusable(path, name, f"unreadable ({_reason(exc)})")
        if not (isinstance(obj, dict) and {"stage", "config", "result"} <= set(obj)):
            if self.legacy and not tensors and isinstance(obj, dict):
                return True, obj
            return self._unusable(path, name, "unreadable (not a stage file)")
        if obj["stage"] != name:
            return self._unusable(path, name, f"the result of stage {obj['stage']!r}")
        if self.digest is not None and obj["config"] != self.digest:
            return self._unusable(path, name, "computed with another configuration")
        return True, obj["result"]

    def _unusable(self, path: Path, name: str, why: str) -> tuple[bool, None]:
        warnings.warn(f"{path} is {why}; computing {name!r} again", StageWarning,
                      stacklevel=3)
        return False, None

    def put(self, name: str, result: Any, *, tensors: bool = False) -> Any:
        """Store ``result`` atomically; return it as it reads back (JSON: tuples become
        lists, tensors lists, keys strings), so that a fresh run and a resumed one see the
        same values.

        Raises:
            RunError: the file cannot be written (names it)."""
        path = self.path(name, tensors)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create {self.dir}: {_reason(exc)}") from None
        envelope = {"stage": name, "config": self.digest, "result": result}
        if tensors:
            atomic_save(envelope, path)
            return result
        text = json.dumps(envelope, indent=2, default=_jsonable) + "\n"
        atomic_write_text(path, text)
        return json.loads(text)["result"]

    def run(self, name: str, compute: Callable[[], Any], *, tensors: bool = False,
            as_stored: bool = True) -> Any:
        """Stage ``name``: the stored result on ``--resume``, else ``compute()`` stored.

        Args:
            tensors: a ``.pt`` payload (tensors, lists, dicts, numbers, strings) instead of
                JSON.
            as_stored: return a freshly computed JSON result as it reads back (:meth:`put`);
                ``False`` returns ``compute()``'s object itself."""
        done, result = self.get(name, tensors=tensors)
        if done:
            self.reused.append(name)
            if self.say is not None:
                self.say(f"{name}: done before (resumed)")
            return result
        value = compute()
        stored = self.put(name, value, tensors=tensors)
        self.computed.append(name)
        return stored if as_stored else value
