"""The layers import one way: commands -> recipes -> roles -> core -> rewards.

Every module's imports are read with `ast` (including imports inside functions); an
import of a higher layer fails the test, naming both files.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# folder -> (package it installs as, layer rank: a module may import its own rank or lower)
FOLDERS = {
    "rewards": ("rlhf_platform.rewards", 0),
    "rlhf_platform": ("rlhf_platform", 1),
    "roles": ("rlhf_platform.roles", 2),
    "recipes": ("rlhf_platform.recipes", 3),
}
COMMANDS = ("rlhf_platform.commands", 4)
LAYER_NAMES = {0: "rewards", 1: "core", 2: "roles", 3: "recipes", 4: "commands"}


def layer_of(module: str) -> int | None:
    """The layer of a module of this project (None: not ours)."""
    if module == "rlhf_platform.commands" or module.startswith("rlhf_platform.commands."):
        return COMMANDS[1]
    for package, rank in sorted(FOLDERS.values(), key=lambda pr: -len(pr[0])):
        if module == package or module.startswith(package + "."):
            return rank
    return None


def modules() -> list[tuple[Path, str]]:
    """(file, module name) of every module of the project."""
    found = []
    for folder, (package, _) in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append((path, ".".join([package, *parts])))
    return found


def imported(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, module) of every import in `path`, relative imports resolved."""
    out = []
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if layer_of(f"{base}.{alias.name}") is not None]
    return out


def test_every_module_imports_only_its_own_layer_or_lower():
    violations = []
    for path, module in modules():
        own = layer_of(module)
        for line, target in imported(path, module):
            rank = layer_of(target)
            if rank is not None and rank > own:
                violations.append(
                    f"{path.relative_to(REPO)}:{line} ({LAYER_NAMES[own]}) imports {target} ({LAYER_NAMES[rank]})"
                )
    assert not violations, "imports against the layers (commands -> recipes -> roles -> core -> rewards):\n" + "\n".join(violations)


def test_core_makes_no_ray_call():
    """The core (rlhf_platform/, rewards/) never imports Ray: roles and executors do."""
    offenders = [
        f"{path.relative_to(REPO)}:{line}"
        for path, module in modules()
        if layer_of(module) <= 1
        for line, target in imported(path, module)
        if target == "ray" or target.startswith("ray.")
    ]
    assert not offenders, f"Ray imported in the core: {offenders}"


def test_the_checker_sees_a_violation(tmp_path):
    """The test above is not vacuous: a core module importing a recipe is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from rlhf_platform.recipes import online_rl\n")
    lines = imported(bad, "rlhf_platform.bad")
    assert (2, "rlhf_platform.recipes") in lines and layer_of("rlhf_platform.recipes.online_rl") == 3
    assert layer_of("rlhf_platform.bad") == 1
