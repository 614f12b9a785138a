r"""Study configurations: one TOML file per study, validated into frozen dataclasses.

A study file (see ``studies/*.toml``) has the tables

* ``name``, ``description``, ``source`` — identification (``name`` defaults to the file stem
  and names the run folder: letters, digits, ``-``, ``_``, ``.`` not leading);
* ``[data]`` — :class:`DataConfig` (spirals, planar trigonometric data, MNIST, Fashion-MNIST);
* ``[model]`` — :class:`ModelConfig` (an MLP/SHLP or a small CNN, its initialisation);
* ``[training]`` — :class:`TrainingConfig` (seeds, steps, batch size, evaluation, checkpoints);
* ``[[methods]]`` — one table per method (:class:`MethodConfig`): ``name``, ``optimizer``
  (a name of :func:`optimizer_registry`: ``adlala``, ``lol``, ``lala``, ``baoab``, ``sgld``,
  ``sgd``, ``adam``, ...), its hyperparameters (read from the optimizer's signature,
  :mod:`.methods`), an optional ``init`` override and an optional ``[methods.sweep]`` whose
  lists are expanded (Cartesian product) into one method per combination;
* ``[paper.NAME]`` — the paper's reported numbers for method ``NAME`` (:class:`PaperResult`);
* ``notes`` — free text on the comparison with the paper (a string or a list of strings, one
  paragraph each: e.g. why our numbers differ); copied to the run's ``config.json`` and shown
  under "Notes" in ``report.md``;
* ``[quick]`` — overrides merged into the tables above by ``--quick`` (plus ``sweep_limit``:
  keep only the first n values of each sweep list).

Every key is checked: an unknown key or a bad value raises :class:`ConfigError` whose
one-line message names the file and the key (``studies/fig8.toml: [training] steps must be
an integer >= 1, got -3``). Each method's optimizer is built once on a small network of the
study's layer structure at load time, so a method × model mismatch (AdLaLa on one layer, a
LaLa friction list of the wrong length) fails before anything trains.

The package, by job: :mod:`.schema` (primitive checkers, :class:`ConfigError`),
:mod:`.study` (the dataclasses, seed streams), :mod:`.methods` (the optimizer registry and
the ``[[methods]]`` schema), :mod:`.parse` (:func:`parse_study`), :mod:`.overrides`
(``--set``), :mod:`.io` (:func:`read_toml`, :func:`load_study`).
"""

from .io import load_study, read_toml
from .methods import (
    ALIASES,
    OPTIMIZERS,
    Hyperparameter,
    check_methods,
    make_optimizer,
    method_schema,
    optimizer_registry,
    optimizer_schemas,
)
from .overrides import apply_overrides
from .parse import MAX_EVALUATIONS, parse_study
from .schema import MAX_SEED, ConfigError, check_name
from .study import (
    DATA_KINDS,
    DataConfig,
    MethodConfig,
    ModelConfig,
    PaperResult,
    StudyConfig,
    TrainingConfig,
    slug,
    stream_seeds,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "TrainingConfig",
    "MethodConfig",
    "PaperResult",
    "StudyConfig",
    "OPTIMIZERS",
    "ALIASES",
    "DATA_KINDS",
    "MAX_SEED",
    "MAX_EVALUATIONS",
    "Hyperparameter",
    "optimizer_registry",
    "optimizer_schemas",
    "method_schema",
    "make_optimizer",
    "check_methods",
    "check_name",
    "load_study",
    "parse_study",
    "apply_overrides",
    "read_toml",
    "stream_seeds",
    "slug",
]
