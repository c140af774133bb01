"""
The package's layers: every import between the rooms of ``maskrcnnpp`` points down the order
below, no module import circle, and no module of the installed package serves only the
project's own measurements (``maskrcnnpp_bench/``) or the tests.
"""

import ast
import pathlib

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "maskrcnnpp"

# bottom to top: a room may import only the rooms before it
LAYERS = [
    "utils",
    "structures",
    "modeling",
    "data",
    "evaluation",
    "checkpoint",
    "config",
    "model_zoo",
    "inference",
    "engine",
    "export",
    "napari",
    "comparison",
    "cli",
]


def _module_name(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path):
    """The maskrcnnpp modules (or packages) that the file at ``path`` imports."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "maskrcnnpp" or t.startswith("maskrcnnpp."))
    return found


def _graph():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # an import of a name from a module counts as an import of the module
        graph[name] = {t if t in modules else t.rsplit(".", 1)[0] for t in _imports(path)} & set(
            modules
        )
        graph[name].discard(name)
    return graph


def _room(module):
    parts = module.split(".")
    return (
        parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else None
    )


def test_every_room_is_in_the_layer_order():
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms <= set(LAYERS), f"rooms missing from LAYERS: {sorted(rooms - set(LAYERS))}"


def test_imports_between_rooms_point_down():
    upward = []
    for module, targets in _graph().items():
        room = _room(module)
        if room is None:
            continue
        for target in targets:
            other = _room(target)
            if other is not None and other != room and LAYERS.index(other) > LAYERS.index(room):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that point up the layers:\n" + "\n".join(sorted(upward))


def test_no_module_import_circle():
    graph = _graph()
    # Tarjan's strongly connected components; a component of more than one module is a circle
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
            # a package's __init__ importing its own modules is not a circle
            if len(component) > 1 and not all(
                c == component[0].rsplit(".", 1)[0] or c.startswith(_root(component))
                for c in component
            ):
                circles.append(sorted(component))

    def _root(component):
        return min(component, key=len) + "."

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_every_module_serves_the_package_or_its_tools():
    """A module used only by maskrcnnpp_bench/ or the tests belongs outside the package."""
    graph = _graph()
    used = set().union(*graph.values())
    for script in list((REPO / "tools").glob("*.py")) + list((REPO / "datasets").glob("*.py")):
        used |= {t for t in _imports(script)} | {t.rsplit(".", 1)[0] for t in _imports(script)}
    manifest = yaml.safe_load((PACKAGE / "napari" / "napari.yaml").read_text())
    for contribution in manifest["contributions"]["commands"]:
        used.add(contribution["python_name"].split(":")[0])
    unused = sorted(
        m
        for m in graph
        if m not in used
        and not m.endswith("__init__")
        and m != "maskrcnnpp"
        and m.count(".") > 1
        and not (PACKAGE / m.split(".", 1)[1].replace(".", "/") / "__init__.py").exists()
    )
    assert not unused, f"modules no package code or tool imports: {unused}"
