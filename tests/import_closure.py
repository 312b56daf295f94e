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
    """Absolute module names that `path` imports (`from linclass.x import y` gives linclass.x and linclass.x.y)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
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
