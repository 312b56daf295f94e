"""Reproducible and safe to share: two clean clones of one commit, run at the same time and logging to
one MLflow sqlite store, give bit-identical outputs and metrics, and the store holds every run of both.

One module fixture: a small project is committed, cloned twice with `git clone`, the shared store is
created once (`python -m linclass.plumbing.tracking`), then `dvc repro evaluate` (download, preprocess, the 8
train stages, evaluate) starts in both clones at once: clone-a's stages from a warm interpreter, clone-b's as
fresh processes. The studies and 6 of the 8 combinations (the grid is svm and softmax with elastic net, which
goes through the L1 and the L2 code) are left out to keep this fast; they were checked the same way by hand
(`dvc repro` of everything: identical too).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, SMALL, Project, make_project, warm_stages

pytestmark = pytest.mark.slow

EXPERIMENT = "linclass-cifar10"
GRID = ["svm-elasticnet", "softmax-elasticnet"]
SHRINK_GRID = ("grid.losses=[svm,softmax]", "grid.regularizers=[elasticnet]")


@pytest.fixture(scope="module")
def clones(tmp_path_factory, synthetic_archive):
    """Two clones of the same commit after concurrent `dvc repro evaluate`s into one store: (paths, store uri)."""
    path, md5 = synthetic_archive
    root = tmp_path_factory.mktemp("reproducible")
    origin = make_project(root / "origin", (f"data.url={path.as_uri()}", f"data.md5={md5}", *SMALL, *SHRINK_GRID))
    paths = [root / "clone-a", root / "clone-b"]
    for clone in paths:
        origin.run("git", "clone", "-q", str(origin.path), str(clone))
    store = f"sqlite:///{root / 'shared-mlflow.db'}"
    env = {**origin.env, "MLFLOW_TRACKING_URI": store}
    origin.run(str(BIN / "python"), "-m", "linclass.cli", "store", env=env)   # created once, before both
    # clone-a's stages start from a warm interpreter (conftest.warm_stages), clone-b's are fresh processes: the
    # same outputs also say that both ways compute the same
    warm = Project(paths[0], env)
    with warm_stages(warm):
        procs = [subprocess.Popen([str(BIN / "dvc"), "repro", "evaluate"], cwd=clone, env=clone_env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for clone, clone_env in zip(paths, (warm.env, env))]
        outputs = [proc.communicate(timeout=900)[0] for proc in procs]
    for clone, proc, output in zip(paths, procs, outputs):
        assert proc.returncode == 0, f"dvc repro in {clone.name} exited {proc.returncode}\n{output[-3000:]}"
    return paths, store


def lock_outs(clone: Path) -> dict[str, str]:
    """{'<stage> <out path>': md5} of every output in dvc.lock."""
    stages = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    return {f"{name} {out['path']}": out["md5"] for name, stage in stages.items() for out in stage.get("outs", [])}


def test_two_clean_clones_give_identical_outputs_and_metrics(clones):
    (a, b), _ = clones
    outs_a, outs_b = lock_outs(a), lock_outs(b)
    assert {f"train@{name}" for name in GRID} | {"evaluate"} <= {key.split()[0] for key in outs_a}
    assert outs_a.keys() == outs_b.keys()
    differing = sorted(key for key in outs_a if outs_a[key] != outs_b[key])
    assert not differing, f"outputs that differ between the clones: {differing}"
    # every stage's record the same (DVC writes the stages in the order they ran, which may differ)
    assert yaml.safe_load((a / "dvc.lock").read_text()) == yaml.safe_load((b / "dvc.lock").read_text())

    metrics_a = sorted(p.relative_to(a) for p in (a / "metrics").rglob("*.json"))
    assert Path("metrics/test.json") in metrics_a and len(metrics_a) >= 2 + len(GRID)
    assert metrics_a == sorted(p.relative_to(b) for p in (b / "metrics").rglob("*.json"))
    for rel in metrics_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), f"{rel} differs between the clones"


def test_two_pipelines_logging_to_one_store_lose_no_run(clones):
    from mlflow.tracking import MlflowClient

    (a, b), store = clones
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert all(run.info.status == "FINISHED" for run in runs), [(r.info.run_name, r.info.status) for r in runs]
    train = [run for run in runs if run.data.tags.get("dvc_stage", "").startswith("train@")]
    assert len(train) == len(runs) == 2 * len(GRID)
    for clone in (a, b):
        mine = [run for run in train if run.data.tags["project_root"] == str(clone.resolve())]
        assert sorted(run.data.tags["model"] for run in mine) == sorted(GRID), f"{clone.name}: {len(mine)} train runs"
        # each clone's evaluation landed in its own training runs, though both trained identical weights
        assert all("test_accuracy" in run.data.metrics for run in mine), clone.name
        assert all(len(client.get_metric_history(run.info.run_id, "test_accuracy")) == 1 for run in mine)


# One interpreter imports MLflow and linclass once, then forks: a process creates the store, then 4 racing
# processes (each its own store connection: the parent opens none) start a run and wait on a pipe; the parent
# writes to it once, and all log the same new dataset at one instant. Prints the racers' exit codes.
RACE = """
import json, os, sys, traceback
from linclass.settings import Data
from linclass.tracking import records, runs
store, n = sys.argv[1], int(sys.argv[2])

def forked(work):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid

def exit_code(pid):
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

assert exit_code(forked(lambda: runs.setup("race", store))) == 0, "the store was not created"
ready_r, ready_w = os.pipe()
go_r, go_w = os.pipe()

def race():
    experiment_id = runs.setup("race", store)
    with runs.tracked_run(experiment_id, "race"):
        os.write(ready_w, b"r")
        os.read(go_r, 1)   # blocked (not spinning: 2 cores) until the parent's one write wakes all
        records.log_dataset(Data(url="file:///cifar.tar.gz", name="cifar10", md5="0123456789abcdef" * 2), 10, 5)

pids = [forked(race) for _ in range(n)]
os.close(ready_w)
for _ in range(n):
    assert os.read(ready_r, 1), "a process ended before the race"
os.write(go_w, b"x" * n)   # go
print(json.dumps([exit_code(pid) for pid in pids]))
"""

def test_runs_logging_the_same_new_dataset_at_once_all_succeed(tmp_path):
    """MLflow's store checks for the dataset then inserts it: without linclass's retry, 3 of these 4 fail."""
    from conftest import env_for_pipeline
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'race.db'}"
    proc = subprocess.run([str(BIN / "python"), "-c", RACE, store, "4"], env=env_for_pipeline(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [0] * 4, proc.stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert len(runs) == 4 and all(len(run.inputs.dataset_inputs) == 1 for run in runs)
