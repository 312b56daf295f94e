"""Working as a team: a real MLflow tracking server (`make server`) receives every run of the real
pipeline with its artifacts and what reproduces it; a DVC remote (`make remote`, `make push`) lets a
fresh clone get every output back (`make pull`) with nothing left to run.

One pipeline run for the module: `dvc repro` of a small project logging to the server through
MLFLOW_TRACKING_URI. The Makefile targets run for real (with `-o` on the virtualenv's stamp, so that
make does not reinstall it).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ROOT, SMALL, env_for_pipeline, free_port, make_project, serving, warm_stages

pytestmark = pytest.mark.slow

EXPERIMENT = "linclass-cifar10"
GRID = [f"{loss}-{reg}" for loss in ("svm", "softmax") for reg in ("none", "l2")]
GRID_OVERRIDES = ("grid.losses=[svm,softmax]", "grid.regularizers=[none,l2]")
NOT_LOGGING = {"download", "preprocess", "evaluate"}   # evaluate adds to the train runs instead
VENV = BIN.parent


# The project's Makefile run in a given folder, with this virtualenv (not reinstalled).
MAKE = ["make", "-s", "-f", str(ROOT / "Makefile"), f"VENV={VENV}", "-o", f"{VENV}/bin/.installed"]


def make(project_dir: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [*MAKE, *args]
    proc = subprocess.run(cmd, cwd=project_dir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, \
        f"make {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`make server` on a free port of 127.0.0.1: its URL and its folder (mlflow-server/ holds db and artifacts)."""
    folder = tmp_path_factory.mktemp("server")
    url = f"http://127.0.0.1:{free_port()}"
    port = url.rsplit(":", 1)[1]
    with serving([*MAKE, "server", f"PORT={port}"], url, folder / "server.log", cwd=folder, env=env_for_pipeline()), \
            pytest.MonkeyPatch.context() as patch:
        # what `make server` prints for its clients: this process's MlflowClient and every command it starts
        patch.setenv("MLFLOW_TRACKING_TOKEN", (folder / "mlflow-server" / "token").read_text().strip())
        yield url, folder / "mlflow-server"


@pytest.fixture(scope="module")
def team_project(tmp_path_factory, synthetic_archive, server):
    """A small project whose whole pipeline ran with MLFLOW_TRACKING_URI pointing at the server (its stages
    started by a warm interpreter: conftest.warm_stages)."""
    path, md5 = synthetic_archive
    url, _ = server
    project = make_project(tmp_path_factory.mktemp("team") / "project",
                           (f"data.url={path.as_uri()}", f"data.md5={md5}", *SMALL, *GRID_OVERRIDES))
    project.server_env = {**project.env, "MLFLOW_TRACKING_URI": url,
                          "MLFLOW_TRACKING_TOKEN": os.environ["MLFLOW_TRACKING_TOKEN"]}
    with warm_stages(project) as warm:
        proc = project.dvc("repro", env={**project.server_env, **warm})
        project.repro_output = proc.stdout + proc.stderr
    project.head = project.run("git", "rev-parse", "HEAD").stdout.strip()
    return project


