"""Shared pieces of the thermodynamics tests."""

from __future__ import annotations


class ManualState:
    """The part of LoopState the monitors read, for driving them by hand."""

    def __init__(self, model, opt, x, y, members):
        self.model, self.optimizer, self.members = model, opt, members
        self.x_train, self.y_train, self.step, self.logged = x, y, 0, {}

    def log(self, metric, value, split="train"):
        self.logged[metric] = value.clone()
