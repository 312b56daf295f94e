"""dvc.yaml names every library file that a stage's script imports: editing one reruns the stage."""
from pathlib import Path

import pytest
import yaml

from import_closure import import_closure

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_the_import_closure_of_its_script(stage):
    deps = STAGES[stage]["deps"]
    scripts = [dep for dep in deps if dep.startswith("pipeline/") and dep.endswith(".py")]
    assert len(scripts) == 1, f"{stage}: expected one pipeline/<script>.py among its deps, got {scripts}"
    assert scripts[0] in STAGES[stage]["cmd"], f"{stage}: its command does not run {scripts[0]}"
    needed = import_closure(ROOT / scripts[0], ROOT / "src")
    assert needed, f"{stage}: {scripts[0]} imports no linclass module?"
    missing = sorted(p.relative_to(ROOT).as_posix() for p in needed if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {stage!r} does not depend on {missing}, which {scripts[0]} imports"


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