def server_runs(url: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"experiment {EXPERIMENT} is not on the server"
    studies = client.get_experiment_by_name(EXPERIMENT + "-studies")  # study and report runs
    ids = [experiment.experiment_id] + ([studies.experiment_id] if studies else [])
    return client, client.search_runs(ids, max_results=1000)


def train_runs(runs) -> dict:
    by_name: dict = {}
    for run in runs:
        if run.data.tags.get("dvc_stage", "").startswith("train@"):
            by_name.setdefault(run.data.tags["model"], []).append(run)
    assert sorted(by_name) == sorted(GRID), sorted(by_name)
    assert all(len(found) == 1 for found in by_name.values()), {k: len(v) for k, v in by_name.items()}
    return {name: found[0] for name, found in by_name.items()}


def lock(project) -> dict:
    return yaml.safe_load((project.path / "dvc.lock").read_text())["stages"]


def test_server_receives_every_run_with_its_artifacts(team_project, server, tmp_path):
    project, (url, server_dir) = team_project, server
    client, runs = server_runs(url)
    ran = set(re.findall(r"Running stage '([^']+)'", project.repro_output))
    assert {f"train@{name}" for name in GRID} <= ran
    # MLflow's own lines with a server, each run's two links and a wait per registered version: not shown
    assert "View run" not in project.repro_output and "Waiting up to" not in project.repro_output, \
        project.repro_output[-3000:]
    logged = [run.data.tags.get("dvc_stage") for run in runs]
    assert sorted(logged) == sorted(ran - NOT_LOGGING), "every stage that ran logs exactly one run"
    assert all(run.info.status == "FINISHED" for run in runs), [(r.info.run_name, r.info.status) for r in runs]
    # nothing went to the project's own store: the environment variable wins
    assert not (project.path / "mlflow.db").exists() and not (project.path / "mlartifacts").exists()

    for run in train_runs(runs).values():
        run_id = run.info.run_id
        templates = [a.path for a in client.list_artifacts(run_id, "plots/templates")]
        assert len(templates) == 10 and all(p.endswith(".png") for p in templates), templates
        training = {Path(a.path).name for a in client.list_artifacts(run_id, "training")}
        assert {"W.npy", "b.npy", "history_steps.csv", "history_epochs.csv"} <= training, training
        assert "evaluation" in {a.path for a in client.list_artifacts(run_id)}, "evaluate added its results"
        assert 0 <= run.data.metrics["test_accuracy"] <= 1
        assert len(client.get_metric_history(run_id, "total_loss")) == 30   # 500 images / 50 * 3 epochs

    # one artifact, downloaded through the server, is the very file the pipeline wrote; it is stored
    # in the server's artifact folder, not in the project
    svm_l2 = train_runs(runs)["svm-l2"]
    local = client.download_artifacts(svm_l2.info.run_id, "training/W.npy", str(tmp_path))
    assert Path(local).read_bytes() == (project.path / "models/svm-l2/W.npy").read_bytes()
    stored = list((server_dir / "artifacts").rglob(f"{svm_l2.info.run_id}/artifacts/training/W.npy"))
    assert len(stored) == 1, "the server keeps the artifact in its own store"


def test_every_run_carries_what_reproduces_it(team_project, server):
    from linclass.settings import validate
    from linclass.tracking.records import training_params

    project, (url, _) = team_project, server
    _, runs = server_runs(url)
    params = validate(yaml.safe_load((project.path / "params.yaml").read_text()))
    head = project.head
    stages = lock(project)
    lock_hashes = {f"dvc.{stage}.{out['path']}": out["md5"]
                   for stage in ("download", "preprocess") for out in stages[stage]["outs"]}
    assert set(lock_hashes) == {"dvc.download.data/raw/cifar-10-python.tar.gz", "dvc.preprocess.data/processed"}

    for name, run in train_runs(runs).items():
        tags = run.data.tags
        assert tags["git_commit"] == head
        committed = yaml.safe_load(project.run("git", "show", f"{head}:params.yaml").stdout)
        assert committed == params.model_dump(), "the commit holds the params the run used"
        assert tags["data_md5"] == params.data.md5 == stages["download"]["params"]["params.yaml"]["data.md5"]
        for key, md5 in lock_hashes.items():
            assert tags[key] == md5, f"{name}: tag {key}={tags[key]} but dvc.lock says {md5}"
        expected = {key: str(value) for key, value in training_params(params, *name.split("-")).items()}
        assert run.data.params == expected, set(run.data.params.items()) ^ set(expected.items())
        weights = project.path / "models" / name
        weights_md5 = hashlib.md5((weights / "W.npy").read_bytes() + (weights / "b.npy").read_bytes()).hexdigest()
        assert tags["weights_md5"] == weights_md5
        assert json.loads((project.path / f"metrics/train/{name}.json").read_text())["weights_md5"] == weights_md5
        assert tags["project_root"] == str(project.path.resolve()) and tags["host"] == socket.gethostname()


def test_remote_push_then_fresh_clone_pull_restores_every_output(team_project, tmp_path):
    project = team_project
    remote = tmp_path / "remote"
    env = project.server_env
    make(project.path, "remote", f"REMOTE={remote}", env=env)
    make(project.path, "push", env=env)
    assert any(remote.rglob("*")), "dvc push wrote nothing to the remote"
    project.git_commit("pipeline results and the team remote")   # dvc.lock, .dvc/config, metrics

    clone = tmp_path / "clone"
    project.run("git", "clone", "-q", str(project.path), str(clone))
    assert not (clone / "models").exists() and not (clone / "data").exists()
    pulled = make(clone, "pull", env=env)
    assert "up to date" in pulled.stdout.lower(), pulled.stdout[-2000:]
    status = subprocess.run([str(BIN / "dvc"), "status", "--json"], cwd=clone, env=env, capture_output=True,
                            text=True, check=True).stdout
    assert json.loads(status) == {}, status

    outs = [out["path"] for stage in lock(project).values() for out in stage.get("outs", [])]
    assert {"data/processed", "models/svm-l2", "reports/predictions", "metrics/test.json"} <= set(outs)
    for out in outs:
        original, restored = project.path / out, clone / out
        assert restored.exists(), f"{out} was not restored"
        files = [Path()] if original.is_file() else sorted(
            p.relative_to(original) for p in original.rglob("*") if p.is_file())
        for rel in files:
            assert (restored / rel).read_bytes() == (original / rel).read_bytes(), f"{out}/{rel} differs"


def test_evaluates_moving_the_champion_at_once_all_succeed(server):
    # Two evaluates at once (Ray nodes, a parallel grid) tag the same model version: MLflow's store looks a tag
    # (or the alias) up, then inserts it, so the slower one fails on the unique key (a Ray sweep's point failed
    # so). Through the project's server (`make server`: its guard answers without database text, but says
    # "unique key"), registry.set_champion tries again. The control: the same writes, not tried again.
    import threading

    from mlflow.tracking import MlflowClient

    from linclass.tracking import registry

    url, _ = server
    client = MlflowClient(url)
    name = "race-" + hashlib.md5(str(free_port()).encode()).hexdigest()[:8]
    client.create_registered_model(name)
    run = client.create_run("0").info.run_id   # a version's source: runs:/, models:/ or this server's artifacts
    selection = {"runner_up": "svm-l2", "val_p_value": 0.5}

    def at_once(write, rounds: int, stop_at_failure: bool) -> list[str]:
        errors: list[str] = []
        for _ in range(rounds):
            version = client.create_model_version(name, f"runs:/{run}/model", run_id=run).version   # tags all new
            barrier = threading.Barrier(6)

            def one(version=version, barrier=barrier):
                barrier.wait()
                try:
                    write(version)
                except Exception as exc:   # noqa: BLE001 - counted, and shown if the test fails
                    errors.append(str(exc))

            threads = [threading.Thread(target=one) for _ in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if errors and stop_at_failure:
                break
        return errors

    def plain(version):
        for key, value in selection.items():
            client.set_model_version_tag(name, version, key, str(value))

    raced = at_once(plain, 60, stop_at_failure=True)
    assert raced and all("A unique key refused the request" in error for error in raced), raced
    assert at_once(lambda version: registry.set_champion(client, name, version, selection), 15, False) == []
    champion = client.get_model_version_by_alias(name, registry.CHAMPION)
    assert {key: champion.tags[key] for key in selection} == {key: str(value) for key, value in selection.items()}


@pytest.mark.parametrize("token", [None, "not-the-token"])
def test_a_stage_without_the_servers_token_is_one_line_before_any_work(team_project, server, token):
    project, (url, _) = team_project, server
    env = {k: v for k, v in project.server_env.items() if k != "MLFLOW_TRACKING_TOKEN"}
    if token:
        env["MLFLOW_TRACKING_TOKEN"] = token
    weights = (project.path / "models/svm-l2/W.npy").read_bytes()
    with warm_stages(project) as warm:   # the stage as DVC starts it (pipeline/python), from the warm interpreter
        proc = project.run("pipeline/python", "pipeline/train.py", "--loss", "svm", "--regularizer", "l2",
                           env={**env, **warm, "PYTHONPATH": "src", "OPENBLAS_NUM_THREADS": "1"}, check=False)
    lines = proc.stderr.strip().splitlines()
    who = "MLFLOW_TRACKING_TOKEN" if token else "no user and no token"
    assert proc.returncode == 1 and lines == [
        f"error: MLflow server {url} rejected the credentials of {who} (HTTP 401): check MLFLOW_TRACKING_USERNAME / "
        "MLFLOW_TRACKING_PASSWORD (the team stack's logins) or MLFLOW_TRACKING_TOKEN (the token of `make server`)"], \
        proc.stderr
    assert (project.path / "models/svm-l2/W.npy").read_bytes() == weights, "no training happened"
