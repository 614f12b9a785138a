"""LoopState's metric rows: log() and log_table() keep the values at log time and the rows
appear, in logging order, whenever ``rows`` is read (they are built lazily)."""

from __future__ import annotations

import pytest
import torch

from thermotrain.training.loop import LoopState


def _state(k=3):
    model = torch.nn.Linear(1, 1)
    return LoopState(model, None, x_train=torch.zeros(1), y_train=torch.zeros(1),
                     seeds=[10 + i for i in range(k)], total_steps=5, study="s",
                     method=["a", "b", "c"][:k])


def test_rows_are_the_logged_values_in_order_whatever_happens_to_the_tensors():
    state = _state()
    v = torch.tensor([1.5, 2.5, 3.5])
    state.log("x", v)
    v.mul_(10)  # a hook mutating its tensor after logging it: the row keeps the old value
    state.step = 2
    state.log("n", torch.tensor([1, 2, 3]))
    state.log("scalar", 0.25, split="valid")
    table = torch.tensor([[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]])
    state.log_table({"q": 1, "p": 0}, table)
    table.zero_()
    state.rows.append(state.row(1, "direct", 7.0))  # a hook appending a row (the guard)
    state.step = 3
    state.log("y", torch.tensor([True, False, True]))
    rows = state.rows
    expected = [("s", "a", 10, 0, "train", "x", 1.5), ("s", "b", 11, 0, "train", "x", 2.5),
                ("s", "c", 12, 0, "train", "x", 3.5),
                ("s", "a", 10, 2, "train", "n", 1.0), ("s", "b", 11, 2, "train", "n", 2.0),
                ("s", "c", 12, 2, "train", "n", 3.0),
                ("s", "a", -1, 2, "valid", "scalar", 0.25),
                ("s", "a", 10, 2, "train", "q", 4.0), ("s", "b", 11, 2, "train", "q", 5.0),
                ("s", "c", 12, 2, "train", "q", 6.0),
                ("s", "a", 10, 2, "train", "p", 1.0), ("s", "b", 11, 2, "train", "p", 2.0),
                ("s", "c", 12, 2, "train", "p", 3.0),
                ("s", "b", 11, 2, "train", "direct", 7.0),
                ("s", "a", 10, 3, "train", "y", 1.0), ("s", "b", 11, 3, "train", "y", 0.0),
                ("s", "c", 12, 3, "train", "y", 1.0)]
    assert rows == expected
    assert all(type(r[6]) is float for r in rows)
    assert state.rows is rows  # one list for the whole run
    state.rows = [("s", "a", 10, 0, "train", "x", 9.0)]
    state.log("z", torch.zeros(3))
    assert len(state.rows) == 4


def test_log_table_equals_log_per_column():
    a, b = _state(), _state()
    t = torch.randn(3, 4)
    cols = {"m2": 2, "m0": 0, "m3": 3}
    a.log_table(cols, t)
    for name, j in cols.items():
        b.log(name, t[:, j])
    assert a.rows == b.rows


def test_log_table_rejects_bad_tables_and_columns():
    state = _state()
    with pytest.raises(ValueError, match=r"values must be a real \(3, M\) tensor, got "
                                         r"torch.float32 \(2, 2\)"):
        state.log_table({"a": 0}, torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"a: column must be an int in \[0, 2\), got 2"):
        state.log_table({"a": 2}, torch.zeros(3, 2))
    with pytest.raises(TypeError, match="metric must be a non-empty string"):
        state.log_table({"": 0}, torch.zeros(3, 2))
    with pytest.raises(TypeError, match="must be real"):
        state.log("c", torch.zeros(3, dtype=torch.complex64))
    assert state.rows == []


def test_log_deferred_rows_keep_their_place_and_are_computed_when_read():
    state = _state()
    calls = []

    def resolve():
        calls.append(1)
        return [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]

    state.log("a", torch.zeros(3))
    state.step = 4
    state.log_deferred({"q": 1, "p": 0}, resolve)
    state.step = 5
    state.log("b", 0.5)
    assert calls == []
    rows = state.rows
    assert calls == [1]
    assert [r[5] for r in rows] == ["a"] * 3 + ["q"] * 3 + ["p"] * 3 + ["b"]
    assert [r[6] for r in rows if r[5] == "q"] == [4.0, 5.0, 6.0]
    assert {r[3] for r in rows if r[5] in ("p", "q")} == {4}
    with pytest.raises(TypeError, match="resolve must be callable"):
        state.log_deferred({"q": 0}, [1.0])
