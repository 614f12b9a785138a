"""The ray backend on a real local ray (2 CPUs): the same results as the local backend, the
same run folder, the CLI end to end, and one-line errors for bad cluster addresses.

Skipped only when ray is not installed (``pip install thermotrain[ray]``). Two local ray
instances are started (~12 s each on 2 cores: start, workers importing torch, shutdown); the
autouse fixture shuts down whatever a failing test left running.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from thermotrain.cli.main import main
from thermotrain.experiments import RunError, run_study, write_report
from thermotrain.experiments.distributed import ray_session, run_study_ray
from thermotrain.experiments.run_folder import RunFolder

ray = pytest.importorskip("ray", reason="ray is not installed: pip install thermotrain[ray]")

pytestmark = pytest.mark.ray

# Ray cells train smaller ensembles than the local run; member k depends only on its seed,
# so the results agree to rounding (bit for bit where this was written: x86-64, torch 2.13
# CPU, 1 thread), checked with the tolerance of the runner's ensemble-vs-separate-runs test.
TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(autouse=True)
def _shutdown_ray():
    yield
    if ray.is_initialized():  # only after a failure: run_study_ray shuts down what it starts
        ray.shutdown()


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _assert_same_metrics(a: Path, b: Path) -> None:
    """The same metric rows in the same order, values equal to rounding (TOL's reasoning)."""
    local, dist = RunFolder(a).read_metrics(), RunFolder(b).read_metrics()
    keys = ["study", "method", "seed", "step", "split", "metric"]
    assert local[keys].equals(dist[keys])
    acc = local["metric"] == "accuracy"
    assert dist["value"][acc].to_numpy() == pytest.approx(local["value"][acc].to_numpy(),
                                                           abs=1e-6)
    assert dist["value"][~acc].to_numpy() == pytest.approx(local["value"][~acc].to_numpy(),
                                                            rel=1e-4, abs=1e-6)


def test_ray_cells_equal_local_run(tiny_study, tmp_path: Path):
    study = tiny_study()  # 2 methods × seeds 5, 6, 7
    run_study(study, tmp_path / "local")
    lines: list[str] = []
    done: list[dict] = []
    # one local ray with 2 CPUs for two runs; the second fails inside a task: the error
    # arrives as itself (not as a RayTaskError) and the session is shut down all the same
    with pytest.raises(RunError, match="different configuration"):
        with ray_session(num_cpus=2):
            assert ray.cluster_resources()["CPU"] == 2
            done.append(run_study_ray(study, tmp_path / "ray", seeds_per_task=2,
                                      log=lines.append))
            assert ray.is_initialized()  # a session it did not start is left running
            # resuming with other seed chunks finds part checkpoints of other seeds
            run_study_ray(study, tmp_path / "ray", resume=True, seeds_per_task=1)
    assert not ray.is_initialized()
    summary = done[0]
    assert len(lines) == 2 * 2 and all("ray tasks" in line for line in lines)  # 2 × 2 cells

    _assert_same_metrics(tmp_path / "local", tmp_path / "ray")

    for method in ("AdLaLa", "Adam"):
        folder = tmp_path / "ray" / "methods" / method
        assert (folder / "part-0" / "checkpoint.pt").exists()
        assert (folder / "part-1" / "checkpoint.pt").exists()
        ca, cb = _load(tmp_path / "local" / "methods" / method / "checkpoint.pt"), \
            _load(folder / "checkpoint.pt")
        assert cb["done"] and cb["step"] == 30 and cb["fingerprint"] == ca["fingerprint"]
        for key, value in ca["model"].items():  # final parameters, seed by seed
            assert cb["model"][key].shape == value.shape
            for k in range(3):
                torch.testing.assert_close(cb["model"][key][k], value[k], **TOL,
                                           msg=f"{method} {key} seed {5 + k}")
        sa, sb = _load(tmp_path / "local" / "methods" / method / "snapshots.pt"), \
            _load(folder / "snapshots.pt")
        assert sa["seeds"] == sb["seeds"] == [5, 6, 7]
        assert [s["step"] for s in sa["snapshots"]] == [s["step"] for s in sb["snapshots"]]
        for x, y in zip(sa["snapshots"], sb["snapshots"], strict=True):
            torch.testing.assert_close(y["first_weight"], x["first_weight"], **TOL)
            torch.testing.assert_close(y["first_bias"], x["first_bias"], **TOL)
            assert set(y["members"]) == set(x["members"])
            for key in x["members"]:  # saved_members = 2: seed 5 (part 0) and 6 (part 0)
                torch.testing.assert_close(y["members"][key], x["members"][key], **TOL)
    w = _load(tmp_path / "ray" / "methods" / "Adam" / "checkpoint.pt")["model"]
    assert not torch.equal(w["layers.0.weight"][1], w["layers.0.weight"][2])  # not vacuous

    on_disk = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    ref = json.loads((tmp_path / "local" / "summary.json").read_text())
    for name, m in ref["methods"].items():
        got = on_disk["methods"][name]
        assert got["n_seeds"] == 3 and got["ray_tasks"] == 2 and got["steps_per_second"] > 0
        for key in ("test_accuracy_mean", "test_accuracy_std", "train_loss_mean"):
            assert got[key] == pytest.approx(m[key], rel=1e-4, abs=1e-6)

    # the gathered checkpoints are the local format: the local backend sees a finished run
    before = (tmp_path / "ray" / "metrics.csv").read_text()
    run_study(study, tmp_path / "ray", resume=True)
    assert (tmp_path / "ray" / "metrics.csv").read_text() == before


def test_cli_ray_backend_end_to_end(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a relative --out: the workers' cwd is not ours
    args = ["run", "fig4", "--quick", "--no-progress"]
    assert main([*args, "--out", "local", "--no-report"]) == 0
    assert main([*args, "--backend", "ray", "--out", "r", "--no-report"]) == 0
    assert not ray.is_initialized()  # the local ray the CLI started is shut down
    out = capsys.readouterr().out
    assert "| AdLaLa |" in out and "ray tasks" in out
    run = tmp_path / "r"
    summary = json.loads((run / "summary.json").read_text())
    ref = json.loads((tmp_path / "local" / "summary.json").read_text())
    assert set(summary["methods"]) == set(ref["methods"]) == {"AdLaLa", "Adam"}
    for name, m in ref["methods"].items():
        assert summary["methods"][name]["test_accuracy_mean"] == pytest.approx(
            m["test_accuracy_mean"], abs=1e-6)
    assert main(["report", "r"]) == 0  # `thermotrain report` works on a ray run folder
    assert (run / "report.md").exists()
    # a folder in use is refused at once (before ray starts), in one line
    capsys.readouterr()
    assert main([*args, "--backend", "ray", "--out", "r"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and err.count("\n") == 1


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "nonsense:xx",
                                     "no-port"])
def test_bad_address_is_one_line_error(address: str, tmp_path: Path, capsys):
    code = main(["run", "fig4", "--quick", "--backend", "ray", "--address", address,
                 "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("thermotrain: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and address in err
    # nothing written (the CLI's --out check may leave the empty folder): the same command
    # can be retried
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
    assert not ray.is_initialized()


def test_two_node_cluster_runs_cells_on_both_nodes(tiny_study, tmp_path: Path):
    """A cluster of two ray nodes on this machine (one CPU each) joined by ``address``, as a
    real cluster would be: the cells run on both nodes (node id recorded per cell), the
    results equal the local backend's, and the folder reports."""
    from ray.cluster_utils import Cluster

    study = tiny_study()  # 2 methods × seeds 5, 6, 7: 4 cells of at most 2 seeds
    run_study(study, tmp_path / "local")
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        nodes = {cluster.head_node.node_id} | {n.node_id for n in cluster.worker_nodes}
        assert len(nodes) == 2
        summary = run_study_ray(study, tmp_path / "ray", address=cluster.address,
                                seeds_per_task=2)
        assert not ray.is_initialized()  # the driver disconnected; the cluster runs on
    finally:
        cluster.shutdown()
    cells = [c for m in summary["methods"].values() for c in m["ray_cells"]]
    assert sorted(tuple(c["seeds"]) for c in cells) == [(5, 6), (5, 6), (7,), (7,)]
    assert {c["node"] for c in cells} == nodes  # both nodes trained cells
    _assert_same_metrics(tmp_path / "local", tmp_path / "ray")
    ref = json.loads((tmp_path / "local" / "summary.json").read_text())
    for name, m in ref["methods"].items():
        assert summary["methods"][name]["test_accuracy_mean"] == pytest.approx(
            m["test_accuracy_mean"], abs=1e-6)
    text = write_report(tmp_path / "ray").read_text()
    assert "| AdLaLa |" in text and "Trained as 4 ray cells on 2 node(s)" in text
