"""The ray backend's pure parts, without ray: seed chunks, snapshot gathering, address
checks and the missing-ray error. The backend itself runs on a real ray in
``test_ray_backend.py``."""

from __future__ import annotations

import socket
import sys

import pytest
import torch

from thermotrain.experiments import RunError
from thermotrain.experiments.distributed import (
    _merge_snapshots,
    check_address,
    ray_session,
    split_seeds,
)


def test_split_seeds():
    assert split_seeds([0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3], [4]]
    assert split_seeds([7], 10) == [[7]]


def _snap(step: int, members: list[int], saved: int, window: bool) -> dict:
    """A snapshot as :func:`train_method` writes it for an ensemble whose member k holds the
    value ``members[k]`` everywhere (``saved`` members kept; window values add the step)."""
    v = torch.tensor(members, dtype=torch.float32)
    kept = v[: min(saved, len(members))]
    snap = {"step": step, "first_weight": v.view(-1, 1, 1).expand(-1, 3, 2).clone(),
            "first_bias": v.view(-1, 1).expand(-1, 3).clone(),
            "members": {"layers.0.weight": kept.view(-1, 1, 1).expand(-1, 3, 2).clone()}}
    if window:  # snapshot_average = 2: (W, saved, ...) per parameter
        w = torch.stack([kept + step - 1, kept + step]).view(2, -1, 1, 1).expand(-1, -1, 3, 2)
        snap["window"] = {"steps": [step - 1, step], "members": {"layers.0.weight": w.clone()}}
    return snap


@pytest.mark.parametrize("window", [False, True])
def test_merge_snapshots_is_one_ensemble(window: bool):
    # seeds [0, 1, 2, 3, 4] in parts [0, 1], [2, 3], [4]; 3 saved members
    parts = [[_snap(s, p, 3, window) for s in (1, 5)] for p in ([0, 1], [2, 3], [4])]
    whole = [_snap(s, [0, 1, 2, 3, 4], 3, window) for s in (1, 5)]
    merged = _merge_snapshots(parts, saved=3)
    assert [m["step"] for m in merged] == [1, 5]
    for got, ref in zip(merged, whole, strict=True):
        for key in ("first_weight", "first_bias"):
            assert torch.equal(got[key], ref[key])
        assert torch.equal(got["members"]["layers.0.weight"],
                           ref["members"]["layers.0.weight"])
        assert ("window" in got) == window
        if window:
            assert got["window"]["steps"] == ref["window"]["steps"]
            assert torch.equal(got["window"]["members"]["layers.0.weight"],
                               ref["window"]["members"]["layers.0.weight"])


def test_merge_snapshots_rejects_mismatched_parts():
    with pytest.raises(RunError, match="different snapshot steps"):
        _merge_snapshots([[_snap(1, [0], 1, False)], [_snap(2, [1], 1, False)]], saved=1)


@pytest.mark.parametrize("address", ["nonsense:xx", "no-port", ":123", "ray://:5"])
def test_check_address_rejects_malformed(address: str):
    with pytest.raises(RunError, match="bad ray address"):
        check_address(address)


def test_check_address_needs_a_listener():
    with socket.socket() as s:  # a port that is surely closed: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(RunError, match=f"cannot reach the ray cluster at 127.0.0.1:{port}"):
            check_address(f"127.0.0.1:{port}", timeout=2)
        with pytest.raises(RunError, match="cannot reach"):
            check_address(f"ray://127.0.0.1:{port}", timeout=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_address(f"127.0.0.1:{s.getsockname()[1]}", timeout=2)
    for left_to_ray in ("auto", "local", "ray://head", "anyscale://x"):
        check_address(left_to_ray)


def test_missing_ray_is_a_run_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(RunError, match=r"pip install thermotrain\[ray\]"):
        with ray_session():
            pass
