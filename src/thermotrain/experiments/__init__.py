"""Reproducible studies of the papers' experiments (docs/science.md §7): configs, runner, report.

* :mod:`.config` — one TOML file per study, validated into dataclasses;
* :mod:`.studies` — where the study files live (``studies/``) and how to find one;
* :mod:`.builders` — data, ensemble models and optimizers from a study;
* :mod:`.runner` — train each method's seeds as one ensemble, with checkpoints and resume;
* :mod:`.run_folder` — the one reader/writer of run folders (:class:`RunFolder`), and
  :mod:`.run_view` — a finished run loaded once (:class:`Run`), docs/runs.md;
* :mod:`.report` — tables and figures from a run folder (never trains; figures in
  :mod:`.report_figures`).

The experiments use the library (samplers, data, models); the library never imports them.
"""

from .config import ConfigError, MethodConfig, StudyConfig, load_study, parse_study
from .report import ReportError, comparison_table, write_report
from .run_folder import RunFolder
from .run_view import Run
from .runner import RunError, run_study, summarize, train_method
from .studies import find_study, list_studies, studies_dir

__all__ = [
    "ConfigError",
    "RunError",
    "ReportError",
    "comparison_table",
    "write_report",
    "RunFolder",
    "Run",
    "StudyConfig",
    "MethodConfig",
    "load_study",
    "parse_study",
    "run_study",
    "train_method",
    "summarize",
    "find_study",
    "list_studies",
    "studies_dir",
]
