"""Hardware targets as data: ``hw_targets/*.toml`` loaded into frozen dataclasses.

A target says what the compiler must respect (integer formats, delays, the
reset-interval rule, chip resources) and which published figures an energy
report may quote. The TOML files are the only place these numbers live; each
number there carries a comment naming its source and tag ([P]/[T]/[2]/[D],
see HARDWARE_FACTS.md), and each energy tier carries ``source`` and ``tag``
as data so reports print them beside the figures.

Loading validates everything: every required key present, no unknown key,
every value of the right type, ranges sane (min < max, bits > 0, ...). A bad
file raises :class:`TargetError` whose message names the file, the table, the
key and what was expected.

Usage::

    target = load_target("loihi2-sim")          # or a path to a .toml file
    target.timing.reset_interval(5)             # -> 5 (sim), 8 (loihi2)
    target.numerics.dense_weight_values         # range(-256, 255, 2)
    target.source_of("limits.cores_per_chip")   # the comment beside the number
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from inflor_deploy.errors import InflorError

TAGS = ("[P]", "[T]", "[2]", "[D]")
"""Certainty tags of HARDWARE_FACTS.md: tool code/Intel artifact, quoted paper, press, derived."""

TAG_MEANINGS = {
    "exact": "counted from the simulated spike trains (bit-exact with Lava's fixed-point models); no constant involved",
    "[P]": "read in a tool's own code or an Intel artifact (Lava, lava-dl, Intel's measured notebooks)",
    "[T]": "a paper's value, quoted word for word by independent sources",
    "[2]": "press or wiki: an unverified claim, shown for scale only",
    "[D]": "derived: arithmetic on figures with the tags named beside it (e.g. '[D] from [T]')",
}
"""What each tag beside a number means; reports print this legend (HARDWARE_FACTS.md)."""


class TargetError(InflorError):
    """A target file is missing, unreadable or invalid.

    The message names the file, the table, the key and what was expected.
    """


def _require(ok: bool, key: str, expected: str) -> None:
    """Raise TargetError naming ``key`` unless ``ok``; used by the range checks below."""
    if not ok:
        raise TargetError(f"key '{key}': expected {expected}")


def _positive(obj, *keys: str) -> None:
    for key in keys:
        _require(getattr(obj, key) > 0, key, f"a value > 0, got {getattr(obj, key)!r}")


def _non_negative(obj, *keys: str) -> None:
    for key in keys:
        _require(getattr(obj, key) >= 0, key, f"a value >= 0, got {getattr(obj, key)!r}")


def _check_tag(tag: str) -> None:
    _require(tag in TAGS, "tag", f"one of {', '.join(TAGS)}, got {tag!r}")


# --------------------------------------------------------------------------- numerics


@dataclass(frozen=True)
class Numerics:
    """Integer formats of Lava's bit-accurate LIF/Dense/Conv (``select_tag="fixed_pt"``).

    Per step (DESIGN.md §3)::

        u = decay(u, du) + (a_in << activation_shift)        # wraps to state_bits_u
        v = clip(decay(v, dv) + u + (bias_mant << bias_exp))  # saturates to state_bits_v
        s = v > (vth << vth_shift)                            # spike_compare

    Attributes:
        weight_bits: weight mantissa width in bits (Lava ``num_weight_bits``).
        dense_weight_min: smallest Dense weight that survives Lava's weight handling.
        dense_weight_max: largest such weight (255 floored to 254 for mixed-sign weights).
        dense_weight_step: spacing of representable Dense weights (2: lowest bit dropped).
        conv_weight_min: smallest Conv weight the compiler emits (Conv does not clip).
        conv_weight_max: largest Conv weight the compiler emits.
        conv_weight_exp: weight exponent Conv applies (it ignores ``weight_exp``: 0).
        state_bits_u: width of the signed current state u, bits.
        state_bits_v: width of the signed voltage state v, bits.
        du_bits: width of the unsigned current decay du, bits.
        dv_bits: width of the unsigned voltage decay dv, bits.
        decay_unit: the decay denominator, ``2**du_bits`` (4096): ``x*(decay_unit-d) >> 12``.
        vth_mant_bits: width of the unsigned threshold mantissa, bits.
        vth_shift: left shift applied to vth before the comparison.
        bias_mant_bits: width of the signed bias mantissa, bits.
        bias_exp_bits: width of the unsigned bias exponent, bits.
        activation_shift: left shift of synaptic input into u
            (one weight unit = 2**activation_shift units of v).
        bias_exp: the preferred bias exponent (bias_mant then counts in weight units, and v stays
            a multiple of 64 so a ``>=`` threshold is exact); the quantizer picks another in
            ``0..2**bias_exp_bits - 1`` per layer when the bias needs more range or precision.
        weight_exp_max: largest synapse weight exponent the compiler emits (``a = (W x) << e``,
            ``0 <= e <= weight_exp_max``).
        weight_exp_min: smallest (<= 0) synapse weight exponent the compiler emits: ``e < 0``
            delivers ``a = floor((W x) / 2^-e)`` (Lava's arithmetic right shift).
        spike_compare: ``"strict_greater"`` (v > vth) or ``"greater_equal"`` (v >= vth).
        u_overflow: what u does past its width: ``"wrap"`` or ``"saturate"``.
        v_overflow: what v does past its width: ``"wrap"`` or ``"saturate"``.
        graded_spike_bits: largest graded-spike payload, bits.
    """

    weight_bits: int
    dense_weight_min: int
    dense_weight_max: int
    dense_weight_step: int
    conv_weight_min: int
    conv_weight_max: int
    conv_weight_exp: int
    state_bits_u: int
    state_bits_v: int
    du_bits: int
    dv_bits: int
    decay_unit: int
    vth_mant_bits: int
    vth_shift: int
    bias_mant_bits: int
    bias_exp_bits: int
    activation_shift: int
    bias_exp: int
    weight_exp_max: int
    weight_exp_min: int
    spike_compare: str
    u_overflow: str
    v_overflow: str
    graded_spike_bits: int

    def __post_init__(self):
        _positive(self, "weight_bits", "dense_weight_step", "state_bits_u", "state_bits_v",
                  "du_bits", "dv_bits", "vth_mant_bits", "bias_mant_bits", "bias_exp_bits",
                  "graded_spike_bits")
        _non_negative(self, "vth_shift", "activation_shift", "weight_exp_max")
        _require(self.weight_exp_min <= 0, "weight_exp_min", f"a value <= 0, got {self.weight_exp_min!r}")
        for kind in ("dense", "conv"):
            lo, hi = getattr(self, f"{kind}_weight_min"), getattr(self, f"{kind}_weight_max")
            _require(lo < hi, f"{kind}_weight_min",
                     f"less than {kind}_weight_max ({hi}), got {lo}")
            # A weight's mantissa is weight_bits wide; Dense's mixed-sign handling
            # adds one bit of scale (x2), so no weight may exceed 2**weight_bits.
            bound = 1 << self.weight_bits
            _require(-bound <= lo and hi < bound, f"{kind}_weight_min",
                     f"a range inside [-{bound}, {bound - 1}] (weight_bits={self.weight_bits}), "
                     f"got [{lo}, {hi}]")
        _require((self.dense_weight_max - self.dense_weight_min) % self.dense_weight_step == 0,
                 "dense_weight_step",
                 "a step dividing dense_weight_max - dense_weight_min, "
                 f"got {self.dense_weight_step}")
        _require(self.decay_unit == 1 << self.du_bits == 1 << self.dv_bits, "decay_unit",
                 f"2**du_bits == 2**dv_bits, got {self.decay_unit}")
        _require(0 <= self.bias_exp < 1 << self.bias_exp_bits, "bias_exp",
                 f"an exponent in [0, {(1 << self.bias_exp_bits) - 1}], got {self.bias_exp}")
        _require(self.spike_compare in ("strict_greater", "greater_equal"), "spike_compare",
                 f"'strict_greater' or 'greater_equal', got {self.spike_compare!r}")
        for key in ("u_overflow", "v_overflow"):
            _require(getattr(self, key) in ("wrap", "saturate"), key,
                     f"'wrap' or 'saturate', got {getattr(self, key)!r}")

    @property
    def dense_weight_values(self) -> range:
        """Every Dense weight value that survives Lava's fixed_pt weight handling."""
        return range(self.dense_weight_min, self.dense_weight_max + 1, self.dense_weight_step)

    def weight_grid(self, kind: str, bits: int | None = None) -> tuple[int, int, int]:
        """``(lowest, highest, step)`` of the integer weights a ``bits``-bit synapse holds (default: ``weight_bits``).

        Fewer bits keep the range and coarsen the step, as Lava's
        ``truncate_weights`` drops low mantissa bits (``num_weight_bits``):
        dense ``step = dense_weight_step * 2^(weight_bits - bits)`` (mixed-sign
        Dense: multiples of ``2^(9 - bits)`` in [-256, 255]); conv keeps step 1
        and shrinks its range to ``bits`` signed bits (Lava's Conv does not
        truncate, so the compiler emits the narrower integers itself).
        """
        bits = self.weight_bits if bits is None else int(bits)
        if not 1 <= bits <= self.weight_bits:
            raise TargetError(f"weight bits {bits} must be in 1..{self.weight_bits} (the target's weight_bits)")
        drop = self.weight_bits - bits
        if kind == "dense":
            step = self.dense_weight_step << drop
            return self.dense_weight_min, self.dense_weight_max + self.dense_weight_step - step, step
        if kind == "conv":
            return self.conv_weight_min >> drop, self.conv_weight_max >> drop, 1
        raise TargetError(f"synapse kind {kind!r} must be 'dense' or 'conv'")

    @property
    def conv_weight_values(self) -> range:
        """Every Conv weight value the compiler may emit."""
        return range(self.conv_weight_min, self.conv_weight_max + 1)

    @property
    def u_max(self) -> int:
        """Largest magnitude of u before it wraps: ``2**(state_bits_u - 1)``."""
        return 1 << (self.state_bits_u - 1)

    @property
    def v_max(self) -> int:
        """Saturation bound of v: v stays in ``[-v_max, v_max]`` (``2**(state_bits_v-1) - 1``)."""
        return (1 << (self.state_bits_v - 1)) - 1

    @property
    def vth_mant_max(self) -> int:
        """Largest threshold mantissa (unsigned): ``2**vth_mant_bits - 1``."""
        return (1 << self.vth_mant_bits) - 1

    @property
    def bias_mant_range(self) -> range:
        """Every signed bias mantissa: ``[-2**(bits-1), 2**(bits-1) - 1]``."""
        half = 1 << (self.bias_mant_bits - 1)
        return range(-half, half)


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Time-step rules of the target.

    Attributes:
        max_synaptic_delay: largest synaptic delay, steps (DelayDense adds 1 + delay).
        reset_interval_power_of_two: whether ``LIFReset.reset_interval`` must be a power of 2.
        connection_latency_steps: steps every connection (Dense, Sparse, Conv) adds.
    """

    max_synaptic_delay: int
    reset_interval_power_of_two: bool
    connection_latency_steps: int

    def __post_init__(self):
        _non_negative(self, "max_synaptic_delay", "connection_latency_steps")

    def reset_interval(self, window: int) -> int:
        """The reset interval for a sample window of ``window`` steps.

        The next power of two >= ``window`` where the target requires one (the
        extra steps are padded with empty input), else ``window`` itself.

        Raises:
            ValueError: ``window`` is not a positive integer.
        """
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer number of steps, got {window!r}")
        if not self.reset_interval_power_of_two:
            return window
        return 1 << (window - 1).bit_length()


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    """Chip resources a compiled model must fit.

    Attributes:
        enforce_resource_limits: True: exceeding a limit is a compile error;
            False: it is only reported.
        cores_per_chip: neuro cores on one chip (architectural maximum).
        usable_cores_per_chip: cores a mapping may plan on (some are unusable in practice).
        neurons_per_core: neurons one core holds at most.
        neurons_per_chip: neurons one chip holds at most.
        memory_per_core_bytes: memory per core shared by synapses, neuron state and routing, bytes.
        chips_per_board: chips on one board.
    """

    enforce_resource_limits: bool
    cores_per_chip: int
    usable_cores_per_chip: int
    neurons_per_core: int
    neurons_per_chip: int
    memory_per_core_bytes: int
    chips_per_board: int

    def __post_init__(self):
        _positive(self, "cores_per_chip", "usable_cores_per_chip", "neurons_per_core",
                  "neurons_per_chip", "memory_per_core_bytes", "chips_per_board")
        _require(self.usable_cores_per_chip <= self.cores_per_chip, "usable_cores_per_chip",
                 f"at most cores_per_chip ({self.cores_per_chip}), "
                 f"got {self.usable_cores_per_chip}")
        _require(self.neurons_per_chip <= self.neurons_per_core * self.cores_per_chip,
                 "neurons_per_chip",
                 f"at most neurons_per_core * cores_per_chip "
                 f"({self.neurons_per_core * self.cores_per_chip}), got {self.neurons_per_chip}")


# --------------------------------------------------------------------------- energy


@dataclass(frozen=True)
class Horowitz45nm:
    """Tier 2: the 45 nm per-op energies SNN papers use (memory access ignored).

    ``E_SNN = e_mac_pj * MACs(first layer) + e_ac_pj * SynOps(rest)``;
    ``E_ANN = e_mac_pj * sum of MACs``.

    Attributes:
        source: citation of the figures.
        tag: certainty tag, one of TAGS.
        e_mac_pj: energy of one multiply-accumulate, pJ.
        e_ac_pj: energy of one accumulate, pJ.
        note: caveats a report must print beside the figures.
    """

    source: str
    tag: str
    e_mac_pj: float
    e_ac_pj: float
    note: str = ""

    def __post_init__(self):
        _check_tag(self.tag)
        _positive(self, "e_mac_pj", "e_ac_pj")


@dataclass(frozen=True)
class Loihi1PerOp:
    """Tier 3: Loihi 1 per-operation energies and times (Davies et al. 2018, Table 2).

    Attributes:
        source: citation of the figures.
        tag: certainty tag, one of TAGS.
        synop_pj: one synaptic spike op (minimum), pJ.
        neuron_update_inactive_pj: one update of a neuron that does not change, pJ.
        neuron_update_active_pj: one update of an active neuron, pJ.
        spike_within_tile_pj: one spike delivered within a tile, pJ.
        tile_hop_ew_pj: one east-west hop between tiles, pJ.
        tile_hop_ns_pj: one north-south hop between tiles, pJ.
        synop_time_ns: time of one synaptic op, ns.
        neuron_update_time_ns: times of one neuron update as quoted ("5.3/8.4"), ns.
        note: caveats a report must print beside the figures.
    """

    source: str
    tag: str
    synop_pj: float
    neuron_update_inactive_pj: float
    neuron_update_active_pj: float
    spike_within_tile_pj: float
    tile_hop_ew_pj: float
    tile_hop_ns_pj: float
    synop_time_ns: float
    neuron_update_time_ns: tuple[float, ...]
    note: str = ""

    def __post_init__(self):
        _check_tag(self.tag)
        _positive(self, "synop_pj", "neuron_update_inactive_pj", "neuron_update_active_pj",
                  "spike_within_tile_pj", "tile_hop_ew_pj", "tile_hop_ns_pj", "synop_time_ns")
        _require(len(self.neuron_update_time_ns) > 0
                 and all(t > 0 for t in self.neuron_update_time_ns),
                 "neuron_update_time_ns", f"a non-empty list of times > 0, got "
                 f"{list(self.neuron_update_time_ns)}")


@dataclass(frozen=True)
class StaticPower:
    """Measured idle (static) power of one Loihi 2 chip.

    Attributes:
        source: citation of the figures.
        tag: certainty tag, one of TAGS.
        w_per_chip_min: lowest published static power per chip, W.
        w_per_chip_max: highest published static power per chip, W.
    """

    source: str
    tag: str
    w_per_chip_min: float
    w_per_chip_max: float

    def __post_init__(self):
        _check_tag(self.tag)
        _positive(self, "w_per_chip_min")
        _require(self.w_per_chip_min <= self.w_per_chip_max, "w_per_chip_min",
                 f"at most w_per_chip_max ({self.w_per_chip_max}), got {self.w_per_chip_min}")


@dataclass(frozen=True)
class PilotNetAnchor:
    """A measured whole-network Loihi 2 run (PilotNet LIF, one chip).

    Attributes:
        source: citation of the figures.
        tag: certainty tag, one of TAGS.
        cores: neuro cores the network used.
        inferences_per_s: measured throughput, inferences (frames) per second.
        steps_per_inference: time steps per inference (the reset interval).
        total_power_w: measured total power of the chip, W.
        dynamic_power_w: total minus static power, W.
        energy_per_inference_mj: total energy per inference, mJ.
        note: caveats a report must print beside the figures.
    """

    source: str
    tag: str
    cores: int
    inferences_per_s: float
    steps_per_inference: int
    total_power_w: float
    dynamic_power_w: float
    energy_per_inference_mj: float
    note: str = ""

    def __post_init__(self):
        _check_tag(self.tag)
        _positive(self, "cores", "inferences_per_s", "steps_per_inference", "total_power_w",
                  "dynamic_power_w", "energy_per_inference_mj")
        _require(self.dynamic_power_w <= self.total_power_w, "dynamic_power_w",
                 f"at most total_power_w ({self.total_power_w}), got {self.dynamic_power_w}")


@dataclass(frozen=True)
class HalaPoint:
    """Intel's efficiency claim for the Hala Point system.

    Attributes:
        source: citation of the figure.
        tag: certainty tag, one of TAGS.
        tops_per_w_min: claimed lower bound, tera-operations per second per watt (8-bit ops).
        note: caveats a report must print beside the figure.
    """

    source: str
    tag: str
    tops_per_w_min: float
    note: str = ""

    def __post_init__(self):
        _check_tag(self.tag)
        _positive(self, "tops_per_w_min")


@dataclass(frozen=True)
class Loihi2System:
    """Tier 4: Loihi 2 system-level anchors (no per-op table is published).

    Attributes:
        static_power: measured static power per chip.
        pilotnet_lif: a measured network run.
        hala_point: Intel's system efficiency claim.
        not_published: quantities with no published Loihi 2 figure (reports say so).
        note: caveats a report must print beside the figures.
    """

    static_power: StaticPower
    pilotnet_lif: PilotNetAnchor
    hala_point: HalaPoint
    not_published: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Energy:
    """The energy tiers a report prints, each separately and labelled.

    Tier 1 (operation counts) comes from simulation and needs no constants.

    Attributes:
        horowitz_45nm: tier 2, 45 nm MAC/AC energies.
        loihi1_per_op: tier 3, Loihi 1 per-op energies.
        loihi2_system: tier 4, Loihi 2 whole-system anchors.
    """

    horowitz_45nm: Horowitz45nm
    loihi1_per_op: Loihi1PerOp
    loihi2_system: Loihi2System


# --------------------------------------------------------------------------- target


@dataclass(frozen=True)
class Target:
    """One hardware target: the ``[target]`` table plus its numerics, timing, limits, energy.

    Attributes:
        name: the target's name; equals the file's stem (``loihi2-sim``).
        description: one line for listings.
        kind: ``"hardware"`` or ``"simulator"``.
        select_tag: the Lava ProcessModel tag whose numerics apply (``"fixed_pt"``).
        lava_run_config: the Lava run-config class that runs it (``"Loihi2SimCfg"``),
            or None when this toolchain can only compile for it.
        numerics: integer formats.
        timing: time-step rules.
        limits: chip resources.
        energy: energy tiers with their sources.
        path: the file it was loaded from (None when built in code).
        sources: ``"table.key" -> comment`` for every commented assignment in the file.
    """

    name: str
    description: str
    kind: str
    select_tag: str
    numerics: Numerics
    timing: Timing
    limits: Limits
    energy: Energy
    lava_run_config: str | None = None
    path: Path | None = field(default=None, compare=False)
    sources: Mapping[str, str] = field(
        default_factory=lambda: types.MappingProxyType({}), compare=False, repr=False)

    def __post_init__(self):
        _require(re.fullmatch(r"[a-z0-9][a-z0-9_-]*", self.name) is not None, "name",
                 f"a lower-case name of letters, digits, '-' and '_', got {self.name!r}")
        _require(self.kind in ("hardware", "simulator"), "kind",
                 f"'hardware' or 'simulator', got {self.kind!r}")
        _require(self.select_tag in ("fixed_pt", "bit_accurate_loihi"), "select_tag",
                 f"'fixed_pt' or 'bit_accurate_loihi' (the numerics describe Lava's "
                 f"fixed-point models), got {self.select_tag!r}")
        _require(self.kind != "simulator" or bool(self.lava_run_config), "lava_run_config",
                 "a Lava run-config class name for a simulator target, got none")

    @property
    def runnable(self) -> bool:
        """Whether this toolchain can run the target (it has a Lava run config)."""
        return self.lava_run_config is not None

    def source_of(self, key: str) -> str | None:
        """The source comment beside ``key`` (``"table.key"``, e.g. ``"limits.cores_per_chip"``)."""
        return self.sources.get(key)

    def summary_row(self) -> dict[str, object]:
        """One row for ``inflor-deploy targets``: the facts that tell targets apart."""
        return {
            "name": self.name,
            "kind": self.kind,
            "run_config": self.lava_run_config or "compile-only",
            "select_tag": self.select_tag,
            "reset_interval": "power of 2" if self.timing.reset_interval_power_of_two else "any",
            "max_delay": self.timing.max_synaptic_delay,
            "usable_cores": self.limits.usable_cores_per_chip,
            "limits": "enforced" if self.limits.enforce_resource_limits else "reported",
            "description": self.description,
        }


# --------------------------------------------------------------------------- loading

_TABLES: dict[str, type] = {
    "numerics": Numerics,
    "timing": Timing,
    "limits": Limits,
    "energy": Energy,
}
"""Top-level tables besides ``[target]`` and the dataclass each loads into."""


def _describe(tp) -> str:
    if tp is bool:
        return "a boolean"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if typing.get_origin(tp) is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0]).split(' ', 1)[1]}s"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _convert(value, tp, where: str, key: str):
    """Check ``value`` against the field type ``tp`` and return it in the field's form."""
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType)
    if optional:
        tp = next(arg for arg in typing.get_args(tp) if arg is not type(None))
    ok = False
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    elif typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        if isinstance(value, list):
            value = tuple(_convert(v, item, where, key) for v in value)
            ok = True
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return _build(tp, value, f"{where}.{key}")
    if not ok:
        raise TargetError(f"[{where}] key '{key}': expected {_describe(tp)}, got {value!r}")
    return value


