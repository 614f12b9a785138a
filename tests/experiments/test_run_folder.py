"""The run folder module: long-format metrics (and the old wide files), atomic writes that
fail in one line, checkpoints that survive a corrupt file, one process per folder."""

from __future__ import annotations

import errno
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from thermotrain.experiments.run_folder import (
    METRIC_COLUMNS,
    CheckpointWarning,
    MethodFolder,
    RunError,
    RunFolder,
    atomic_write_text,
    metrics_frame,
    model_spec,
)
from thermotrain.models import CNN, MLP

LONG = [("s", "SGD", 0, 0, "train", "loss", 0.7), ("s", "SGD", 0, 0, "train", "accuracy", 0.5),
        ("s", "NA", 1, 10, "test", "loss", float("nan")),
        ("s", "NA", 1, 10, "test", "energy", float("inf"))]


def _temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*.tmp*")]


# --------------------------------------------------------------------------- metrics
def test_metrics_round_trip_long_format(tmp_path: Path):
    run = RunFolder(tmp_path)
    run.write_metrics(LONG)
    assert run.metrics_path.read_text().splitlines()[0] == ",".join(METRIC_COLUMNS)
    frame = run.read_metrics()
    assert tuple(frame.columns) == METRIC_COLUMNS
    assert frame["method"].tolist() == ["SGD", "SGD", "NA", "NA"]  # "NA" is a name, not NaN
    assert frame["seed"].dtype == "int64" and frame["step"].dtype == "int64"
    assert frame["value"].iloc[:2].tolist() == [0.7, 0.5]
    assert math.isnan(frame["value"].iloc[2]) and frame["value"].iloc[3] == math.inf
    # exact floats: the file holds the shortest repr that round-trips
    run.write_metrics([("s", "SGD", 0, 0, "train", "loss", 0.1 + 0.2)])
    assert run.read_metrics()["value"].iloc[0] == 0.1 + 0.2


def test_wide_rows_and_old_wide_files_become_long(tmp_path: Path):
    wide = [("s", "SGD", 0, 0, "train", 0.7, 0.5), ("s", "SGD", 0, 0, "test", 0.8, 0.25)]
    expected = [("s", "SGD", 0, 0, "train", "loss", 0.7),
                ("s", "SGD", 0, 0, "train", "accuracy", 0.5),
                ("s", "SGD", 0, 0, "test", "loss", 0.8),
                ("s", "SGD", 0, 0, "test", "accuracy", 0.25)]
    got = metrics_frame(wide)
    assert list(got.itertuples(index=False, name=None)) == expected
    # a metrics.csv of the runner before the long format reads as the same table
    (tmp_path / "metrics.csv").write_text(
        "study,method,seed,step,split,loss,accuracy\n"
        "s,SGD,0,0,train,0.7,0.5\ns,SGD,0,0,test,0.8,0.25\n")
    frame = RunFolder(tmp_path).read_metrics()
    assert list(frame.itertuples(index=False, name=None)) == expected
    pd.testing.assert_frame_equal(frame, metrics_frame(pd.DataFrame(
        wide, columns=["study", "method", "seed", "step", "split", "loss", "accuracy"])))


@pytest.mark.parametrize("damage", ["cut mid-row", "cut mid-value", "short row", "empty",
                                    "text in value", "other columns"])
def test_damaged_metrics_are_one_line_errors_naming_the_file(tmp_path: Path, damage: str):
    run = RunFolder(tmp_path)
    run.write_metrics(LONG)
    text = run.metrics_path.read_text()
    broken = {
        "cut mid-row": text[: text.rindex("\n", 0, -1) + 8],
        "cut mid-value": text[:-3],
        "short row": text + "s,SGD,0\n",
        "empty": "",
        "text in value": text + "s,SGD,0,0,train,loss,abc\n",
        "other columns": "a,b\n1,2\n",
    }[damage]
    run.metrics_path.write_text(broken)
    with pytest.raises(RunError) as info:
        run.read_metrics()
    message = str(info.value)
    assert str(run.metrics_path) in message and "\n" not in message


def test_json_files_missing_empty_or_corrupt(tmp_path: Path):
    run = RunFolder(tmp_path)
    with pytest.raises(RunError, match="not a finished run folder \\(no summary.json\\)"):
        run.read_summary()
    for text, what in (("", "is empty"), ("{\"study\": ", "is corrupt"), ("[1]", "holds a list")):
        run.summary_path.write_text(text)
        with pytest.raises(RunError, match=what) as info:
            run.read_summary()
        assert str(run.summary_path) in str(info.value)
    run.write_summary({"study": "s", "loss": float("nan")})
    assert math.isnan(run.read_summary()["loss"])
    run.write_config({"name": "s", "seeds": (1, 2)})
    assert run.read_config() == {"name": "s", "seeds": [1, 2]}
    assert run.read_data_root() is None
    run.write_data_root(tmp_path)
    assert run.read_data_root() == str(tmp_path.resolve())


