"""The layering rules of the house style, checked on the source: every `import` in a package's
own modules (module level or inside a function), and what importing the voxtune modules they
name runs in turn (their module-level imports), followed to the end. `voxtune.cli`, the
composition root that wires every command with lazy imports, is not followed.

So the prepare and controller/UI images can leave torch out, and the GPU image leaves the
cluster and web libraries out — an import that breaks this would fail only inside an image.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

RULES = {  # voxtune package → third-party packages nothing it imports may reach
    "voxtune.spec": {"torch", "transformers", "kubernetes", "gradio", "datasets", "peft"},
    # the controller and the UI plan runs before admitting them: shapes by arithmetic only
    "voxtune.plan": {"torch", "transformers", "kubernetes", "gradio", "datasets", "peft"},
    "voxtune.data": {"torch", "transformers", "kubernetes", "gradio", "peft"},
    "voxtune.train": {"kubernetes", "gradio"},
    "voxtune.publish": {"kubernetes", "gradio"},
    "voxtune.controller": {"torch", "transformers", "peft", "gradio", "datasets"},
    "voxtune.ui": {"torch", "transformers", "peft"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in SRC.rglob("*.py")}


COMPOSITION_ROOT = "voxtune.cli"


@cache
def imports(module: str, module_level: bool) -> frozenset[str]:
    """Absolute names imported in `module`'s file: at module level only, or anywhere."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = _module_level(tree.body) if module_level else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    return frozenset(names)


def _module_level(body: list[ast.stmt]):
    """Statements that run on import: the top level, including inside if/try/with blocks."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    yield from _module_level(getattr(child, "body", [child]))


def reachable(package: str) -> dict[str, str]:
    """Third-party top-level packages reachable from `package`, each with one voxtune module
    that imports it (for the message)."""
    own = {name for name in MODULES if name == package or name.startswith(package + ".")}
    todo, seen, found = list(own), set(own), {}
    while todo:
        module = todo.pop()
        for name in imports(module, module_level=module not in own):
            if name in MODULES:
                if name not in seen and name != COMPOSITION_ROOT:
                    seen.add(name)
                    todo.append(name)
            elif not name.startswith("voxtune"):
                found.setdefault(name.split(".")[0], module)
    return found


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_does_not_reach_forbidden_libraries(package: str) -> None:
    broken = {library: module for library, module in reachable(package).items()
              if library in RULES[package]}
    assert not broken, f"{package} reaches {broken} (library: importing module)"


def test_the_checker_sees_lazy_imports() -> None:
    """train really imports torch inside functions: the walk must find it."""
    assert "torch" in reachable("voxtune.train")
    assert "kubernetes" in reachable("voxtune.controller")
