"""Memory estimates: refuse a run the machine cannot hold, before it starts, and size batches to fit.

Why: ``inflor-deploy train -T 100000`` grew to 23.8 GB and was killed by
the kernel's OOM killer (no message, no cleanup); compile, verify and
``run --backend sim`` on a large T did the same. Every one of these runs
holds, for each sample in flight, every layer's activations at every
timestep, so memory is linear in ``T x samples``:

    bytes ~= (B_kind x activations + 16 B x sequence inputs) x T x samples
             (+ 16 B x parameters when training)

``activations`` is the number of values one sample produces in one
timestep: the sum of the output sizes of every node of the IR (the shapes
``report`` shows). Every readout is counted there: the accumulator of each
readout mode, the identity synapse a spike-count readout adds, and the
mean-membrane readout's v at every step (one accumulator value per step).
``sequence inputs`` is the size of one input frame when the Input is a
sequence (event data ``[N, T, C, H, W]``; 0 for direct encoding): every
one of a sample's T frames is held for the whole run, and the simulators
quantize the whole window at once (``quantize_input``: the float64 product
and its rounding alive together, then the int64 grades): measured 16.0 B
per frame value as peak RSS on the fixed-point simulator (2x64x64 events,
T = 48, 24 samples; the caller's float32 data come on top, loaded before
the estimate reads the available memory). A direct input holds one frame
per sample (no factor T). ``B_kind``, per activation, per timestep, per sample:

============ ===== =========================================================================
kind           B   where the figure comes from
============ ===== =========================================================================
``train``      16  measured: 16.3 (digits_cnn), 14.1 (resnet20), 13.9 (resnet19) -- autograd keeps
                   about four float32 tensors per activation; Adam adds 16 B per parameter
``recorded``   24  every layer's spikes and membranes kept (verify levels 1, 2, 4, the compile's
                   contracts, Lava traces): int64 u and v plus the spike are 17 B; measured 16 on
                   the compile's probe runs
``forward``     4  torch forward without gradients: measured 3.2-3.7 (digits_cnn), 1.5 (resnet20)
``simulate``    4  the fixed-point simulator, not recording: measured 1.7 (digits_cnn, pipelined)
============ ===== =========================================================================

The figures were measured as peak-RSS growth on CPU with torch 2.13; they
are estimates, not bounds, and the machine's other users are not counted.
Available memory is ``MemAvailable`` from ``/proc/meminfo`` (what the
kernel can give without swapping), lowered to the cgroup's limit where one
is set (containers), else ``os.sysconf``'s free pages. A run is refused
when its estimate exceeds that; batched work is sized to half of it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from inflor_deploy.errors import InflorError

__all__ = [
    "BYTES_PER_ACTIVATION",
    "Estimate",
    "MemoryLimitError",
    "activations",
    "available_bytes",
    "batch_size_for",
    "samples_estimate",
    "sequence_inputs",
    "training_estimate",
]

#: Bytes per activation, per timestep, per sample in flight (see the module docstring).
BYTES_PER_ACTIVATION = {"train": 16, "recorded": 24, "forward": 4, "simulate": 4}
#: Bytes per value of a sequence Input's frames, per timestep, per sample (see the module docstring).
SEQUENCE_INPUT_BYTES = 16
#: Bytes per parameter while training: weight, gradient and Adam's two moments, float32.
TRAIN_BYTES_PER_PARAMETER = 16
#: Batched work may use this fraction of the available memory (the rest is for everything else).
BATCH_FRACTION = 0.5


class MemoryLimitError(InflorError):
    """A run would need more memory than the machine has; the message gives the estimate and what to lower."""


def _gb(count: float) -> str:
    return f"{count / 1e9:,.1f} GB" if count >= 1e8 else f"{count / 1e6:,.1f} MB"


def available_bytes() -> int:
    """Memory this process can still get without swapping: MemAvailable, capped by a cgroup limit."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return 1 << 62  # unknown: do not refuse
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    ):
        try:
            limit, usage = Path(limit_file).read_text().strip(), Path(usage_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit() and usage.isdigit():
            available = min(available, max(int(limit) - int(usage), 0))
        break
    return available


def activations(graph) -> int:
    """Values one sample produces in one timestep: the output sizes of every IR node, summed."""
    from inflor_deploy.ir.graph import infer_shapes

    return sum(math.prod(shape) for shape in infer_shapes(graph).values())


def sequence_inputs(graph) -> int:
    """Values of one input frame when the Input is a sequence (a new frame held for every step), else 0."""
    source = graph.input
    return math.prod(source.shape) if source.encoding == "sequence" else 0


@dataclass(frozen=True)
class Estimate:
    """Memory a run needs.

    Attributes:
        what: The run (``"training digits_cnn"``).
        bytes: The estimate.
        formula: How it was computed, with the numbers.
        lower: What the user can lower to fit.
    """

    what: str
    bytes: int
    formula: str
    lower: str
    per_timestep: int = 0
    fixed: int = 0

    def require(self, available: int | None = None) -> None:
        """Raise :class:`MemoryLimitError` when the estimate exceeds the available memory."""
        available = available_bytes() if available is None else available
        if self.bytes > available:
            fits = (available - self.fixed) // self.per_timestep if self.per_timestep else 0
            hint = f" (about T={fits:,} would fit)" if fits >= 1 and self.lower.startswith(("-T", "T")) else ""
            raise MemoryLimitError(
                f"{self.what} needs about {_gb(self.bytes)} of memory ({self.formula}); {_gb(available)} is "
                f"available on this machine. Lower {self.lower}{hint}"
            )


def _estimate(kind: str, what: str, elements: int, timesteps: int, samples: int, lower: str,
              extra: int = 0, extra_text: str = "", frames: int = 0) -> Estimate:  # fmt: skip
    per = BYTES_PER_ACTIVATION[kind]
    plural = "s" if samples != 1 else ""
    held = f"{per} B x {elements:,} activations"
    if frames:
        held = f"({held} + {SEQUENCE_INPUT_BYTES} B x {frames:,} sequence input values)"
    formula = f"{held} x T={timesteps:,} x {samples:,} sample{plural}{extra_text}"
    per_timestep = (per * elements + SEQUENCE_INPUT_BYTES * frames) * samples
    return Estimate(what, per_timestep * timesteps + extra, formula, lower, per_timestep, extra)


def layer_graph(model, timesteps: int | None = None):
    """The float IR of a zoo model, traced at T = 1 (the layers' shapes do not depend on T), labelled with ``timesteps``.

    Tracing runs one example forward pass; at the T being checked that pass could
    itself be what does not fit, so it runs one step.
    """
    from inflor_deploy.frontends.fx import trace
    from inflor_deploy.ir import Graph

    graph = trace(model, timesteps=1)
    return Graph(graph.nodes, timesteps or model.config.timesteps, graph.name)


def training_estimate(model, timesteps: int, batch_size: int, sequence: bool = False) -> Estimate:
    """Memory one training step of ``model`` needs (activations kept for the backward pass, Adam's state).

    ``sequence``: the model is trained on event data (a new frame per step), whose T frames are held too.
    """
    graph = layer_graph(model)
    parameters = sum(p.numel() for p in model.parameters())
    extra = TRAIN_BYTES_PER_PARAMETER * parameters
    return _estimate(
        "train", f"training {getattr(getattr(model, 'config', None), 'arch', 'the model')} with T={timesteps:,}",
        activations(graph), timesteps, batch_size, f"-T (training batches are "
        f"{batch_size} samples)", extra, f" + {TRAIN_BYTES_PER_PARAMETER} B x {parameters:,} parameters",
        frames=math.prod(graph.input.shape) if sequence else 0,
    )  # fmt: skip


def batch_size_for(graph, kind: str, what: str, *, timesteps: int | None = None, wanted: int, lower: str,
                   steps_per_sample: int | None = None) -> int:  # fmt: skip
    """The largest batch (at most ``wanted``) whose estimate fits in half the available memory.

    Args:
        graph: The IR whose activations are held (float or fixed point).
        kind: A key of :data:`BYTES_PER_ACTIVATION`.
        what: The run, for the message.
        timesteps: Timesteps per sample (default: the graph's T).
        wanted: The batch the caller would use with memory to spare.
        lower: What the user can lower when not even one sample fits.
        steps_per_sample: Steps one sample occupies, when not T (a pipelined window: the reset interval).

    Raises:
        MemoryLimitError: One sample alone exceeds the available memory.
    """
    steps = steps_per_sample or timesteps or graph.timesteps
    one = _estimate(kind, what, activations(graph), steps, 1, lower, frames=sequence_inputs(graph))
    available = available_bytes()
    one.require(available)
    return max(1, min(wanted, int(available * BATCH_FRACTION) // max(one.bytes, 1)))


def samples_estimate(graph, kind: str, what: str, samples: int, lower: str, steps_per_sample: int | None = None) -> Estimate:
    """The estimate of ``samples`` samples held at once (work that cannot be batched)."""
    return _estimate(kind, what, activations(graph), steps_per_sample or graph.timesteps, samples, lower,
                     frames=sequence_inputs(graph))
