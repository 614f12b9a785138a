"""Small C kernels compiled at first use (the Philox noise and fused sampler steps, the fused
ensemble-MLP gradient).

A kernel is one C file inside the package. :func:`load` compiles it with the system's C
compiler (``$CC``, else ``cc``/``gcc``) with ``-O3 -march=native -ffast-math -fopenmp`` into
``$THERMOTRAIN_CACHE/kernels`` (default ``~/.cache/thermotrain/kernels``), under a name that
hashes the source, the flags and the CPU (``-march=native`` code must not be reused on another
CPU of a shared home directory), with an atomic rename; later processes just load it. OpenMP
resolves to the runtime torch already loaded, so kernels share torch's threads and respect
``torch.set_num_threads``.

Everything has a pure-torch fallback: without a compiler, on Windows, or with
``THERMOTRAIN_NO_KERNEL=1``, :func:`load` warns once and returns ``None``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch  # noqa: F401 - loads torch's OpenMP runtime before any kernel

__all__ = ["load", "cache_dir", "compiler", "compile_kernel"]

FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC", "-shared"]
#: tried first where they apply: on x86, -ffast-math makes gcc compute vectorized float
#: division and sqrt from reciprocal estimates plus a Newton step, which turns 1/inf into NaN;
#: -mno-recip keeps the exact instructions (no slower here)
EXTRA = ["-mno-recip"] if platform.machine().lower() in ("x86_64", "amd64") else []

_LOADED: dict[Path, ctypes.CDLL | None] = {}


def cache_dir() -> Path:
    root = os.environ.get("THERMOTRAIN_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "thermotrain"


def _cpu_fingerprint() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def compiler() -> str | None:
    """The C compiler kernels are built with: ``$CC``, else ``cc`` or ``gcc`` on the PATH."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def compile_kernel(source: Path, target: Path, compiler: str,
                   flags: list[str] | None = None) -> None:
    """Compile ``source`` into the shared library ``target`` (atomically)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        flags = FLAGS if flags is None else flags
        # glibc's vector math (libmvec) makes log/sin/exp vectorize; without it the code is
        # correct but slower
        attempts = [(extra, libs) for extra in ([EXTRA, []] if EXTRA else [[]])
                    for libs in (["-lmvec", "-lm"], ["-lm"])]
        for extra, libs in attempts:
            cmd = [compiler, *flags, *extra, str(source), "-o", str(out), *libs]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode == 0:
                break
        else:
            raise RuntimeError(res.stderr.strip().splitlines()[-1] if res.stderr else
                               f"{compiler} exited with {res.returncode}")
        os.replace(out, target)  # atomic: concurrent first uses never see a partial file


#: builds of another version of a kernel unused for this long are deleted
STALE_DAYS = 30


def prune(target: Path) -> None:
    """Delete the other builds of ``target``'s kernel (other source versions or CPUs) not
    used for :data:`STALE_DAYS` days: each upgrade would otherwise leave one behind."""
    stem = target.name.rsplit("-", 1)[0]
    cutoff = time.time() - STALE_DAYS * 86400
    for old in target.parent.glob(f"{stem}-*.so"):
        try:
            if old != target and old.stat().st_atime < cutoff and old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass  # another process got there first, or no permission: harmless


def load(source: Path, what: str, declare: Callable[[ctypes.CDLL], None]) -> ctypes.CDLL | None:
    """The compiled ``source`` (``declare`` sets the functions' ctypes signatures), or
    ``None`` with a warning naming ``what`` falls back to torch."""
    if source in _LOADED:
        return _LOADED[source]
    lib = None
    if not os.environ.get("THERMOTRAIN_NO_KERNEL") and sys.platform != "win32":
        lib = _build(source, what)
    if lib is not None:
        declare(lib)
    _LOADED[source] = lib
    return lib


def _build(source: Path, what: str) -> ctypes.CDLL | None:
    cc = compiler()
    if not cc:
        warnings.warn(f"thermotrain: no C compiler found; {what} uses the slower torch "
                      "implementation", RuntimeWarning, stacklevel=4)
        return None
    tag = hashlib.sha256(
        source.read_bytes() + " ".join([cc, *FLAGS, *EXTRA]).encode()
        + _cpu_fingerprint().encode() + platform.machine().encode()
    ).hexdigest()[:16]
    target = cache_dir() / "kernels" / f"{source.stem.lstrip('_')}-{tag}.so"
    try:
        if not target.exists():
            compile_kernel(source, target, cc)
            prune(target)
        return ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        warnings.warn(f"thermotrain: could not build the C kernel for {what} ({err}); it uses "
                      "the slower torch implementation", RuntimeWarning, stacklevel=4)
        return None
