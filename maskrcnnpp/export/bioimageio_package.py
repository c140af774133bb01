"""
A BioImage Model Zoo (bioimage.io) package of a model, as deepImageJ (Fiji), QuPath, ilastik and
napari run it: the TorchScript module of :mod:`.bioimageio_module` (one RGB image in, the
nucleus probability map or the nuclei label image out), the ``rdf.yaml`` (model description
format 0.5, written by ``bioimageio.spec``), test input and output tensors (``.npy``), a cover
image, the model card (``README.md``) and the licence. The package is written only after
``bioimageio.core``'s own model test has loaded it and reproduced its test output.
"""

import importlib.metadata
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.modeling import GeneralizedRCNN
from torch import nn

from .bioimageio_module import build_package_modules
from .output_check import ExportMismatchError
from .sample_inputs import SampleInput
from .torchscript_export import load_torchscript, torchscript_bytes

__all__ = ["BIOIMAGEIO_FOLDER", "BIOIMAGEIO_ZIP", "export_bioimageio_package", "package_name"]

BIOIMAGEIO_ZIP = "bioimageio.zip"
"""The package as one file (what deepImageJ installs and bioimage.io uploads)."""
BIOIMAGEIO_FOLDER = "bioimageio"
"""The same package unpacked (its ``rdf.yaml`` is what QuPath imports)."""

LICENSE_ID = "Apache-2.0"
"""The package's licence: Detectron2's, whose code the TorchScript module contains."""

_INPUT_ID = "image"
# Tiles a consumer may cut: the smallest side and the step between allowed sides, in pixels.
_MIN_SIDE = 64
_SIDE_STEP = 32  # a multiple of both models' size divisibility (FPN: 32, UNet++: 16)
_PROBABILITY_HALO = 16  # pixels cropped from each side of a tile of the probability map

_CITATIONS = {
    GeneralizedRCNN: [
        ("He, Gkioxari, Dollar, Girshick: Mask R-CNN. ICCV 2017", "10.1109/ICCV.2017.322"),
        ("Zhou et al.: UNet++: Redesigning Skip Connections to Exploit Multiscale Features in "
         "Image Segmentation. IEEE TMI 2020", "10.1109/TMI.2019.2959609"),
    ],
    None: [
        ("Zhou et al.: UNet++: Redesigning Skip Connections to Exploit Multiscale Features in "
         "Image Segmentation. IEEE TMI 2020", "10.1109/TMI.2019.2959609"),
    ],
}  # fmt: skip
_DSB2018_CITATION = (
    "Caicedo et al.: Nucleus segmentation across imaging experiments: the 2018 Data Science "
    "Bowl. Nature Methods 16, 2019 (training data)",
    "10.1038/s41592-019-0612-7",
)


class BioimageioTestError(ExportMismatchError):
    """``bioimageio.core``'s model test failed on the package."""


def _bioimageio():
    """``(bioimageio.spec, bioimageio.core)``, or ImportError saying how to install them."""
    try:
        import bioimageio.core
        import bioimageio.spec
    except ImportError as e:
        raise ImportError(
            f"--format bioimageio needs bioimageio.core ({e}): install the 'bioimageio' extra "
            "(pip install -e '.[bioimageio]')"
        ) from e
    return bioimageio.spec, bioimageio.core


def package_name(cfg, config_file: Optional[str]) -> str:
    """The package's name: the shipped model's (``MODEL.WEIGHTS maskrcnnpp://NAME``), else the
    config file's stem, else the meta-architecture's."""
    weights = cfg.MODEL.WEIGHTS or ""
    if weights.startswith("maskrcnnpp://"):
        name = weights[len("maskrcnnpp://") :]
    elif config_file:
        name = os.path.splitext(os.path.basename(config_file))[0]
    else:
        name = cfg.MODEL.META_ARCHITECTURE
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)
    return f"maskrcnnpp {name}"


def _batched_rgb(sample: SampleInput) -> torch.Tensor:
    if sample.rgb is None:
        raise ValueError(
            f"sample {sample.source} has no original RGB image (load it with load_sample_inputs)"
        )
    return torch.as_tensor(np.ascontiguousarray(sample.rgb.transpose(2, 0, 1)))[None]


