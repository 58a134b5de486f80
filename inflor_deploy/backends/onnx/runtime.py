"""Step a per-timestep ONNX model (see :mod:`inflor_deploy.backends.onnx.float_model`) with onnxruntime.

This is how the exported file is checked against the float IR: onnxruntime
runs the graph T times, feeding every ``<neuron>.u_next`` / ``<readout>.acc_next``
back as the next step's ``<neuron>.u`` / ``<readout>.acc``.

onnxruntime's kernels sum convolutions and matrix products in their own
order, so its spikes can differ from the float IR's where a membrane lies
within float rounding of the threshold; compare with
:func:`inflor_deploy.backends.sim.compare.spike_mismatches` and the float IR's
membranes. The ONNX neuron does not output H, so membranes are not returned.
Graph optimizations are off by default so that onnxruntime evaluates the
nodes as written (fusing Conv and BatchNormalization would change the
rounding and add mismatches that are not the file's).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from inflor_deploy.backends.onnx.float_model import DOMAIN, OnnxFormatError
from inflor_deploy.backends.sim.float_ir import FloatRun

__all__ = ["run_onnx"]


def _name(proto: onnx.NodeProto) -> str:
    return proto.name or proto.output[0]


def _state_dims(value: onnx.ValueInfoProto, batch: int) -> tuple[int, ...]:
    dims = value.type.tensor_type.shape.dim
    per_sample = []
    for d in dims[1:]:
        if not d.HasField("dim_value"):
            raise OnnxFormatError(f"state input {value.name!r} needs a known shape after the batch dimension")
        per_sample.append(int(d.dim_value))
    return (batch, *per_sample)


def model_timesteps(model: onnx.ModelProto, timesteps: int | None) -> int:
    """T as given, else the model's ``inflor.timesteps`` metadata; must be >= 1."""
    if timesteps is None:
        meta = {p.key: p.value for p in model.metadata_props}
        if "inflor.timesteps" not in meta:
            raise OnnxFormatError("the ONNX model does not record its timesteps; pass timesteps=T")
        timesteps = int(meta["inflor.timesteps"])
    if timesteps < 1:
        raise OnnxFormatError(f"timesteps must be >= 1, got {timesteps}")
    return timesteps


def cpu_session(model: onnx.ModelProto, optimize: bool, threads: int) -> ort.InferenceSession:
    """An onnxruntime CPU session that runs the graph as written unless ``optimize``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_onnx(
    model: onnx.ModelProto,
    images: np.ndarray,
    timesteps: int | None = None,
    optimize: bool = False,
    threads: int = 2,
) -> FloatRun:
    """Run the ONNX model for T timesteps on a batch of static images.

    Args:
        model: A per-timestep model written by
            :func:`~inflor_deploy.backends.onnx.float_model.graph_to_onnx`.
        images: ``[B, C, H, W]`` float images (direct encoding: the same
            frame at every step), or ``[B, T, C, H, W]`` when the model's
            ``inflor.input_encoding`` is ``sequence`` (frame t at step t).
        timesteps: T; default: the model's ``inflor.timesteps`` metadata.
        optimize: Let onnxruntime rewrite the graph (ORT_ENABLE_ALL) instead
            of running it as written.
        threads: onnxruntime intra-op threads.

    Returns:
        A :class:`~inflor_deploy.backends.sim.float_ir.FloatRun` with ``scores``
        (float32, per the Accumulator's ``readout``: ``A[T-1] / T``, the mean of
        ``A[t]``, or ``A[T-1]``) and ``spikes`` (neuron name -> ``[T, B, ...]``
        uint8); ``membranes`` stays empty.

    Raises:
        OnnxFormatError: No timesteps, or no Neuron/Accumulator state to step.
    """
    timesteps = model_timesteps(model, timesteps)
    images = np.ascontiguousarray(images, dtype=np.float32)
    batch = images.shape[0]
    sequence = {p.key: p.value for p in model.metadata_props}.get("inflor.input_encoding") == "sequence"
    if sequence and (images.ndim < 2 or images.shape[1] != timesteps):
        raise OnnxFormatError(f"a sequence model takes [B, T = {timesteps}, ...] inputs; got shape {images.shape}")

    neurons = [p for p in model.graph.node if p.domain == DOMAIN and p.op_type == "Neuron"]
    readouts = [p for p in model.graph.node if p.domain == DOMAIN and p.op_type == "Accumulator"]
    if len(readouts) != 1:
        raise OnnxFormatError(f"expected one {DOMAIN}.Accumulator node, found {len(readouts)}")
    readout = readouts[0]
    # state input -> the output that holds its next value
    feedback = {p.input[1]: p.output[1] for p in neurons}
    feedback[readout.input[1]] = readout.output[0]
    graph_inputs = {v.name: v for v in model.graph.input}
    state = {name: np.zeros(_state_dims(graph_inputs[name], batch), np.float32) for name in feedback}
    for p in neurons:  # a neuron's membrane starts at its v_reset (SpikingJelly)
        v_reset = next((helper.get_attribute_value(a) for a in p.attribute if a.name == "v_reset"), 0.0)
        state[p.input[1]] += np.float32(v_reset)
    attrs = {a.name: helper.get_attribute_value(a) for a in readout.attribute}
    kind = attrs.get("readout", b"mean_current")
    kind = kind.decode() if isinstance(kind, bytes) else kind
    initializers = {i.name for i in model.graph.initializer}
    image_names = [v for v in graph_inputs if v not in feedback and v not in initializers]
    if len(image_names) != 1:
        raise OnnxFormatError(f"expected one image input besides the states; found {image_names}")

    session = cpu_session(model, optimize, threads)

    spike_outputs = [p.output[0] for p in neurons]
    fetch = spike_outputs + list(feedback.values())
    spikes: dict[str, list[np.ndarray]] = {_name(p): [] for p in neurons}
    total = None
    for t in range(timesteps):
        frame = np.ascontiguousarray(images[:, t]) if sequence else images
        values = dict(zip(fetch, session.run(fetch, {image_names[0]: frame, **state})))
        for proto in neurons:
            spikes[_name(proto)].append(values[proto.output[0]] != 0)
        state = {name: values[next_name] for name, next_name in feedback.items()}
        membrane = state[readout.input[1]]
        total = membrane if total is None else total + membrane
    # The readout's score, as run_float computes it (float32).
    if kind == "mean_membrane":
        scores = total / np.float32(timesteps)
    elif kind == "spike_count":
        scores = state[readout.input[1]]
    else:
        scores = state[readout.input[1]] / np.float32(timesteps)
    return FloatRun(
        scores=scores.astype(np.float32),
        spikes={name: np.stack(steps).astype(np.uint8) for name, steps in spikes.items()},
    )
