"""The report reads a run folder only; the comparison table and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

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


# --------------------------------------------------------------------------- damaged folders
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished tiny run (trained once for the tests below, which copy it)."""
    from _experiments_helpers import tiny_raw

    from thermotrain.experiments import parse_study

    out = tmp_path_factory.mktemp("finished") / "run"
    run_study(parse_study(tiny_raw(), "tiny.toml"), out)
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(run, target)
    return target


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


@pytest.mark.parametrize("damage", ["metrics.csv truncated", "summary.json empty",
                                    "summary.json corrupt", "config.json missing",
                                    "snapshots.pt corrupt", "snapshots.pt truncated"])
def test_damaged_run_folder_is_a_one_line_report_error(finished_run, tmp_path: Path,
                                                       damage: str, capsys):
    from thermotrain.cli.main import main

    run = _copy(finished_run, tmp_path)
    name, what = damage.split(" ")
    path = run / "methods" / "Adam" / name if name == "snapshots.pt" else run / name
    {"truncated": _truncate, "empty": lambda p: p.write_text(""),
     "corrupt": lambda p: p.write_bytes(b'{"study": "tiny", \x00'),
     "missing": Path.unlink}[what](path)
    with pytest.raises(ReportError) as info:
        write_report(run)
    message = str(info.value)
    assert str(path if what != "missing" else run) in message and "\n" not in message
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("thermotrain: error: ") and err.count("\n") == 1
    assert "Traceback" not in err and path.name in err
    assert not (run / "report.md").exists()


def test_old_wide_metrics_still_report(finished_run, tmp_path: Path):
    """A run folder of an earlier version (wide metrics.csv, snapshots without the model
    spec) reports the same table and figures."""
    import pandas as pd

    from thermotrain.experiments.run_folder import RunFolder

    run = _copy(finished_run, tmp_path)
    long = RunFolder(run).read_metrics()
    keys = ["study", "method", "seed", "step", "split"]
    wide = long.pivot_table(index=keys, columns="metric", values="value", sort=False)
    wide = wide.reset_index()[[*keys, "loss", "accuracy"]]
    wide.to_csv(run / "metrics.csv", index=False)
    assert (run / "metrics.csv").read_text().splitlines()[0] == \
        "study,method,seed,step,split,loss,accuracy"
    for method in ("AdLaLa", "Adam"):
        path = run / "methods" / method / "snapshots.pt"
        snaps = torch.load(path, weights_only=True)
        snaps.pop("model", None)
        torch.save(snaps, path)
    order = [*keys, "metric"]
    pd.testing.assert_frame_equal(
        RunFolder(run).read_metrics().sort_values(order, ignore_index=True),
        long.sort_values(order, ignore_index=True))
    text = write_report(run).read_text()
    assert text == write_report(finished_run).read_text()
    figures = {p.name for p in (run / "figures").glob("*.png")}
    assert {"curves.png", "boundaries.png", "histograms.png", "line.png"} <= figures


def test_report_of_a_run_with_diverged_members(finished_run, tmp_path: Path):
    """Seed 6 of Adam diverged at step 20: NaN losses from there on, the summary counts it;
    the report is still written and shows the count."""
    from thermotrain.experiments.run_folder import RunFolder

    run = _copy(finished_run, tmp_path)
    folder = RunFolder(run)
    metrics = folder.read_metrics()
    bad = (metrics["method"] == "Adam") & (metrics["seed"] == 6) & (metrics["step"] >= 20)
    metrics.loc[bad & (metrics["metric"] == "loss"), "value"] = float("nan")
    folder.write_metrics(metrics)
    summary = folder.read_summary()
    summary["methods"]["Adam"].update(n_diverged=1, diverged=[{"seed": 6, "step": 20}],
                                      n_seeds=2, train_loss_mean=float("nan"))
    folder.write_summary(summary)
    text = write_report(run).read_text()
    assert "| Adam |" in text and "| 2 (1 diverged) |" in text
    assert "- Adam: 1 of 2 members diverged (seed 6 at step 20); excluded from the means." \
        in text
    assert (run / "figures" / "curves.png").stat().st_size > 1000


def test_report_of_a_really_diverging_study(tmp_path: Path):
    """End to end: SGD with lr = 1e4 diverges on the spirals; the runner marks its members
    diverged and the report is still written with the count and where it happened."""
    from _experiments_helpers import tiny_raw

    from thermotrain.experiments import parse_study

    raw = tiny_raw(methods=[{"name": "SGD", "optimizer": "sgd", "lr": 1e4},
                            {"name": "Adam", "optimizer": "adam", "lr": 0.01}])
    raw.pop("paper")
    summary = run_study(parse_study(raw, "tiny.toml"), tmp_path / "run")
    n = summary["methods"]["SGD"]["n_diverged"]
    assert n >= 1 and summary["methods"]["Adam"]["n_diverged"] == 0
    text = write_report(tmp_path / "run").read_text()
    assert f"| 3 ({n} diverged) |" in text
    assert f"- SGD: {n} of 3 members diverged (seed " in text


def test_docs_runs_examples_run(finished_run):
    """The Python examples of docs/runs.md run as written on a finished run folder."""
    import re

    docs = Path(__file__).resolve().parents[2] / "docs" / "runs.md"
    blocks = re.findall(r"```python\n(.*?)```", docs.read_text(), flags=re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:
        code = block.replace('"runs/fig4"', repr(str(finished_run)))
        exec(compile(code, str(docs), "exec"), namespace)  # noqa: S102
    assert set(namespace["final"]["method"]) == {"AdLaLa", "Adam"}
    assert namespace["net"].ensemble_size == 2 and namespace["first"].ensemble_size is None
