"""The package's layers: every module imports only its own layer and lower ones, and no circle.

The order, low to high (also in the README's layout section):
``_checks``, ``external``, ``metrics`` < ``physics`` < ``solvers`` < ``nets``, ``sequences`` <
``io`` < ``data`` < ``config`` < ``training`` < ``evaluation`` < ``api``, ``demo`` < ``cli``.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "pinqi"

#: Layer of every top-level module or subpackage of pinqi; equal numbers share a layer.
LAYERS = {
    "_checks": 0,
    "external": 0,
    "metrics": 0,
    "physics": 1,
    "solvers": 2,
    "nets": 3,
    "sequences": 3,
    "io": 4,
    "data": 5,
    "config": 6,
    "training": 7,
    "evaluation": 8,
    "api": 9,
    "demo": 9,
    "cli": 10,
    "__main__": 11,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """pinqi modules ``path`` imports anywhere (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pinqi")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("pinqi"):
                # "from pinqi.physics import fft" imports the module pinqi.physics.fft
                submodules = {f"{node.module}.{a.name}" for a in node.names} & known
                found |= submodules or {node.module}
    return found


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def test_every_module_has_a_layer():
    missing = sorted(name for name in modules() if name != "pinqi" and layer(name) is None)
    assert not missing, f"modules without a layer (add them to LAYERS and the README): {missing}"


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in sorted(targets)
        if layer(source) is not None and layer(target) is not None and layer(target) > layer(source)
    ]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (circle := visit(target)):
                return circle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (circle := visit(node)):
            return circle
    return None


def test_no_modules_import_each_other_in_a_circle():
    circle = find_circle(graph())
    assert circle is None, "a circle of imports: " + " -> ".join(circle)


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": {"b2"}, "b2": {"b"}}, ["b", "b2", "b"]),
    ],
)
def test_find_circle_finds_a_planted_circle(edges, expected):
    assert find_circle(edges) == expected


def test_an_upward_import_is_detected(tmp_path):
    planted = tmp_path / "mod.py"
    planted.write_text("def f():\n    from pinqi.evaluation.bart import run_bart\n")
    targets = imports(planted, {"pinqi.evaluation.bart"})
    assert targets == {"pinqi.evaluation.bart"}
    assert layer("pinqi.evaluation.bart") > layer("pinqi.physics.espirit")


def test_the_readme_states_the_same_order():
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    order = " < ".join(
        ", ".join(f"`{name}`" for name, rank in LAYERS.items() if rank == level)
        for level in sorted(set(LAYERS.values()))
        if level < LAYERS["__main__"]
    )
    assert order in " ".join(readme.split())
