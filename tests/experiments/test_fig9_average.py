"""Fig. 9: the classifier averaged over the last W steps (``training.snapshot_average``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _experiments_helpers import tiny_raw

from thermotrain.experiments import (
    ConfigError,
    find_study,
    load_study,
    parse_study,
    run_study,
    write_report,
)
from thermotrain.models import CNN, MLP, averaged_probability


@pytest.mark.parametrize("out", [1, 3])
def test_averaged_classifier_is_the_mean_of_the_probabilities(out: int):
    # W = 4 stored parameter states of a K = 2 member ensemble
    states = [MLP([2, 5, out], ensemble=2, seed=[10 * w, 10 * w + 1]) for w in range(4)]
    stacked = {k: torch.stack([m.state_dict()[k] for m in states]) for k in
               states[0].state_dict()}
    x = torch.randn(7, 2)
    got = averaged_probability(states[0], stacked, x)
    with torch.no_grad():
        probs = [torch.sigmoid(m(x)) if out == 1 else torch.softmax(m(x), -1) for m in states]
    torch.testing.assert_close(got, torch.stack(probs).mean(0))
    assert got.shape == (2, 7, out)
    # not the classifier of the averaged parameters
    mean_params = MLP([2, 5, out], ensemble=2)
    mean_params.load_state_dict({k: v.mean(0) for k, v in stacked.items()})
    with torch.no_grad():
        of_mean = mean_params(x)
        of_mean = torch.sigmoid(of_mean) if out == 1 else torch.softmax(of_mean, -1)
    assert not torch.allclose(got, of_mean)
    # one state: the plain classifier
    one = {k: v[:1] for k, v in stacked.items()}
    torch.testing.assert_close(averaged_probability(mean_params, one, x), probs[0])
    # a plain network (one member's states) gives that member's averaged classifier
    plain = {k: v[:, 1] for k, v in stacked.items()}
    torch.testing.assert_close(averaged_probability(states[0].member(1), plain, x),
                               torch.stack(probs).mean(0)[1])


def test_averaged_classifier_of_a_cnn_and_bad_states():
    nets = [CNN(in_shape=(1, 8, 8), num_classes=3, channels=(2,), ensemble=2, seed=[w, 9 + w])
            for w in range(3)]
    stacked = {k: torch.stack([m.state_dict()[k] for m in nets]) for k in nets[0].state_dict()}
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        ref = torch.stack([torch.softmax(m(x), -1) for m in nets]).mean(0)
    torch.testing.assert_close(averaged_probability(nets[0], stacked, x), ref)
    with pytest.raises(ValueError, match="states lack the parameters head.bias"):
        averaged_probability(nets[0], {k: v for k, v in stacked.items() if k != "head.bias"}, x)
    with pytest.raises(ValueError, match=r"state 'head.weight' has shape \(1, 3"):
        averaged_probability(nets[0], {**stacked, "head.weight": stacked["head.weight"][:, :1]},
                             x)


def _snaps(folder: Path, method: str = "AdLaLa") -> list[dict]:
    path = folder / "methods" / method / "snapshots.pt"
    return torch.load(path, weights_only=True)["snapshots"]


def test_runner_keeps_the_last_w_states(tiny_study, tmp_path: Path):
    study = tiny_study(training={"snapshot_average": 3, "snapshot_at": [1, 10]})
    run_study(study, tmp_path / "avg")
    snaps = _snaps(tmp_path / "avg")
    assert [s["window"]["steps"] for s in snaps] == [[0], [0, 1], [8, 9, 10], [28, 29, 30]]
    for s in snaps:  # the last state is the snapshot itself; saved_members = 2
        for k, v in s["members"].items():
            assert s["window"]["members"][k].shape == (len(s["window"]["steps"]), *v.shape)
            assert torch.equal(s["window"]["members"][k][-1], v)
    # the states are those of the run at steps 8 and 9 (a plain run with those snapshots)
    run_study(tiny_study(training={"snapshot_at": [8, 9, 10]}), tmp_path / "plain")
    plain = {s["step"]: s for s in _snaps(tmp_path / "plain")}
    assert "window" not in plain[9]
    for i, step in enumerate((8, 9)):
        for k, v in plain[step]["members"].items():
            assert torch.equal(snaps[2]["window"]["members"][k][i], v)
    # the report draws the averaged classifier
    text = write_report(tmp_path / "avg").read_text()
    assert "classifier averaged over the last 3 steps" in text
    assert (tmp_path / "avg" / "figures" / "boundaries.png").stat().st_size > 1000


def test_resume_mid_window_is_identical(tiny_study, tmp_path: Path):
    study = tiny_study(training={"snapshot_average": 4, "checkpoint_every": 9})
    run_study(study, tmp_path / "straight")

    def interrupt(method: str, step: int) -> None:
        if method == "AdLaLa" and step == 8:  # inside the window 7..10 of snapshot 10
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(study, tmp_path / "resumed", callback=interrupt)
    ckpt = torch.load(tmp_path / "resumed" / "methods" / "AdLaLa" / "checkpoint.pt",
                      weights_only=True)
    assert ckpt["step"] == 8 and [t for t, _ in ckpt["window"]] == [7, 8]
    run_study(study, tmp_path / "resumed", resume=True)
    a, b = _snaps(tmp_path / "straight"), _snaps(tmp_path / "resumed")
    assert [s["window"]["steps"] for s in a] == [s["window"]["steps"] for s in b]
    for sa, sb in zip(a, b, strict=True):
        for k in sa["window"]["members"]:
            assert torch.equal(sa["window"]["members"][k], sb["window"]["members"][k])


def test_fig9_study_averages_over_10_steps():
    for quick in (False, True):
        s = load_study(find_study("fig9"), quick=quick)
        assert s.training.snapshot_average == 10 and s.training.saved_members >= 1
    full = load_study(find_study("fig9"))
    assert full.training.snapshot_steps() == [0, 20_000, 40_000, 60_000]
    assert parse_study(tiny_raw(), "tiny.toml").training.snapshot_average == 1  # opt-in


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True, [10]])
def test_snapshot_average_is_validated(bad):
    with pytest.raises(ConfigError) as info:
        parse_study(tiny_raw(training={"snapshot_average": bad}), "studies/tiny.toml")
    assert str(info.value) == (f"studies/tiny.toml: [training] snapshot_average must be an "
                               f"integer >= 1, got {bad!r}")


def test_snapshot_average_needs_saved_members():
    raw = tiny_raw(training={"snapshot_average": 10, "saved_members": 0})
    with pytest.raises(ConfigError, match=r"^tiny\.toml: \[training\] snapshot_average \(10\) "
                                          r"needs saved_members >= 1"):
        parse_study(raw, "tiny.toml")


def test_bad_override_names_the_study_file():
    with pytest.raises(ConfigError, match=r"fig9\.toml: \[training\] snapshot_average must be "
                                          r"an integer >= 1, got 0"):
        load_study(find_study("fig9"), overrides=["training.snapshot_average=0"])
