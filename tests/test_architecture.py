"""The package's layout is its architecture: layers import only downward, nothing imports in a
circle, no two modules share a file name, no library function is longer than a screen."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cap"

# Bottom to top. A module may import from its own layer or any layer below it, never above.
LAYERS = [
    ("cap.errors", "cap.atomic", "cap._torchvision"),
    ("cap.core",),
    ("cap.data",),
    ("cap.sim", "cap.models"),
    ("cap.config",),
    ("cap.sources",),
    ("cap.methods",),
    ("cap.experiments",),
    ("cap.adapt",),
    ("cap.cli",),
    ("cap.__main__", "cap"),  # cap/__init__.py is the public face: it may name anything
]
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    """The rank of the layer holding ``module``: the longest matching prefix."""
    best, rank = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), i
    assert rank is not None, f"{module} is in no layer: add it to LAYERS"
    return rank


def imports(module: str) -> set[str]:
    """Every cap module that ``module`` imports, at module level or inside functions."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # ``from cap.core import metrics`` imports the module cap.core.metrics
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES and "." in name:
                name = name.rpartition(".")[0]
            if name in MODULES and name != module and name.startswith("cap"):
                found.add(name)
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_the_layers_cover_every_module():
    for module in MODULES:
        layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_layer_above_it(module):
    upward = sorted(t for t in GRAPH[module] if layer(t) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports from higher layers: {upward}"


def test_no_import_cycle():
    # Tarjan's strongly connected components over module- and function-level imports.
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not cycles, f"modules that import each other in a circle: {cycles}"


def test_the_checks_catch_what_they_should():
    # A module of the math layer that reached for the experiment harness would be flagged.
    assert layer("cap.core.margin") < layer("cap.experiments.records")
    assert "cap.core.numeric" in GRAPH["cap.core.concepts"]
    assert "cap.core.margin" in GRAPH["cap.methods.cap"]  # function-level imports count too:
    assert "cap.sources.real_images" in GRAPH["cap.sources"]


def test_no_two_modules_share_a_file_name():
    seen: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        if path.name != "__init__.py":
            seen.setdefault(path.name, []).append(module)
    assert {name: mods for name, mods in seen.items() if len(mods) > 1} == {}


def test_no_library_function_is_longer_than_a_screen():
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {length} lines")
    assert not long, long
