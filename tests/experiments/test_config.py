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
    from thermotrain.experiments.config import read_toml

    names = [n for n, _ in list_studies()]
    assert set(FIGURES) <= set(names)
    # the others are experiment studies (experiment = NAME), validated by their experiment
    assert all("experiment" in read_toml(find_study(n)) for n in set(names) - set(FIGURES))
    for name in FIGURES:
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
    # defaults come from the AdLaLa signature (the authors' code, docs/science.md §3)
    assert ad.hyperparameters == {"lr": 0.25, "friction": 0.1, "temperature": [1e-4, 1e-4],
                                  "noise": 0.01, "coupling": 0.05, "xi_init": 0.1,
                                  "adaptive_layers": [0]}
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
         "[methods.X] Invalid learning rate: -0.1"),  # torch.optim.SGD's own check
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


# --------------------------------------------------------------------------- the registry
def _no_paper(**tables) -> dict:
    raw = tiny_raw(**tables)
    raw.pop("paper")
    return raw


def test_schema_is_read_from_the_optimizer_signatures():
    import inspect

    from thermotrain.experiments.config import optimizer_registry, optimizer_schemas

    registry = optimizer_registry()
    assert {"adlala", "lol", "lala", "baoab", "sgld", "sgd", "adam"} <= set(registry)
    for name, schema in optimizer_schemas().items():
        signature = inspect.signature(registry[name].__init__).parameters
        for key, hyper in schema.items():
            default = signature[key].default
            assert hyper.default == (list(default) if isinstance(default, tuple) else default)
    # a default of a study method is the class's default, not a copy: Adam's eps, SGLD's lr
    raw = _no_paper(methods=[{"name": "A", "optimizer": "adam"},
                                      {"name": "S", "optimizer": "sgld", "sigma": 0.1}])
    adam, sgld = parse_study(raw, "tiny.toml").methods
    assert adam.hyperparameters["eps"] == inspect.signature(
        registry["adam"].__init__).parameters["eps"].default
    assert sgld.hyperparameters == {"lr": 0.1, "temperature": pytest.approx(0.1**2 / 2)}


def test_adding_a_method_is_one_registry_entry(monkeypatch):
    import torch

    from thermotrain import samplers
    from thermotrain.experiments.config import make_optimizer, optimizer_registry

    class Heavy(samplers.BAOAB):
        def __init__(self, params, lr=0.05, friction=3.0, temperature=0.0, **kwargs):
            super().__init__(params, lr, friction, temperature, **kwargs)

    monkeypatch.setitem(samplers.PRESETS, "heavy", Heavy)  # the one place to touch
    assert optimizer_registry()["heavy"] is Heavy
    raw = _no_paper(methods=[{"name": "H", "optimizer": "heavy", "friction": 2.0}])
    (method,) = parse_study(raw, "tiny.toml").methods
    assert method.hyperparameters == {"lr": 0.05, "friction": 2.0, "temperature": 0.0}
    opt = make_optimizer("heavy", method.hyperparameters, torch.nn.Linear(2, 1))
    assert isinstance(opt, Heavy) and opt.param_groups[0]["friction"] == 2.0
    with pytest.raises(ConfigError, match=r"\[methods.H\] 'coupling' is not a known key"):
        parse_study(_no_paper(methods=[{"name": "H", "optimizer": "heavy",
                                                 "coupling": 1}]), "tiny.toml")


# --------------------------------------------------------------------------- 7.7 names
@pytest.mark.parametrize("name", ["../../escaped", "a/b", ".hidden", "", "..", "x y"])
def test_study_names_are_folder_slugs(name, tmp_path: Path):
    with pytest.raises(ConfigError, match="name .*letters, digits"):
        parse_study(tiny_raw(name=name), "tiny.toml")
    path = tmp_path / "ok.toml"
    path.write_text('[data]\nkind = "spirals"\nn_train = 60\nn_test = 40\n'
                    '[training]\nsteps = 10\nbatch_size = 10\n'
                    '[[methods]]\nname = "A"\noptimizer = "adam"\n')
    with pytest.raises(ConfigError, match="letters, digits"):
        load_study(path, overrides=[f"name={name!r}".replace("'", '"')])
    assert load_study(path, overrides=["name=my-study_2.v1"]).name == "my-study_2.v1"


