"""The ray backend's cell splitting and gathering, with a stand-in for ray (which is an
optional extra and not installed for the tests): a cell split must not change results."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path

import pytest
import torch

from thermotrain.cli.main import main
from thermotrain.experiments import run_study
from thermotrain.experiments.distributed import run_study_ray, split_seeds
from thermotrain.experiments.runner import read_metrics


@pytest.fixture
def fake_ray(monkeypatch):
    """A synchronous stand-in for the parts of ray the backend uses."""
    module = types.ModuleType("ray")
    module.__spec__ = importlib.machinery.ModuleSpec("ray", None)
    calls = {"init": [], "tasks": 0}

    class Remote:
        def __init__(self, fn):
            self.fn = fn

        def remote(self, *args):
            calls["tasks"] += 1
            return self.fn(*args)

    module.is_initialized = lambda: bool(calls["init"])
    module.init = lambda address=None, **kw: calls["init"].append(address)
    module.remote = lambda **opts: Remote
    module.get = lambda futures: list(futures)
    monkeypatch.setitem(sys.modules, "ray", module)
    return calls


def test_split_seeds():
    assert split_seeds([0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3], [4]]


def test_ray_cells_equal_local_run(tiny_study, tmp_path: Path, fake_ray):
    study = tiny_study()
    run_study(study, tmp_path / "local")
    run_study_ray(study, tmp_path / "ray", seeds_per_task=2, address="auto")
    assert fake_ray["init"] == ["auto"] and fake_ray["tasks"] == 2 * 2  # 2 methods × 2 chunks
    local, ray = (read_metrics(tmp_path / d / "metrics.csv") for d in ("local", "ray"))
    assert [(r["method"], r["seed"], r["step"], r["split"]) for r in local] == [
        (r["method"], r["seed"], r["step"], r["split"]) for r in ray]
    for a, b in zip(local, ray, strict=True):
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-6)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
    sa = torch.load(tmp_path / "local" / "methods" / "Adam" / "snapshots.pt", weights_only=True)
    sb = torch.load(tmp_path / "ray" / "methods" / "Adam" / "snapshots.pt", weights_only=True)
    for x, y in zip(sa["snapshots"], sb["snapshots"], strict=True):
        assert x["step"] == y["step"]
        torch.testing.assert_close(x["first_weight"], y["first_weight"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x["members"]["layers.1.weight"],
                                   y["members"]["layers.1.weight"], rtol=1e-5, atol=1e-6)


def test_cli_ray_backend(tmp_path: Path, fake_ray, capsys):
    code = main(["run", "fig4", "--quick", "--steps", "10", "--backend", "ray", "--address",
                 "ray://head:10001", "--out", str(tmp_path / "r"), "--no-report"])
    assert code == 0
    assert fake_ray["init"] == ["ray://head:10001"]
    assert "| AdLaLa |" in capsys.readouterr().out
