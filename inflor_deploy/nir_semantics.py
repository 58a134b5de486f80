"""What a NIR neuron means in this project's terms, both ways; shared by the NIR front end and writer.

NIR (``nir`` 1.0.x) states continuous-time neurons::

    IF       dv/dt = r I                               z = v > v_threshold;  v <- v_reset where z
    LIF      tau dv/dt = (v_leak - v) + r I            (same firing and reset)
    CubaLIF  tau_syn dI/dt = -I + w_in S;  tau_mem dv/dt = (v_leak - v) + r I

It states neither the step ``dt`` nor a reset *mode* (every node resets to
``v_reset``; the subtract proposals NIR #63 and #137 are open), and the
frameworks that write NIR discretize differently. This module turns a NIR
neuron into the IR's :class:`~inflor_deploy.ir.Neuron` (import) and an IR
neuron into NIR parameters plus the metadata that says what NIR cannot (export).

**Discretization** (forward Euler with the exporter's step ``dt``, which is
what every exporter below computes)::

    v[t] = v[t-1] + (dt / tau) (v_leak - v[t-1]) + (dt r / tau) I[t]      (LIF)
    v[t] = v[t-1] + dt r I[t]                                             (IF)

i.e. the IR neuron ``H = v_reset + tau_ir (U - v_reset) + gain X`` with
``tau_ir = 1 - dt / tau`` and ``gain = dt r / tau`` (IF: ``tau_ir = 1``,
``gain = dt r``), leaking toward ``v_leak`` (which must equal ``v_reset``: the
IR leaks toward its reset potential). A gain within 2 float32 units in the
last place of 1 is 1: exporters compute ``r`` and ``tau`` in float32.

**Conventions** (:data:`CONVENTIONS`; read in each exporter's source; chosen
with ``--convention`` or detected by :func:`detect_convention`):

=============  ======  =======  =========================================  ==================================
convention     dt      compare  reset timing                               exporter's writing (source)
=============  ======  =======  =========================================  ==================================
nir            --dt    ``>``    same step (NIR's definition)               any; ``dt`` must be given for LIF
spikingjelly   1e-4    ``>=``   same step; float order of ``LIFNode``      ``IF(r=1/dt)``, ``LIF(tau=k dt,
                                                                           r=1 | k, v_leak=v_reset)``, float64
                                                                           (``nir_exchange/to_nir.py``)
snntorch       1e-4    ``>``    next step (``Leaky``'s ``reset_delay``)    ``LIF(tau=dt/(1-beta), r=tau/dt,
                                                                           v_leak=0, v_reset=0)`` in float32
                                                                           (``export_nir.py``)
norse          1e-3    ``>``    same step                                  ``LIF(tau=1/tau_mem_inv, r=1)``;
                                                                           Norse steps with dt = 1e-3
=============  ======  =======  =========================================  ==================================

A file this project wrote carries its own exact fields (:data:`META`), which
take precedence over every convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from inflor_deploy.errors import ExportError
from inflor_deploy.ir import nodes as n

#: Key of this project's metadata in a NIR graph's and in its nodes' ``metadata``.
META = "inflor_deploy"
#: The graph-level metadata's format tag and version.
META_FORMAT = "inflor-deploy-nir"
META_VERSION = 1
#: The step the SpikingJelly and snnTorch exporters (and importers) use by default.
EXPORTER_DT = 1e-4
#: The dt this project writes (the SpikingJelly/snnTorch value, so their importers read LIF time constants as meant).
EXPORT_DT = EXPORTER_DT
#: A ratio this close to 1 (float32 units in the last place) is 1: exporters compute r and tau in float32.
UNIT_ULPS = 2
RESETS = ("zero", "subtract")
NEURON_TYPES = ("IF", "LIF", "CubaLIF")


class NirImportError(ExportError):
    """A NIR graph (or one node of it) cannot be mapped onto the IR exactly; the message names the node and the fix."""


@dataclass(frozen=True)
class Convention:
    """How one family of NIR writers discretizes time and fires.

    Attributes:
        name: ``nir``, ``spikingjelly``, ``snntorch``, ``norse``.
        dt: The writer's step in seconds; None: not known (give ``--dt``).
        compare: ``">"`` or ``">="``.
        reset_timing: ``"same_step"`` or ``"next_step"`` (snnTorch's ``reset_delay``).
        charge: Float operation order of a leaky neuron: ``"euler"`` (``tau * U + gain * X``),
            ``"spikingjelly"`` (``LIFNode``'s ``decay_divide[_input]``), ``"snntorch"`` (``beta * U + X``
            with beta recovered from the exporter's float32 arithmetic).
        summary: One line for the user.
    """

    name: str
    dt: float | None
    compare: str
    reset_timing: str
    charge: str
    summary: str


CONVENTIONS: dict[str, Convention] = {
    "nir": Convention("nir", None, ">", "same_step", "euler",
                      "NIR's own definition: fire on v > v_threshold, reset to v_reset in the same step"),
    "spikingjelly": Convention("spikingjelly", EXPORTER_DT, ">=", "same_step", "spikingjelly",
                               "SpikingJelly's export_to_nir: dt 1e-4, IFNode/LIFNode firing on H >= v_threshold"),
    "snntorch": Convention("snntorch", EXPORTER_DT, ">", "next_step", "snntorch",
                           "snnTorch's export_to_nir: dt 1e-4, Leaky firing on U > threshold, its reset one step "
                           "late (reset_delay)"),
    "norse": Convention("norse", 1e-3, ">", "same_step", "euler",
                        "Norse's to_nir: r = 1, Norse's default step dt = 1e-3"),
}  # fmt: skip
CONVENTION_NAMES = tuple(CONVENTIONS)


@dataclass(frozen=True)
class Reading:
    """How a whole graph is read: the convention and the user's overrides, resolved.

    Attributes:
        convention: The convention in force (``inflor-deploy`` for a file this project wrote).
        dt: The step (None: no neuron needs one).
        compare: Override of the comparison, or None (the convention's / the recorded one).
        reset: ``"zero"`` or ``"subtract"`` to override every neuron, or None (NIR's reset to
            v_reset, or the mode this project recorded).
        evidence: Why this convention was chosen (printed and recorded).
        recorded: Whether neurons are rebuilt from this project's metadata.
    """

    convention: Convention
    dt: float | None
    compare: str | None
    reset: str | None
    evidence: str
    recorded: bool = False

    def to_dict(self) -> dict[str, Any]:
        compare = self.compare or ("as recorded" if self.recorded else self.convention.compare)
        return {"convention": self.convention.name, "dt": self.dt, "compare": compare,
                "reset": self.reset or ("as recorded" if self.recorded else "zero (to v_reset, NIR)"),
                "reset_timing": "as recorded" if self.recorded else self.convention.reset_timing, "evidence": self.evidence}  # fmt: skip


def plain_metadata(value: Any) -> Any:
    """A metadata value read back from HDF5 as plain Python (str, float, int, array, dict)."""
    if isinstance(value, dict):
        return {k: plain_metadata(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf8")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def graph_metadata(graph) -> dict[str, Any] | None:
    """This project's graph-level metadata of a ``nir.NIRGraph``, or None."""
    meta = plain_metadata(dict(getattr(graph, "metadata", None) or {})).get(META)
    return meta if isinstance(meta, dict) else None


def node_metadata(node) -> dict[str, Any] | None:
    """This project's metadata of one NIR node, or None."""
    meta = plain_metadata(dict(getattr(node, "metadata", None) or {})).get(META)
    return meta if isinstance(meta, dict) else None


def _arrays(node) -> list[np.ndarray]:
    names = {"IF": ("r", "v_threshold", "v_reset"), "LIF": ("tau", "r", "v_leak", "v_threshold", "v_reset"),
             "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in")}[type(node).__name__]
    return [np.asarray(getattr(node, name)) for name in names]


def _unit(ratio: np.ndarray) -> bool:
    """Every entry within :data:`UNIT_ULPS` float32 ulps of 1."""
    ratio = np.asarray(ratio, np.float64)
    return bool(ratio.size) and bool(np.all(np.abs(ratio - 1.0) <= UNIT_ULPS * np.finfo(np.float32).eps))


def _close32(a, b) -> bool:
    """Equal once rounded to float32 (the precision every exporter computes in)."""
    return bool(np.array_equal(np.asarray(a, np.float64).astype(np.float32), np.asarray(b, np.float64).astype(np.float32)))


def _spikingjelly_evidence(neurons: dict[str, Any]) -> tuple[float, str] | None:
    """(dt, evidence) when every neuron is written the way SpikingJelly's ``to_nir.py`` writes it."""
    if any(a.dtype != np.float64 for node in neurons.values() for a in _arrays(node)):
        return None
    ifs = [node for node in neurons.values() if type(node).__name__ == "IF"]
    dts = {float(1.0 / np.asarray(node.r, np.float64).ravel()[0]) for node in ifs}
    if len(dts) > 1 or any(len(np.unique(node.r)) != 1 for node in ifs):
        return None
    dt = dts.pop() if dts else EXPORTER_DT
    if dt == 1.0:
        return None  # r = 1 is also how sinabs and Norse write an IF (firing on '>'): not evidence of SpikingJelly
    for node in neurons.values():
        kind = type(node).__name__
        if kind == "LIF":
            k = np.asarray(node.tau, np.float64) / dt
            r = np.asarray(node.r, np.float64)
            if not (np.all(k >= 1) and np.array_equal(node.v_leak, node.v_reset)
                    and (np.all(r == 1.0) or _close32(r, k))):  # fmt: skip
                return None
        elif kind == "CubaLIF":
            tau_syn, tau_mem = np.asarray(node.tau_syn, np.float64), np.asarray(node.tau_mem, np.float64)
            if not (_close32(node.r, tau_mem / dt) and _close32(node.w_in, tau_syn / dt) and not np.any(node.v_leak)):
                return None
    return dt, (f"every neuron is written as SpikingJelly's export_to_nir writes it (float64 parameters; IF r = 1/dt; "
                f"LIF tau = k dt, r = 1 or k, v_leak = v_reset) with dt = {dt:g}")


def _snntorch_evidence(neurons: dict[str, Any]) -> str | None:
    """Evidence when every neuron is written the way snnTorch's ``export_nir.py`` writes ``Leaky``/``Synaptic``."""
    for node in neurons.values():
        kind = type(node).__name__
        if kind == "IF" or any(a.dtype != np.float32 for a in _arrays(node)):
            return None
        if np.any(node.v_leak) or np.any(node.v_reset):
            return None
        tau = node.tau if kind == "LIF" else node.tau_mem
        if not _unit(EXPORTER_DT * np.asarray(node.r, np.float64) / np.asarray(tau, np.float64)):
            return None
        if kind == "CubaLIF" and not _unit(EXPORTER_DT * np.asarray(node.w_in, np.float64)
                                           / np.asarray(node.tau_syn, np.float64)):  # fmt: skip
            return None
    return ("every neuron is a LIF/CubaLIF written as snnTorch's export_to_nir writes Leaky/Synaptic (float32 "
            "parameters, v_leak = v_reset = 0, r = tau/dt with dt = 1e-4)")


def detect_convention(graph, dt: float | None = None) -> tuple[str, str]:
    """``(convention name, evidence)`` for a ``nir.NIRGraph`` (module docstring for the rules).

    Order: this project's metadata; SpikingJelly's writing; snnTorch's writing; else ``nir``.
    The dtype of the parameters is part of the evidence: SpikingJelly fills them with
    ``np.full`` of Python floats (float64), snnTorch takes its float32 buffers. A step ``dt``
    the user gives that is not the one SpikingJelly's writing implies rules SpikingJelly out.
    """
    if graph_metadata(graph) is not None:
        return "inflor-deploy", "the file was written by inflor-deploy (metadata key 'inflor_deploy')"
    neurons = {k: v for k, v in graph.nodes.items() if type(v).__name__ in NEURON_TYPES}
    if not neurons:
        return "nir", "the graph has no neurons"
    found = _spikingjelly_evidence(neurons)
    if found is not None and (dt is None or _close32(dt, found[0])):
        return "spikingjelly", found[1]
    found = _snntorch_evidence(neurons)
    if found is not None:
        return "snntorch", found
    return "nir", "no exporter's writing recognized: NIR's own definition"


def resolve_reading(graph, *, convention: str | None = None, dt: float | None = None, compare: str | None = None,
                    reset: str | None = None) -> Reading:  # fmt: skip
    """The :class:`Reading` of ``graph`` from the user's options (None: detected / the default).

    Raises:
        NirImportError: an unknown convention, compare or reset, a non-positive dt.
    """
    if convention is not None and convention not in ("auto", *CONVENTION_NAMES):
        raise NirImportError(f"convention {convention!r}: use one of auto, {', '.join(CONVENTION_NAMES)}")
    if compare is not None and compare not in n.COMPARES:
        raise NirImportError(f"compare {compare!r}: use '>' or '>='")
    if reset is not None and reset not in RESETS:
        raise NirImportError(f"reset {reset!r}: use 'zero' (NIR's reset to v_reset) or 'subtract' (subtract v_threshold)")
    if dt is not None and not (math.isfinite(dt) and dt > 0):
        raise NirImportError(f"dt {dt!r}: the step must be a positive number of seconds, e.g. --dt 1e-4")
    meta = graph_metadata(graph)
    if convention in (None, "auto"):
        name, evidence = detect_convention(graph, dt)
    else:
        name, evidence = convention, f"given (--convention {convention})"
    if name == "inflor-deploy":
        if meta.get("format") != META_FORMAT or meta.get("format_version") != META_VERSION:
            raise NirImportError(
                f"the file's inflor-deploy metadata is {meta.get('format')!r} v{meta.get('format_version')!r}; this "
                f"version reads {META_FORMAT!r} v{META_VERSION}: export it again, or read it as plain NIR with "
                "--convention nir --dt SECONDS"
            )
        recorded = Convention("inflor-deploy", float(meta["dt"]), ">", "same_step", "recorded",
                              "inflor-deploy's own export: every neuron field recorded exactly")  # fmt: skip
        if dt is not None:
            raise NirImportError("--dt re-reads the time constants, but this file records every neuron exactly "
                                 "(inflor-deploy metadata); drop --dt, or pass --convention nir to ignore the metadata")
        return Reading(recorded, recorded.dt, compare, reset, evidence, recorded=True)
    chosen = CONVENTIONS[name]
    if dt is None and chosen.dt is None:
        # An IF has no time constant: dt only scales its input, by dt * r. Every writer makes that 1
        # (SpikingJelly r = 1/dt; sinabs and Norse r = 1 with a unit step), so an IF-only graph's
        # step is 1/r. A graph with LIF neurons needs the step: read_neuron asks for --dt.
        kinds = {type(v).__name__ for v in graph.nodes.values() if type(v).__name__ in NEURON_TYPES}
        rs = {float(np.asarray(v.r, np.float64).ravel()[0]) for v in graph.nodes.values() if type(v).__name__ == "IF"}
        if kinds == {"IF"} and len(rs) == 1 and all(len(np.unique(v.r)) == 1 for v in graph.nodes.values()
                                                    if type(v).__name__ == "IF"):  # fmt: skip
            r = rs.pop()
            if r > 0:
                return Reading(chosen, 1.0 / r, compare, reset,
                               f"{evidence}; only IF neurons, all with r = {r:g}: dt = 1/r (gain dt r = 1)")
    return Reading(chosen, dt if dt is not None else chosen.dt, compare, reset, evidence)


# --------------------------------------------------------------------------- per-neuron values


def uniform(value, what: str) -> float:
    """One number for the whole layer, or NirImportError naming ``what``."""
    array = np.asarray(value, np.float64)
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise NirImportError(f"{what} must be finite numbers, got {array.ravel()[:4].tolist()}")
    first = array.ravel()[0]
    if not np.all(array == first):
        raise NirImportError(
            f"{what} differs between neurons ({np.unique(array)[:4].tolist()}...); the IR has one per layer. Give every "
            "neuron of the layer the same value"
        )
    return float(first)


def per_channel_value(value, shape: tuple[int, ...], what: str):
    """A per-neuron NIR array as the IR holds it: one float, or float64 ``(C,)`` when it varies by channel only."""
    array = np.asarray(value, np.float64)
    if not np.all(np.isfinite(array)):
        raise NirImportError(f"{what} must be finite numbers")
    if array.size == 1:
        return float(array.ravel()[0])
    try:
        full = np.broadcast_to(array, shape)
    except ValueError:
        raise NirImportError(f"{what} has shape {array.shape}; the layer's shape is {shape}") from None
    if np.all(full == full.ravel()[0]):
        return float(full.ravel()[0])
    channels = full.reshape(shape[0], -1)
    if np.all(channels == channels[:, :1]):
        return channels[:, 0].copy()
    raise NirImportError(
        f"{what} differs within a channel; the IR holds one value per layer or per channel (the first dimension "
        f"of {shape}). Give the neurons of each channel one value"
    )


def invert_snntorch_beta(tau, r) -> tuple[float, bool]:
    """The float32 ``beta`` whose snnTorch export gives this ``tau`` (and ``r``), and whether it is unique.

    snnTorch's ``export_nir.py`` computes, in float32 numpy, ``tau = dt / (1 - beta)`` and
    ``r = tau / dt`` (dt = 1e-4). The naive inverse ``1 - dt / tau`` misses the float32 beta by an
    ulp for ~1 % of betas in [0.5, 1); here the float32 neighbours of the naive inverse are run
    through the exporter's own arithmetic and the one that reproduces the file's ``tau`` and ``r``
    is taken. Not unique (or none found: the naive value) means the export lost information
    (``1 - beta`` rounds for beta < 0.5): level 1 then counts the last-ulp differences as near-ties.
    """
    tau32 = np.float32(uniform(tau, "LIF tau"))
    r32 = np.float32(uniform(r, "LIF r"))
    naive = np.float32(1.0 - EXPORTER_DT / np.float64(tau32))
    candidates = [naive]
    up = down = naive
    for _ in range(4):
        up, down = np.nextafter(up, np.float32(2)), np.nextafter(down, np.float32(-1))
        candidates += [up, down]
    matches = []
    for beta in candidates:
        exported = (EXPORTER_DT / (np.float32(1) - np.asarray([beta], np.float32)))  # float32, as the exporter
        if exported[0] == tau32 and np.float32(exported / EXPORTER_DT)[0] == r32:
            matches.append(beta)
    if len(matches) >= 1:
        best = naive if naive in matches else matches[0]
        # Below 0.5, 1 - beta rounds in float32: several betas (some beyond the window searched) share it.
        return float(best), len(matches) == 1 and best >= 0.5
    return float(naive), False


def _gain(ratio: float, what: str) -> float:
    if not (math.isfinite(ratio) and ratio > 0):
        raise NirImportError(f"{what}: the input gain dt * r / tau = {ratio!r} must be a positive number; check r and dt")
    return 1.0 if _unit(ratio) else float(ratio)


@dataclass(frozen=True)
class NeuronReading:
    """One NIR neuron mapped onto the IR (:func:`read_neuron`).

    Attributes:
        fields: Keyword arguments of :class:`~inflor_deploy.ir.Neuron` (all but name and sources).
        exact: False when the float32 parameters could not be recovered exactly (level 1 counts
            last-ulp near-ties on this layer).
        note: What was done, for the user (None: nothing worth saying).
    """

    fields: dict[str, Any]
    exact: bool = True
    note: str | None = None


def read_neuron(name: str, node, shape: tuple[int, ...], reading: Reading) -> NeuronReading:
    """Map one NIR ``IF``/``LIF``/``CubaLIF`` onto the IR neuron (module docstring: the discretization).

    Raises:
        NirImportError: a dynamics the IR neuron cannot express (named with the reason and fix).
    """
    kind = type(node).__name__
    where = f"NIR node {name!r} ({kind})"
    meta = node_metadata(node) if reading.recorded else None
    if reading.recorded:
        if meta is None:
            raise NirImportError(f"{where} has no inflor-deploy metadata although the graph has; the file was edited: "
                                 "export it again, or read it as plain NIR with --convention nir --dt SECONDS")
        fields = recorded_fields(meta, where)
        nir_type, expected = nir_parameters(n.Neuron(name, ("x",), **fields), shape, reading.dt)
        changed = [p for p, value in expected.items()
                   if nir_type != kind or not np.array_equal(np.asarray(getattr(node, p)), value)]  # fmt: skip
        if changed:
            raise NirImportError(
                f"{where}: its {changed[0]} is not what inflor-deploy wrote for the neuron its metadata records (a "
                f"{nir_type}; the file was edited after export); export it again, or read it as plain NIR with "
                "--convention nir"
            )
        return NeuronReading(_override(fields, reading, where, node, shape))
    conv = reading.convention
    if kind == "CubaLIF":
        return _read_cuba(name, node, shape, reading)
    v_reset = uniform(node.v_reset, f"{where}: v_reset")
    vth = per_channel_value(node.v_threshold, shape, f"{where}: v_threshold")
    exact, note = True, None
    if kind == "IF":
        fields = dict(tau=1.0, gain=_gain(_need_dt(reading, where, kind) * uniform(node.r, f"{where}: r"), where))
    elif kind == "LIF":
        dt = _need_dt(reading, where, kind)
        tau_nir, r = uniform(node.tau, f"{where}: tau"), uniform(node.r, f"{where}: r")
        v_leak = uniform(node.v_leak, f"{where}: v_leak")
        if v_leak != v_reset:
            raise NirImportError(
                f"{where} leaks toward v_leak = {v_leak:g} but resets to v_reset = {v_reset:g}; the IR neuron leaks "
                "toward its reset potential. Export it with v_leak = v_reset"
            )
        if not tau_nir >= dt:
            raise NirImportError(
                f"{where}: tau = {tau_nir:g} s is shorter than the step dt = {dt:g} s, so forward Euler overshoots "
                f"(leak factor 1 - dt/tau = {1 - dt / tau_nir:g} < 0). Pass the step the model was trained with (--dt)"
            )
        fields, exact, note = _leaky(where, conv, dt, tau_nir, r, v_reset, node)
    else:
        raise NirImportError(f"{where}: not a neuron type this reader maps ({', '.join(NEURON_TYPES)})")
    fields.update(vth=vth, v_reset=v_reset, reset="zero", compare=conv.compare, reset_timing="same_step")
    return NeuronReading(_override(fields, reading, where, node, shape), exact, note)


def _need_dt(reading: Reading, where: str, kind: str) -> float:
    if reading.dt is None:
        raise NirImportError(
            f"{where}: NIR does not state the time step, and no exporter's convention was recognized; pass --dt "
            "SECONDS (SpikingJelly and snnTorch export with 1e-4, Norse steps with 1e-3; an IF with r = 1 needs "
            "--dt 1) or --convention"
        )
    return reading.dt


def _leaky(where: str, conv: Convention, dt: float, tau_nir: float, r: float, v_reset: float, node):
    """The IR fields of a leaky neuron, in the convention's float operation order."""
    q = dt / tau_nir
    if conv.charge == "spikingjelly":
        k = float(np.float32(tau_nir / dt))  # SpikingJelly's tau, as its float32 arithmetic uses it
        if r == 1.0:
            return n.decay_fields("decay_divide_input", k), True, None
        if _close32(r, k):
            return n.decay_fields("decay_divide", k), True, None
        raise NirImportError(f"{where}: r = {r:g} is neither 1 nor tau/dt = {k:g}, SpikingJelly's two forms; "
                             "read it with --convention nir")
    if conv.charge == "snntorch":
        if v_reset != 0.0:
            raise NirImportError(f"{where}: snnTorch's Leaky rests at 0, but v_reset = {v_reset:g}; read it with "
                                 "--convention nir")
        beta, unique = invert_snntorch_beta(node.tau, node.r)
        note = None if unique else f"beta {beta!r} recovered only up to float32 rounding (level 1 counts near-ties)"
        return dict(tau=beta, gain=_gain(q * r, where)), unique, note
    gain = _gain(q * r, where)
    if v_reset == 0.0:
        return dict(tau=1.0 - q, gain=gain), True, None
    # Leaking toward v_reset != 0: the decay_multiply forms state it (multiplier q = dt / tau).
    if r == 1.0:
        return n.decay_fields("decay_multiply_input", q), True, None
    if gain == 1.0:
        return n.decay_fields("decay_multiply", q), True, None
    raise NirImportError(
        f"{where}: a leak toward v_reset = {v_reset:g} with an input gain dt r / tau = {gain:g} (neither 1 nor "
        "dt / tau) has no IR form; export the model with v_reset = v_leak = 0, or with r = 1"
    )


def _read_cuba(name: str, node, shape, reading: Reading) -> NeuronReading:
    """A CubaLIF whose synaptic filter is the identity (tau_syn == dt) is a LIF with an input gain; others are refused.

    Why refused: with ``a = 1 - dt / tau_syn > 0`` the synaptic current is a second state
    (``I[t] = a I[t-1] + (dt w_in / tau_syn) X[t]``, Loihi's u with ``du < 4095``). The IR neuron's
    current is the step's input (du = 4095) in every backend: the float runner, both ONNX
    models, the quantizer's u-headroom proof, the simulator's exactness proof, the Lava
    processes and the NetX writer. Mapping the filter approximately would break the ladder's
    bit-exact levels' premise, so it is refused rather than approximated.
    """
    where = f"NIR node {name!r} (CubaLIF)"
    dt = _need_dt(reading, where, "CubaLIF")
    tau_syn = uniform(node.tau_syn, f"{where}: tau_syn")
    alpha = 1.0 - dt / tau_syn
    if not _unit(np.float64(tau_syn / dt)):
        raise NirImportError(
            f"{where}: its synaptic current decays (1 - dt/tau_syn = {alpha:.6g} with dt = {dt:g} s): a second state "
            "per neuron (Loihi's u with du < 4095), which this compiler's neuron does not model in any backend (its "
            "current is each step's input). Export the layer as LIF (snnTorch Leaky, SpikingJelly LIFNode), or "
            "with tau_syn = dt"
        )
    syn_gain = dt * uniform(node.w_in, f"{where}: w_in") / tau_syn
    tau_mem, r = uniform(node.tau_mem, f"{where}: tau_mem"), uniform(node.r, f"{where}: r")
    v_reset = uniform(node.v_reset, f"{where}: v_reset")
    if uniform(node.v_leak, f"{where}: v_leak") != v_reset or v_reset != 0.0:
        raise NirImportError(f"{where}: v_leak and v_reset must both be 0 (the IR's leaky neuron rests at 0)")
    if not tau_mem >= dt:
        raise NirImportError(f"{where}: tau_mem = {tau_mem:g} s is shorter than dt = {dt:g} s; pass --dt")
    q = dt / tau_mem
    fields = dict(tau=1.0 - q, gain=_gain(syn_gain * q * r, where), v_reset=0.0, reset="zero",
                  vth=per_channel_value(node.v_threshold, shape, f"{where}: v_threshold"),
                  compare=reading.convention.compare, reset_timing="same_step")  # fmt: skip
    return NeuronReading(_override(fields, reading, where, node, shape), True,
                         "CubaLIF with tau_syn = dt: its synaptic filter is a gain")


def _override(fields: dict[str, Any], reading: Reading, where: str, node, shape) -> dict[str, Any]:
    """Apply the user's ``--reset`` / ``--compare`` and the convention's reset timing."""
    fields = dict(fields)
    if reading.compare is not None:
        fields["compare"] = reading.compare
    if reading.reset == "subtract":
        if fields.get("v_reset", 0.0) != 0.0:
            raise NirImportError(
                f"{where}: a subtractive reset (--reset subtract) starts from rest at 0, but v_reset = "
                f"{fields['v_reset']:g}; read it with NIR's reset to v_reset (drop --reset subtract)"
            )
        # What SpikingJelly's soft reset and snnTorch's "subtract" remove: the threshold.
        fields["reset"], fields["reset_amount"] = "subtract", fields["vth"]
    elif reading.reset == "zero":
        fields["reset"], fields["reset_amount"] = "zero", None
    if not reading.recorded:
        fields["reset_timing"] = reading.convention.reset_timing if fields.get("charge", "affine") == "affine" else "same_step"
    return fields


# --------------------------------------------------------------------------- export: IR -> NIR


def _full(value, shape: tuple[int, ...]) -> np.ndarray:
    """A scalar or per-channel ``(C,)`` value as a float64 array of the layer's shape."""
    return np.broadcast_to(np.asarray(n.per_channel(value, len(shape)), np.float64), shape).copy()


def nir_parameters(neuron: n.Neuron, shape: tuple[int, ...], dt: float) -> tuple[str, dict[str, np.ndarray]]:
    """``(NIR type, parameters)`` stating ``neuron``'s math in NIR's terms as far as NIR can (float64 arrays).

    IF when ``tau == 1`` (``r = gain / dt``), else LIF with ``tau = dt / (1 - tau_ir)`` and
    ``r = gain * tau / dt`` (so ``dt r / tau = gain``), ``v_leak = v_reset``. What NIR cannot
    state (a subtractive reset, ``>=``, a next-step reset, the float order) is in :func:`recorded_metadata`.
    """
    if neuron.mpr:
        raise ExportError(f"neuron {neuron.name!r} still has MPR; export the graph after FoldRectifierIntoThreshold")
    common = {"v_threshold": _full(neuron.vth, shape), "v_reset": np.full(shape, float(neuron.v_reset))}
    if neuron.tau == 1.0:
        return "IF", {"r": np.full(shape, neuron.gain / dt), **common}
    tau = dt / (1.0 - neuron.tau)
    return "LIF", {"tau": np.full(shape, tau), "r": np.full(shape, neuron.gain * tau / dt),
                   "v_leak": np.full(shape, float(neuron.v_reset)), **common}  # fmt: skip


_RECORDED_FIELDS = ("vth", "tau", "reset", "reset_amount", "mpr", "spike_value", "gain", "compare", "reset_timing",
                    "v_reset", "charge", "decay")  # fmt: skip


def recorded_metadata(neuron: n.Neuron) -> dict[str, Any]:
    """Every field of ``neuron`` (None fields left out), for the node's ``metadata[META]``."""
    out: dict[str, Any] = {}
    for name in _RECORDED_FIELDS:
        value = getattr(neuron, name)
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        out[name] = np.asarray(value, np.float64) if isinstance(value, np.ndarray) else value
    return out


def recorded_fields(meta: dict[str, Any], where: str) -> dict[str, Any]:
    """The :class:`~inflor_deploy.ir.Neuron` fields :func:`recorded_metadata` wrote, read back exactly."""
    try:
        fields: dict[str, Any] = {}
        for name in _RECORDED_FIELDS:
            if name not in meta:
                continue
            value = meta[name]
            if name in ("vth", "reset_amount"):
                value = np.asarray(value, np.float64).copy() if np.ndim(value) else float(value)
            elif name == "mpr":
                value = bool(int(value))
            elif name in ("reset", "compare", "reset_timing", "charge"):
                value = str(value)
            else:
                value = float(value)
            fields[name] = value
        for name in ("vth", "tau", "reset", "gain", "compare", "reset_timing", "v_reset", "charge"):
            if name not in fields:
                raise KeyError(name)
    except (KeyError, TypeError, ValueError) as err:
        raise NirImportError(f"{where}: its inflor-deploy metadata is incomplete or malformed ({err!r}); export the "
                             "model again, or read it as plain NIR with --convention nir") from err
    return fields


def describe_unstated(neuron: n.Neuron) -> list[str]:
    """What NIR cannot state about ``neuron`` and other consumers will therefore read differently."""
    said = []
    if neuron.reset == "subtract":
        amount = neuron.spike_value if neuron.reset_amount is None else neuron.reset_amount
        said.append(f"subtractive reset (amount {n.plain(amount)})")
    elif neuron.reset == "none":
        said.append("no reset")
    if neuron.compare == ">=":
        said.append("fires on >=")
    if neuron.reset_timing == "next_step":
        said.append("reset one step late")
    if neuron.spike_value != 1.0:
        said.append(f"spike value {neuron.spike_value:g}")
    return said


__all__ = [
    "CONVENTIONS", "CONVENTION_NAMES", "Convention", "EXPORT_DT", "META", "NeuronReading", "NirImportError", "Reading",
    "describe_unstated", "detect_convention", "graph_metadata", "invert_snntorch_beta", "nir_parameters",
    "node_metadata", "per_channel_value", "read_neuron", "recorded_fields", "recorded_metadata", "resolve_reading",
    "uniform",
]  # fmt: skip
