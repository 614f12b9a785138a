"""Helpers for the experiment tests: a tiny spiral study built in memory."""

from __future__ import annotations

import copy
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

TINY = {
    "name": "tiny",
    "description": "a tiny spiral study for tests",
    "data": {"kind": "spirals", "n_train": 60, "n_test": 40, "turns": 1, "seed": 3},
    "model": {"hidden": [8]},
    "training": {"seeds": 3, "seed": 5, "steps": 30, "batch_size": 10, "eval_every": 10,
                 "checkpoint_every": 0, "snapshot_at": [10], "saved_members": 2},
    "methods": [
        {"name": "AdLaLa", "optimizer": "adlala", "lr": 0.1},
        {"name": "Adam", "optimizer": "adam", "lr": 0.01},
    ],
    "paper": {"AdLaLa": {"test_accuracy": 0.9, "test_accuracy_std": 0.05}},
}


def tiny_raw(**tables) -> dict:
    """The raw TOML document of :data:`TINY` with tables updated (``training={...}``)."""
    raw = copy.deepcopy(TINY)
    for key, value in tables.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key].update(value)
        else:
            raw[key] = value
    return raw
