r"""Splittings as words over the sub-steps (docs/science.md §1), each scheme defined once.

A splitting is a word such as ``"BAOAB"`` over the letters of docs/science.md §1 (A, B, O, C, D, E)
plus
two position-space letters for SGLD ([ours], docs/science.md §3):

=====  ==================================================  ===============================
letter map for a time :math:`t`                             coefficients (per member)
=====  ==================================================  ===============================
A      :math:`\theta \leftarrow \theta + t\,p`              :math:`t`
B      :math:`p \leftarrow p - t\,\nabla\tilde L`           :math:`t`
O      :math:`p \leftarrow c\,p + d\,R`                     :math:`c = e^{-\gamma t}`,
                                                            :math:`d = \sqrt{(1-c^2)\tau}`
C      :math:`p \leftarrow e^{-\xi t}\,p`                   :math:`t`
D      :math:`p \leftarrow p + \sigma_A\sqrt t\,R`          :math:`\sigma_A\sqrt t`
E      :math:`\xi \leftarrow \xi + t\varepsilon(p^\top p - N\tau)`  :math:`t\varepsilon,\ \tau`
G      :math:`\theta \leftarrow \theta - t\,\nabla\tilde L`  :math:`t`
W      :math:`\theta \leftarrow \theta + \sqrt{2\tau t}\,R`  :math:`\sqrt{2\tau t}`
=====  ==================================================  ===============================

A letter that appears :math:`m` times in a word runs for :math:`h/m` each time. With
:math:`\gamma = \infty` (the overdamped scheme) O is the full resample
:math:`p \leftarrow \sqrt\tau R` (op ``R``).

**One gradient per step.** In the loop ``loss.backward(); opt.step()`` every gradient letter
(B, G) of a step must see the gradient at the parameters where it was taken, so no
position letter (A, G, W) may come between them (cyclically). :func:`compile_word` rotates
the word to the *cycle* that starts with the gradient, e.g. BAOAB →
:math:`B_{h/2}B_{h/2}A_{h/2}O_hA_{h/2}` (the authors' merged kicks, docs/science.md §2), OBABO and
ABOBA → :math:`B_{h/2}O_hB_{h/2}A_h`. The word's own step boundary sits inside the cycle:

* *forward* (BAOAB, BAOA, OBABO, adaptive, SGLD): the ops of the cycle before the boundary
  (the *closing* ops, e.g. BAOAB's last :math:`B_{h/2}`) move no parameter, so the parameters
  the user sees are the word's boundary positions; the closing ops of step n run at the start
  of step n + 1 with step n's hyperparameters, and :meth:`~.PartitionedLangevin.finalize`
  applies them early (true boundary momenta). The first step runs only the ops after the
  boundary (the *opening*; momenta start at zero).
* *backward* (ABOBA): the ops after the boundary are drifts only: the parameters sit
  mid-drift (OBABO's statistics, docs/science.md §1) and the boundary positions are
  :math:`\theta - t\,p` (:meth:`~.PartitionedLangevin.boundary_positions`).

:func:`program` turns a cycle and resolved hyperparameters into the step's op list (adjacent
equal letters merged: :math:`B_aB_b = B_{a+b}`, :math:`O` by composing the OU maps), which
both implementations interpret: the torch reference (:mod:`.reference`) and the C kernel
(:mod:`.fused`). Adding a splitting is one entry in :data:`SPLITTINGS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Any

from torch import Tensor

__all__ = ["SPLITTINGS", "Splitting", "Scheme", "SCHEMES", "compile_word", "get_scheme",
           "program", "merge", "scheme_for_splitting"]

LETTERS = "ABOCDEGW"
GRADIENT = frozenset("BG")
MOVES_POSITION = frozenset("AGW")
NOISE = frozenset("ODWR")

#: the one-gradient splittings ``tt.Langevin(splitting=...)`` accepts: name -> word
SPLITTINGS: dict[str, str] = {
    "BAOAB": "BAOAB",
    "ABOBA": "ABOBA",
    "OBABO": "OBABO",
    "BAOA": "B(1)AOA",  # posteriors' BAOA: a full kick, then A_{h/2} O_h A_{h/2}
}


@dataclass(frozen=True)
class Splitting:
    """A word compiled for the one-gradient loop: the rotated ``cycle`` of (letter, fraction
    of h), the index of the word's boundary in it, and the mode (module docstring)."""

    word: str
    cycle: tuple[tuple[str, Fraction], ...]
    boundary: int
    mode: str  # "forward" or "backward"

    @property
    def closing(self) -> tuple[tuple[str, Fraction], ...]:
        return self.cycle[: self.boundary] if self.mode == "forward" else ()

    @property
    def opening(self) -> tuple[tuple[str, Fraction], ...]:
        return self.cycle[self.boundary :] if self.mode == "forward" else self.cycle

    @property
    def trailing_drift(self) -> Fraction:
        """Backward mode: the fraction of h the parameters sit past the boundary."""
        if self.mode != "backward":
            return Fraction(0)
        return sum((f for _, f in self.cycle[self.boundary :]), Fraction(0))


