"""Every third-party module the installed package imports is declared in setup.py: in
install_requires, or, for an import that sits in a function of an optional feature, in the
extra whose name its error message gives."""
import ast
import pathlib
import re
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "maskrcnnpp"

# import name -> distribution name, where they differ
DISTRIBUTION = {
    "cv2": "opencv-python-headless",
    "PIL": "Pillow",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
    "yaml": "pyyaml",
    "bioimageio": "bioimageio.core",
}
# subpackages that only their extra's host loads (napari loads the plugin): all theirs
SUBPACKAGE_EXTRAS = {"napari": "napari"}


def declared():
    """(install_requires, {extra: [distributions]}) read from setup.py without running it."""
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    # module-level constants of setup.py (lists of requirements named once, e.g. BIOIMAGEIO)
    constants = {
        target.id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def value(node):
        if isinstance(node, ast.Name):
            return constants[node.id]
        if isinstance(node, ast.List):
            items = []
            for element in node.elts:
                items += value(element.value) if isinstance(element, ast.Starred) else [value(element)]
            return items
        if isinstance(node, ast.Dict):
            return {value(k): value(v) for k, v in zip(node.keys, node.values)}
        return ast.literal_eval(node)

    kwargs = {k.arg: value(k.value) for k in call.keywords if k.arg in ("install_requires", "extras_require")}

    def names(requirements):
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}

    return names(kwargs["install_requires"]), {k: names(v) for k, v in kwargs["extras_require"].items()}


def imports():
    """{module: [(file, guarded_by_extra or None)]} for every absolute import in the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "maskrcnnpp":
                    continue
                extra = re.search(r"install the '(\w+)' extra", source)
                in_function = node.col_offset > 0
                guard = extra.group(1) if extra and in_function else None
                subpackage = path.relative_to(PACKAGE).parts[0]
                guard = SUBPACKAGE_EXTRAS.get(subpackage, guard)
                found.setdefault(top, []).append((path.relative_to(REPO), guard))
    return found


def test_every_import_of_the_package_is_declared():
    required, extras = declared()
    undeclared = []
    for module, places in sorted(imports().items()):
        distribution = DISTRIBUTION.get(module, module).lower()
        for path, extra in places:
            if distribution in required or (extra is not None and distribution in extras.get(extra, ())):
                continue
            undeclared.append(f"{module} ({distribution}) in {path}")
    assert not undeclared, "imports not declared in setup.py: " + "; ".join(undeclared)


def test_the_scan_sees_the_package_and_reads_setup_py():
    required, extras = declared()
    assert {"torch", "detectron2", "scipy", "opencv-python-headless"} <= required
    assert "onnx" in extras["export"]
    found = imports()
    assert {"torch", "cv2", "scipy", "detectron2"} <= set(found)
    assert ("onnx" in found) and all(extra == "export" for _, extra in found["onnx"])
