"""Experiment kinds resume by stage (docs/runs.md, "Experiment kinds resume by stage"): an
interrupted run continued with --resume recomputes only the stages it had not finished and
gives the summary of an uninterrupted run; corrupt or foreign stage files are recomputed with
one warning line; a changed configuration is refused; Ctrl-C and SIGTERM exit 130 with one
line pointing at --resume."""

from __future__ import annotations

import json
import os
import signal
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from thermotrain.cli.main import main
from thermotrain.experiments.kinds import (
    _landscape_spiral,
    landscape,
    thermo_bayes,
    thermo_ft,
    thermo_mnist,
    thermo_temperatures,
)
from thermotrain.experiments.kinds._stages import Stages, StageWarning, config_digest
from thermotrain.experiments.kinds.swaps.common import Cells
from thermotrain.experiments.run_folder import write_json

# tiny sizes: every run below takes about a second
SPIRAL = ["run", "landscape-spiral", "--quick", "--no-report", "--no-progress",
          "--set", "training.steps=20", "--set", "analysis.plane_grid=3"]
BAYES = ["run", "bayes-linreg", "--quick", "--no-report", "--no-progress",
         "--set", "sampling.chains=50"]
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
#: the other kinds: (argv, module, the function of one stage, its stage names in order)
OTHERS = {
    "mli": (["run", "mli-mnist", "--quick", "--no-report", "--no-progress", "--data-dir",
             str(SHARED_DATA), "--set", "training.seeds=1", "--set", "data.n_train=512",
             "--set", "data.n_test=64", "--set", "model.hidden=[16]", "--set",
             "mli.gauss_inputs=8", "--set", "mli.gauss_alphas=3", "--set", "mli.alphas=3"],
            landscape, "_run_cell",
            ["sgd-lr0.1", "sgd-lr0.1-bn", "adam-lr0.001", "adam-lr0.001-bn"]),
    "temperatures": (["run", "temperatures", "--quick", "--no-report", "--no-progress",
                      "--set", "training.steps=40", "--set", "grid.batch_sizes=[0]"],
                     thermo_temperatures, "train",
                     ["BAOAB tau=0.001 h=0.1 B=full", "AdLaLa tau=0.001 h=0.1 B=full"]),
}


def _timeless(obj: Any) -> str:
    """The summary without wall-clock times, as canonical JSON (NaN compares equal)."""
    def strip(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in ("seconds", "train_seconds")}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o

    return json.dumps(strip(obj), sort_keys=True)


def _summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


class Counting:
    """Wraps a stage function: counts calls; ``fail_at`` raises (or signals) on that call."""

    def __init__(self, fn: Any, fail_at: int | None = None, how: str = "keyboard"):
        self.fn, self.fail_at, self.how, self.calls = fn, fail_at, how, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self.fail_at:
            if self.how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)  # the CLI's handler raises right here
            raise KeyboardInterrupt
        return self.fn(*args, **kwargs)


@pytest.fixture(scope="module")
def spiral_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("spiral") / "straight"
    assert main([*SPIRAL, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def bayes_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bayes") / "straight"
    assert main([*BAYES, "--out", str(out)]) == 0
    return out


# ------------------------------------------------------------------ the kinds, end to end
@pytest.mark.parametrize("how", ["keyboard", "sigterm"])
def test_spiral_resumes_after_its_first_method(spiral_reference, tmp_path, monkeypatch, capsys,
                                               how):
    out = tmp_path / "resumed"
    argv = [*SPIRAL, "--out", str(out)]
    first = Counting(_landscape_spiral._method, fail_at=2, how=how)
    monkeypatch.setattr(_landscape_spiral, "_method", first)
    previous = signal.getsignal(signal.SIGTERM)
    assert main(argv) == 130
    assert signal.getsignal(signal.SIGTERM) is previous  # the CLI's handler is removed
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0] and "--resume" in err[0]
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["method-AdLaLa.pt"]
    assert not (out / "summary.json").exists()

    again = Counting(_landscape_spiral._method.fn)
    monkeypatch.setattr(_landscape_spiral, "_method", again)
    assert main([*argv, "--resume"]) == 0
    assert again.calls == 2  # Adam and SGD; AdLaLa (done before the interrupt) is reused
    assert "method-AdLaLa: done before (resumed)" in capsys.readouterr().out
    assert _timeless(_summary(out)) == _timeless(_summary(spiral_reference))
    for table in ("lines.csv", "planes.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(out / table),
                                      pd.read_csv(spiral_reference / table))


@pytest.mark.parametrize("kind", list(OTHERS))
def test_other_kinds_resume_after_their_first_stage(kind, tmp_path, monkeypatch, capsys):
    argv, module, unit, names = OTHERS[kind]
    if kind == "mli" and not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"MNIST not found in {SHARED_DATA}")
    assert main([*argv, "--out", str(tmp_path / "straight")]) == 0
    first = Counting(getattr(module, unit), fail_at=2)
    monkeypatch.setattr(module, unit, first)
    assert main([*argv, "--out", str(tmp_path / "r")]) == 130
    capsys.readouterr()
    again = Counting(first.fn)
    monkeypatch.setattr(module, unit, again)
    assert main([*argv, "--out", str(tmp_path / "r"), "--resume"]) == 0
    assert again.calls == len(names) - 1
    assert f"{names[0]}: done before (resumed)" in capsys.readouterr().out
    assert _timeless(_summary(tmp_path / "r")) == _timeless(_summary(tmp_path / "straight"))
    table = "lines.csv" if kind == "mli" else "metrics.csv"
    assert (tmp_path / "r" / table).read_text() == (tmp_path / "straight" / table).read_text()