def _build(cls, table: dict, where: str, **extra):
    """Build dataclass ``cls`` from TOML ``table`` (named ``where``), checking keys and types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in extra}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise TargetError(f"[{where}] unknown key '{unknown[0]}': expected only "
                          f"{', '.join(sorted(fields))}")
    kwargs = dict(extra)
    for name, f in fields.items():
        if name in table:
            kwargs[name] = _convert(table[name], hints[name], where, name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TargetError(f"[{where}] missing required key '{name}': expected "
                              f"{_describe(hints[name])}")
    try:
        return cls(**kwargs)
    except TargetError as err:
        if str(err).startswith("["):  # already names its (nested) table
            raise
        raise TargetError(f"[{where}] {err}") from None


def _comments(text: str) -> dict[str, str]:
    """``"table.key" -> comment`` for every ``key = value  # comment`` line of a TOML text.

    A deliberately small reader: it follows ``[table]`` headers and skips
    ``#`` inside double-quoted strings, which is all the target files use.
    """
    out: dict[str, str] = {}
    table = ""
    for line in text.splitlines():
        stripped = line.strip()
        header = re.fullmatch(r"\[([A-Za-z0-9_.-]+)\]", stripped)
        if header:
            table = header.group(1)
            continue
        match = re.match(r"([A-Za-z0-9_-]+)\s*=", stripped)
        if not match:
            continue
        in_string = False
        for i, char in enumerate(stripped):
            if char == '"' and stripped[i - 1:i] != "\\":
                in_string = not in_string
            elif char == "#" and not in_string:
                out[f"{table}.{match.group(1)}"] = stripped[i + 1:].strip()
                break
    return out


def targets_dir() -> Path:
    """The folder of shipped target files: the repository's top-level ``hw_targets/``."""
    return Path(__file__).resolve().parents[1] / "hw_targets"


