"""The ``thermotrain`` command: list, run, report, datasets; exit codes and one-line errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from thermotrain.cli.main import main

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
TINY = ["--quick", "--seeds", "2", "--steps", "20", "--no-progress"]


def _one_line_error(err: str) -> str:
    assert err.startswith("thermotrain") and ": error: " in err, err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("notebook-4turn", "fig15", "mnist-mlp"):
        assert f"  {name} " in out
    assert "4-turn spiral" in out


def test_run_then_report(tmp_path: Path, capsys):
    out = tmp_path / "run"
    code = main(["run", "notebook-4turn", *TINY, "--methods", "AdLaLa,Adam", "--out", str(out),
                 "--set", "training.eval_every=10"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| AdLaLa |" in printed and "| Adam |" in printed and "88.2 ± 4.0" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["methods"]) == ["AdLaLa", "Adam"]
    assert summary["methods"]["Adam"]["n_seeds"] == 2 and summary["steps"] == 20
    assert (out / "report.md").is_file() and (out / "figures" / "curves.png").is_file()
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file()
    # the same folder again: refused, unless --resume (then a no-op on a finished run)
    capsys.readouterr()
    assert main(["run", "notebook-4turn", *TINY, "--methods", "AdLaLa,Adam", "--out", str(out),
                 "--set", "training.eval_every=10"]) == 2
    assert "already holds a run" in _one_line_error(capsys.readouterr().err)
    assert main(["run", "notebook-4turn", *TINY, "--methods", "AdLaLa,Adam", "--out", str(out),
                 "--set", "training.eval_every=10", "--resume", "--no-report"]) == 0


def test_run_from_file(tmp_path: Path, capsys):
    study = tmp_path / "mine.toml"
    study.write_text('[data]\nkind = "planar_trig"\nn_train = 40\nn_test = 40\n'
                     "[training]\nsteps = 10\nbatch_size = 10\neval_every = 5\n"
                     '[[methods]]\nname = "S"\noptimizer = "sgld"\nsigma = 0.01\n')
    assert main(["run", str(study), "--out", str(tmp_path / "r"), "--no-progress",
                 "--no-report"]) == 0
    assert "| S |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "nope"], "unknown study 'nope'"),
        (["run", "fig1", "--seeds", "0"], "expected a positive integer"),
        (["run", "fig1", "--steps", "x"], "expected a positive integer"),
        (["run", "fig1", "--set", "training.stepz=3"], "[training] 'stepz' is not a known key"),
        (["run", "fig1", "--set", "training.steps=-1"], "steps must be an integer >= 1"),
        (["run", "fig1", "--set", "nonsense"], "expected key=value"),
        (["run", "fig1", "--methods", "Adam"], "no method named 'Adam'"),
        (["run", "fig1", "--backend", "spark"], "invalid choice"),
        (["run", "fig1", "--address", "x:1"], "--address only applies to --backend ray"),
        (["report", "/nonexistent/run"], "is not a directory"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
        (["run", "mnist-mlp", "--quick", "--data-dir", "/nonexistent/data", "--no-progress"],
         "mnist"),
    ],
)
def test_user_mistakes_exit_2(argv, fragment, capsys, tmp_path: Path):
    if argv[:2] == ["run", "mnist-mlp"]:
        argv = [*argv, "--out", str(tmp_path / "m")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert fragment in _one_line_error(captured.err)
    assert captured.out == ""


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="ray is installed")
def test_ray_backend_without_ray(capsys):
    assert main(["run", "fig1", "--quick", "--backend", "ray"]) == 2
    err = _one_line_error(capsys.readouterr().err)
    assert "pip install thermotrain[ray]" in err


def test_interrupted_run_exits_130_and_resumes(tmp_path: Path, capsys, monkeypatch):
    import thermotrain.experiments.runner as runner

    original = runner.train_method

    def interrupted(*args, **kwargs):
        def stop(method, step):
            if step == 7:
                raise KeyboardInterrupt

        return original(*args, **{**kwargs, "callback": stop})

    monkeypatch.setattr(runner, "train_method", interrupted)
    argv = ["run", "fig4", *TINY, "--out", str(tmp_path / "r"), "--no-report"]
    assert main(argv) == 130
    assert "--resume" in _one_line_error(capsys.readouterr().err)
    monkeypatch.setattr(runner, "train_method", original)
    assert main([*argv, "--resume"]) == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["steps"] == 20


def test_datasets_is_wired(capsys):
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("shared data not available")
    assert main(["datasets", "list", "--data-dir", str(SHARED_DATA), "--no-verify"]) == 0
    assert "mnist" in capsys.readouterr().out
    assert main(["datasets", "verify", "nope", "--data-dir", str(SHARED_DATA)]) == 2
    _one_line_error(capsys.readouterr().err)


def test_console_entry_point_subprocess():
    proc = subprocess.run([sys.executable, "-m", "thermotrain.cli.main", "run", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("thermotrain: error: unknown study 'nope'")
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""
    proc = subprocess.run([sys.executable, "-m", "thermotrain.cli.main", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "run" in proc.stdout and "datasets" in proc.stdout
