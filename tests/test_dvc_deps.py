"""dvc.yaml names exactly the library files that a stage's script imports: editing one reruns the stages that
run it, and no other."""
import ast
from pathlib import Path

import pytest
import yaml
from import_closure import import_closure, imported_modules, stage_deps

ROOT = Path(__file__).resolve().parents[1]
# a foreach stage keeps its definition under `do`
STAGES = {name: stage.get("do", stage)
          for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()}


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_exactly_the_import_closure_of_its_script(stage):
    deps = STAGES[stage]["deps"]
    scripts = [dep for dep in deps if dep.startswith("pipeline/") and dep.endswith(".py")]
    assert len(scripts) == 1, f"{stage}: expected one pipeline/<script>.py among its deps, got {scripts}"
    assert scripts[0] in STAGES[stage]["cmd"], f"{stage}: its command does not run {scripts[0]}"
    needed = {p.relative_to(ROOT).as_posix() for p in import_closure(ROOT / scripts[0], ROOT / "src")}
    assert needed, f"{stage}: {scripts[0]} imports no linclass module?"
    listed = [dep for dep in deps if dep.startswith("src/")]
    missing = sorted(p for p in needed if not covered(ROOT / p, listed))
    unused = sorted(p.relative_to(ROOT).as_posix() for dep in listed
                    for p in ([ROOT / dep] if dep.endswith(".py") else (ROOT / dep).rglob("*.py"))
                    if p.relative_to(ROOT).as_posix() not in needed)
    expected = "\n".join(f"      - {d}" for d in stage_deps(ROOT / scripts[0], ROOT))
    assert not missing and not unused, (f"dvc.yaml stage {stage!r}: {scripts[0]} imports {missing} (not listed) and "
                                        f"not {unused} (listed); its src/ deps should be:\n{expected}")


# Settings a stage's script reads that the stage's params leave out, and why. Any other read that dvc.yaml does not
# list fails the test below: a setting that changes a stage's outputs without rerunning it.
UNLISTED = {
    "tracking": "where the runs are logged (MLflow), not what is computed",
    "data": "the archive's identity: its bytes reach the stages through download and preprocess (their deps); "
            "train records it in MLflow",
    "train:features": "train.py trains the features models too; train@<loss>-<reg> trains pixels only",
    "train:studies.initial_loss_tolerance": "a warning on the terminal, no output",
    "train_features:studies.initial_loss_tolerance": "a warning on the terminal, no output",
    "evaluate:features.strength": "shown beside each model: a new strength retrains it, which reruns evaluate",
    "evaluate:regularizer": "the same, for the pixel models",
    "features:features": "the section goes to image_features, which reads the keys listed; the models' rates and "
                         "strengths are train_features's",
    "loss_study:loss": "each grid loss's delta: loss.svm's is listed; a new loss.squared_svm.delta retrains that "
                       "model (metrics/train, a dep), which reruns loss_study",
    "train:loss": "getattr(params.loss, <the stage's loss>): dvc.yaml lists exactly loss.${item.loss}",
    "train:regularizer": "getattr(params.regularizer, <the stage's>): dvc.yaml lists regularizer.${item.regularizer}",
    "train_features:loss": "each grid loss's section: the keys a features model reads are listed (the SVMs' deltas)",
    "train_features:regularizer": "each grid regularizer's section: the key a features model reads is listed "
                                  "(elastic net's beta)",
    "train_features:features": "model_dump() of the section's image settings, recorded in MLflow: listed one by one",
}


