"""ONNX: the float IR <-> per-timestep ONNX, and the integer (fixed-point) ONNX.

``graph_to_onnx`` / ``onnx_to_graph`` write and read the float exchange file
(:mod:`~inflor_deploy.backends.onnx.float_model`); the integer model is
:mod:`~inflor_deploy.backends.onnx.fixed_model`. Running either with
onnxruntime lives in :mod:`inflor_deploy.backends.onnx.runtime` (not imported
here, so that importing the writer does not load onnxruntime).
"""

from inflor_deploy.backends.onnx.float_model import (
    OnnxFormatError,
    UnsupportedOperatorError,
    graph_to_onnx,
    onnx_to_graph,
    save_onnx,
)
from inflor_deploy.errors import ExportError

__all__ = [
    "ExportError",
    "OnnxFormatError",
    "UnsupportedOperatorError",
    "graph_to_onnx",
    "onnx_to_graph",
    "save_onnx",
]
