"""The CLI as a hostile user sees it: every mistake is one line on stderr, exit code 2, no
traceback, and nothing is trained or written outside the chosen folder (issue 8 §7.7-7.11)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from thermotrain.cli.main import main

STUDY = (
    'description = "a tiny study for CLI tests"\n'
    '[data]\nkind = "spirals"\nn_train = 40\nn_test = 40\nturns = 1\n'
    "[model]\nhidden = [4]\n"
    "[training]\nsteps = 4\nbatch_size = 10\neval_every = 2\n"
    '[[methods]]\nname = "Adam"\noptimizer = "adam"\nlr = 0.01\n'
    '[[methods]]\nname = "AdLaLa"\noptimizer = "adlala"\n'
    "[methods.sweep]\nnoise = [0.01, 0.1]\n"
)


def _one_line_error(err: str) -> str:
    assert err.startswith("thermotrain") and ": error: " in err, err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def study(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(STUDY)
    return path


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from an empty folder, so default run folders (runs/NAME) land in tmp_path."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--set", "training=5"], "[training] must be a table, got 5"),
        (["--set", "data=5"], "[data] must be a table, got 5"),
        (["--set", "model=5"], "[model] must be a table, got 5"),
        (["--set", "methods=5"], "use methods.NAME.key=value"),
        (["--set", "training.seed=9223372036854775808"], "[training] seed must be <="),
        (["--set", "data.seed=18446744073709551616"], "[data] seed must be an integer in"),
        (["--steps", "1000000000000"], "eval_every = 2 with steps = 1000000000000"),
        (["--seeds", "0"], "expected a positive integer"),
        (["--steps", "-5"], "expected a positive integer"),
        (["--set", "training.stepz=3"], "[training] 'stepz' is not a known key"),
        (["--set", "colour=red"], "'colour' is not a known key"),
        (["--set", "methods.Nope.lr=1"], "has no method 'Nope'"),
        (["--set", "methods.Adam.momentum=0.9"], "[methods.Adam] 'momentum' is not a known key"),
        (["--set", "model.hidden=[]"], "[methods.AdLaLa(noise=0.01)] AdLaLa needs at least 2"),
        (["--set", "name=../../escaped"], "letters, digits"),
        (["--log", "xml"], "--log must be one of csv, tensorboard"),
        (["--log", "csv,xml"], "got 'xml'"),
        (["--out="], "--out must not be empty"),
        (["--data-dir", " "], "--data-dir must not be empty"),
        (["--methods", ","], "--methods needs at least one method name"),
        (["--set", "=5"], "bad key ''"),
        (["--set", "methods.Adam.sweep=5"], "[methods.Adam] sweep must be a table"),
        (["--set", "methods.AdLaLa.sweep.noise=[]"], "sweep.noise must be a non-empty list"),
        (["--set", "methods.AdLaLa.lr=1e308"], "lr must be a finite number"),
    ],
)
def test_bad_run_arguments_exit_2_before_anything_runs(extra, fragment, study, in_tmp, capsys):
    assert main(["run", str(study), "--no-progress", *extra]) == 2
    captured = capsys.readouterr()
    assert fragment in _one_line_error(captured.err)
    assert captured.out == ""
    assert _files(in_tmp) == [] and _files(in_tmp.parent) == sorted(
        ["tiny.toml", "work"])  # nothing trained, nothing written, nowhere


def test_a_study_file_whose_name_escapes_is_refused(tmp_path: Path, in_tmp, capsys):
    path = tmp_path / "evil.toml"
    path.write_text('name = "../../escaped"\n' + STUDY)
    assert main(["run", str(path), "--no-progress"]) == 2
    assert "name (the run folder's name)" in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path.parent / "escaped").exists() and _files(in_tmp) == []


def test_non_utf8_study_file(tmp_path: Path, capsys):
    path = tmp_path / "latin1.toml"
    path.write_bytes(STUDY.replace("a tiny", "\xe9t\xe9").encode("latin-1"))
    assert main(["run", str(path)]) == 2
    assert "not UTF-8" in _one_line_error(capsys.readouterr().err)


def test_out_is_a_file_or_not_writable(study, tmp_path: Path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["run", str(study), "--out", str(afile), "--no-progress"]) == 2
    assert "is a file, not a folder" in _one_line_error(capsys.readouterr().err)
    assert main(["run", str(study), "--out", str(afile / "sub"), "--no-progress"]) == 2
    assert "cannot be created or written" in _one_line_error(capsys.readouterr().err)
    # /proc is read-only even for root (chmod does not stop root)
    assert main(["run", str(study), "--out", "/proc/thermotrain-run", "--no-progress"]) == 2
    assert "cannot be created or written" in _one_line_error(capsys.readouterr().err)
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main(["run", str(study), "--out", str(locked / "r"), "--no-progress"]) == 2
        _one_line_error(capsys.readouterr().err)


def test_report_on_a_file_or_an_empty_folder(tmp_path: Path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["report", str(afile)]) == 2
    _one_line_error(capsys.readouterr().err)
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    _one_line_error(capsys.readouterr().err)


def test_set_on_a_swept_key_is_used(study, tmp_path: Path, capsys):
    out = tmp_path / "r"
    assert main(["run", str(study), "--out", str(out), "--no-progress", "--no-report",
                 "--set", "methods.AdLaLa.noise=0.02"]) == 0
    import json

    config = json.loads((out / "config.json").read_text())
    adlala = [m for m in config["methods"] if m["base"] == "AdLaLa"]
    assert [(m["name"], m["hyperparameters"]["noise"]) for m in adlala] == [("AdLaLa", 0.02)]


def test_log_flag_reaches_the_runner(study, tmp_path: Path, capsys, monkeypatch):
    import inspect

    import thermotrain.experiments as experiments

    params = inspect.signature(experiments.run_study).parameters
    if "loggers" in params or "log_to" in params:
        import functools

        seen = {}
        original = experiments.run_study

        @functools.wraps(original)  # the CLI reads the runner's signature
        def spy(*args, **kwargs):
            seen.update(kwargs)
            return original(*args, **kwargs)

        monkeypatch.setattr(experiments, "run_study", spy)
        assert main(["run", str(study), "--out", str(tmp_path / "r"), "--no-progress",
                     "--no-report", "--log", "csv", "--log", "csv,tensorboard"]) == 0
        assert seen.get("loggers", seen.get("log_to")) == ("csv", "tensorboard")
        assert list((tmp_path / "r").rglob("events.out.tfevents*"))  # TensorBoard wrote
        assert (tmp_path / "r" / "metrics.csv").is_file()
    else:  # the runner cannot log to TensorBoard yet: a clear error, not silence
        assert main(["run", str(study), "--out", str(tmp_path / "r"), "--no-progress",
                     "--log", "tensorboard"]) == 2
        assert "tensorboard logging needs" in _one_line_error(capsys.readouterr().err)
        assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "error",
    [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. "
                                 "DefaultCPUAllocator: can't allocate memory: you tried to "
                                 "allocate 800000000 bytes. Error code 12")],
)
def test_running_out_of_memory_is_one_line_exit_1(error, study, tmp_path: Path, capsys,
                                                  monkeypatch):
    import thermotrain.experiments as experiments

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(experiments, "run_study", fail)
    assert main(["run", str(study), "--out", str(tmp_path / "r"), "--no-progress"]) == 1
    err = _one_line_error(capsys.readouterr().err)
    assert "out of memory" in err
    if isinstance(error, RuntimeError):
        assert "763 MiB" in err


def test_other_runtime_errors_are_not_hidden(study, tmp_path: Path, monkeypatch):
    import thermotrain.experiments as experiments

    def fail(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(experiments, "run_study", fail)
    with pytest.raises(RuntimeError, match="a bug"):  # a bug shows its traceback
        main(["run", str(study), "--out", str(tmp_path / "r"), "--no-progress"])


def test_a_method_named_dotdot_stays_inside_the_run_folder(tmp_path: Path, capsys):
    from thermotrain.experiments.config import slug

    assert [slug(n) for n in ("..", ".", ".hidden", "a/../b")] == ["__", "_", "_hidden",
                                                                   "a_.._b"]
    path = tmp_path / "dots.toml"
    path.write_text(STUDY.replace('name = "Adam"', 'name = ".."'))
    root = tmp_path / "inside"
    root.mkdir()
    out = root / "r"
    assert main(["run", str(path), "--out", str(out), "--no-progress", "--no-report"]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["r"]  # nothing beside the run folder
    # the method's files are in its own folder, not methods/.. (= the run folder's top)
    assert (out / "methods" / "__").is_dir() and not (out / "checkpoint.pt").exists()
