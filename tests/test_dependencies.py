"""Every third-party module the installed package imports is declared in pyproject.toml: in
the dependencies, or, for an import that sits in a function of an optional feature, in the
extra whose name its error message gives. And the packaging itself: console scripts, package
data, the Python version."""

import ast
import pathlib
import re
import sys
import tomllib

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


def _project():
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _name(requirement):
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def declared():
    """(dependencies, {extra: [distributions]}) of pyproject.toml; an extra that takes another
    extra of the package (``maskrcnnpp[bioimageio]``) gets that extra's distributions."""
    project = _project()
    extras = project["optional-dependencies"]

    def expand(requirements, seen=()):
        names = set()
        for requirement in requirements:
            own = re.fullmatch(r"maskrcnnpp\[([\w,\s-]+)\]", requirement.replace(" ", ""))
            if own:
                for extra in own.group(1).split(","):
                    assert extra in extras and extra not in seen, requirement
                    names |= expand(extras[extra], (*seen, extra))
            else:
                names.add(_name(requirement))
        return names

    return expand(project["dependencies"]), {k: expand(v, (k,)) for k, v in extras.items()}


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
            if distribution in required or (
                extra is not None and distribution in extras.get(extra, ())
            ):
                continue
            undeclared.append(f"{module} ({distribution}) in {path}")
    assert not undeclared, "imports not declared in pyproject.toml: " + "; ".join(undeclared)


def test_the_scan_sees_the_package_and_reads_pyproject():
    required, extras = declared()
    assert {"torch", "detectron2", "scipy", "opencv-python-headless"} <= required
    assert "onnx" in extras["export"]
    found = imports()
    assert {"torch", "cv2", "scipy", "detectron2"} <= set(found)
    assert ("onnx" in found) and all(extra == "export" for _, extra in found["onnx"])
    assert {"bioimageio.core", "pydantic"} <= extras["test"]  # through maskrcnnpp[bioimageio]


def _pins(requirements):
    return {_name(r): r for r in requirements if re.search(r"[<>=!~]", r)}


def test_versions_are_pinned_once():
    """torch / torchvision are pinned in pyproject.toml, which tools/setup_env.sh reads; the
    bioimageio pins sit in their extra alone ("test" takes the extra)."""
    project = _project()
    pins = _pins(project["dependencies"])
    assert pins["torch"].startswith("torch==") and pins["torchvision"].startswith("torchvision==")
    setup_env = (REPO / "tools" / "setup_env.sh").read_text()
    assert "pyproject.toml" in setup_env and "setup.py" not in setup_env
    assert not re.search(r"torch(vision)?==\d", setup_env), "a torch pin in tools/setup_env.sh"
    extras = project["optional-dependencies"]
    pinned_in = {}
    for group, requirements in [("dependencies", project["dependencies"]), *extras.items()]:
        for name in _pins(requirements):
            pinned_in.setdefault(name, []).append(group)
    assert {name: groups for name, groups in pinned_in.items() if len(groups) > 1} == {}
    assert "maskrcnnpp[bioimageio]" in extras["test"]


def test_packaging_metadata():
    """Python 3.11, the console scripts of the tools, the napari manifest, the package data."""
    with open(REPO / "pyproject.toml", "rb") as f:
        pyproject = tomllib.load(f)
    project = pyproject["project"]
    assert project["requires-python"] == ">=3.11"
    scripts = project["scripts"]
    assert set(scripts) == {
        f"maskrcnnpp-{n}" for n in ("train", "predict", "export", "evaluate", "compare")
    }
    for target in scripts.values():
        module, function = target.split(":")
        path = REPO / (module.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body), target
    assert project["entry-points"]["napari.manifest"] == {
        "maskrcnnpp": "maskrcnnpp.napari:napari.yaml"
    }
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    for package, patterns in package_data.items():
        folder = REPO / package.replace(".", "/")
        for pattern in patterns:
            assert list(folder.glob(pattern)), f"{package}: no file matches {pattern}"
    assert not (REPO / "setup.py").exists()
