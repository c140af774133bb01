"""Export a built model to TorchScript or ONNX, check the export against the eager model on
sample images, and only then write it (atomically) with a description of its inputs and
outputs."""

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Dict, Optional, Sequence

from detectron2.export import dump_torchscript_IR
from detectron2.modeling import GeneralizedRCNN
from torch import nn

from ..data.pixel_scale import scale_factor_at_test
from ..modeling.detection_caps import export_caps
from ..modeling.model_kind import is_semantic_model
from ..utils.atomic_io import atomic_open
from .bioimageio_package import BIOIMAGEIO_ZIP, export_bioimageio_package
from .onnx_export import DEFAULT_ONNX_OPSET, check_onnx_opset, export_onnx_bytes, load_onnx
from .output_check import ExportMismatchError, OutputTolerance, check_exported_outputs
from .sample_inputs import SampleInput, resizes_at_test
from .torchscript_export import load_torchscript, torchscript_bytes, trace_torchscript
from .traceable_model import build_traceable_model, flattened_output_names, run_eager

__all__ = ["EXPORT_FORMATS", "EXPORT_INFO_FILE", "export_model"]

logger = logging.getLogger(__name__)

EXPORT_FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx", "bioimageio": BIOIMAGEIO_ZIP}
"""Format -> name of the model file written into the output folder (bioimageio: also the
unpacked package, :mod:`.bioimageio_package`)."""
EXPORT_INFO_FILE = "export_info.json"

_RCNN_POSTPROCESSING = (
    "Outputs stop before Detectron2's detector_postprocess: boxes are in the coordinates of "
    "the (resized) input image, pred_masks are (R, 1, M, M) mask probabilities per box. To get "
    "results on the original image, scale the boxes by (width / input width, height / input "
    "height) and paste the masks into the image (detectron2.layers.paste_masks_in_image, "
    "threshold 0.5), or rebuild Instances and call "
    "detectron2.modeling.postprocessing.detector_postprocess."
)
_SEMANTIC_POSTPROCESSING = (
    "sem_seg is (K, H, W) at the size of the (resized) input image; resize it to the original "
    "size (bilinear) before taking the per-pixel decision."
)

_INTERIOR_BOUNDARY_POSTPROCESSING = (
    "sem_seg is (3, H, W) probabilities of background, nucleus interior and nucleus boundary, "
    "at the size of the input image. Nuclei: maskrcnnpp.structures.interior_boundary."
    "nuclei_from_interior_boundary(sem_seg) (interiors grown into the foreground "
    "p(background) < 0.5)."
)


def _write_ir_dump(module, output_dir: str) -> None:
    """Detectron2's TorchScript IR dump (code, graph, inlined graph, module tree), written to a
    temporary folder and then renamed file by file into ``output_dir``."""
    staging = tempfile.mkdtemp(prefix=".ts_ir.", dir=output_dir)
    try:
        dump_torchscript_IR(module, staging)
        for name in sorted(os.listdir(staging)):
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _traced_path_hint(cfg, samples: Sequence[SampleInput]) -> str:
    """Why a traced export can differ: it replays the control flow of the traced image."""
    height, width = samples[0].image.shape[-2:]
    hint = (
        f"The model was traced on {samples[0].source} ({height}x{width} input); a traced graph "
        f"replays that image's control flow, so inputs that take another path in the eager "
        f"model get other results."
    )
    window = cfg.MODEL.UNETPP.SLIDING_WINDOW_SIZE if "UNETPP" in cfg.MODEL else 0
    if window and is_semantic_model(cfg):
        sides = [max(s.image.shape[-2:]) for s in samples]
        if any(side > window for side in sides) and any(side <= window for side in sides):
            hint += (
                f" Here some samples exceed MODEL.UNETPP.SLIDING_WINDOW_SIZE {window} (predicted "
                f"window by window) and others do not: export with all samples on one side of "
                f"it, or with MODEL.UNETPP.SLIDING_WINDOW_SIZE 0 for whole-image inference."
            )
    return hint


