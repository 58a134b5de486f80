"""Load a NetX file with lava-dl, run it on Lava's Loihi 2 simulator, and check it against the simulator.

    load_network(path)                 -> lava.lib.dl.netx.hdf5.Network, built with the recorded load arguments
    run_netx(path, graph, images)      -> LavaRun    (the readout per sample; every layer's spikes and v on request)
    check_netx(path, graph, images)    -> NetxCheck  (bit for bit against the fixed-point simulator)

How a run is wired (what a user of the file does too, docs/netx.md):

* the stimulus is a ``lava.proc.io.source.RingBuffer`` connected to
  ``Network.inp``: sample k's integer frame ``round(x * grade_scale)`` in
  columns ``k*R + t`` (t < T), zero columns for the padding steps, in the
  first block's layout ((W, H, C) for a conv, the C-major flattened frame for
  a dense); Lava sends column ``g - 1`` at step ``g``;
* ``Network(..., reset_interval=R, reset_offset=1, input_message_bits=B)``
  makes every block a ``LIFReset`` that resets at our schedule's steps, and
  each block adds one step, so the network runs the simulator's pipelined
  view step for step;
* the readout is the last block's ``neuron.v``, read by a
  ``lava.proc.io.sink.Read`` once per sample (every step for a
  mean-membrane readout), exactly as :func:`~inflor_deploy.backends.lava.network.run_lava`
  reads our own network.

Runs are started non-blocking and watched
(:func:`~inflor_deploy.backends.lava.network._run_watched`): a ProcessModel
that raises would otherwise deadlock a blocking run. They are torn down
exactly like our own network's (:func:`~inflor_deploy.backends.lava.teardown.guarded_run`):
SIGINT, SIGTERM and SIGHUP raise
:class:`~inflor_deploy.interrupts.Interrupted`, the workers ignore them and
die with this process, and a failed or interrupted run kills every worker,
shuts Lava's shared-memory manager down and unlinks its segments.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inflor_deploy.errors import InflorError
from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, infer_shapes
from inflor_deploy.backends.lava.network import (
    LavaParity, LavaRun, _deskew, _from_lava, _lava, _readout_steps, _run_watched, _trace_steps,
    compare_runs, input_frames, readout_reader, readout_values,
)  # fmt: skip
from inflor_deploy.backends.lava.teardown import create_runtime, guarded_run
from inflor_deploy.backends.netx.writer import NetxPlan, plan_netx, read_netx_metadata

__all__ = ["NetxCheck", "check_netx", "load_network", "run_netx", "written_graph"]


def load_network(path: str | Path, metadata: dict[str, Any] | None = None):
    """``lava.lib.dl.netx.hdf5.Network`` for the file, with the load arguments recorded in it.

    Equivalent to ``hdf5.Network(net_config=path, reset_interval=R, reset_offset=1,
    input_message_bits=B)`` with the values of ``read_netx_metadata(path)["load"]``.
    """
    from inflor_deploy import lava_compat

    lava_compat.apply()
    from lava.lib.dl.netx import hdf5

    metadata = metadata or read_netx_metadata(path)
    return hdf5.Network(net_config=str(path), **metadata["load"])


def _matching_layers(graph: Graph, metadata: dict[str, Any], path) -> list[str]:
    """The IR layer of each NetX block; refuses a file exported from another graph."""
    layers = [node.name for node in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator)]
    written = [block["layer"] for block in metadata["blocks"]]
    if written != layers or metadata["timesteps"] != graph.timesteps:
        raise InflorError(
            f"{path} holds the blocks {written} (T = {metadata['timesteps']}), but the graph has the layers {layers} "
            f"(T = {graph.timesteps}); run the file with the artifact it was exported from"
        )
    return layers


def _check_input_grades(frames: np.ndarray, bits: int, path) -> None:
    """The frames must fit the payload the file was written for (unary spikes when ``bits`` is 0)."""
    lo, hi = int(frames.min(initial=0)), int(frames.max(initial=0))
    fits = (lo >= 0 and hi <= 1) if bits == 0 else max(abs(lo), abs(hi)).bit_length() + int(lo < 0) <= bits
    if not fits:
        payload = "binary spikes" if bits == 0 else f"{bits}-bit graded spikes"
        raise InflorError(
            f"these images give input grades {lo}..{hi}, but {path} was written for {payload} "
            "(pixels in [0, 1] times the compile's input scale); scale the images to [0, 1]"
        )


def run_netx(graph: Graph, path: str | Path, images: np.ndarray, *, record: bool = False) -> LavaRun:
    """Run ``images`` through the NetX file on ``Loihi2SimCfg(select_tag="fixed_pt")``.

    Args:
        graph: The scheduled fixed-point graph the file was exported from
            (its schedule and readout say when to read what).
        path: The NetX HDF5 file.
        images: ``[B, *input_shape]`` float images (quantized with the Input's grade scale).
        record: Also record every block's spikes and v at every global step.

    Returns:
        A :class:`~inflor_deploy.backends.lava.network.LavaRun` in the IR's
        layout: the readout per sample; spikes and v ``[G, ...]`` when recorded.
    """
    start = time.perf_counter()
    metadata = read_netx_metadata(path)
    layers = _matching_layers(graph, metadata, path)
    images = np.asarray(images)
    if images.ndim < 2 or images.shape[0] < 1 or tuple(images.shape[1:]) != tuple(graph.input.shape):
        raise InflorError(
            f"images must be [B, {', '.join(map(str, graph.input.shape))}] with B >= 1, got {images.shape}"
        )
    L = _lava()
    shapes = infer_shapes(graph)
    samples = images.shape[0]
    steps = _trace_steps(graph, samples) if record else _readout_steps(graph, samples)
    net = load_network(path, metadata)
    try:
        frames, _ = input_frames(graph, images, steps)  # [*lava_shape, steps]
        _check_input_grades(frames, metadata["load"]["input_message_bits"], path)
        if tuple(net.inp.shape) != frames.shape[:-1]:
            # A dense first block reads the frame flattened in the IR's C-major order.
            frames = _from_lava(np.moveaxis(frames, -1, 0), frames.ndim - 1).reshape(steps, -1).T
        source = L.FrameSource(data=np.ascontiguousarray(frames).astype(np.int32))
        source.s_out.connect(net.inp)
        blocks = dict(zip(layers, net.layers))
        readout, skip = readout_reader(L, graph, steps, samples)
        readout.connect_var(net.layers[-1].neuron.v)
        sinks, reads = {}, {}
        if record:
            for name, block in blocks.items():
                if name != graph.output.name:
                    sinks[name] = L.SpikeSink(shape=block.neuron.s_out.shape, buffer=steps)
                    block.neuron.s_out.connect(sinks[name].a_in)
                reads[name] = L.Read(buffer=steps, interval=1, offset=0)
                reads[name].connect_var(block.neuron.v)
        with guarded_run(source):
            t0 = time.perf_counter()
            create_runtime(source, L.Loihi2SimCfg(select_tag="fixed_pt"))
            t1 = time.perf_counter()
            _run_watched(source, L.RunSteps(num_steps=steps, blocking=False))
            t2 = time.perf_counter()
            acc = readout_values(graph, np.asarray(readout.data.get()), samples, skip)
            spikes = {
                name: _from_lava(np.moveaxis(np.asarray(sink.data.get()), -1, 0), len(shapes[name])).astype(np.uint8)
                for name, sink in sinks.items()
            }
            voltages = {
                name: np.rint(_from_lava(np.moveaxis(np.asarray(read.data.get()), -1, 0), len(shapes[name])))
                .astype(np.int64)
                for name, read in reads.items()
            }
    finally:
        net.net_config.f.close()  # netx keeps its h5py handle open; every value was copied when the blocks were built
    return LavaRun(
        accumulator=np.rint(acc).astype(np.int64),
        spikes=spikes,
        voltages=voltages,
        seconds=time.perf_counter() - start,
        compile_seconds=t1 - t0,
        run_seconds=t2 - t1,
        steps=steps,
        samples=samples,
        tag="fixed_pt",
        soft_reset="netx-stock-cuba",
        processes=2 + 2 * len(net.layers) + len(sinks) + len(reads),
    )


def written_graph(plan: NetxPlan) -> Graph:
    """The fixed-point graph the file computes: the planned graph with each inexact block as written (hard reset)."""
    replaced = {
        block.layer.name: dataclasses.replace(block.layer, reset="zero", reset_mant=0)
        for block in plan.blocks
        if block.inexact is not None
    }
    return plan.graph.replace_nodes(replaced.get(node.name, node) for node in plan.graph)


@dataclass
class NetxCheck:
    """The NetX file run by lava-dl on ``Loihi2SimCfg(fixed_pt)`` against the fixed-point simulator.

    Attributes:
        path: The file checked.
        samples: Samples run.
        parity: Bit for bit against the simulator of what the file states
            (:func:`written_graph`): every spike, every v of every block and the
            readout. For an exact export that is the artifact's graph.
        exact_export: Every block is the artifact's layer exactly (no ``--allow-inexact`` substitution).
        spike_agreement: Inexact exports: layer -> fraction of equal spikes
            against the artifact's own graph (samples' T steps); None when exact.
        class_agreement: Inexact exports: fraction of samples whose predicted
            class (argmax of the readout) equals the artifact's; None when exact.
        load_arguments: What ``netx.hdf5.Network`` was given besides the file.
    """

    path: str
    samples: int
    parity: LavaParity
    exact_export: bool
    spike_agreement: dict[str, float] | None
    class_agreement: float | None
    load_arguments: dict[str, int]

    @property
    def ok(self) -> bool:
        """The file runs bit-exactly as the artifact (exact export and parity)."""
        return self.exact_export and self.parity.ok

    def summary(self) -> str:
        where = (
            f"lava-dl netx.hdf5.Network({Path(self.path).name}) on Loihi2SimCfg(select_tag='fixed_pt'), "
            f"{self.samples} samples"
        )
        if not self.parity.ok:
            return f"{where}: NOT bit-exact with the fixed-point simulator: {self.parity.summary()}"
        same = (
            f"{where}: bit-exact with the fixed-point simulator (every spike, every v of "
            f"{len(self.parity.layers)} blocks, and the readout)"
        )
        if self.exact_export:
            return same
        worst = min(self.spike_agreement, key=self.spike_agreement.get) if self.spike_agreement else None
        spikes = f"min spike agreement {self.spike_agreement[worst]:.4f} ({worst})" if worst else "no spiking layers"
        return (
            f"{same} as written (soft reset -> hard reset); against the artifact's soft-reset model: {spikes}, "
            f"class agreement {self.class_agreement:.3f}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "samples": self.samples,
            "ok": self.ok,
            "exact_export": self.exact_export,
            "spike_agreement": self.spike_agreement,
            "class_agreement": self.class_agreement,
            "load_arguments": self.load_arguments,
            "parity": self.parity.to_dict(),
            "summary": self.summary(),
        }


def check_netx(
    graph: Graph, path: str | Path, images: np.ndarray, *, plan: NetxPlan | None = None
) -> NetxCheck:
    """Run the NetX file in Lava and compare it with the fixed-point simulator, bit for bit.

    Args:
        graph: The scheduled fixed-point graph the file was exported from.
        path: The NetX file.
        images: ``[B, *input_shape]`` float images.
        plan: The export's plan (for ``--allow-inexact`` files: which blocks were
            substituted); planned again from ``graph`` when None, which
            substitutes soft-reset layers as the writer does.
    """
    from inflor_deploy.backends.sim.fixed_point import simulate

    plan = plan or plan_netx(graph, allow_inexact=True)
    target = written_graph(plan)
    t0 = time.perf_counter()
    reference = simulate(target, images, view="pipelined", record=True)
    reference_seconds = time.perf_counter() - t0
    lava = run_netx(target, path, images, record=True)
    parity = compare_runs(target, reference, lava, reference_seconds=reference_seconds)
    spike_agreement = class_agreement = None
    if not plan.exact:
        trained = simulate(graph, images, view="aligned", record=True)
        spikes = _deskew(target, lava.spikes, lava.samples)
        spike_agreement = {name: float(np.mean(spikes[name] == trained.spikes[name])) for name in spikes}
        predicted = lava.accumulator.reshape(lava.samples, -1).argmax(1)
        class_agreement = float(np.mean(predicted == trained.accumulator.reshape(lava.samples, -1).argmax(1)))
    return NetxCheck(
        path=str(path),
        samples=lava.samples,
        parity=parity,
        exact_export=plan.exact,
        spike_agreement=spike_agreement,
        class_agreement=class_agreement,
        load_arguments=plan.load_arguments,
    )