def _compare(
    eager: torch.Tensor,
    exported: torch.Tensor,
    source: str,
    *,
    labels: bool,
    atol: float,
    rtol: float,
) -> Tuple[float, Optional[str]]:
    """The largest absolute difference, and what is wrong (None: within the tolerance). Label
    images may differ at up to 100 pixels per million (``bioimageio.core``'s default)."""
    if eager.shape != exported.shape:
        return float("inf"), f"{source}: shape {list(exported.shape)}, eager {list(eager.shape)}"
    diff = (eager.double() - exported.double()).abs()
    largest = float(diff.max()) if diff.numel() else 0.0
    if labels:
        mismatched = float((diff > 0).double().mean()) * 1e6
        if mismatched > 100:
            return largest, f"{source}: {mismatched:.0f} pixels per million labelled differently"
        return largest, None
    excess = diff - (atol + rtol * eager.double().abs())
    if diff.numel() and float(excess.max()) > 0:
        return (
            largest,
            f"{source}: max abs difference {largest:.3g} exceeds atol {atol:g} + rtol {rtol:g} * |eager|",
        )
    return largest, None


def _label_colours(labels: np.ndarray) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) uint8, background black, each label a fixed bright colour."""
    rng = np.random.default_rng(0)
    palette = rng.integers(64, 256, size=(int(labels.max(initial=0)) + 1, 3), dtype=np.uint8)
    palette[0] = 0
    return palette[labels]


def _cover(rgb: np.ndarray, output: np.ndarray, labels: bool) -> np.ndarray:
    """The test image and the package's output side by side (2:1), 256 pixels high, RGB."""
    shown = (
        _label_colours(output)
        if labels
        else np.repeat((output.clip(0, 1) * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    )
    height = 256
    width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    halves = [
        cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA),
        cv2.resize(shown, (width, height), interpolation=cv2.INTER_NEAREST),
    ]
    return np.concatenate(halves, axis=1)


def _model_card(
    name: str, cfg, *, labels: bool, description: str, samples: Sequence[SampleInput], check: Dict
) -> str:
    output = (
        "`labels`, (1, 1, H, W) int32: 0 background, 1..K the nuclei, numbered by decreasing "
        "score. The image is resized by the model's test factor "
        f"(`INPUT.SCALE_FACTOR_TEST` = {cfg.INPUT.SCALE_FACTOR_TEST}) inside the module; "
        f"detections scored below {cfg.TEST.PREDICT.SCORE_THRESH} "
        "(`TEST.PREDICT.SCORE_THRESH`) are dropped; masks are pasted at the image's size "
        "(threshold 0.5); where two overlap, the higher score keeps the pixel."
        if labels
        else "`nucleus_probability`, (1, 1, H, W) float32 in 0..1: 1 - p(background) per pixel. "
        "Threshold it at 0.5 and take connected components for nuclei (as `tools/predict.py` "
        "does)."
    )
    limits = (
        "- Run it on the whole image, untiled: label images of separate tiles do not join "
        "(a nucleus cut by a tile edge becomes two, and labels repeat between tiles). Very "
        "large images need memory for every detection's full-size mask; `tools/predict.py` "
        "tiles them and merges the nuclei across tiles.\n"
        f"- At most {cfg.TEST.DETECTIONS_PER_IMAGE} nuclei per image (`TEST.DETECTIONS_PER_IMAGE`, "
        "fixed in the traced model whatever the image's size): cut images with more nuclei "
        "into smaller ones.\n"
        "- The resize inside the module is PyTorch's bilinear interpolation; `tools/predict.py` "
        "resizes with PIL. The two differ by at most one grey level at some pixels, which can "
        "move a few mask pixels or a detection at the score threshold.\n"
        if labels
        else "- Tiles of the probability map may be cut with the declared halo "
        f"({_PROBABILITY_HALO} pixels); `tools/predict.py` predicts whole images up to "
        "`MODEL.UNETPP.SLIDING_WINDOW_SIZE` and windows beyond.\n"
    )
    sources = ", ".join(s.source for s in samples)
    return f"""# {name}

{description}

Exported by `tools/export_model.py --format bioimageio` of maskrcnnpp (a Detectron2 plugin
for nuclei segmentation) from the model `{cfg.MODEL.META_ARCHITECTURE}`, weights
`{cfg.MODEL.WEIGHTS}`, trained on {", ".join(cfg.DATASETS.TRAIN) or "(no training set named)"}.

## Inputs

`image`, (1, 3, H, W) uint8 RGB, 0..255: an 8-bit RGB image as it is (no normalisation
needed; the module subtracts the model's pixel mean and divides by its standard deviation).
A grayscale image: convert it to RGB (Fiji: Image > Type > RGB Color). A 16-bit image:
convert it to 8-bit first (Fiji: Image > Type > 8-bit scales the display range to 0..255;
`tools/predict.py` stretches min..max).

## Outputs

{output}

## Validation

The TorchScript module was checked against the eager PyTorch model on {len(samples)}
image(s) ({sources}): largest absolute difference {check["max_abs_diff"]:.3g}. The package
passed `bioimageio.core`'s model test (`bioimageio test rdf.yaml`), which loads it and
reproduces `test_output.npy` from `test_input.npy`. For the model's accuracy on held-out
nuclei images see the project's documentation of the model.

## Limits

{limits}- Trained on the 2-D nuclei images of the datasets named above; other structures, 3-D
  stacks and time series are out of scope.
- Pixel size: the model learnt the nucleus sizes of its training images in pixels; nuclei
  much larger or smaller than those (tens of pixels across) need the image rescaled first.
"""


def _write_package_files(
    folder: str,
    *,
    name: str,
    cfg,
    data: bytes,
    test_input: np.ndarray,
    test_output: np.ndarray,
    labels: bool,
    samples: Sequence[SampleInput],
    check: Dict,
):
    """Write the package's files into ``folder`` and return its ``ModelDescr``."""
    spec, _ = _bioimageio()
    from bioimageio.spec.model import v0_5 as bio

    is_rcnn = labels
    description = (
        f"Nuclei instance segmentation ({cfg.MODEL.META_ARCHITECTURE}, maskrcnnpp): an RGB image "
        "in, a label image of the nuclei out, post-processing included."
        if labels
        else f"Nuclei semantic segmentation ({cfg.MODEL.META_ARCHITECTURE}, maskrcnnpp): an RGB "
        "image in, the per-pixel nucleus probability out."
    )
    files = {
        "weights": "weights.pt",
        "test_input": "test_input.npy",
        "test_output": "test_output.npy",
        "cover": "cover.png",
        "documentation": "README.md",
        "license": "LICENSE",
    }
    path = {k: Path(folder) / v for k, v in files.items()}
    path["weights"].write_bytes(data)
    np.save(path["test_input"], test_input)
    np.save(path["test_output"], test_output)
    rgb = test_input[0].transpose(1, 2, 0)
    cover = _cover(rgb, test_output[0, 0], labels)
    if not cv2.imwrite(str(path["cover"]), cover[:, :, ::-1]):
        raise OSError(f"cannot write {path['cover']}")
    path["documentation"].write_text(
        _model_card(name, cfg, labels=labels, description=description, samples=samples, check=check)
    )
    path["license"].write_text(_license_text())

    side = bio.ParameterizedSize(min=_MIN_SIDE, step=_SIDE_STEP)
    input_tensor = bio.InputTensorDescr(
        id=bio.TensorId(_INPUT_ID),
        description="8-bit RGB image",
        axes=[
            bio.BatchAxis(size=1),
            bio.ChannelAxis(channel_names=[bio.Identifier(c) for c in ("R", "G", "B")]),
            bio.SpaceInputAxis(id=bio.AxisId("y"), size=side),
            bio.SpaceInputAxis(id=bio.AxisId("x"), size=side),
        ],
        test_tensor=bio.FileDescr(source=path["test_input"]),
        data=bio.IntervalOrRatioDataDescr(type="uint8"),
        preprocessing=[bio.EnsureDtypeDescr(kwargs=bio.EnsureDtypeKwargs(dtype="float32"))],
    )

    def space(axis: str):
        reference = bio.SizeReference(tensor_id=bio.TensorId(_INPUT_ID), axis_id=bio.AxisId(axis))
        if labels:
            return bio.SpaceOutputAxis(id=bio.AxisId(axis), size=reference)
        return bio.SpaceOutputAxisWithHalo(
            id=bio.AxisId(axis), size=reference, halo=_PROBABILITY_HALO
        )

    output_tensor = bio.OutputTensorDescr(
        id=bio.TensorId("labels" if labels else "nucleus_probability"),
        description=(
            "nuclei label image: 0 background, 1..K by decreasing score"
            if labels
            else "per-pixel nucleus probability, 1 - p(background)"
        ),
        axes=[
            bio.BatchAxis(size=1),
            bio.ChannelAxis(channel_names=[bio.Identifier("labels" if labels else "nucleus")]),
            space("y"),
            space("x"),
        ],
        test_tensor=bio.FileDescr(source=path["test_output"]),
        data=(
            bio.IntervalOrRatioDataDescr(type="int32", range=(0, None))
            if labels
            else bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0))
        ),
    )
    citations = _CITATIONS[GeneralizedRCNN if is_rcnn else None]
    if any("dsb2018" in name.lower() for name in cfg.DATASETS.TRAIN):
        citations = citations + [_DSB2018_CITATION]
    descr = bio.ModelDescr(
        name=name,
        description=description,
        authors=[bio.Author(name="maskrcnnpp contributors")],
        cite=[bio.CiteEntry(text=text, doi=bio.Doi(doi)) for text, doi in citations],
        license=bio.LicenseId(LICENSE_ID),
        documentation=bio.FileDescr(source=path["documentation"]),
        covers=[bio.FileDescr(source=path["cover"])],
        attachments=[bio.FileDescr(source=path["license"])],
        tags=[
            "nuclei",
            "instance-segmentation" if labels else "semantic-segmentation",
            "2d",
            "pytorch",
            "torchscript",
            "fluorescence-light-microscopy",
            "brightfield-microscopy",
            "histology",
            "maskrcnnpp",
        ],
        inputs=[input_tensor],
        outputs=[output_tensor],
        weights=bio.WeightsDescr(
            torchscript=bio.TorchscriptWeightsDescr(
                source=path["weights"],
                pytorch_version=bio.Version(torch.__version__.split("+")[0]),
            )
        ),
    )
    return spec, descr