def export_model(
    cfg,
    model: nn.Module,
    samples: Sequence[SampleInput],
    *,
    export_format: str,
    output_dir: str,
    opset: int = DEFAULT_ONNX_OPSET,
    tolerance: OutputTolerance = OutputTolerance(),
    dump_ir: bool = True,
    config_file: Optional[str] = None,
) -> Dict:
    """
    Trace ``model`` on ``samples[0]``, export it, load the export back from its bytes, run it
    and the eager model on every sample, compare (``check_exported_outputs``), and write
    ``<output_dir>/model.ts`` or ``model.onnx`` plus ``export_info.json``. "bioimageio":
    a BioImage Model Zoo package of the model, post-processing inside
    (:func:`.bioimageio_package.export_bioimageio_package`), plus ``export_info.json``.

    Args:
        cfg: the model's config (device, input format and size, score threshold).
        model: built from ``cfg``, weights loaded, in eval mode, on ``cfg.MODEL.DEVICE``.
        samples: preprocessed images (``load_sample_inputs``); the first one is traced.
        export_format: "torchscript", "onnx" or "bioimageio".
        opset: ONNX opset (ONNX only).
        dump_ir: also write Detectron2's TorchScript IR dump (TorchScript only).

    Returns:
        The content of ``export_info.json``: file, input and output description, and the
        check's report with the largest absolute difference per output.

    Raises:
        ExportMismatchError: the export computes something else; nothing is written.
        OnnxExportError: an operator has no ONNX translation; nothing is written.
    """
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"--format {export_format!r}: choose one of {sorted(EXPORT_FORMATS)}")
    if not samples:
        raise ValueError("export needs at least one sample image")
    if export_format == "bioimageio":
        info = export_bioimageio_package(
            cfg,
            model,
            samples,
            output_dir=output_dir,
            atol=tolerance.atol,
            rtol=tolerance.rtol,
            config_file=config_file,
        )
        with atomic_open(os.path.join(output_dir, EXPORT_INFO_FILE), "w") as f:
            json.dump(info, f, indent=2)
        return info
    if export_format == "onnx":
        check_onnx_opset(model, opset)  # before the slow part
    device = cfg.MODEL.DEVICE
    start = time.perf_counter()
    adapter = build_traceable_model(model, samples[0].image)
    names = flattened_output_names(adapter)
    eager = [run_eager(adapter, s.image) for s in samples]

    if export_format == "torchscript":
        module = trace_torchscript(adapter, samples[0].image)
        data = torchscript_bytes(module)
        run_exported = load_torchscript(data, device)
    else:
        module = None
        data = export_onnx_bytes(adapter, samples[0].image, names, opset)
        run_exported = load_onnx(data, device)
    export_seconds = time.perf_counter() - start

    start = time.perf_counter()
    exported = [run_exported(s.image) for s in samples]
    is_rcnn = isinstance(model, GeneralizedRCNN)
    try:
        report = check_exported_outputs(
            names,
            eager,
            exported,
            [s.source for s in samples],
            tolerance=tolerance,
            score_threshold=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST if is_rcnn else None,
        )
    except ExportMismatchError as e:
        raise ExportMismatchError(f"{e}\n{_traced_path_hint(cfg, samples)}") from e
    check_seconds = time.perf_counter() - start

    os.makedirs(output_dir, exist_ok=True)
    model_file = EXPORT_FORMATS[export_format]
    if module is not None and dump_ir:
        _write_ir_dump(module, output_dir)
    with atomic_open(os.path.join(output_dir, model_file), "wb") as f:
        f.write(data)
    info = {
        "format": export_format,
        "file": model_file,
        "opset": opset if export_format == "onnx" else None,
        "config_file": config_file,
        "weights": cfg.MODEL.WEIGHTS or None,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "device": str(device),
        "input": {
            "name": "image",
            "shape": "(C, H, W), any H and W",
            "dtype": "float32",
            "channels": cfg.INPUT.FORMAT,
            "values": "0..255; the model subtracts MODEL.PIXEL_MEAN and divides by MODEL.PIXEL_STD",
            # As evaluation and tools/predict.py: every image (or tile) resized by this factor,
            # whatever its size (maskrcnnpp.data.pixel_scale); None: fed as it is.
            "resize_before": (
                {"scale_factor": scale_factor_at_test(cfg), "interpolation": "bilinear"}
                if resizes_at_test(cfg)
                else None
            ),
        },
        "outputs": names,
        "samples": [
            {
                "source": s.source,
                "input_size": list(s.image.shape[-2:]),
                "original_size": [s.height, s.width],
            }
            for s in samples
        ],
        "postprocessing": (
            _RCNN_POSTPROCESSING
            if is_rcnn
            else _INTERIOR_BOUNDARY_POSTPROCESSING
            if getattr(model, "target", None) == "interior_boundary"
            else _SEMANTIC_POSTPROCESSING
            if "sem_seg" in names
            else None
        ),
        # a traced graph keeps the fixed caps for every image, whatever its size (the
        # per-megapixel caps of evaluation and tools/predict.py need the eager model's hooks)
        "detection_caps": export_caps(cfg) if is_rcnn else None,
        "export_seconds": round(export_seconds, 2),
        "check_seconds": round(check_seconds, 2),
        "check": report,
    }
    if is_rcnn:
        caps = info["detection_caps"]
        logger.warning(
            "the exported model keeps at most %d detections (TEST.DETECTIONS_PER_IMAGE) and %d "
            "proposals (MODEL.RPN.POST_NMS_TOPK_TEST) per image whatever its size (the "
            "*_PER_MEGAPIXEL caps do not apply; export_info.json 'detection_caps'): feed it tiles "
            "with fewer nuclei, or export with higher values",
            caps["TEST.DETECTIONS_PER_IMAGE"],
            caps["MODEL.RPN.POST_NMS_TOPK_TEST"],
        )
    with atomic_open(os.path.join(output_dir, EXPORT_INFO_FILE), "w") as f:
        json.dump(info, f, indent=2)
    return info
