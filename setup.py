#!/usr/bin/env python
"""maskrcnnpp: UNet++'s nested-dense skip pathways as a Detectron2 plugin.

Install after Detectron2 and PyTorch (see README: ``bash tools/setup_env.sh`` does it all).
"""
from setuptools import find_packages, setup

# tools/export_model.py --format bioimageio: bioimageio.core (its model test) brings
# bioimageio.spec (writes the rdf.yaml); bioimageio.spec 0.5.12 fails to serialise file
# entries under pydantic 2.14. The one place these versions are set: the "bioimageio" and
# "test" extras below both use it.
BIOIMAGEIO = ["bioimageio.core>=0.11,<0.12", "pydantic>=2.7,<2.14"]

setup(
    name="maskrcnnpp",
    version="0.1.0",
    description="Mask R-CNN++ (nested-dense FPN) and nuclei tools for Detectron2",
    packages=find_packages(include=["maskrcnnpp", "maskrcnnpp.*"]),
    python_requires=">=3.10",
    # torch, torchvision and detectron2 are installed by tools/setup_env.sh (PyPI has no
    # Detectron2 for Python 3.11, and torch must match torchvision exactly).
    install_requires=[
        "detectron2",
        "torch>=2.4",  # fused AdamW on the CPU (maskrcnnpp/engine/optimizer.py)
        "torchvision",
        "numpy",
        "opencv-python-headless",
        "pycocotools>=2.0.6",
        "matplotlib",
        "tqdm",
        "fvcore",
        "tifffile",
        # tools/predict.py --extra-outputs imagej-rois: ImageJ / Fiji ROI sets
        "roifile",
        # inference measurements, RLE of label images, the classical baseline's watershed
        "scipy",
        # the results tables the tools print
        "tabulate",
        # Detectron2's transforms resize masks and images through PIL
        "Pillow",
        # config files read as YAML (maskrcnnpp/config/setup.py)
        "PyYAML",
        # the maskrcnnpp:// weights scheme (a PathManager handler, maskrcnnpp/model_zoo)
        "iopath",
    ],
    # "export": tools/export_model.py --format onnx writes with onnx and checks with onnxruntime.
    extras_require={
        "export": ["onnx", "onnxruntime"],
        # tools/benchmark.py: our UNet++ against segmentation_models_pytorch's UnetPlusPlus
        "bench": ["segmentation-models-pytorch>=0.4"],
        # the napari plugin (maskrcnnpp/napari): napari with a Qt binding from PyPI wheels
        # and the pytest plugins of its tests (make_napari_viewer needs pytest-qt's qtbot;
        # pytest-xvfb gives Qt's OpenGL a virtual display, Xvfb, where there is none)
        "napari": ["napari[pyqt5]>=0.5", "magicgui", "pytest-qt", "pytest-xvfb"],
        # bioimage.io packages (tools/export_model.py --format bioimageio), see BIOIMAGEIO
        "bioimageio": BIOIMAGEIO,
        # ruff: the linter .ci/run calls (configured in ruff.toml); BIOIMAGEIO: the package
        # tests run bioimageio.core's model test
        "test": ["pytest", "pytest-timeout", "onnx", "onnxruntime", "ruff", *BIOIMAGEIO],
    },
    # napari finds the plugin's npe2 manifest through this entry point
    entry_points={"napari.manifest": ["maskrcnnpp = maskrcnnpp.napari:napari.yaml"]},
    package_data={
        "maskrcnnpp": ["napari/napari.yaml"],
        # the shipped models' configs and float16 weights (maskrcnnpp/model_zoo/)
        "maskrcnnpp.model_zoo": ["configs/*.yaml", "weights/*.pth"],
    },
)