#: the FT studies: (study, data folder, module, the last stage's function, the earlier ones')
FT = {
    "ft-mnist": ("ft-mnist", "mnist", thermo_mnist, "run_chains",
                 ("one_step_check", "cheap_check")),
    "ft-regression": ("ft-regression", "ft-regression", thermo_ft, "without_replacement",
                      ("one_step_check", "cheap_check", "stationary_chains")),
}


@pytest.mark.parametrize("kind", list(FT))
def test_ft_studies_resume_before_their_last_stage(kind, tmp_path, monkeypatch, capsys):
    study, folder, module, last, earlier = FT[kind]
    if not (SHARED_DATA / folder).is_dir():
        pytest.skip(f"{folder} not found in {SHARED_DATA}")
    argv = ["run", study, "--quick", "--no-report", "--no-progress", "--data-dir",
            str(SHARED_DATA)]
    assert main([*argv, "--out", str(tmp_path / "straight")]) == 0
    final = Counting(getattr(module, last), fail_at=1)  # the earlier stages are done
    monkeypatch.setattr(module, last, final)
    assert main([*argv, "--out", str(tmp_path / "r")]) == 130
    capsys.readouterr()
    checks = {name: Counting(getattr(module, name)) for name in earlier}
    for name, counting in checks.items():
        monkeypatch.setattr(module, name, counting)
    final = Counting(final.fn)
    monkeypatch.setattr(module, last, final)
    assert main([*argv, "--out", str(tmp_path / "r"), "--resume"]) == 0
    assert [c.calls for c in checks.values()] == [0] * len(earlier) and final.calls == 1
    for name in ("summary.json", "arrays.json"):
        a, b = (json.loads((tmp_path / d / name).read_text()) for d in ("r", "straight"))
        assert _timeless(a) == _timeless(b)


def test_bayes_resume_recomputes_a_corrupt_stage_with_a_warning(bayes_reference, tmp_path,
                                                                monkeypatch, capsys):
    out = tmp_path / "resumed"
    argv = [*BAYES, "--out", str(out)]
    total = len(_summary(bayes_reference)["rows"])  # 2 step sizes x 3 samplers
    assert total == 6
    first = Counting(thermo_bayes.sample, fail_at=3)
    monkeypatch.setattr(thermo_bayes, "sample", first)
    assert main(argv) == 130
    done = sorted(p.name for p in (out / "stages").iterdir())
    assert done == ["h-0.0001-SGLD.json", "h-0.0001-ULA.json"]
    bad = out / "stages" / "h-0.0001-ULA.json"
    bad.write_text(bad.read_text()[:40])  # truncated, as by a crash of another writer
    capsys.readouterr()

    again = Counting(first.fn)
    monkeypatch.setattr(thermo_bayes, "sample", again)
    assert main([*argv, "--resume"]) == 0
    captured = capsys.readouterr()
    assert again.calls == total - 1  # only h=1e-4 SGLD is reused
    assert "h=0.0001-SGLD: done before (resumed)" in captured.out
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warning) == 1 and str(bad) in warning[0] and "unreadable" in warning[0]
    assert _timeless(_summary(out)) == _timeless(_summary(bayes_reference))
    assert json.loads(bad.read_text())["stage"] == "h=0.0001-ULA"  # rewritten whole


