"""``thermotrain datasets {list,verify,fetch}`` through register()/run() (docs/science.md §6)."""

from __future__ import annotations

import argparse
import gzip
from types import MappingProxyType

import pytest
from _data_helpers import sha256

from thermotrain.cli import datasets as cli
from thermotrain.data import DatasetSpec, FileSpec, specs


@pytest.fixture
def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="thermotrain")
    subparsers = main.add_subparsers(dest="command", required=True)
    cli.register(subparsers)
    return main


def _run(parser, argv, capsys):
    args = parser.parse_args(argv)
    assert args.func is cli.run  # register() sets the handler for the main CLI
    code = cli.run(args)
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(err: str) -> None:
    assert err.startswith("thermotrain datasets: error: ")
    assert err.count("\n") == 1, err  # exactly one line
    assert "Traceback" not in err


def test_list(parser, capsys, shared_data):
    code, out, err = _run(parser, ["datasets", "list", "--data-dir", str(shared_data)], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"data root: {shared_data} (from data_dir argument / --data-dir)"
    assert any(line.startswith("mnist") and "verified" in line for line in lines)
    assert any(line.startswith("fashion_mnist") and "verified" in line for line in lines)
    assert any(line.startswith("cifar10") and "missing" in line for line in lines)


def test_list_without_checksums_uses_env_var(parser, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("THERMOTRAIN_DATA", str(tmp_path))
    code, out, _ = _run(parser, ["datasets", "list", "--no-verify"], capsys)
    assert code == 0
    assert f"data root: {tmp_path} (from $THERMOTRAIN_DATA)" in out
    assert str(tmp_path / "mnist") in out


def test_verify_ok(parser, capsys, shared_data):
    code, out, err = _run(
        parser, ["datasets", "verify", "mnist", "--data-dir", str(shared_data)], capsys
    )
    assert code == 0 and err == ""
    assert out.strip() == f"mnist: all 4 files verified in {shared_data / 'mnist'}"


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        (["datasets", "verify", "imagenet"], 2, "unknown dataset 'imagenet'"),
        (["datasets", "verify", "mnist"], 2, "4 of 4 files missing"),
        (["datasets", "verify", "cifar10", "--data-dir", ""], 2, "must not be an empty string"),
        (["datasets", "fetch", "nope"], 2, "unknown dataset 'nope'"),
        (["datasets", "fetch", "mnist", "--base-url", "notaurl"], 2,
         "base_url must be a http/https/ftp/file URL"),
        (["datasets", "list", "--data-dir", "{tmp}/afile"], 2, "is a file, not a folder"),
        (["datasets", "fetch", "mnist", "--data-dir", "/proc/thermotrain-data"], 2,
         "cannot write in the data root"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(parser, capsys, tmp_path, argv, code, fragment):
    if "--data-dir" not in argv:
        argv = [*argv, "--data-dir", str(tmp_path)]
    (tmp_path / "afile").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    got, out, err = _run(parser, argv, capsys)
    assert got == code and out == ""
    _assert_one_line_error(err)
    assert fragment in err


def test_corrupt_file_exits_1(parser, capsys, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in specs.MNIST.files:
        (folder / f"{f.name}.gz").write_bytes(gzip.compress(b"not the real thing"))
    code, _, err = _run(
        parser, ["datasets", "verify", "mnist", "--data-dir", str(tmp_path)], capsys
    )
    assert code == 1
    _assert_one_line_error(err)
    assert "SHA-256" in err and "thermotrain datasets fetch mnist" in err


@pytest.fixture
def tiny_registered(monkeypatch):
    """Register a tiny data set so that `fetch NAME` can be tested without 50 MB."""
    content = b"tiny payload\n"
    spec = DatasetSpec(
        name="tiny",
        description="test data",
        folder="tiny",
        files=(FileSpec("payload.bin", sha256=sha256(content), remote="payload.bin.gz"),),
    )
    monkeypatch.setattr(specs, "DATASETS", MappingProxyType({**specs.DATASETS, "tiny": spec}))
    return gzip.compress(content)


def test_fetch_from_local_server(parser, capsys, http_root, tmp_path, tiny_registered):
    (http_root.root / "payload.bin.gz").write_bytes(tiny_registered)
    argv = ["datasets", "fetch", "tiny", "--data-dir", str(tmp_path), "--base-url", http_root.url]
    code, out, err = _run(parser, argv, capsys)
    assert code == 0 and err == ""
    assert out.strip() == (
        f"tiny: downloaded 1, already present 0; all 1 files verified in {tmp_path / 'tiny'}"
    )
    assert (tmp_path / "tiny" / "payload.bin.gz").read_bytes() == tiny_registered
    code, out, _ = _run(parser, argv, capsys)
    assert code == 0 and "downloaded 0, already present 1" in out


def test_fetch_failures_exit_1(parser, capsys, http_root, tmp_path, tiny_registered):
    argv = ["datasets", "fetch", "tiny", "--data-dir", str(tmp_path), "--base-url", http_root.url]
    code, _, err = _run(parser, argv, capsys)  # nothing served: 404
    assert code == 1
    _assert_one_line_error(err)
    assert "HTTP 404" in err
    (http_root.root / "payload.bin.gz").write_bytes(gzip.compress(b"something else"))
    code, _, err = _run(parser, argv, capsys)
    assert code == 1 and "failed verification" in err
    assert not (tmp_path / "tiny" / "payload.bin.gz").exists()


def test_unreachable_server_is_one_short_line(parser, capsys, tmp_path, tiny_registered):
    # port 9 (discard) on 127.0.0.1: nothing listens there, the connection is refused
    argv = ["datasets", "fetch", "tiny", "--data-dir", str(tmp_path), "--base-url",
            "http://127.0.0.1:9/"]
    code, _, err = _run(parser, argv, capsys)
    _assert_one_line_error(err)
    assert code == 1 and "cannot connect to 127.0.0.1:9" in err
    assert len(err) < 300


def test_subcommand_is_required(parser, capsys):
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["datasets"])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err