def _chain(node: ast.expr) -> tuple[str | None, list[str]]:
    """(the root name, the attributes after it) of a.b.c, or of stage_params().b.c (root 'stage_params()')."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "stage_params":
        return "stage_params()", parts
    return (node.id if isinstance(node, ast.Name) else None), parts


def params_read(script: Path) -> set[str]:
    """The settings a script reads: params.<section>.<key>... through any name bound to stage_params() or to a
    part of it (`data = stage_params().data`, `train = params.train`). A method call such as .model_dump()
    reads the section; getattr(params.x, name) reads all of x."""
    tree = ast.parse(script.read_text())
    roots = {"stage_params()": ""}
    aliases = set()   # `train = params.train` then train.epochs: what is read through `train` counts
    for node in ast.walk(tree):   # the names bound to the settings or a section of them (in source order)
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target, value = node.targets[0], node.value
        pairs = (zip(target.elts, value.elts) if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                 and len(target.elts) == len(value.elts) else [(target, value)])
        for name, bound in pairs:
            root, parts = _chain(bound)
            if isinstance(name, ast.Name) and root in roots:
                roots[name.id] = ".".join(filter(None, [roots[root], *parts]))
                aliases.add((id(bound), name.id))
    used = {_chain(node)[0] for node in ast.walk(tree) if isinstance(node, ast.Attribute)}   # names read through
    inner = {bound for bound, name in aliases if name in used}
    inner |= {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    read = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            root, parts = _chain(node)
            if root in roots:
                read.add(".".join(filter(None, [roots[root], *(p for p in parts if not p.startswith("model_"))])))
    return read


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_setting_a_stage_reads_is_in_its_params(stage):
    script = next(dep for dep in STAGES[stage]["deps"] if dep.startswith("pipeline/"))
    listed = [next(iter(p)) if isinstance(p, dict) else p for p in STAGES[stage].get("params", [])]

    def covered(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in listed) or any(
            key == u or key.startswith(u + ".") for u in UNLISTED) or any(
            f"{stage}:{key}".startswith(u) for u in UNLISTED if ":" in u)

    missing = sorted(key for key in params_read(ROOT / script) if not covered(key))
    assert not missing, f"dvc.yaml stage {stage!r}: {script} reads {missing}, which its params do not list"


def test_the_params_check_sees_a_setting_left_out(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("params = stage_params()\nx = params.studies.near_zero_tol\ny = getattr(params.loss, 'svm')\n"
                      "z = params.features.model_dump()\ntrain = params.train\nn = train.epochs\n"
                      "data = stage_params().data\nu = data.url\n")
    assert params_read(script) == {"studies.near_zero_tol", "loss", "features", "train.epochs", "data.url"}


def test_the_data_stages_import_no_mlflow():
    for stage in ("download", "preprocess"):
        script = next(d for d in STAGES[stage]["deps"] if d.startswith("pipeline/"))
        for path in [ROOT / script, *import_closure(ROOT / script, ROOT / "src")]:
            assert "mlflow" not in {m.split(".")[0] for m in imported_modules(path)}, f"{stage}: {path} imports mlflow"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_can_be_restored_from_the_run_cache(stage):
    """DVC (3.67, Stage.run) keeps a stage out of its run-cache when a plain output (not a metric, not a
    plot) has cache: false: then `dvc pull --run-cache` and the parallel grid would have to rerun it."""
    uncached = [next(iter(out)) for out in STAGES[stage].get("outs", [])
                if isinstance(out, dict) and next(iter(out.values())).get("cache") is False]
    assert not uncached, f"{stage}: plain outputs with cache: false {uncached}; make them cached, metrics or plots"


def test_closure_follows_imports_through_the_library(tmp_path):
    src = tmp_path / "src"
    (src / "linclass" / "core").mkdir(parents=True)
    (src / "linclass" / "__init__.py").write_text("")
    (src / "linclass" / "core" / "__init__.py").write_text("")
    (src / "linclass" / "core" / "a.py").write_text("def f():\n    from linclass.core import b\n")
    (src / "linclass" / "core" / "b.py").write_text("import numpy\n")
    script = tmp_path / "s.py"
    script.write_text("from linclass.core.a import f\n")
    assert {p.relative_to(src).as_posix() for p in import_closure(script, src)} == {
        "linclass/__init__.py", "linclass/core/__init__.py", "linclass/core/a.py", "linclass/core/b.py"}


def test_pycache_is_invisible_to_dvc():
    ignored = (ROOT / ".dvcignore").read_text().split()
    assert "__pycache__/" in ignored
