"""Export: PyTorch model -> float IR, IR <-> per-timestep ONNX.

``model_to_ir`` reads a model built by ``build_model``; ``graph_to_onnx`` /
``onnx_to_graph`` write and read the ONNX exchange file; ``export_onnx``
does both steps and saves atomically. Running the ONNX file with
onnxruntime lives in :mod:`inflor_deploy.export.ort_run` (not imported
here, so that importing the exporter does not load onnxruntime).
"""

from inflor_deploy.export.onnx_io import (
    OnnxFormatError,
    UnsupportedOperatorError,
    export_onnx,
    graph_to_onnx,
    onnx_to_graph,
    save_onnx,
)
from inflor_deploy.export.torch_to_ir import ExportError, UnsupportedLayerError, model_to_ir

__all__ = [
    "ExportError",
    "OnnxFormatError",
    "UnsupportedLayerError",
    "UnsupportedOperatorError",
    "export_onnx",
    "graph_to_onnx",
    "model_to_ir",
    "onnx_to_graph",
    "save_onnx",
]
