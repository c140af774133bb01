"""Export to TorchScript (tracing) and ONNX through Detectron2's ``TracingAdapter``, checked
against the eager model on sample images before anything is written."""

from .exporter import EXPORT_FORMATS, EXPORT_INFO_FILE, export_model
from .onnx_export import DEFAULT_ONNX_OPSET, OnnxExportError
from .output_check import ExportMismatchError, OutputTolerance, check_exported_outputs
from .sample_inputs import SampleInput, load_sample_inputs

__all__ = [
    "DEFAULT_ONNX_OPSET",
    "EXPORT_FORMATS",
    "EXPORT_INFO_FILE",
    "ExportMismatchError",
    "OnnxExportError",
    "OutputTolerance",
    "SampleInput",
    "check_exported_outputs",
    "export_model",
    "load_sample_inputs",
]
