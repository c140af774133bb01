#!/usr/bin/env python3
"""Build a pure-Python ``detectron2`` wheel from the ``sal-detectron2`` wheel on PyPI.

PyPI has no Detectron2 for Python 3.11 (docs/design.md section 13). ``sal-detectron2==0.7.2`` is a
wheel tagged cp310 that carries Detectron2's Python package (upstream as of 2024-08,
Apache-2.0) plus a compiled extension built for CPython 3.10 only. This script:

1. downloads that wheel with pip (package registry only),
2. drops the 3.10-only extension ``detectron2/_C*.so`` and the stray top-level ``tools``
   package (it would shadow a project's own ``tools/`` folder),
3. writes fresh metadata for a distribution named ``detectron2`` whose requirements list the
   packages Detectron2 really imports (fvcore, iopath, ...) and no ``numpy<2`` pin,
4. writes a ``py3-none-any`` wheel with a correct RECORD into ``--out``.

Without the extension, Mask R-CNN uses torchvision's RoIAlign / NMS; deformable convolution,
rotated boxes and the fast COCOeval are unavailable (COCOEvaluator falls back to pycocotools).

Usage: python tools/repackage_detectron2.py --out DIR   (prints the wheel path)
"""

import argparse
import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

SOURCE = "sal-detectron2==0.7.2"
NAME = "detectron2"
VERSION = "0.7.2+purepython"
REQUIRES = [
    "Pillow>=7.1",
    "matplotlib",
    "pycocotools>=2.0.2",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "tensorboard",
    "numpy",
    "omegaconf>=2.1,<2.4",
    "hydra-core>=1.1",
    "black",
    "packaging",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.11",
    # detectron2.model_zoo imports pkg_resources, removed in setuptools 81
    "setuptools<81",
]


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def _download(workdir: str) -> str:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.10",
        "-d",
        workdir,
        SOURCE,
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wheels = [f for f in os.listdir(workdir) if f.endswith(".whl")]
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel from '{SOURCE}' in {workdir}, found {wheels}")
    return os.path.join(workdir, wheels[0])


def _keep(name: str) -> bool:
    top = name.split("/", 1)[0]
    if top == "tools" or top.endswith(".dist-info"):
        return False
    if top == "detectron2" and name.rsplit("/", 1)[-1].startswith("_C.") and name.endswith(".so"):
        return False
    return True


def build(out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = _download(tmp)
        dist_info = f"{NAME}-{VERSION}.dist-info"
        metadata = (
            "\n".join(
                [
                    "Metadata-Version: 2.1",
                    f"Name: {NAME}",
                    f"Version: {VERSION}",
                    "Summary: Detectron2's Python package (from sal-detectron2 0.7.2), without "
                    "compiled ops",
                    "License: Apache-2.0",
                    "Requires-Python: >=3.8",
                ]
                + [f"Requires-Dist: {r}" for r in REQUIRES]
            )
            + "\n"
        )
        wheel_meta = (
            "Wheel-Version: 1.0\nGenerator: maskrcnnpp repackage_detectron2\n"
            "Root-Is-Purelib: true\nTag: py3-none-any\n"
        )
        target = os.path.join(out_dir, f"{NAME}-{VERSION}-py3-none-any.whl")
        partial = target + ".part"
        records = []
        with (
            zipfile.ZipFile(src) as zin,
            zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zout,
        ):
            license_text = None
            for info in zin.infolist():
                if info.filename.endswith("/LICENSE") and ".dist-info/" in info.filename:
                    license_text = zin.read(info)
                if info.is_dir() or not _keep(info.filename):
                    continue
                data = zin.read(info)
                zout.writestr(info.filename, data)
                records.append(f"{info.filename},{_record_hash(data)},{len(data)}")
            extra = {
                f"{dist_info}/METADATA": metadata.encode(),
                f"{dist_info}/WHEEL": wheel_meta.encode(),
                f"{dist_info}/top_level.txt": b"detectron2\n",
            }
            if license_text is not None:
                extra[f"{dist_info}/LICENSE"] = license_text
            for name, data in extra.items():
                zout.writestr(name, data)
                records.append(f"{name},{_record_hash(data)},{len(data)}")
            records.append(f"{dist_info}/RECORD,,")
            zout.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
        os.replace(partial, target)  # never leave a half-written wheel behind
    return target


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="directory to write the wheel into")
    print(build(parser.parse_args().out))


if __name__ == "__main__":
    main()
