#!/usr/bin/env python
"""maskrcnnpp: UNet++'s nested-dense skip pathways as a Detectron2 plugin.

Install after Detectron2 and PyTorch (see README: ``bash tools/setup_env.sh`` does it all).
"""
from setuptools import find_packages, setup

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
    ],
    # "export": tools/export_model.py --format onnx writes with onnx and checks with onnxruntime.
    extras_require={
        "export": ["onnx", "onnxruntime"],
        # tools/benchmark.py: our UNet++ against segmentation_models_pytorch's UnetPlusPlus
        "bench": ["segmentation-models-pytorch>=0.4"],
        # ruff: the linter .ci/run calls (configured in ruff.toml)
        "test": ["pytest", "pytest-timeout", "onnx", "onnxruntime", "ruff"],
    },
)