# --------------------------------------------------------------------------- failed writes
def test_disk_full_is_one_line_and_leaves_no_temp_file(tmp_path: Path, monkeypatch):
    run = RunFolder(tmp_path)
    run.write_summary({"old": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    for write, path in ((lambda: run.write_summary({"new": 2}), run.summary_path),
                        (lambda: run.write_metrics(LONG), run.metrics_path),
                        (lambda: run.save_checkpoint("SGD", {"step": 1}),
                         run.method("SGD").checkpoint_path)):
        with pytest.raises(RunError) as info:
            write()
        assert str(info.value) == f"cannot write {path}: No space left on device"
    assert _temp_files(tmp_path) == []
    monkeypatch.undo()
    assert run.read_summary() == {"old": 1}  # the old file is untouched


def test_failing_torch_save_keeps_the_old_checkpoint(tmp_path: Path, monkeypatch):
    method = MethodFolder(tmp_path / "m")
    method.save_checkpoint({"step": 1})

    def half_written(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed\nmore detail")

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(RunError, match=r"^cannot write .*checkpoint\.pt: PytorchStreamWriter "
                                       r"failed writing file data/0: file write failed$"):
        method.save_checkpoint({"step": 2})
    assert _temp_files(tmp_path) == []

    def interrupted(obj, f):  # Ctrl-C in the middle of a write
        f.write(b"PK\x03\x04")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        method.save_checkpoint({"step": 3})
    monkeypatch.undo()
    assert _temp_files(tmp_path) == []
    assert method.load_checkpoint() == {"step": 1}
    assert not method.previous_checkpoint_path.exists()


def test_read_only_folder_and_out_that_is_a_file(tmp_path: Path, monkeypatch):
    import thermotrain.experiments.run_folder as rf

    def read_only(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(rf, "open", read_only, raising=False)
    with pytest.raises(RunError, match=r"cannot write .*config\.json: Read-only file system$"):
        RunFolder(tmp_path).write_config({})
    monkeypatch.undo()
    file = tmp_path / "a-file"
    file.write_text("x")
    with pytest.raises(RunError, match=r"^--out .*a-file is a file, not a folder$"):
        RunFolder(file).create()
    with pytest.raises(RunError, match=r"cannot write .*a-file/x\.txt: Not a directory"):
        atomic_write_text(file / "x.txt", "y")


# --------------------------------------------------------------------------- checkpoints
def test_previous_checkpoint_is_kept_and_used_when_the_latest_is_corrupt(tmp_path: Path):
    method = MethodFolder(tmp_path / "methods" / "sgd")
    assert method.load_checkpoint() is None
    method.save_checkpoint({"step": 10, "w": torch.ones(3)})
    method.save_checkpoint({"step": 20, "w": torch.zeros(3)})
    assert method.load_checkpoint()["step"] == 20
    assert torch.load(method.previous_checkpoint_path, weights_only=True)["step"] == 10
    data = method.checkpoint_path.read_bytes()
    method.checkpoint_path.write_bytes(data[: len(data) // 2])  # truncated by a crash
    with pytest.warns(CheckpointWarning) as record:
        ckpt = method.load_checkpoint()
    assert ckpt["step"] == 10
    (message,) = [str(w.message) for w in record]
    assert message.startswith(f"{method.checkpoint_path} is unreadable (")
    assert message.endswith("; resuming from checkpoint.prev.pt (the unreadable file is kept "
                            "as checkpoint.corrupt.pt)") and "\n" not in message
    # the next save must not rotate the corrupt file into checkpoint.prev.pt
    method.save_checkpoint({"step": 30, "w": torch.ones(3)})
    assert torch.load(method.previous_checkpoint_path, weights_only=True)["step"] == 10
    method.save_checkpoint({"step": 20, "w": torch.zeros(3)})
    data = method.checkpoint_path.read_bytes()
    method.checkpoint_path.write_bytes(data[: len(data) // 2])
    # both unusable: one line naming the file, never torch's traceback
    method.previous_checkpoint_path.write_bytes(b"garbage")
    with pytest.raises(RunError) as info:
        method.load_checkpoint()
    text = str(info.value)
    assert text.startswith(f"{method.checkpoint_path} is unreadable (") and "\n" not in text
    assert str(method.previous_checkpoint_path) in text
    method.previous_checkpoint_path.unlink()
    with pytest.raises(RunError, match="no previous checkpoint: delete"):
        method.load_checkpoint()


# --------------------------------------------------------------------------- snapshots
@pytest.mark.parametrize("model", [MLP([2, 4, 1], ensemble=3, activation="tanh"),
                                   CNN(in_shape=(1, 8, 8), num_classes=3, channels=(2,),
                                       ensemble=2)])
def test_snapshots_store_what_rebuilds_the_model(tmp_path: Path, model):
    run = RunFolder(tmp_path)
    snap = {"step": 5, "members": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    run.save_snapshots("M 1", [snap], seeds=[4, 5, 6], model=model)
    got = run.load_snapshots("M 1")
    assert got["seeds"] == [4, 5, 6] and got["method"] == "M 1"
    assert got["model"] == model_spec(model) == {"class": type(model).__name__,
                                                 "config": model.config()}
    assert (run.method_dir("M 1") / "snapshots.pt").exists()
    run.method("M 1").snapshots_path.write_bytes(b"\x00" * 10)
    with pytest.raises(RunError, match=r"snapshots\.pt is unreadable \("):
        run.load_snapshots("M 1")
    assert run.load_snapshots("other") is None


# --------------------------------------------------------------------------- the lock
def test_second_process_on_a_folder_fails_naming_the_first(tmp_path: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from thermotrain.experiments.run_folder import RunFolder
            with RunFolder({str(tmp_path)!r}).lock():
                print("locked", flush=True)
                time.sleep(60)
            """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunError) as info:
            with RunFolder(tmp_path).lock():
                pass
        assert f"(PID {holder.pid}," in str(info.value) and "in use by another run" in str(
            info.value)
    finally:
        holder.kill()
        holder.wait()
    # the holder died without unlocking: its .lock file (with its PID) does not block
    assert (tmp_path / ".lock").read_text().strip() == str(holder.pid)
    with RunFolder(tmp_path).lock():
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(RunError, match=f"PID {os.getpid()}"):  # also within one process
            with RunFolder(tmp_path).lock():
                pass
    with RunFolder(tmp_path).lock():  # released at the end of the block
        pass


# --------------------------------------------------------------------------- through the runner
def _holder(folder: Path) -> subprocess.Popen:
    """A separate process that holds ``folder``'s lock until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from thermotrain.experiments.run_folder import RunFolder
            with RunFolder({str(folder)!r}).lock():
                print("locked", flush=True)
                time.sleep(120)
            """)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_on_a_folder_in_use_fails(tiny_study, tmp_path: Path, capsys):
    """Defect 7.6: two processes training into one folder; the second stops at once, in one
    line naming the first's PID (API: RunError; CLI: exit 2), and writes nothing."""
    from thermotrain.cli.main import main
    from thermotrain.experiments import run_study

    out = tmp_path / "run"
    holder = _holder(out)
    try:
        with pytest.raises(RunError, match=f"in use by another run \\(PID {holder.pid},"):
            run_study(tiny_study(), out)
        assert main(["run", "fig4", "--quick", "--out", str(out), "--no-progress",
                     "--no-report"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"PID {holder.pid}" in err and "Traceback" not in err
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    run_study(tiny_study(), out)  # the dead holder's lock does not block
    assert (out / "summary.json").exists()


def test_resume_from_a_corrupt_checkpoint_uses_the_previous_one(tiny_study, tmp_path: Path):
    """Defect 7.5: a run killed while its checkpoint was being written (simulated: the file
    truncated) resumes from the previous checkpoint with one warning naming the file, and
    the result equals the uninterrupted run bit for bit; with no usable checkpoint, one line
    naming the file (no traceback from torch)."""
    from thermotrain.experiments import run_study

    study = tiny_study(training={"checkpoint_every": 10})
    run_study(study, tmp_path / "straight")

    def interrupt(method: str, step: int) -> None:
        if method == "AdLaLa" and step == 25:
            raise KeyboardInterrupt

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run_study(study, out, callback=interrupt)
    method = RunFolder(out).method("AdLaLa")
    assert torch.load(method.checkpoint_path, weights_only=True)["step"] == 25
    assert torch.load(method.previous_checkpoint_path, weights_only=True)["step"] == 20
    data = method.checkpoint_path.read_bytes()
    method.checkpoint_path.write_bytes(data[: len(data) // 3])
    with pytest.warns(CheckpointWarning, match=f"^{method.checkpoint_path} is unreadable"):
        run_study(study, out, resume=True)
    a, b = (RunFolder(tmp_path / d).read_metrics() for d in ("straight", "resumed"))
    pd.testing.assert_frame_equal(a, b)

    with pytest.raises(KeyboardInterrupt):
        run_study(study, tmp_path / "again", callback=interrupt)
    method = RunFolder(tmp_path / "again").method("AdLaLa")
    method.checkpoint_path.write_bytes(b"\x00" * 100)
    method.previous_checkpoint_path.write_bytes(b"")
    with pytest.raises(RunError) as info:
        run_study(study, tmp_path / "again", resume=True)
    assert str(info.value).startswith(f"{method.checkpoint_path} is unreadable (")
    assert "\n" not in str(info.value)


def test_disk_full_during_a_run_is_one_line(tiny_study, tmp_path: Path, monkeypatch,
                                            capsys):
    from thermotrain.experiments import run_study

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RunError, match=r"^cannot write .*: No space left on device$"):
        run_study(tiny_study(), tmp_path / "run")
    assert _temp_files(tmp_path) == []
    # the CLI: exit code 2, one line naming the file, no traceback
    from thermotrain.cli.main import main

    assert main(["run", "fig4", "--quick", "--out", str(tmp_path / "cli"), "--no-progress",
                 "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert str(tmp_path / "cli") in err and "Traceback" not in err
    assert _temp_files(tmp_path) == []


def test_ray_backend_takes_the_lock_before_starting_ray(tiny_study, tmp_path: Path):
    from thermotrain.experiments.distributed import run_study_ray

    out = tmp_path / "run"
    holder = _holder(out)
    try:
        with pytest.raises(RunError, match=f"in use by another run \\(PID {holder.pid},"):
            run_study_ray(tiny_study(), out)
    finally:
        holder.kill()
        holder.wait()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


# --------------------------------------------------------------------------- Run.load
def test_run_loads_once_and_rebuilds_any_model(tmp_path: Path):
    from thermotrain.experiments.run_folder import ReportError
    from thermotrain.experiments.run_view import Run

    net = CNN(in_shape=(1, 8, 8), num_classes=3, channels=(2,), ensemble=2, seed=[1, 2])
    folder = RunFolder(tmp_path)
    folder.write_config({"model": {"kind": "cnn"}})
    folder.write_summary({"study": "s", "methods": {"C": {}, "D": {}}})
    folder.write_metrics(LONG)
    members = {k: v.detach().clone() for k, v in net.named_parameters()}
    first = net.layer_modules()[0]
    snap = {"step": 7, "first_weight": first.weight.detach(), "first_bias": first.bias.detach(),
            "members": members}
    folder.save_snapshots("C", [snap], seeds=[1, 2], model=net)
    run = Run.load(tmp_path)
    assert run.methods == ["C", "D"] and set(run.snapshots) == {"C"}
    assert tuple(run.metrics.columns) == METRIC_COLUMNS and len(run.metrics) == len(LONG)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(run.model("C")(x), net(x), rtol=0, atol=0)
        torch.testing.assert_close(run.model("C", step=7, member=1)(x), net.member(1)(x),
                                   rtol=0, atol=0)
    with pytest.raises(ReportError, match=r"C has no snapshot at step 3 \(steps: \[7\]\)"):
        run.model("C", step=3)
    with pytest.raises(ReportError, match="member 2 is not saved"):
        run.model("C", member=2)
    with pytest.raises(ReportError, match="'D' has no snapshots"):
        run.model("D")
    # snapshots of an earlier version (no model spec): a CNN cannot be rebuilt, the run
    # still loads (the report skips what needs the model)
    raw = folder.load_snapshots("C")
    del raw["model"]
    torch.save(raw, folder.method("C").snapshots_path)
    old = Run.load(tmp_path)
    assert old.snapshots["C"].spec is None
    with pytest.raises(ReportError, match="do not store their model"):
        old.model("C")


def test_cli_resume_past_a_corrupt_checkpoint_warns_in_one_line(tmp_path: Path, capsys):
    from thermotrain.cli.main import main

    out = tmp_path / "run"
    args = ["run", "fig4", "--quick", "--out", str(out), "--no-progress", "--no-report",
            "--set", "training.checkpoint_every=20"]
    assert main(args) == 0
    method = RunFolder(out).method("AdLaLa")
    assert torch.load(method.previous_checkpoint_path, weights_only=True)["step"] == 40
    method.checkpoint_path.write_bytes(method.checkpoint_path.read_bytes()[:1000])
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0  # trains AdLaLa again from step 40
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert err == [f"thermotrain: warning: {method.checkpoint_path} is unreadable "
                   "(PytorchStreamReader failed reading zip archive: failed finding central "
                   "directory); resuming from checkpoint.prev.pt (the unreadable file is kept "
                   "as checkpoint.corrupt.pt)"]
    assert torch.load(method.checkpoint_path, weights_only=True)["done"]
