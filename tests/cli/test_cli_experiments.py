"""``thermotrain run`` / ``report`` dispatch studies with ``experiment = NAME`` to the
registered experiment kind (:mod:`thermotrain.experiments.kinds`), with a fake kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thermotrain.cli.main import main
from thermotrain.experiments import kinds


@pytest.fixture
def fake_kind(monkeypatch):
    """A registered kind that records what it was given and writes a minimal run folder."""
    calls: dict = {"run": [], "report": []}

    def run(spec, ctx):
        calls["run"].append((spec, ctx))
        kinds.prepare_folder(spec, ctx)
        summary = {"value": spec["value"]}
        kinds.write_json(ctx.out / "summary.json", summary)
        return summary

    def report(out):
        calls["report"].append(out)
        path = Path(out) / "report.md"
        path.write_text(f"value {json.loads((Path(out) / 'summary.json').read_text())}\n")
        return path

    # only our kind: the dispatch under test must not depend on the other kinds importing
    monkeypatch.setattr(kinds, "_LOADED", True)
    fake = kinds.Experiment("fake-for-cli-test", run, report,
                            table=lambda s: f"| value | {s['value']} |", description="fake")
    monkeypatch.setitem(kinds._REGISTRY, fake.name, fake)
    return calls


def _study(tmp_path: Path) -> Path:
    path = tmp_path / "fake.toml"
    path.write_text('experiment = "fake-for-cli-test"\nvalue = 1\n[quick]\nvalue = 2\n')
    return path


def test_run_and_report_dispatch_to_the_kind(fake_kind, tmp_path: Path, capsys):
    out = tmp_path / "r"
    assert main(["run", str(_study(tmp_path)), "--quick", "--set", "value=3", "--out",
                 str(out), "--no-progress"]) == 0
    (spec, ctx), = fake_kind["run"]
    assert spec["value"] == 3 and spec["name"] == "fake" and ctx.quick and ctx.out == out
    printed = capsys.readouterr().out
    assert "| value | 3 |" in printed and "report.md" in printed
    assert json.loads((out / "config.json").read_text())["experiment"] == "fake-for-cli-test"
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert fake_kind["report"] == [out, out] and (out / "report.md").is_file()


def test_quick_table_and_default_folder(fake_kind, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(_study(tmp_path)), "--quick", "--no-report"]) == 0
    (spec, ctx), = fake_kind["run"]
    assert spec["value"] == 2 and ctx.out == Path("runs") / "fake-quick"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--methods", "A"], "--methods does not apply to fake"),
        (["--seeds", "2"], "--seeds does not apply"),
        (["--backend", "ray"], "--backend ray does not apply"),
        (["--log", "tensorboard"], "--log applies to method studies"),
        (["--set", "name=../../escaped"], "letters, digits"),
    ],
)
def test_experiment_mistakes_exit_2(extra, fragment, fake_kind, tmp_path: Path, monkeypatch,
                                    capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(_study(tmp_path)), *extra]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err
    assert fake_kind["run"] == [] and not (tmp_path / "runs").exists()


def test_unknown_experiment_kind(fake_kind, tmp_path: Path, capsys):
    path = tmp_path / "x.toml"
    path.write_text('experiment = "no-such-kind"\n')
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "experiment must be one of" in capsys.readouterr().err


def test_a_second_process_on_an_experiment_folder_exits_2(fake_kind, tmp_path: Path, capsys):
    """The CLI holds the run folder's lock around an experiment's run, as for method studies."""
    import os

    from thermotrain.experiments.run_folder import RunFolder

    out = tmp_path / "busy"
    with RunFolder(out).lock():  # stands for another live run on the same folder
        assert main(["run", str(_study(tmp_path)), "--out", str(out), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert f"PID {os.getpid()}" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert fake_kind["run"] == []  # nothing ran
    assert main(["run", str(_study(tmp_path)), "--out", str(out), "--no-report"]) == 0