def test_a_file_stem_that_is_not_a_slug_is_rejected(tmp_path: Path):
    path = tmp_path / ".secret.toml"  # stem ".secret": a hidden folder
    path.write_text('[data]\nkind = "spirals"\nn_train = 60\nn_test = 40\n'
                    '[training]\nsteps = 10\nbatch_size = 10\n'
                    '[[methods]]\nname = "A"\noptimizer = "adam"\n')
    with pytest.raises(ConfigError, match=r"\.secret.toml: name .*'\.secret'"):
        load_study(path)


# --------------------------------------------------------------------------- 7.8 method x model
@pytest.mark.parametrize(
    ("model", "method", "fragment"),
    [
        ({"hidden": []}, {"optimizer": "adlala"}, "at least 2"),
        ({"hidden": []}, {"optimizer": "lol"}, "at least 2"),
        ({"hidden": [8]}, {"optimizer": "lala", "friction": [1.0, 2.0, 3.0]},
         "friction lists 3 values but there are 2"),
        ({"hidden": [8, 8]}, {"optimizer": "adlala", "adaptive_layers": [5]},
         "adaptive_layers must list layer indices in [0, 3)"),
        ({"hidden": [8]}, {"optimizer": "adlala", "friction": -1.0}, "friction must be >= 0"),
        ({"hidden": [8]}, {"optimizer": "adam", "betas": [0.9, 1.5]}, "beta"),
        # torch cannot turn 1e308 into a float32 step: it failed at the first step, after
        # the methods before it had trained
        ({"hidden": [8]}, {"optimizer": "lala", "lr": 1e308}, "lr must be a finite number"),
        ({"hidden": [8]}, {"optimizer": "adlala", "temperature": [1e-4, 1e39]},
         "temperature must be a number or a non-empty list"),
    ],
)
def test_method_model_mismatch_is_rejected_at_load_time(model, method, fragment):
    raw = tiny_raw(model=model, methods=[{"name": "Adam", "optimizer": "adam"},
                                         {"name": "Bad", **method}])
    with pytest.raises(ConfigError) as info:
        parse_study(raw, "tiny.toml")
    message = str(info.value)
    assert message.startswith("tiny.toml: [methods.Bad] ") and fragment in message, message
    assert "\n" not in message


def test_a_mismatch_in_a_sweep_cell_dropped_by_quick_is_still_rejected():
    # the full study must be runnable too: every cell is checked, not only the quick ones
    raw = tiny_raw(model={"hidden": [8]}, quick={"sweep_limit": 1},
                   methods=[{"name": "L", "optimizer": "lala",
                             "sweep": {"friction": [1.0, [1.0, 2.0, 3.0]]}}])
    with pytest.raises(ConfigError, match=r"methods.L\(friction=\[1,2,3\]\)"):
        parse_study(raw, "tiny.toml", quick=True)


# --------------------------------------------------------------------------- 7.9 swept keys
def test_set_on_a_swept_key_replaces_the_sweep(tmp_path: Path):
    path = tmp_path / "s.toml"
    path.write_text('[data]\nkind = "spirals"\nn_train = 60\nn_test = 40\n'
                    "[training]\nsteps = 10\nbatch_size = 10\n"
                    '[[methods]]\nname = "AdLaLa"\noptimizer = "adlala"\n'
                    '[methods.sweep]\nnoise = [0.01, 0.1]\nlr = [0.1, 0.2]\n')
    assert len(load_study(path).methods) == 4
    s = load_study(path, overrides=["methods.AdLaLa.noise=0.02"])
    assert [m.hyperparameters["noise"] for m in s.methods] == [0.02, 0.02]
    assert [m.name for m in s.methods] == ["AdLaLa(lr=0.1)", "AdLaLa(lr=0.2)"]
    s = load_study(path, overrides=["methods.AdLaLa.sweep.noise=[0.5, 0.6, 0.7]"])
    assert sorted({m.hyperparameters["noise"] for m in s.methods}) == [0.5, 0.6, 0.7]
    # both a value and a sweep in the file itself: an error, not a silent choice
    path.write_text(path.read_text().replace('optimizer = "adlala"\n',
                                             'optimizer = "adlala"\nnoise = 0.3\n'))
    with pytest.raises(ConfigError, match=r"\[methods.AdLaLa\] noise is given both"):
        load_study(path)


