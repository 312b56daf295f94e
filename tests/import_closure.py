"""The linclass modules a script imports, directly or through other linclass modules (static: every
`import` statement counts, also those inside functions, since any of them may run)."""
from __future__ import annotations

import ast
from pathlib import Path


def module_file(module: str, src: Path) -> Path | None:
    """src/linclass/a/b.py or src/linclass/a/b/__init__.py for 'linclass.a.b' (None if not linclass)."""
    if module != "linclass" and not module.startswith("linclass."):
        return None
    base = src.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Absolute module names that `path` imports (`from linclass.x import y` gives linclass.x and linclass.x.y),
    and those it finds by name (`importlib.util.find_spec("linclass.x")`: a file it reads, e.g. a model's code)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "find_spec"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def import_closure(script: Path, src: Path) -> set[Path]:
    """Every linclass source file that `script` needs, package __init__ files included."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for module in imported_modules(todo.pop()):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                path = module_file(".".join(parts[:i]), src)
                if path is not None and path not in seen:
                    seen.add(path)
                    todo.append(path)
    return seen


def stage_deps(script: Path, root: Path) -> list[str]:
    """What dvc.yaml lists for a stage running `script`: the files of its import closure (relative to
    root), a whole folder where the closure holds every module of it (the package itself included)."""
    needed = {p.relative_to(root).as_posix() for p in import_closure(script, root / "src")}
    deps = set(needed)
    for folder in sorted({str(Path(p).parent) for p in needed}, key=len, reverse=True):
        modules = {p.relative_to(root).as_posix() for p in (root / folder).rglob("*.py")}
        if folder != "src/linclass" and modules <= deps:
            deps = {d for d in deps if not d.startswith(folder + "/")} | {folder}
    return sorted(deps)
