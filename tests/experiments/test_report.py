"""The report reads a run folder only; the comparison table and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thermotrain.experiments import ReportError, comparison_table, run_study, write_report


def test_comparison_table_values():
    summary = {"methods": {
        "AdLaLa": {"test_accuracy_mean": 0.894, "test_accuracy_std": 0.02, "n_seeds": 20,
                   "steps": 100, "paper": {"test_accuracy": 0.882, "test_accuracy_std": 0.04,
                                           "step": None}},
        "SGD": {"test_accuracy_mean": 0.5, "test_accuracy_std": 0.0, "n_seeds": 2,
                "steps": 100, "paper": {"test_accuracy": 0.6, "test_accuracy_std": None,
                                        "step": 50}},
        "Adam": {"test_accuracy_mean": 0.7, "test_accuracy_std": 0.1, "n_seeds": 2,
                 "steps": 100},
    }}
    lines = comparison_table(summary).splitlines()
    assert lines[2] == "| AdLaLa | 89.4 ± 2.0 | 20 | 88.2 ± 4.0 | +1.2 |"
    assert lines[3] == "| SGD | 50.0 ± 0.0 | 2 | 60.0 (at step 50) | -10.0 |"
    assert lines[4] == "| Adam | 70.0 ± 10.0 | 2 | – | – |"


def test_report_needs_a_finished_run(tmp_path: Path):
    with pytest.raises(ReportError, match="is not a directory"):
        write_report(tmp_path / "missing")
    with pytest.raises(ReportError, match="not a finished run folder"):
        write_report(tmp_path)


def test_report_reads_results_only(tiny_study, tmp_path: Path, monkeypatch):
    run_study(tiny_study(), tmp_path / "run")
    # the report must not train: make any training attempt fail loudly
    import thermotrain.experiments.runner as runner

    def boom(*args, **kwargs):
        raise AssertionError("the report trained")

    monkeypatch.setattr(runner, "train_method", boom)
    monkeypatch.setattr(runner, "run_study", boom)
    report = write_report(tmp_path / "run")
    text = report.read_text()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    mean = summary["methods"]["AdLaLa"]["test_accuracy_mean"]
    assert f"| AdLaLa | {100 * mean:.1f} ±" in text and "| 90.0 ± 5.0 |" in text
    figures = {p.name for p in (tmp_path / "run" / "figures").glob("*.png")}
    assert {"curves.png", "boundaries.png", "histograms.png", "line.png"} <= figures


def test_study_notes_are_shown_and_do_not_block_resume(tmp_path: Path):
    from _experiments_helpers import tiny_raw

    from thermotrain.experiments import parse_study
    from thermotrain.experiments.runner import check_folder

    assert parse_study(tiny_raw(notes="one  note"), "tiny.toml").notes == ("one note",)
    study = parse_study(tiny_raw(notes=["Our SGLD is higher:", "a second paragraph."]),
                        "tiny.toml")
    assert study.notes == ("Our SGLD is higher:", "a second paragraph.")
    assert parse_study(tiny_raw(), "tiny.toml").notes == ()
    run_study(study, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["notes"] == list(study.notes)
    text = write_report(tmp_path / "run").read_text()
    assert "## Notes\n\n- Our SGLD is higher:\n- a second paragraph.\n" in text
    assert text.index("## Notes") > text.index("## Final test accuracy")
    # editing the notes is not a different run: --resume accepts it and records the new notes
    edited = parse_study(tiny_raw(notes="edited"), "tiny.toml")
    check_folder(tmp_path / "run", edited, resume=True)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["notes"] == ["edited"]
    assert "- edited" in write_report(tmp_path / "run").read_text()