def test_bayes_resume_with_another_configuration_is_refused(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    monkeypatch.setattr(thermo_bayes, "sample", Counting(thermo_bayes.sample, fail_at=2))
    assert main([*BAYES, "--out", str(out)]) == 130
    capsys.readouterr()
    assert main([*BAYES, "--out", str(out), "--resume", "--set", "sampling.seed=7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different configuration" in err[0]
    assert main([*BAYES, "--out", str(out)]) == 2  # without --resume: refused as well
    assert "--resume" in capsys.readouterr().err


# ------------------------------------------------------------------ the mechanism
def _folder(tmp_path: Path, config: dict[str, Any] | None = None) -> Path:
    write_json(tmp_path / "config.json", config or {"experiment": "x", "a": 1})
    return tmp_path


def test_stages_store_reuse_and_recompute_without_resume(tmp_path):
    out = _folder(tmp_path)
    calls = []

    def compute(value: Any) -> Any:
        calls.append(value)
        return value

    first = Stages(out, resume=False)
    assert first.run("a b=1", lambda: compute({"x": (1, 2), "y": float("inf")})) == \
        {"x": [1, 2], "y": float("inf")}  # as it reads back: fresh run == resumed run
    assert (out / "stages" / "a_b-1.json").is_file()
    resumed = Stages(out, resume=True)
    assert resumed.run("a b=1", lambda: compute("again")) == {"x": [1, 2], "y": float("inf")}
    assert (resumed.reused, resumed.computed) == (["a b=1"], [])
    assert Stages(out, resume=False).run("a b=1", lambda: compute("fresh")) == "fresh"
    assert len(calls) == 2


def test_tensor_stages_round_trip_and_corrupt_payloads_are_recomputed(tmp_path):
    out = _folder(tmp_path)
    state = {"w": torch.arange(6.0).reshape(2, 3), "rows": [[1, "a", 0.5]]}
    Stages(out, resume=True).run("m", lambda: state, tensors=True)
    path = out / "stages" / "m.pt"
    back = Stages(out, resume=True).run("m", lambda: pytest.fail("recomputed"), tensors=True)
    assert torch.equal(back["w"], state["w"]) and back["rows"] == state["rows"]
    path.write_bytes(path.read_bytes()[:50])
    with pytest.warns(StageWarning, match=r"m\.pt is unreadable .*computing 'm' again"):
        again = Stages(out, resume=True).run("m", lambda: {"w": torch.zeros(1)}, tensors=True)
    assert torch.equal(again["w"], torch.zeros(1))
    assert torch.equal(Stages(out, resume=True).get("m", tensors=True)[1]["w"],
                       torch.zeros(1))


@pytest.mark.parametrize("damage", ["empty", "not-json", "no-envelope", "other-stage",
                                    "other-config"])
def test_unusable_stage_files_are_recomputed_with_one_warning(tmp_path, damage):
    out = _folder(tmp_path)
    Stages(out, resume=True).run("s", lambda: {"v": 1})
    path = out / "stages" / "s.json"
    envelope = json.loads(path.read_text())
    if damage == "empty":
        path.write_text("")
    elif damage == "not-json":
        path.write_text('{"stage": "s", "config"')
    elif damage == "no-envelope":
        path.write_text('{"v": 1}')
    elif damage == "other-stage":
        path.write_text(json.dumps({**envelope, "stage": "t"}))
    else:
        path.write_text(json.dumps({**envelope, "config": config_digest({"a": 2})}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert Stages(out, resume=True).run("s", lambda: {"v": 2}) == {"v": 2}
    assert len(caught) == 1 and caught[0].category is StageWarning
    assert str(path) in str(caught[0].message)
    assert Stages(out, resume=True).run("s", lambda: {"v": 3}) == {"v": 2}  # now whole


def test_digest_ignores_notes_and_description_only(tmp_path):
    base = {"experiment": "x", "a": 1, "notes": ["n"], "description": "d"}
    assert config_digest(base) == config_digest({"a": 1, "experiment": "x"})
    assert config_digest(base) != config_digest({**base, "a": 2})
    out = _folder(tmp_path, base)
    Stages(out, resume=True).run("s", lambda: 1)
    _folder(tmp_path, {**base, "notes": ["changed"]})
    assert Stages(out, resume=True).run("s", lambda: 2) == 1


def test_colliding_stage_names_are_refused(tmp_path):
    stages = Stages(_folder(tmp_path), resume=False)
    stages.run("a=1", lambda: 1)
    with pytest.raises(ValueError, match="'a=1' and 'a-1' map to the same file"):
        stages.run("a-1", lambda: 2)


def test_swap_cells_share_the_mechanism_and_read_earlier_files(tmp_path):
    out = _folder(tmp_path)
    cells = Cells(out, resume=True)
    first = cells.run("sgd-m10", lambda: {"acc": (0.5,)})
    assert first["acc"] == (0.5,) and first["seconds"] >= 0  # the object itself, as before
    assert isinstance(cells.stages, Stages) and cells.dir == out / "cells"
    assert Cells(out, resume=True).run("sgd-m10", lambda: pytest.fail("recomputed"))["acc"] \
        == [0.5]
    (out / "cells" / "old.json").write_text('{"acc": [0.25]}')  # a cell file of before
    assert Cells(out, resume=True).get("old") == {"acc": [0.25]}
    assert Cells(out, resume=False).get("old") is None