# --------------------------------------------------------------------------- 7.11 values
@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["training=5"], "[training] must be a table, got 5"),
        (["data=5"], "[data] must be a table, got 5"),
        (["model=[1]"], "[model] must be a table"),
        (["training.seed=9223372036854775808"], "[training] seed must be <="),
        (["training.seed=9223372036854775000"], "[training] seed must be <="),
        (["data.seed=9223372036854775808"], "[data] seed must be an integer in [0,"),
        (["training.steps=1000000000000"], "[training] eval_every = 1000 with steps"),
        (["methods=5"], "use methods.NAME.key=value"),
    ],
)
def test_bad_override_values_are_config_errors(overrides, fragment, tmp_path: Path):
    path = tmp_path / "s.toml"
    path.write_text('[data]\nkind = "spirals"\nn_train = 60\nn_test = 40\n'
                    "[training]\nsteps = 1000\nbatch_size = 10\n"
                    '[[methods]]\nname = "A"\noptimizer = "adam"\n')
    with pytest.raises(ConfigError) as info:
        load_study(path, overrides=overrides, seeds=2)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_the_largest_allowed_seed_loads():
    from thermotrain.experiments.config import MAX_SEED

    top = MAX_SEED - 2_000_006 - 2
    s = parse_study(tiny_raw(training={"seed": top}), "tiny.toml")  # 3 seeds
    assert max(stream_seeds(s.training.run_seeds, "noise")) == MAX_SEED


def test_an_experiment_study_is_not_a_method_study():
    with pytest.raises(ConfigError, match="experiment = 'x' makes this an experiment study"):
        parse_study({**tiny_raw(), "experiment": "x"}, "tiny.toml")


def test_non_utf8_toml_is_a_config_error(tmp_path: Path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('description = "Ångström"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.toml: not UTF-8 text.*0xc5"):
        load_study(path)


def test_a_splitting_word_from_a_study_file():
    raw = _no_paper(methods=[{"name": "L", "optimizer": "langevin", "splitting": "OBABO"}])
    (method,) = parse_study(raw, "tiny.toml").methods
    assert method.hyperparameters["splitting"] == "OBABO"
    raw = _no_paper(methods=[{"name": "L", "optimizer": "langevin", "splitting": "BABO"}])
    with pytest.raises(ConfigError, match=r"tiny.toml: \[methods.L\] .*BABO"):
        parse_study(raw, "tiny.toml")


@pytest.mark.parametrize(
    ("tables", "fragment"),
    [
        ({"training": {"seeds": 100_000_000}}, "needs about"),
        ({"data": {"n_train": 10_000_000_000}}, "needs about"),
        ({"model": {"hidden": [10**9, 10**9]}}, "needs about"),
        ({"training": {"snapshot_average": 10**8}}, "snapshot_average = 100000000 with 3"),
    ],
)
def test_studies_that_cannot_fit_in_memory_are_refused_before_allocating(tables, fragment):
    with pytest.raises(ConfigError) as info:
        parse_study(tiny_raw(**tables), "tiny.toml")
    assert fragment in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- SGWORLD's policy
def test_sgworld_is_a_study_method_and_warns_with_replacement_batches():
    import warnings

    from thermotrain.experiments.config import optimizer_registry
    from thermotrain.thermo import SGWORLD

    assert optimizer_registry()["sgworld"] is SGWORLD
    methods = [{"name": "W", "optimizer": "sgworld", "lr": 1e-3}]
    with pytest.warns(UserWarning, match=r"\[\[methods\]\] W: SGWORLD with with-replacement"):
        parse_study(_no_paper(methods=methods, training={"replacement": True}), "tiny.toml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # epoch-reshuffled batches: what SGWORLD is meant for
        (method,) = parse_study(_no_paper(methods=methods, training={"replacement": False}),
                                "tiny.toml").methods
    assert method.optimizer == "sgworld" and method.hyperparameters["lr"] == 1e-3
