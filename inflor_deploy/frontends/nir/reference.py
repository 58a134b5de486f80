"""Level 1 for NIR artifacts: what the imported float IR is compared with.

A NIR artifact has no PyTorch module of its own. Level 1 of the ladder
compares the imported float IR, layer by layer and teacher-forced, with one
of two references (each has ``run(images) -> FloatRun``, like
:class:`~inflor_deploy.frontends.fx.TracedModel`):

* :class:`FrameworkReference`: **the framework's own forward pass**: the
  module the user exported (snnTorch, SpikingJelly, ...), run by the framework
  itself; forward hooks on the submodules named like the IR's neurons record
  their spikes (nirtorch names a node after its module path; fx writes
  ``features.0`` as ``features_0``). From the CLI: ``verify OUT
  --reference-model MODULE:FACTORY --reference-weights W.pt``; from Python:
  ``run_ladder(artifact, data, model=FrameworkReference(net, time_mode="single"))``.
* :class:`NirReference` (the default): **the NIR graph as NIR defines it**,
  evaluated here in float64 numpy, independently of the importer's mapping:
  forward Euler with the reading's ``dt`` on the file's own parameters
  (``v += dt/tau (v_leak - v) + dt r/tau I``; IF ``v += dt r I``; CubaLIF's
  current first), the reading's comparison, reset mode, amount and timing
  (the choices the import states), SumPool as a sum, Scale as a product,
  dilated convolutions as dilated. It checks every conversion the importer
  makes (time constants, gains, thresholds, folds, shapes), not the
  framework's training-time arithmetic.

Both differ from the float32 IR only by rounding (the numpy run is float64;
a framework may order float operations otherwise only on the layers the
import marks ``inexact``): mismatches are allowed as near-ties, counted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from inflor_deploy.backends.sim.float_ir import FloatRun
from inflor_deploy.errors import InflorError
from inflor_deploy.frontends.input_spec import declared_input_spec
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, infer_shapes

__all__ = ["FrameworkReference", "NirReference", "check_against_reference"]


def _normalized(images: np.ndarray, graph: Graph) -> np.ndarray:
    """The data as the exported model's caller handed them over (a declared normalization applied), float64."""
    x = np.asarray(images, np.float64)
    spec = declared_input_spec(graph)
    if spec.mean is not None:
        rank = len(graph.input.shape)
        view = (1,) * (x.ndim - rank) + (-1,) + (1,) * (rank - 1)
        x = (x - np.asarray(spec.mean, np.float64).reshape(view)) / np.asarray(spec.std, np.float64).reshape(view)
    return x


def _time_major(images: np.ndarray, graph: Graph) -> np.ndarray:
    """``[T, B, ...]``: the frame at every step (direct) or frame t at step t (sequence)."""
    T = graph.timesteps
    if graph.input.encoding == "sequence":
        return np.ascontiguousarray(np.swapaxes(images, 0, 1))
    return np.broadcast_to(images, (T, *images.shape)).copy()


# --------------------------------------------------------------------------- the NIR graph, as NIR defines it


def _pair(value) -> tuple[int, int]:
    array = np.asarray(value).ravel()
    return (int(array[0]), int(array[0])) if array.size == 1 else (int(array[0]), int(array[1]))


