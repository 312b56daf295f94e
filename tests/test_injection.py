"""No value from params reaches a shell: injection payloads in every key that dvc.yaml interpolates,
through the real `dvc exp run -S` and `dvc repro` of a project copy. Each payload would create a file
(its path is absolute, outside the project) if a shell ran it; none may, and the error is one line."""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ROOT, SMALL, make_project, warm_stages

pytestmark = pytest.mark.slow


def test_no_command_line_in_dvc_yaml_interpolates_anything():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        command = stage.get("do", stage)["cmd"]   # a foreach stage keeps its definition under `do`
        assert "${" not in command, f"stage {name}: {command}"
    # what is still interpolated (never by a shell): the matrix and foreach lists, paths and params names of the
    # train stages and of the features stage (grid.features holds only names the schema knows: hog_hist)
    interpolated = set(re.findall(r"\$\{([^}]+)\}", (ROOT / "dvc.yaml").read_text()))
    assert interpolated == {"grid.losses", "grid.regularizers", "grid.features", "item", "item.loss",
                            "item.regularizer"}, interpolated


@pytest.fixture(scope="module")
def project(tmp_path_factory, archive_server):
    url, md5 = archive_server
    project = make_project(
        tmp_path_factory.mktemp("injection") / "project", (f"data.url={url}", f"data.md5={md5}", *SMALL)
    )
    project.saved = (project.path / "params.yaml").read_bytes()
    project.markers = tmp_path_factory.mktemp("markers")
    return project


def payload(kind: str, marker: Path) -> str:
    return {"semicolon": f"1; touch {marker};", "dollar": f"$(touch {marker})", "backtick": f"`touch {marker}`",
            "and": f"1 && touch {marker}", "newline": f"1\ntouch {marker}"}[kind]


KEYS = ["train.blas_threads", "grid.losses", "grid.regularizers"]


def assert_nothing_ran(project, result) -> None:
    created = sorted(p.name for p in project.markers.iterdir()) + sorted(p.name for p in project.path.glob("*pwned*"))
    assert not created, f"a payload ran: {created}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert result.returncode != 0, result.stdout[-2000:]
    # one line says why: the stage's own `error:` line (DVC then adds its one `ERROR: failed to reproduce`),
    # or DVC's one `ERROR:` line when it refuses before running any stage
    lines = result.stderr.splitlines()
    stage_errors, dvc_errors = (
        [x for x in lines if x.startswith("error:")],
        [x for x in lines if x.startswith("ERROR:")],
    )
    assert len(stage_errors) <= 1 and len(dvc_errors) <= 1 and stage_errors + dvc_errors, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # `dvc exp run` itself may make empty folders named after the hostile value (models/$(touch ...); not a
    # shell): no stage wrote anything
    assert (
        not [p for p in project.path.glob("models/**/*") if p.is_file()] and "Running stage 'train" not in result.stdout
    )
    shutil.rmtree(project.path / "models", ignore_errors=True)


# dvc exp run -S writes the payload into params.yaml and runs: the first stage rejects it.
@pytest.mark.parametrize("key, kind", list(zip(KEYS, ["semicolon", "dollar", "backtick"])))
def test_exp_run_with_a_payload_runs_none_of_it(project, key, kind):
    quoted = "'" + payload(kind, project.markers / f"exp-{key}").replace("'", "\\'") + "'"
    value = quoted if key == "train.blas_threads" else f"[svm,{quoted}]" if key == "grid.losses" else f"[l2,{quoted}]"
    result = project.dvc("exp", "run", "-S", f"{key}={value}", check=False)
    (project.path / "params.yaml").write_bytes(project.saved)
    assert_nothing_ran(project, result)


# The payload stays in params.yaml for the next plain `dvc repro`.
@pytest.mark.parametrize("key, kind", list(zip(KEYS, ["and", "newline", "dollar"])))
def test_repro_with_a_payload_in_params_yaml_runs_none_of_it(project, key, kind):
    section, name = key.split(".")
    value = payload(kind, project.markers / f"repro-{key}")
    params = yaml.safe_load(project.saved)
    params[section][name] = value if key == "train.blas_threads" else [params[section][name][0], value]
    (project.path / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        result = project.dvc("repro", check=False)
    finally:
        (project.path / "params.yaml").write_bytes(project.saved)
    assert_nothing_ran(project, result)
    if key == "train.blas_threads":
        assert "error: train.blas_threads=" in result.stderr and "is not an integer" in result.stderr


def test_train_takes_its_model_from_dvc_stage_and_checks_it_against_the_grid(project):
    with warm_stages(project):   # the stage as DVC starts it (pipeline/python), from the warm interpreter
        env = {**project.env, "PYTHONPATH": "src", "DVC_STAGE": f"train@$(touch {project.markers}/stage)-none"}
        result = project.run("pipeline/python", "pipeline/train.py", check=False, env=env)
        assert_nothing_ran(project, result)
        assert "is not a train stage of the grid; allowed: train@svm-none, train@svm-l1" in result.stderr
        env["DVC_STAGE"] = "train@squared_svm-l2"  # a known loss, but not in the grid
        result = project.run("pipeline/python", "pipeline/train.py", check=False, env=env)
    assert_nothing_ran(project, result)
    assert "DVC_STAGE='train@squared_svm-l2' is not a train stage of the grid" in result.stderr


BLAS_THREADS = """
import ctypes, glob, json, os, sys
sys.path.insert(0, "src")
from linclass.plumbing.threads import set_blas_threads
set_blas_threads()
import numpy
lib = ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(numpy.__file__) + ".libs", "libscipy_openblas*"))[0])
print(json.dumps([lib.scipy_openblas_get_num_threads64_(), os.environ["OPENBLAS_NUM_THREADS"]]))
"""


@pytest.mark.skipif(not glob.glob(os.path.join(os.path.dirname(str(__import__("numpy").__file__)) + ".libs",
                                               "libscipy_openblas*")), reason="numpy is not built on scipy-openblas")
def test_blas_threads_come_from_params_yaml_before_numpy_loads(project):
    for threads in (1, 2):
        params = yaml.safe_load(project.saved)
        params["train"]["blas_threads"] = threads
        (project.path / "params.yaml").write_text(yaml.safe_dump(params))
        env = {**project.env, "OPENBLAS_NUM_THREADS": "7"}  # params.yaml wins over the environment
        out = project.run(str(BIN / "python"), "-c", BLAS_THREADS, env=env).stdout
        assert json.loads(out) == [threads, str(threads)]
    (project.path / "params.yaml").write_bytes(project.saved)