def _load_file(path: Path) -> Target:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TargetError(f"{path}: cannot read target file ({err.strerror})") from None
    try:
        data = tomllib.loads(text)
        info = data.pop("target", None)
        if not isinstance(info, dict):
            raise TargetError("missing required table '[target]'")
        unknown = sorted(set(data) - set(_TABLES))
        if unknown:
            raise TargetError(f"unknown table '[{unknown[0]}]': expected only "
                              f"[target], {', '.join(f'[{t}]' for t in _TABLES)}")
        sections = {}
        for name, cls in _TABLES.items():
            if not isinstance(data.get(name), dict):
                raise TargetError(f"missing required table '[{name}]'")
            sections[name] = _build(cls, data[name], name)
        target = _build(Target, info, "target", path=path,
                        sources=types.MappingProxyType(_comments(text)), **sections)
    except tomllib.TOMLDecodeError as err:
        raise TargetError(f"{path}: not valid TOML ({err})") from None
    except TargetError as err:
        raise TargetError(f"{path}: {err}") from None
    if target.name != path.stem:
        raise TargetError(f"{path}: [target] key 'name': expected the file's name "
                          f"{path.stem!r}, got {target.name!r}")
    return target


def list_targets() -> list[Target]:
    """Every shipped target, sorted by name."""
    return sorted((_load_file(p) for p in targets_dir().glob("*.toml")), key=lambda t: t.name)


def load_target(name_or_path: str | Path) -> Target:
    """Load a target by name (``"loihi2-sim"``) or from a path to a ``.toml`` file.

    Raises:
        TargetError: no such target (the message lists the available names),
            or the file is invalid (the message names file, key and expectation).
    """
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text)
        if not path.is_file():
            raise TargetError(f"target file {path} does not exist")
        return _load_file(path)
    path = targets_dir() / f"{text}.toml"
    if not path.is_file():
        available = sorted(p.stem for p in targets_dir().glob("*.toml"))
        raise TargetError(f"unknown target {text!r}: available targets are "
                          f"{', '.join(available) or '(none)'} (or pass a path to a .toml file)")
    return _load_file(path)
