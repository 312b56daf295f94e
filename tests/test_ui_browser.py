"""The MLflow UI a user lands in, in a real browser: `linclass ui` on a store made by the real pipeline (4 models
of the synthetic archive, trained and evaluated by `dvc repro evaluate`), opened in headless Chromium with a
fresh profile (Debian's /usr/bin/chromium driven by playwright; skipped with a reason where it is missing:
`apt-get install -y chromium`, .ci/run installs it).

What a user sees first: the link `linclass ui` prints opens the runs table in the model-training view (not the
GenAI one) with every training run and its validation and test accuracy (with their 95% intervals), best on
validation first; its Compare link draws every run in the parallel coordinates (the first params are ones every
run has) and puts the pictures side by side; each logged model shows its registered version.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import BIN, SMALL, free_port, make_project, serving, warm_stages

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists() or shutil.which("chromium") is None,
                                 reason="no chromium (apt-get install -y chromium)")]
EXPERIMENT = "linclass-cifar10"
NAMES = [f"{loss}-{reg}" for loss in ("svm", "softmax") for reg in ("none", "l2")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
WAIT = 90_000  # ms: the page polls the store; a loaded machine is slow


@pytest.fixture(scope="module")
def ui(tmp_path_factory, archive_server):
    """(the lines `linclass ui` printed, the project's MLflow client) while `linclass ui` serves its store."""
    from mlflow.tracking import MlflowClient

    url, md5 = archive_server
    base = tmp_path_factory.mktemp("ui")
    project = make_project(base / "project", (f"data.url={url}", f"data.md5={md5}", *SMALL,
                                              "grid.losses=[svm,softmax]", "grid.regularizers=[none,l2]"))
    with warm_stages(project):   # its stages started by a warm interpreter
        project.dvc("repro", "evaluate")
    port = free_port()
    log = base / "ui.log"
    with serving([str(BIN / "linclass"), "ui", "--port", str(port)], f"http://127.0.0.1:{port}", log,
                 cwd=project.path, env=project.env):
        yield log.read_text().splitlines(), MlflowClient(project.tracking_uri)


@pytest.fixture
def page(tmp_path):
    """A page of a fresh Chromium profile."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=FLAGS, headless=True,
            viewport={"width": 1600, "height": 1000})
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT)
            yield page
        finally:
            browser.close()


def link(lines: list[str], starts: str) -> str:
    found = [match.group(0) for line in lines if line.startswith(starts) and (match := re.search(r"http://\S+", line))]
    assert found, f"`linclass ui` printed no line starting {starts!r}: {lines}"
    return found[0]


def js_number(value: float) -> str:
    """A metric as the UI writes it (JavaScript's shortest round-trip text, like Python's repr: 1 not 1.0)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def assert_model_training_view(page) -> None:
    """The sidebar of the model-training view (the Model registry; on an experiment's pages its Runs and Models),
    not GenAI's (Prompts; on an experiment's pages Training runs, Sessions, Evaluation runs)."""
    sidebar = page.locator("aside")
    sidebar.get_by_text("Model registry", exact=True).first.wait_for()
    for item in ("Prompts", "Training runs", "Sessions", "Evaluation runs"):
        assert sidebar.get_by_text(item, exact=True).count() == 0, f"GenAI's sidebar ({item!r}) in {page.url}"


def training_runs(client):
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert sorted(run.data.tags["model"] for run in runs) == sorted(NAMES)
    return runs


def test_the_printed_link_opens_the_runs_table_with_every_accuracy(ui, page):
    lines, client = ui
    runs = training_runs(client)
    page.goto(link(lines, "the training runs, compared:"))
    assert_model_training_view(page)
    page.locator("aside").get_by_text("Runs", exact=True).first.wait_for()   # the experiment's own pages
    header = page.get_by_role("columnheader")
    for column in ("val_accuracy", "val_accuracy_low", "val_accuracy_high", "test_accuracy"):
        header.get_by_text(column, exact=True).first.wait_for()
    # one row per training run (its name in the pinned part, its metrics in the rest: same row-index)
    for run in runs:
        page.get_by_text(run.info.run_name, exact=True).wait_for()
    shown = {}
    for index in range(len(runs)):
        row = " | ".join(page.locator(f"[role=row][row-index='{index}']").all_inner_texts())
        name = next((run.info.run_name for run in runs if run.info.run_name in row), None)
        assert name is not None, f"row {index} names no training run: {row}"
        shown[name] = row
    assert len(shown) == len(runs)
    for run in runs:
        row, metrics = shown[run.info.run_name], run.data.metrics
        for key in ("val_accuracy", "val_accuracy_low", "val_accuracy_high", "test_accuracy"):
            assert js_number(metrics[key]) in row, (run.info.run_name, key, metrics[key], row)
    order = [next(name for name in shown if name in " | ".join(
        page.locator(f"[role=row][row-index='{i}']").all_inner_texts())) for i in range(len(runs))]
    by_val = {run.info.run_name: run.data.metrics["val_accuracy"] for run in runs}
    assert [by_val[name] for name in order] == sorted(by_val.values(), reverse=True), order   # best first
    # no error on the page: the AI gateway's endpoints, which the page asks for, are an empty list here
    assert "PERMISSION_DENIED" not in page.content()


def test_compare_draws_every_run_on_shared_params_and_the_pictures_side_by_side(ui, page):
    lines, client = ui
    page.goto(link(lines, f"the workspace's {len(NAMES)} models side by side (Compare):"))
    assert_model_training_view(page)
    page.get_by_text(f"Comparing {len(NAMES)} Runs", exact=False).wait_for()
    # the parallel coordinates open on the first three params that differ: all three are params of every run
    picker = page.get_by_text("Parameters:", exact=True).locator("xpath=following-sibling::div[1]")
    picker.locator("[class*='selection-item-content']").first.wait_for()
    chosen = [text.strip() for text in picker.locator("[class*='selection-item-content']").all_inner_texts()]
    runs = training_runs(client)
    shared = set.intersection(*(set(run.data.params) for run in runs))
    assert len(chosen) == 3 and set(chosen) <= shared, (chosen, sorted(shared))
    artifacts = page.get_by_text("Artifacts", exact=True).first
    artifacts.scroll_into_view_if_needed()
    for picture in ("confusion_matrix.png", "loss_curves.png", "templates_grid.png"):
        page.get_by_text(picture, exact=True).first.wait_for()


def test_every_logged_model_shows_its_registered_version(ui, page):
    lines, client = ui
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    base = link(lines, "the training runs, compared:").split("/#/")[0]
    page.goto(f"{base}/#/experiments/{experiment_id}/models?workflowType=machine_learning")
    assert_model_training_view(page)
    versions = {v.version for v in client.search_model_versions(f"name = '{EXPERIMENT}'")}
    assert len(versions) == len(NAMES)
    for version in versions:
        page.get_by_text(f"v{version}", exact=True).first.wait_for()
    assert page.get_by_text("Not registered").count() == 0


def test_the_studies_link_opens_in_the_model_training_view(ui, page):
    lines, _ = ui
    page.goto(link(lines, "the studies and the report:"))
    assert_model_training_view(page)