def _license_text() -> str:
    """The Apache-2.0 text, as the installed Detectron2 distribution carries it."""
    for file in importlib.metadata.files("detectron2") or []:
        if file.name in ("LICENSE", "LICENSE.txt") and ".dist-info" in str(file):
            return file.read_text()
    raise FileNotFoundError(
        "the installed detectron2 distribution carries no LICENSE file (the package's Apache-2.0 text)"
    )


def _failed_details(summary) -> List[str]:
    """The failed checks of a bioimageio ValidationSummary, one line each."""
    lines = []
    for detail in summary.details:
        if detail.status == "failed":
            errors = "; ".join(str(e.msg).splitlines()[0] for e in detail.errors) or "failed"
            lines.append(f"{detail.name}: {errors}")
    return lines


def export_bioimageio_package(
    cfg,
    model: nn.Module,
    samples: Sequence[SampleInput],
    *,
    output_dir: str,
    atol: float = 1e-3,
    rtol: float = 1e-3,
    config_file: Optional[str] = None,
) -> Dict:
    """
    Build the package's module (:func:`.bioimageio_module.build_package_modules`, traced on
    ``samples[0]``), check it against the eager model on every sample, write the package,
    run ``bioimageio.core``'s model test on it, and only then move it into ``output_dir``:
    ``bioimageio.zip``, the unpacked ``bioimageio/`` (``rdf.yaml``, ``weights.pt``,
    ``test_input.npy``, ``test_output.npy``, ``cover.png``, ``README.md``, ``LICENSE``).

    Args:
        cfg: the model's config.
        model: built from ``cfg``, trained weights loaded, in eval mode.
        samples: from :func:`.sample_inputs.load_sample_inputs`; the first is also the
            package's test input.
        atol, rtol: tolerance of the probability map against the eager model's.

    Returns:
        A JSON-able description of the package and of its checks (for ``export_info.json``).

    Raises:
        ExportMismatchError: the module computes something else than the eager model.
        BioimageioTestError: ``bioimageio.core``'s test failed (its failed checks listed).
        ImportError: bioimageio.core is not installed.
    """
    spec, core = _bioimageio()
    if not samples:
        raise ValueError("export needs at least one sample image")
    device = cfg.MODEL.DEVICE
    labels = isinstance(model, GeneralizedRCNN)
    start = time.perf_counter()
    eager, scripted = build_package_modules(cfg, model, samples[0].image)
    data = torchscript_bytes(scripted)
    run_exported = load_torchscript(data, device)
    export_seconds = time.perf_counter() - start

    start = time.perf_counter()
    largest, problems, outputs = 0.0, [], []
    for sample in samples:
        x = _batched_rgb(sample).to(device)
        with torch.no_grad():
            expected = eager(x.float()).cpu()
        exported = run_exported(x.float())[0].cpu()
        outputs.append(exported)
        diff, problem = _compare(
            expected, exported, sample.source, labels=labels, atol=atol, rtol=rtol
        )
        largest = max(largest, diff)
        if problem:
            problems.append(problem)
    if problems:
        raise ExportMismatchError(
            f"the bioimage.io module's outputs differ from the eager model's on {len(problems)} of "
            f"{len(samples)} sample image(s):\n  " + "\n  ".join(problems)
        )
    check = {"max_abs_diff": largest, "samples": [s.source for s in samples]}
    check_seconds = time.perf_counter() - start

    name = package_name(cfg, config_file)
    os.makedirs(output_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".bioimageio.", dir=output_dir)
    try:
        files = os.path.join(staging, "files")
        os.makedirs(files)
        test_input = _batched_rgb(samples[0]).numpy().astype(np.uint8)
        test_output = outputs[0].numpy().astype(np.int32 if labels else np.float32)
        _, descr = _write_package_files(
            files, name=name, cfg=cfg, data=data, test_input=test_input, test_output=test_output,
            labels=labels, samples=samples, check=check,
        )  # fmt: skip
        zip_path = os.path.join(staging, BIOIMAGEIO_ZIP)
        spec.save_bioimageio_package(descr, output_path=Path(zip_path))
        start = time.perf_counter()
        summary = core.test_model(zip_path, weight_format="torchscript", devices=[str(device)])
        test_seconds = time.perf_counter() - start
        if summary.status != "passed":
            raise BioimageioTestError(
                "bioimageio.core's model test failed on the package:\n  "
                + "\n  ".join(_failed_details(summary))
            )
        folder = os.path.join(staging, BIOIMAGEIO_FOLDER)
        spec.save_bioimageio_package_as_folder(zip_path, output_path=Path(folder))
        for entry in (BIOIMAGEIO_ZIP, BIOIMAGEIO_FOLDER):
            _replace(os.path.join(staging, entry), os.path.join(output_dir, entry))
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    info = {
        "format": "bioimageio",
        "file": BIOIMAGEIO_ZIP,
        "folder": BIOIMAGEIO_FOLDER,
        "name": name,
        "config_file": config_file,
        "weights": cfg.MODEL.WEIGHTS or None,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "device": str(device),
        "input": {
            "id": _INPUT_ID,
            "axes": "bcyx",
            "shape": "(1, 3, H, W)",
            "dtype": "uint8",
            "channels": "RGB",
        },
        "output": (
            {"id": "labels", "axes": "bcyx", "shape": "(1, 1, H, W)", "dtype": "int32"}
            if labels
            else {
                "id": "nucleus_probability",
                "axes": "bcyx",
                "shape": "(1, 1, H, W)",
                "dtype": "float32",
            }
        ),
        "bioimageio_core_test": {
            "status": summary.status,
            "bioimageio.core": core.__version__,
            "bioimageio.spec": spec.__version__,
            "seconds": round(test_seconds, 2),
        },
        "export_seconds": round(export_seconds, 2),
        "check_seconds": round(check_seconds, 2),
        "check": check,
    }
    return info


def _replace(source: str, destination: str) -> None:
    """Move ``source`` (file or folder) to ``destination``, replacing what is there."""
    if os.path.isdir(destination) and not os.path.islink(destination):
        old = tempfile.mkdtemp(prefix=".old.", dir=os.path.dirname(destination))
        os.replace(destination, os.path.join(old, "x"))
        os.replace(source, destination)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, destination)
