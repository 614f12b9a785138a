"""Study configs: every study file validates; errors name the file and the key."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from _experiments_helpers import tiny_raw

from thermotrain.experiments import ConfigError, find_study, list_studies, load_study, parse_study
from thermotrain.experiments.config import apply_overrides, stream_seeds
from thermotrain.experiments.studies import studies_dir

FIGURES = ["fig1", "fig3-spiral", "fig3-mnist", "fig4", "fig6", "fig7", "fig8", "fig9", "fig10",
           "fig11", "fig12", "fig13", "fig14", "fig15", "fig16", "notebook-4turn", "mnist-mlp"]


def test_every_study_is_present_and_valid():
    names = [n for n, _ in list_studies()]
    assert sorted(names) == sorted(FIGURES)
    for name in names:
        full = load_study(find_study(name))
        quick = load_study(find_study(name), quick=True)
        assert full.name == name and full.description
        # quick settings are tiny, the full ones are the paper's
        assert quick.training.steps <= 200 and quick.training.seeds <= 3
        assert full.training.steps >= 10_000
        assert len(quick.methods) <= len(full.methods)


def test_notebook_study_matches_spec():
    s = load_study(find_study("notebook-4turn"))
    assert (s.data.kind, s.data.turns, s.data.n_train, s.data.n_test) == ("spirals", 4, 500,
                                                                          1000)
    assert s.model.hidden == (100,) and s.model.init == "default"
    assert (s.training.seeds, s.training.steps, s.training.batch_size) == (20, 80_000, 25)
    ad = next(m for m in s.methods if m.name == "AdLaLa")
    assert ad.hyperparameters == {"lr": 0.25, "friction": 0.1, "temperature": [1e-4, 1e-4],
                                  "noise": 0.01, "coupling": 0.05, "xi_init": 0.1}
    assert s.paper["AdLaLa"].test_accuracy == pytest.approx(0.882)
    assert s.paper["Adam"].test_accuracy_std == pytest.approx(0.065)
    sgld = next(m for m in s.methods if m.optimizer == "sgld")
    assert sgld.hyperparameters["temperature"] == pytest.approx(0.01**2 / 2)


def test_sweeps_expand_into_methods():
    fig15 = load_study(find_study("fig15"))
    assert len(fig15.methods) == 25
    cell = fig15.methods[7]
    assert cell.base == "AdLaLa" and set(cell.sweep) == {"temperature[0]", "noise"}
    # the indexed sweep sets tau1 only; tau2 stays 1e-8
    assert cell.hyperparameters["temperature"] == [cell.sweep["temperature[0]"], 1e-8]
    assert cell.hyperparameters["noise"] == cell.sweep["noise"]
    fig1 = load_study(find_study("fig1"))
    assert [m.hyperparameters["temperature"] for m in fig1.methods] == [1e-8, 1e-7, 1e-6, 1e-5]
    fig10 = load_study(find_study("fig10"))
    sgld = [m for m in fig10.methods if m.base == "SGLD"]
    assert [m.hyperparameters["temperature"] for m in sgld] == pytest.approx(
        [s**2 / 2 for s in (0, 0.005, 0.01, 0.05, 0.1)])
    # --quick keeps the first sweep_limit values of each list
    assert len(load_study(find_study("fig15"), quick=True).methods) == 4


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"colour": "red"}, "'colour' is not a known key"),
        ({"data": {"kind": "spirals", "n_train": 60, "n_test": 40, "turnz": 2}},
         "[data] 'turnz' is not a known key"),
        ({"data": {"kind": "planar_trig", "n_train": 60, "n_test": 40, "turns": 2}},
         "[data] 'turns' is not a known key"),
        ({"data": {"kind": "cifar"}}, "[data] kind must be one of"),
        ({"data": {"n_train": 61}}, "[data] n_train must be even"),
        ({"training": {"steps": -3}}, "[training] steps must be an integer >= 1, got -3"),
        ({"training": {"steps": 1.5}}, "[training] steps must be an integer"),
        ({"training": {"replacement": "yes"}}, "[training] replacement must be true or false"),
        ({"training": {"rng": "mt19937"}}, "[training] rng must be one of torch, philox"),
        ({"training": {"batch_size": 100}}, "[training] batch_size (100) exceeds"),
        ({"training": {"eval_evry": 3}}, "[training] 'eval_evry' is not a known key"),
        ({"model": {"init": "normal"}}, "[model] init_std is required"),
        ({"model": {"activation": "gelu"}}, "[model] activation must be one of"),
        ({"methods": [{"name": "X", "optimizer": "rmsprop"}]}, "[methods.X] optimizer must be"),
        ({"methods": [{"name": "X", "optimizer": "adam", "friction": 1.0}]},
         "[methods.X] 'friction' is not a known key"),
        ({"methods": [{"name": "X", "optimizer": "sgd", "lr": -0.1}]},
         "[methods.X] lr must be >= 0"),
        ({"methods": [{"name": "X", "optimizer": "sgld", "lr": 0.1}]},
         "[methods.X] temperature or sigma"),
        ({"methods": [{"name": "X", "optimizer": "sgld", "sigma": 0.1, "temperature": 1e-3}]},
         "[methods.X] temperature or sigma"),
        ({"methods": [{"name": "X", "optimizer": "adlala", "temperature": [1, 2, 3]}]},
         "[methods.X] temperature must be a number or a pair"),
        ({"methods": [{"name": "X", "optimizer": "adlala", "sweep": {"gamma": [1]}}]},
         "[methods.X] sweep.gamma is not a hyperparameter of adlala"),
        ({"methods": [{"name": "X", "optimizer": "adam"}, {"name": "X", "optimizer": "sgd"}]},
         "duplicate method names: X"),
        ({"paper": {"Nope": {"test_accuracy": 0.5}}}, "[paper] 'Nope' is not a method"),
        ({"paper": {"Adam": {"test_accuracy": 88.2}}}, "test_accuracy is a fraction"),
        ({"paper": {"Adam": {"acc": 0.5}}}, "[paper.Adam] 'acc' is not a known key"),
        ({"notes": 3}, "notes must be a non-empty string or a list of them"),
        ({"notes": ["ok", ""]}, "notes must be a non-empty string or a list of them"),
    ],
)
def test_errors_name_file_and_key(change, fragment):
    raw = tiny_raw(**change) if "data" not in change else tiny_raw()
    if "data" in change:
        raw["data"] = {**({} if "kind" in change["data"] else raw["data"]), **change["data"]}
    with pytest.raises(ConfigError) as info:
        parse_study(raw, "studies/tiny.toml")
    message = str(info.value)
    assert message.startswith("studies/tiny.toml: ")
    assert fragment in message
    assert "\n" not in message


def test_file_errors(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\nkind = 1")
    with pytest.raises(ConfigError, match=r"bad.toml: invalid TOML"):
        load_study(bad)
    with pytest.raises(ConfigError, match="unknown study 'nope'"):
        find_study("nope")
    with pytest.raises(ConfigError, match="does not exist"):
        find_study(str(tmp_path / "missing.toml"))


def test_overrides_and_quick(tmp_path: Path):
    path = tmp_path / "s.toml"
    path.write_text(
        '[data]\nkind = "spirals"\nn_train = 60\nn_test = 40\n'
        "[training]\nsteps = 1000\nbatch_size = 10\n"
        '[[methods]]\nname = "A"\noptimizer = "adlala"\n'
        '[[methods]]\nname = "B"\noptimizer = "sgd"\n'
        "[quick]\ntraining = { steps = 20, seeds = 2 }\n"
    )
    s = load_study(path, quick=True, overrides=["methods.A.lr=0.05", "data.turns=2"])
    assert s.name == "s" and s.training.steps == 20 and s.training.seeds == 2
    assert s.methods[0].hyperparameters["lr"] == 0.05 and s.data.turns == 2
    # explicit values beat [quick]
    s = load_study(path, quick=True, steps=7, overrides=["training.seeds=4"])
    assert (s.training.steps, s.training.seeds) == (7, 4)
    assert [m.name for m in load_study(path, methods=["B"]).methods] == ["B"]
    with pytest.raises(ConfigError, match="no method named 'C'"):
        load_study(path, methods=["C"])
    with pytest.raises(ConfigError, match=r"\[training\] 'stepz' is not a known key"):
        load_study(path, overrides=["training.stepz=3"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["training.steps"])
    with pytest.raises(ConfigError, match="has no method 'Z'"):
        load_study(path, overrides=["methods.Z.lr=1"])


def test_eval_schedule_and_seeds(tiny_study):
    s = tiny_study(training={"steps": 25, "eval_every": 10, "eval_at": [3, 99]})
    assert s.training.eval_steps() == [0, 3, 10, 20, 25]
    assert s.training.snapshot_steps() == [0, 10, 25]
    assert s.training.run_seeds == [5, 6, 7]
    init, batches, noise = (stream_seeds([5], k)[0] for k in ("init", "batches", "noise"))
    assert init == 5 and len({init, batches, noise}) == 3


def test_studies_dir_env(monkeypatch, tmp_path: Path):
    assert (studies_dir() / "notebook-4turn.toml").is_file()
    (tmp_path / "mine.toml").write_text('description = "mine"\n')
    monkeypatch.setenv("THERMOTRAIN_STUDIES", str(tmp_path))
    assert list_studies() == [("mine", "mine")]


def test_paper_numbers_are_fractions():
    for name in FIGURES:
        for result in load_study(find_study(name)).paper.values():
            assert result.test_accuracy is None or 0 < result.test_accuracy <= 1
            assert result.test_accuracy_std is None or not math.isnan(result.test_accuracy_std)


def test_quick_table_is_checked_without_quick():
    raw = tiny_raw(quick={"training": {"steps": 5}, "seeds": 2})
    with pytest.raises(ConfigError, match=r"\[quick\] 'seeds' is not a known key"):
        parse_study(raw, "tiny.toml")