def _parse(word: str) -> list[tuple[str, Fraction]]:
    """Letters with optional explicit fractions, e.g. ``"B(1)AOA"``; a letter without one
    that appears m times runs for h/m each time."""
    if not isinstance(word, str) or not word:
        raise ValueError(f"a splitting must be a non-empty word over {LETTERS}, got {word!r}")
    out: list[tuple[str, Fraction | None]] = []
    i = 0
    while i < len(word):
        letter = word[i]
        if letter not in LETTERS:
            raise ValueError(f"splitting {word!r}: unknown sub-step {letter!r}; allowed: "
                             f"{', '.join(LETTERS)}")
        i += 1
        frac = None
        if i < len(word) and word[i] == "(":
            end = word.index(")", i)
            frac = Fraction(word[i + 1 : end])
            i = end + 1
        out.append((letter, frac))
    counts = {ch: sum(1 for c, f in out if c == ch and f is None) for ch in LETTERS}
    return [(c, f if f is not None else Fraction(1, counts[c])) for c, f in out]


def compile_word(word: str) -> Splitting:
    """Rotate ``word`` so that its gradient letters open the cycle; ValueError if the word
    needs more than one gradient per step."""
    ops = _parse(word)
    n = len(ops)
    for r in range(n - 1, -1, -1):
        cycle = ops[r:] + ops[:r]
        if cycle[0][0] not in GRADIENT:
            continue
        last = max(i for i, (c, _) in enumerate(cycle) if c in GRADIENT)
        if any(c in MOVES_POSITION for c, _ in cycle[:last]):
            continue
        boundary = (n - r) % n
        if not any(c in MOVES_POSITION for c, _ in cycle[:boundary]):
            mode = "forward"
        elif all(c == "A" for c, _ in cycle[boundary:]):
            mode = "backward"
        else:
            continue
        return Splitting(word, tuple(cycle), boundary, mode)
    if not any(c in GRADIENT for c, _ in ops):
        raise ValueError(f"splitting {word!r} has no gradient sub-step (B or G)")
    raise ValueError(
        f"splitting {word!r} needs more than one gradient per step (a position sub-step lies "
        "between its gradient sub-steps both ways round); the one-gradient loop "
        f"(docs/science.md §2) accepts {', '.join(SPLITTINGS)}")


@dataclass(frozen=True)
class Scheme:
    """A group's dynamics: its splitting, which hyperparameters it reads, whether it keeps
    momenta and thermostats, and (overdamped) an infinite friction."""

    name: str
    word: str
    hyperparameters: tuple[str, ...]
    momentum: bool = True
    thermostat: bool = False
    resample: bool = False  # O with γ = ∞: p ← √τ R
    description: str = ""

    @property
    def splitting(self) -> Splitting:
        return _compiled(self.word)

    @cached_property
    def step_keys(self) -> tuple[str, ...]:
        """The hyperparameters a step reads: ``lr`` and :attr:`hyperparameters`."""
        return ("lr", *self.hyperparameters)

    @cached_property
    def closing_keys(self) -> tuple[str, ...]:
        """Their names in a parameter's state, as kept for the closing sub-steps."""
        return tuple(f"closing_{k}" for k in self.step_keys)

    @property
    def draws(self) -> int:
        """Noise draws per step (the noise layout reserves this many per tensor)."""
        hit = _DRAWS.get(self.word)
        if hit is None:
            hit = _DRAWS[self.word] = sum(1 for op in merge(_symbolic(self.splitting))
                                          if op[0] in NOISE)
        return hit


_CACHE: dict[str, Splitting] = {}
_DRAWS: dict[str, int] = {}


def _compiled(word: str) -> Splitting:
    if word not in _CACHE:
        _CACHE[word] = compile_word(word)
    return _CACHE[word]


def _symbolic(s: Splitting) -> list[tuple]:
    return [(c, f) for c, f in (*s.closing, *s.opening)]


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("langevin", "BAOAB", ("friction", "temperature"),
               description="underdamped Langevin, BAOAB splitting"),
        Scheme("overdamped", "BAOAB", ("temperature",), resample=True,
               description="overdamped limit of BAOAB (Leimkuhler–Matthews)"),
        Scheme("adaptive", "BACDEDCAB", ("temperature", "noise", "coupling", "xi_init"),
               thermostat=True,
               description="adaptive Langevin (Nosé–Hoover–Langevin), B ACDEDCA B"),
        Scheme("sgld", "GW", ("temperature",), momentum=False,
               description="stochastic gradient Langevin dynamics (Euler–Maruyama)"),
        *(Scheme(f"langevin-{name}", word, ("friction", "temperature"),
                 description=f"underdamped Langevin, {name} splitting")
          for name, word in SPLITTINGS.items() if name != "BAOAB"),
    )
}


def get_scheme(name: object) -> Scheme:
    if not isinstance(name, str) or name not in SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; allowed: {', '.join(sorted(SCHEMES))}")
    return SCHEMES[name]