def _conv(x: np.ndarray, node) -> np.ndarray:
    """NIR Conv2d (a cross-correlation, as torch's), float64: x [N, C, H, W]."""
    w = np.asarray(node.weight, np.float64)
    o, cg, kh, kw = w.shape
    stride, dilation = _pair(node.stride), _pair(node.dilation)
    groups = int(np.asarray(node.groups).ravel()[0])
    padding = node.padding
    if isinstance(padding, (str, bytes)):
        padding = padding.decode() if isinstance(padding, bytes) else padding
        padding = (0, 0) if padding == "valid" else ((dilation[0] * (kh - 1)) // 2, (dilation[1] * (kw - 1)) // 2)
    ph, pw = _pair(padding)
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    span_h, span_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (span_h, span_w), axis=(2, 3))
    windows = windows[:, :, :: stride[0], :: stride[1], :: dilation[0], :: dilation[1]]  # N, C, OH, OW, kh, kw
    out = []
    for g in range(groups):
        part = windows[:, g * cg : (g + 1) * cg]
        out.append(np.einsum("ncijab,ocab->noij", part, w[g * (o // groups) : (g + 1) * (o // groups)]))
    y = np.concatenate(out, axis=1)
    return y + np.asarray(node.bias, np.float64).reshape(1, -1, 1, 1)


def _pool(x: np.ndarray, node, total: bool) -> np.ndarray:
    kh, kw = _pair(node.kernel_size)
    sh, sw = _pair(node.stride)
    if _pair(node.padding) != (0, 0):
        raise InflorError("the NIR reference evaluates unpadded pooling only (as the import)")
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    return windows.sum(axis=(-2, -1)) if total else windows.mean(axis=(-2, -1))


class NirReference:
    """The NIR graph run as NIR defines it, in float64 numpy (module docstring).

    Args:
        nir_graph: The ``nir.NIRGraph`` (as read from the artifact's ``.nir`` source).
        imported: The float IR the import produced (its Input declaration, readout, and the
            choices the import states per neuron: compare, reset mode and amount, timing,
            spike value).
        dt: The step the import used.
    """

    time_mode = "NIR reference (numpy)"
    level1_name = "NIR graph as NIR defines it (numpy, float64) vs float IR"

    def __init__(self, nir_graph, imported: Graph, dt: float | None):
        from inflor_deploy.frontends.nir.importer import _order
        from inflor_deploy.nir_semantics import graph_metadata

        self.nir = nir_graph
        self.graph = imported
        self.dt = dt
        self.order = _order(nir_graph, graph_metadata(nir_graph))
        self.sources: dict[str, list[str]] = {k: [] for k in nir_graph.nodes}
        for a, b in nir_graph.edges:
            self.sources[b].append(a)
        self.neurons = {x.name: x for x in imported.of_type(n.Neuron)}
        # Every layer: float64 numpy against the float32 IR; ties within float32 rounding are excused.
        self.inexact = frozenset(self.neurons)

    def run(self, images: np.ndarray) -> FloatRun:
        graph, T = self.graph, self.graph.timesteps
        x = _time_major(_normalized(images, graph), graph)
        batch = x.shape[1]
        values: dict[str, np.ndarray] = {}
        spikes: dict[str, np.ndarray] = {}
        membranes: dict[str, np.ndarray] = {}
        scores = None
        for key in self.order:
            node = self.nir.nodes[key]
            kind = type(node).__name__
            ins = [values[s] for s in self.sources[key]]
            if kind == "Input":
                shape = tuple(int(s) for s in np.asarray(node.input_type["input"]).ravel())
                values[key] = x.reshape(T, batch, *shape)
                continue
            total = ins[0]
            for extra in ins[1:]:
                total = total + extra
            flat = total.reshape(T * batch, *total.shape[2:])
            if kind in ("Affine", "Linear"):
                y = flat.reshape(T * batch, -1) @ np.asarray(node.weight, np.float64).T
                if kind == "Affine":
                    y = y + np.asarray(node.bias, np.float64)
            elif kind == "Conv2d":
                y = _conv(flat, node)
            elif kind in ("AvgPool2d", "SumPool2d"):
                y = _pool(flat, node, total=kind == "SumPool2d")
            elif kind == "Flatten":
                y = flat.reshape(T * batch, -1)
            elif kind == "Scale":
                y = flat * np.asarray(node.scale, np.float64)
            elif kind in ("IF", "LIF", "CubaLIF"):
                out, h = self._neuron(key, node, total)
                spikes[key], membranes[key] = out.astype(np.uint8), h
                neuron = self.neurons[key]
                values[key] = out * neuron.spike_value
                continue
            elif kind == "LI":
                q = self.dt / np.asarray(node.tau, np.float64)
                r, leak = np.asarray(node.r, np.float64), np.asarray(node.v_leak, np.float64)
                v = np.zeros_like(total[0])
                trace = []
                for t in range(T):
                    v = v + q * (leak - v) + q * r * total[t]
                    trace.append(v)
                scores = np.mean(trace, axis=0).reshape(batch, -1)
                values[key] = np.stack(trace)
                continue
            elif kind == "Output":
                if scores is None:
                    readout = self.graph.output.readout
                    scores = (total.sum(0) if readout == "spike_count" else total.mean(0)).reshape(batch, -1)
                continue
            else:
                raise InflorError(f"the NIR reference cannot evaluate node {key!r} ({kind})")
            values[key] = y.reshape(T, batch, *y.shape[1:])
        return FloatRun(scores=np.asarray(scores), spikes=spikes, membranes=membranes)

    def _neuron(self, key: str, node, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One IF/LIF/CubaLIF layer over T steps, forward Euler in float64 with the import's stated choices."""
        ir = self.neurons[key]
        kind = type(node).__name__
        dt = self.dt
        vth = np.asarray(node.v_threshold, np.float64)
        v_reset = np.asarray(node.v_reset, np.float64)
        fires = np.greater_equal if ir.compare == ">=" else np.greater
        amount = ir.spike_value if ir.reset_amount is None else ir.reset_amount
        amount = np.asarray(n.per_channel(amount, current.ndim - 1), np.float64)
        if kind == "IF":
            r = np.asarray(node.r, np.float64)

            def charge(u, x, i):
                return u + dt * r * x, i
        else:
            tau = np.asarray(node.tau if kind == "LIF" else node.tau_mem, np.float64)
            r, leak = np.asarray(node.r, np.float64), np.asarray(node.v_leak, np.float64)
            if kind == "LIF":
                def charge(u, x, i):
                    return u + dt / tau * (leak - u) + dt * r / tau * x, i
            else:
                tau_syn, w_in = np.asarray(node.tau_syn, np.float64), np.asarray(node.w_in, np.float64)

                def charge(u, x, i):
                    i = i + dt / tau_syn * (w_in * x - i)  # the current first (snnTorch, SpikingJelly, Loihi)
                    return u + dt / tau * (leak - u) + dt * r / tau * i, i
        u = np.broadcast_to(v_reset, current.shape[1:]).astype(np.float64)
        i = np.zeros(current.shape[1:])
        out, hs = [], []
        for t in range(current.shape[0]):
            if ir.reset_timing == "next_step":
                # snnTorch's reset_delay: the spike decided from U[t-1] resets now, undecayed.
                r_prev = fires(u, vth).astype(np.float64)
                if ir.reset == "subtract":
                    h, i = charge(u, current[t], i)
                    h = h - r_prev * amount
                elif ir.reset == "zero":
                    h, i = charge((1 - r_prev) * u, current[t], i)
                else:
                    h, i = charge(u, current[t], i)
                o = fires(h, vth).astype(np.float64)
                u = h
            else:
                h, i = charge(u, current[t], i)
                o = fires(h, vth).astype(np.float64)
                if ir.reset == "subtract":
                    u = h - amount * o
                elif ir.reset == "zero":
                    u = np.where(o > 0, v_reset, h)
                else:
                    u = h
            out.append(o)
            hs.append(h)
        return np.stack(out), np.stack(hs)


# --------------------------------------------------------------------------- the framework's own module


_CAMEL = re.compile(r"(?<=[a-z])([A-Z])")
_ILLEGAL = re.compile("[^0-9a-zA-Z_]+")


def _reset_state(model: nn.Module) -> None:
    """Put every neuron of a snnTorch or SpikingJelly model back in its initial state.

    snnTorch neurons have ``reset_mem()`` (``snntorch.utils.reset`` reaches only top-level
    children); SpikingJelly's stateful modules (``MemoryModule``: they keep ``_memories``)
    have ``reset()``, what ``functional.reset_net`` calls.
    """
    for module in model.modules():
        if callable(getattr(module, "reset_mem", None)):
            module.reset_mem()
        elif hasattr(module, "_memories") and callable(getattr(module, "reset", None)):
            module.reset()


class FrameworkReference:
    """The exported module, run by its framework; its neurons' spikes recorded by name (module docstring).

    Args:
        model: The ``nn.Module`` that was exported (with its trained weights), or a
            zero-argument callable building it afresh (then every batch runs on a fresh
            module: no state to reset).
        time_mode: ``"single"``: called once per step on ``[B, C, H, W]`` (snnTorch with
            ``init_hidden=True``, SpikingJelly ``step_mode="s"``); ``"multi"``: called once
            on ``[T, B, C, H, W]`` (SpikingJelly ``step_mode="m"``).
        reset: Called with the module before each batch to clear its state (default: snnTorch's
            ``reset_mem`` and SpikingJelly's ``reset`` on every submodule that has them).
        inexact: IR neuron names whose float order differs (set by the ladder from the import).
    """

    def __init__(self, model: nn.Module | Callable[[], nn.Module], time_mode: str = "single",
                 reset: Callable[[nn.Module], None] | None = None, inexact: frozenset[str] = frozenset()):  # fmt: skip
        if time_mode not in ("single", "multi"):
            raise InflorError(f"time_mode {time_mode!r}: use 'single' (called once per step) or 'multi' ([T, B, ...])")
        self.model = model
        self.time_mode = time_mode
        self.reset = reset or _reset_state
        self.inexact = frozenset(inexact)
        self.graph: Graph | None = None

    @property
    def level1_name(self) -> str:
        return "the framework's own forward pass vs float IR (from NIR)"

    def bind(self, graph: Graph, inexact: frozenset[str] = frozenset()) -> "FrameworkReference":
        """Attach the imported IR (its neuron names, shapes, T, readout, Input declaration)."""
        self.graph = graph
        self.inexact = self.inexact | frozenset(inexact)
        return self

    def _module(self) -> nn.Module:
        module = self.model if isinstance(self.model, nn.Module) else self.model()
        if not isinstance(module, nn.Module):
            raise InflorError(f"the reference model factory returned {type(module).__name__}, not an nn.Module")
        return module

    @staticmethod
    def _lookup(module: nn.Module, names: list[str]) -> dict[str, nn.Module]:
        """IR neuron name -> submodule: the module path itself, or the name torch.fx gives its call.

        nirtorch's ``torch_to_nir`` (SpikingJelly's exporter) names a node after its fx node:
        torch.fx (``fx/graph.py``: ``_snake_case``, ``_Namespace.create_name``) writes the
        path in snake case, replaces characters illegal in identifiers by ``_`` and prefixes
        a leading digit with ``_``: ``features.0`` -> ``features_0``, ``1`` -> ``_1``.
        """
        found = dict(module.named_modules())
        by_fx: dict[str, list[str]] = {}
        for path in found:
            spelled = _ILLEGAL.sub("_", _CAMEL.sub(r"_\1", path).lower())
            by_fx.setdefault(f"_{spelled}" if spelled[:1].isdigit() else spelled, []).append(path)
        out = {}
        for name in names:
            if name in found:
                out[name] = found[name]
            elif len(by_fx.get(name, [])) == 1:
                out[name] = found[by_fx[name][0]]
        return out

    def run(self, images: np.ndarray) -> FloatRun:
        if self.graph is None:
            raise InflorError("FrameworkReference.run needs the imported graph: call bind(graph) first")
        graph, T = self.graph, self.graph.timesteps
        shapes = infer_shapes(graph)
        names = [x.name for x in graph.of_type(n.Neuron)]
        module = self._module()
        probes = self._lookup(module, names)
        if not probes:
            raise InflorError(
                f"none of the NIR graph's neurons ({', '.join(names)}) is a submodule of the reference model "
                f"{type(module).__name__}; pass the module that was exported (nirtorch names nodes after module paths)"
            )
        outputs: dict[str, list[torch.Tensor]] = {name: [] for name in probes}

        def hook(name: str):
            def read(_module, _inputs, output):
                spikes = output[0] if isinstance(output, (tuple, list)) else output
                outputs[name].append(spikes.detach().clone())

            return read

        x = torch.from_numpy(_normalized(images, graph).astype(np.float32))
        handles = [m.register_forward_hook(hook(name)) for name, m in probes.items()]
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                self.reset(module)
                if self.time_mode == "single":
                    steps = [self._call(module, x[:, t] if graph.input.encoding == "sequence" else x) for t in range(T)]
                    out = torch.stack(steps)
                else:
                    seq = x.transpose(0, 1) if graph.input.encoding == "sequence" else x.unsqueeze(0).repeat(
                        T, *([1] * x.dim()))  # fmt: skip
                    out = self._call(module, seq.contiguous())
        finally:
            for handle in handles:
                handle.remove()
            self.reset(module)
            module.train(was_training)
        batch = x.shape[0]
        readout = graph.output.readout
        if out.dim() >= 2 and out.shape[0] == T and out.shape[1] == batch:
            scores = out.sum(0) if readout == "spike_count" else out.mean(0)
        else:
            scores = out  # the module reduced over time itself
        spikes = {}
        for name, parts in outputs.items():
            stacked = torch.stack(parts) if self.time_mode == "single" else parts[0]
            spikes[name] = stacked.reshape(T, batch, *shapes[name]).numpy().astype(np.uint8)
        return FloatRun(scores=scores.reshape(batch, -1).numpy().astype(np.float64), spikes=spikes, membranes={})

    @staticmethod
    def _call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = module(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def check_against_reference(graph: Graph, nir_path: str | Path, images: np.ndarray):
    """Level 1 of a written NIR file: the file evaluated as NIR defines it (recorded reading) vs ``graph``.

    Returns the :class:`~inflor_deploy.verify.LevelResult`.
    """
    from inflor_deploy.data.datasets import Dataset
    from inflor_deploy.frontends.nir.importer import import_nir, load_nir
    from inflor_deploy.verify import level1_torch_vs_float_ir

    back = import_nir(load_nir(nir_path), timesteps=graph.timesteps)
    reference = NirReference(back.nir_graph, back.graph, back.reading.dt)
    data = Dataset(name="check", images=np.asarray(images, np.float32), labels=np.zeros(len(images), np.int64),
                   num_classes=max(1, int(infer_shapes(graph)[graph.output.name][0])))  # fmt: skip
    return level1_torch_vs_float_ir(reference, graph, data)



def reference_for_manifest(manifest: dict, model=None):
    """Level 1's reference for a NIR artifact: ``(reference, notes)`` (``rebuild_traced``'s contract).

    The ``.nir`` source (hash-checked before) is read again with the recorded options. With
    ``model`` (a :class:`FrameworkReference`, an ``nn.Module``, or a callable building one) the
    reference is the framework's own forward pass; without, the NIR graph as NIR defines it.
    A module whose submodules declare SpikingJelly's ``step_mode = "m"`` runs multi-step, any
    other once per step; wrap it in :class:`FrameworkReference` to say otherwise.
    """
    from inflor_deploy.frontends.nir.importer import import_nir
    from inflor_deploy.frontends.source import recorded_input_spec

    info = manifest["source"]["model"]
    declared = recorded_input_spec(manifest)
    graph = info.get("file")
    if graph is None:
        if model is not None and type(model).__name__ == "NIRGraph":
            graph, model = model, None
        else:
            return None, ["the artifact was compiled from a NIR graph in memory; pass the graph "
                          "(run_ladder(artifact, data, model=graph)) to evaluate it"]
    imported = import_nir(
        graph, timesteps=int(info["timesteps"]), **info["nir_options"],
        input_range=list(declared.value_range), input_mean=declared.mean, input_std=declared.std,
        input_encoding=declared.encoding,
    )  # fmt: skip
    reading = imported.reading.to_dict()
    stated = f"read as {reading['convention']} (dt {reading['dt']}, compare {reading['compare']}, reset {reading['reset']})"
    if model is None:
        note = (f"reference: the NIR graph as NIR defines it, {stated}; pass the exported module "
                "(verify --reference-model) to compare the framework's own forward pass")
        return NirReference(imported.nir_graph, imported.graph, imported.reading.dt), [note]
    if not isinstance(model, FrameworkReference):
        module = model if isinstance(model, nn.Module) else None
        multi = module is not None and any(getattr(m, "step_mode", None) == "m" for m in module.modules())
        model = FrameworkReference(model, time_mode="multi" if multi else "single")
    model.bind(imported.graph, imported.inexact)
    return model, [f"reference: the framework's own forward pass ({model.time_mode}-step), IR {stated}"]