def scheme_for_splitting(splitting: object) -> str:
    """The langevin scheme name of a splitting word (ValueError naming the allowed ones)."""
    if splitting == "BAOAB":
        return "langevin"
    if isinstance(splitting, str) and splitting in SPLITTINGS:
        return f"langevin-{splitting}"
    if isinstance(splitting, str):
        compile_word(splitting)  # a clear error for a two-gradient word
    raise ValueError(f"splitting must be one of {', '.join(SPLITTINGS)}, got {splitting!r}")


# --------------------------------------------------------------------------- programs
Coef = Any  # a float, or a list of K floats (one per ensemble member)


def _map(fn, *xs):
    """Apply ``fn`` to floats, or memberwise to lists of K floats (broadcasting floats)."""
    lists = [x for x in xs if isinstance(x, list)]
    if not lists:
        return fn(*xs)
    k = len(lists[0])
    return [fn(*(x[i] if isinstance(x, list) else x for x in xs)) for i in range(k)]


def coefficients(letter: str, frac: Fraction, hp: dict, scheme: Scheme) -> tuple:
    """The op of ``letter`` run for ``frac``·h with hyperparameters ``hp`` (floats or lists of
    K floats): ``(code, coef1, coef2)``."""
    h = hp["lr"]
    f = float(frac)
    t = _map(lambda h: f * h, h)
    if letter == "A":
        return ("A", t, 0.0)
    if letter == "B":
        return ("B", t, 0.0)
    if letter == "G":
        return ("G", t, 0.0)
    if letter == "O":
        if scheme.resample:
            return ("R", _map(math.sqrt, hp["temperature"]), 0.0)
        c = _map(lambda g, t: math.exp(-g * t), hp["friction"], t)
        d = _map(lambda g, t, tau: math.sqrt(-math.expm1(-2.0 * g * t) * tau), hp["friction"],
                 t, hp["temperature"])
        return ("O", c, d)
    if letter == "C":
        return ("C", t, 0.0)
    if letter == "D":
        return ("D", _map(lambda s, t: s * math.sqrt(t), hp["noise"], t), 0.0)
    if letter == "E":
        return ("E", _map(lambda t, e: t * e, t, hp["coupling"]), hp["temperature"])
    if letter == "W":
        return ("W", _map(lambda tau, t: math.sqrt(2.0 * tau * t), hp["temperature"], t), 0.0)
    raise AssertionError(letter)


def _add(a: Coef, b: Coef) -> Coef:
    return _map(lambda x, y: x + y, a, b)


def merge(ops: Sequence[tuple]) -> list[tuple]:
    """Merge adjacent equal letters: kicks, drifts, gradient steps add; two O maps compose
    into one (:math:`c = c_1c_2`, :math:`d^2 = c_2^2d_1^2 + d_2^2`: the same law, one draw)."""
    out: list[tuple] = []
    for op in ops:
        if out and out[-1][0] == op[0] and op[0] in ("A", "B", "G"):
            out[-1] = (op[0], _add(out[-1][1], op[1]), 0.0)
        elif out and out[-1][0] == op[0] == "O" and not isinstance(op[1], Fraction):
            c1, d1 = out[-1][1], out[-1][2]
            c2, d2 = op[1], op[2]
            out[-1] = ("O", _map(lambda a, b: a * b, c1, c2),
                       _map(lambda c2, d1, d2: math.sqrt(c2 * c2 * d1 * d1 + d2 * d2),
                            c2, d1, d2))
        elif out and out[-1][0] == op[0] == "O":
            out[-1] = ("O", out[-1][1] + op[1], 0.0)  # symbolic (draw counting)
        elif out and out[-1][0] == op[0] == "R":
            out[-1] = op  # a resample forgets what came before
        else:
            out.append(op)
    return out


def program(scheme: Scheme, closing_hp: dict | None, hp: dict) -> list[tuple]:
    """This step's ops ``(code, coef1, coef2, draw)``: the closing ops of the previous step
    (``closing_hp``, ``None`` at the boundary: first step or after ``finalize``) followed by
    the opening ops with ``hp``, merged; noise ops numbered in order."""
    s = scheme.splitting
    ops = []
    if closing_hp is not None:
        ops += [coefficients(c, f, closing_hp, scheme) for c, f in s.closing]
    elif s.mode == "forward" and s.closing:
        pass  # at the boundary: only the opening
    ops += [coefficients(c, f, hp, scheme) for c, f in s.opening]
    return number(merge(ops))


def closing_program(scheme: Scheme, closing_hp: dict) -> list[tuple]:
    """The closing ops alone (``finalize``)."""
    s = scheme.splitting
    return number(merge([coefficients(c, f, closing_hp, scheme) for c, f in s.closing]))


def number(ops: list[tuple]) -> list[tuple]:
    out, j = [], 0
    for op in ops:
        if op[0] in NOISE:
            out.append((*op, j))
            j += 1
        else:
            out.append((*op, -1))
    return out


def is_tensor_free(ops: list[tuple]) -> bool:
    return not any(isinstance(x, Tensor) for op in ops for x in op)
