"""Energy estimates in four separate, labelled tiers (HARDWARE_FACTS.md), per inference.

An inference is one sample run for T timesteps. Every figure carries its
tier, a certainty tag and its source; every constant comes from the
target file (``[energy.*]`` tables, which carry ``source`` and ``tag`` as
data), never from this module. Tiers are never summed with each other.

1. **Operation counts** (``tag = "exact"``), from :mod:`.activity`.
2. **45 nm convention** (Horowitz, ISSCC 2014 [T])::

       E_SNN = E_MAC * MACs(first layer) + E_AC * SynOps(rest)
       E_ANN = E_MAC * sum over every synapse of its dense MACs per sample (once, no T)

   shown with the first layer x T (the frame is re-applied every step: as
   run) and x 1. Memory access is ignored by this convention.
3. **Loihi-class per-op** (Davies et al. 2018, Table 2; Loihi 1, 14 nm,
   pre-silicon [T]), per layer::

       E = SynOps * 23.6 pJ + updates_active * 81 pJ + updates_inactive * 52 pJ + spikes * 1.7 pJ

   Rule: an update is *active* when it produced a spike (the only activity
   a spike train shows); the bracket all-inactive .. all-active is given
   beside it. Spikes cost one within-tile message each (tile hops are not
   counted: the placement has no 2-D geometry). The first layer's graded
   synops are listed separately at the binary synop energy — an
   assumption: no graded-synop figure is published.
4. **Loihi 2 system anchors** ([P] measurements): static power per chip
   (min-max) x chips needed x run time. The run time is steps x a step
   time derived from the PilotNet LIF measurement: 408.9 inferences/s x
   16 steps per inference = 6,542 steps/s [D] — an anchor from a different
   network (74 cores), not a prediction for this one. Intel publishes no
   Loihi 2 per-operation energy, so no dynamic energy is estimated; the
   report lists what is not published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inflor_deploy.report.activity import Activity
from inflor_deploy.targets import Target


@dataclass(frozen=True)
class Figure:
    """One labelled number.

    Attributes:
        name: What it is.
        value: The number (for a range: its low end).
        unit: ``"pJ"``, ``"ops"``, ``"s"``, ``"W"``, ``"x"``...
        tier: 1-4.
        tag: ``"exact"`` (counted) or a HARDWARE_FACTS tag ``[P]/[T]/[2]/[D]``.
        source: Where the number (or its constants) comes from.
        formula: How it was computed.
        low, high: A range, when the number is one.
        note: Caveat printed beside it.
    """

    name: str
    value: float | None
    unit: str
    tier: int
    tag: str
    source: str
    formula: str = ""
    low: float | None = None
    high: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Tier:
    """One energy tier: its constants (with their own tags), its figures and per-layer breakdown."""

    tier: int
    title: str
    source: str
    tag: str
    note: str
    constants: list[Figure]
    figures: list[Figure]
    layers: list[dict[str, Any]] = field(default_factory=list)

    def figure(self, name: str) -> Figure:
        for f in self.figures:
            if f.name == name:
                return f
        raise KeyError(f"tier {self.tier} has no figure {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier, "title": self.title, "source": self.source, "tag": self.tag, "note": self.note,
            "constants": [c.to_dict() for c in self.constants],
            "figures": [f.to_dict() for f in self.figures],
            "layers": [dict(layer) for layer in self.layers],
        }


@dataclass(frozen=True)
class EnergyReport:
    """All tiers, per inference, plus what has no published figure."""

    per: str
    tiers: list[Tier]
    not_published: list[str]

    def tier(self, number: int) -> Tier:
        return next(t for t in self.tiers if t.tier == number)

    def to_dict(self) -> dict[str, Any]:
        return {"per": self.per, "tiers": [t.to_dict() for t in self.tiers], "not_published": list(self.not_published)}


# --------------------------------------------------------------------------- tiers


def horowitz_45nm(e_mac_pj: float, e_ac_pj: float, macs_first: float, synops: float, ann_macs: float) -> dict[str, float]:
    """The 45 nm formulas: ``E_SNN = E_MAC*MACs_first + E_AC*SynOps``, ``E_ANN = E_MAC*MACs_ANN``, and their ratio."""
    e_snn = e_mac_pj * macs_first + e_ac_pj * synops
    e_ann = e_mac_pj * ann_macs
    return {"e_snn_pj": e_snn, "e_ann_pj": e_ann, "ann_over_snn": e_ann / e_snn if e_snn else None}


def _tier1(activity: Activity, source: str) -> Tier:
    tot = activity.totals()
    first = activity.first_layer
    T = activity.timesteps

    def f(name, value, unit="ops", formula="", note=""):
        return Figure(name, float(value), unit, 1, "exact", source, formula, note=note)

    figures = [
        f("spikes", tot["spikes_per_sample"], "spikes",
          f"every spike of the {activity.window}-step window" + (f", {activity.window - T} padding steps included"
                                                                   if activity.window > T else "")),
        f("spikes per neuron per step", tot["spikes_per_neuron_per_step"], "spikes/neuron/step",
          "spikes / (spiking neurons x T)"),
        f("synaptic ops (exact fan-out)", tot["synops_per_sample"], "synops",
          "sum over spikes of the target neurons each reaches (zero weights included)"),
        f("synaptic ops (NeuroBench, non-zero weights)", tot["synops_nonzero_per_sample"], "synops",
          "sum over spikes of the non-zero-weight targets"),
        f("synaptic ops (lava-dl compare_ops formula)", tot["synops_lava_formula_per_sample"], "synops",
          "events x C_out/groups x kh*kw / (sh*sw); dense events x out"),
        f("first layer MACs x T (as run)", first.macs_per_sample_x_T, "MACs",
          f"out_positions x C_out x C_in/groups x kh x kw x T (T = {T})"),
        f("first layer MACs x 1", first.macs_per_sample, "MACs", "out_positions x C_out x C_in/groups x kh x kw"),
        f("graded messages (input values sent)", first.graded_messages_per_sample, "messages",
          f"input values per step x T ({first.graded_values_per_step} x {T})"),
        f("graded messages, non-zero", first.graded_nonzero_messages_per_sample, "messages"),
        f("first layer graded synops (non-zero values x fan-out)", first.graded_synops_per_sample, "synops"),
        f("neuron updates", tot["neuron_updates_per_sample"], "updates",
          f"neurons x {activity.window} steps per inference (accumulator included"
          + (f"; {activity.window - T} padding steps of the reset interval)" if activity.window > T else ")")),
        f("active neuron updates (produced a spike)", tot["active_updates_per_sample"], "updates"),
        f("ANN-equivalent MACs", tot["ann_macs_per_sample"], "MACs", "every synapse as dense MACs, once"),
    ]
    return Tier(1, "Operation counts", source, "exact",
                "Counted from the simulated spike trains; means per inference.", [], figures)


def _tier2(activity: Activity, target: Target) -> Tier:
    h = target.energy.horowitz_45nm
    tot = activity.totals()
    first = activity.first_layer
    n = activity.samples
    T = activity.timesteps
    src = h.source

    def const(name, value, key):
        return Figure(name, value, "pJ", 2, h.tag, target.source_of(f"energy.horowitz_45nm.{key}") or src)

    def fig(name, value, unit="pJ", formula="", note=""):
        return Figure(name, value, unit, 2, "[D]", f"{src} {h.tag} x tier-1 counts", formula, note=note)

    as_run = horowitz_45nm(h.e_mac_pj, h.e_ac_pj, first.macs_per_sample_x_T, tot["synops_per_sample"], tot["ann_macs_per_sample"])
    once = horowitz_45nm(h.e_mac_pj, h.e_ac_pj, first.macs_per_sample, tot["synops_per_sample"], tot["ann_macs_per_sample"])
    nonzero = horowitz_45nm(h.e_mac_pj, h.e_ac_pj, first.macs_per_sample_x_T, tot["synops_nonzero_per_sample"], tot["ann_macs_per_sample"])
    figures = [
        fig("E_SNN (first layer x T, as run)", as_run["e_snn_pj"],
            formula=f"{h.e_mac_pj} pJ x {first.macs_per_sample_x_T:,} MACs + {h.e_ac_pj} pJ x {tot['synops_per_sample']:,.1f} synops"),
        fig("E_SNN (first layer x 1)", once["e_snn_pj"],
            formula=f"{h.e_mac_pj} pJ x {first.macs_per_sample:,} MACs + {h.e_ac_pj} pJ x {tot['synops_per_sample']:,.1f} synops"),
        fig("E_SNN (first layer x T, NeuroBench synops)", nonzero["e_snn_pj"],
            formula=f"{h.e_mac_pj} pJ x {first.macs_per_sample_x_T:,} MACs + {h.e_ac_pj} pJ x {tot['synops_nonzero_per_sample']:,.1f} synops"),
        fig("E_ANN (same architecture, dense MACs once)", as_run["e_ann_pj"],
            formula=f"{h.e_mac_pj} pJ x {tot['ann_macs_per_sample']:,} MACs"),
        fig("E_ANN / E_SNN (first layer x T)", as_run["ann_over_snn"], "x"),
        fig("E_ANN / E_SNN (first layer x 1)", once["ann_over_snn"], "x"),
    ]
    layers = []
    for layer in activity.layers:
        ann = sum(s.macs_per_sample for s in activity.synapses if s.target == layer.name)
        layers.append({
            "layer": layer.name,
            "snn_pj": h.e_mac_pj * layer.first_layer_macs * T + h.e_ac_pj * layer.synops / n,
            "ann_pj": h.e_mac_pj * ann,
        })
    constants = [const("E_MAC (fp32 mul + add)", h.e_mac_pj, "e_mac_pj"), const("E_AC (fp32 add)", h.e_ac_pj, "e_ac_pj")]
    return Tier(2, "45 nm convention (Horowitz, ISSCC 2014)", src, h.tag, h.note, constants, figures, layers)


def _tier3(activity: Activity, target: Target) -> Tier:
    c = target.energy.loihi1_per_op
    n = activity.samples
    src = c.source
    first = activity.first_layer

    def const(name, value, key, unit="pJ"):
        return Figure(name, value, unit, 3, c.tag, target.source_of(f"energy.loihi1_per_op.{key}") or src)

    def fig(name, value, formula="", low=None, high=None, note=""):
        return Figure(name, value, "pJ", 3, "[D]", f"{src} {c.tag} x tier-1 counts", formula, low, high, note)

    layers = []
    for layer in activity.layers:
        updates = layer.neuron_updates / n
        active = layer.active_updates / n
        spikes = (layer.spikes or 0) / n
        synop = layer.synops / n * c.synop_pj
        update = active * c.neuron_update_active_pj + (updates - active) * c.neuron_update_inactive_pj
        spike = spikes * c.spike_within_tile_pj
        graded = sum(s.synops for s in activity.synapses if s.target == layer.name and s.from_input) / n * c.synop_pj
        layers.append({
            "layer": layer.name, "synop_pj": synop, "update_pj": update, "spike_pj": spike, "graded_synop_pj": graded,
            "update_low_pj": updates * c.neuron_update_inactive_pj, "update_high_pj": updates * c.neuron_update_active_pj,
            "total_pj": synop + update + spike + graded,
        })
    synop = sum(x["synop_pj"] for x in layers)
    update = sum(x["update_pj"] for x in layers)
    low = sum(x["update_low_pj"] for x in layers)
    high = sum(x["update_high_pj"] for x in layers)
    spike = sum(x["spike_pj"] for x in layers)
    graded = sum(x["graded_synop_pj"] for x in layers)
    tot = activity.totals()
    figures = [
        fig("synaptic ops (binary spikes)", synop, f"{tot['synops_per_sample']:,.1f} synops x {c.synop_pj} pJ"),
        fig("neuron updates (active = produced a spike)", update,
            f"{tot['active_updates_per_sample']:,.1f} active x {c.neuron_update_active_pj} pJ + "
            f"{tot['neuron_updates_per_sample'] - tot['active_updates_per_sample']:,.1f} inactive x {c.neuron_update_inactive_pj} pJ",
            low, high, "range: every update inactive .. every update active"),
        fig("spikes (one within-tile message each)", spike,
            f"{tot['spikes_per_sample']:,.1f} spikes x {c.spike_within_tile_pj} pJ", note="tile hops not counted"),
        fig("first layer graded synops", graded, f"{first.graded_synops_per_sample:,.1f} graded synops x {c.synop_pj} pJ",
            note="assumes a graded synop costs a binary synop; no graded-synop figure is published"),
        fig("total (Loihi 1 per-op estimate)", synop + update + spike + graded,
            "synops + updates + spikes + graded synops", synop + low + spike + graded, synop + high + spike + graded,
            "range from the neuron-update bracket"),
    ]
    constants = [
        const("synaptic spike op (min)", c.synop_pj, "synop_pj"),
        const("neuron update, inactive", c.neuron_update_inactive_pj, "neuron_update_inactive_pj"),
        const("neuron update, active", c.neuron_update_active_pj, "neuron_update_active_pj"),
        const("spike within tile", c.spike_within_tile_pj, "spike_within_tile_pj"),
    ]
    note = (f"{c.note} Active update rule: an update that produced a spike. "
            "Spikes: one within-tile message per spike; tile hops are not counted.")
    return Tier(3, "Loihi-class per-op estimate (Davies et al. 2018, Table 2)", src, c.tag, note.strip(),
                constants, figures, layers)


def steps_per_second_anchor(target: Target) -> float:
    """PilotNet LIF: inferences/s x steps per inference = steps/s [D] (a different network's rate)."""
    p = target.energy.loihi2_system.pilotnet_lif
    return p.inferences_per_s * p.steps_per_inference


def _tier4(activity: Activity, target: Target, chips: int, steps_per_inference: int, latency: int) -> Tier:
    sys_ = target.energy.loihi2_system
    sp, pn, hp = sys_.static_power, sys_.pilotnet_lif, sys_.hala_point
    rate = steps_per_second_anchor(target)
    step_s = 1.0 / rate
    t_inf = steps_per_inference * step_s
    derived_src = f"derived from {pn.source} {pn.tag}"
    constants = [
        Figure("static power per chip", sp.w_per_chip_min, "W", 4, sp.tag, sp.source, low=sp.w_per_chip_min, high=sp.w_per_chip_max),
        Figure("PilotNet LIF throughput", pn.inferences_per_s, "inferences/s", 4, pn.tag, pn.source, note=pn.note),
        Figure("PilotNet LIF steps per inference", pn.steps_per_inference, "steps", 4, pn.tag, pn.source),
        Figure("PilotNet LIF cores", pn.cores, "cores", 4, pn.tag, pn.source),
        Figure("PilotNet LIF total power", pn.total_power_w, "W", 4, pn.tag, pn.source),
        Figure("PilotNet LIF energy per inference (a different network, for scale)", pn.energy_per_inference_mj * 1e9,
               "pJ", 4, pn.tag, pn.source, note="not an estimate for this model"),
        Figure("Hala Point efficiency claim (lower bound)", hp.tops_per_w_min, "TOPS/W", 4, hp.tag, hp.source, note=hp.note),
    ]
    lo = chips * sp.w_per_chip_min * t_inf * 1e12
    hi = chips * sp.w_per_chip_max * t_inf * 1e12
    samples = activity.samples
    run_steps = samples * steps_per_inference + latency
    figures = [
        Figure("step rate anchor", rate, "steps/s", 4, "[D]", derived_src,
               f"{pn.inferences_per_s} inferences/s x {pn.steps_per_inference} steps/inference",
               note=f"measured on PilotNet ({pn.cores} cores); step time depends on the network: an anchor, not a prediction"),
        Figure("step time anchor", step_s, "s", 4, "[D]", derived_src, "1 / step rate"),
        Figure("steps per inference (this model)", float(steps_per_inference), "steps", 4, "exact",
               "the artifact's schedule (reset interval)"),
        Figure("chips needed (this model)", float(chips), "chips", 4, "[D]", "this report's placement (resources section)"),
        Figure("run time per inference", t_inf, "s", 4, "[D]", derived_src,
               f"{steps_per_inference} steps x {step_s * 1e6:.1f} us"),
        Figure("static energy per inference", lo, "pJ", 4, "[D]",
               f"{sp.source} {sp.tag}; step time {derived_src}",
               f"{chips} chip(s) x {sp.w_per_chip_min}-{sp.w_per_chip_max} W x {t_inf * 1e3:.3f} ms", lo, hi,
               "static power only: no Loihi 2 per-op energy is published, so dynamic energy is not estimated"),
        Figure(f"run time for {samples} samples (pipelined)", run_steps * step_s, "s", 4, "[D]", derived_src,
               f"({samples} x {steps_per_inference} + latency {latency}) steps x {step_s * 1e6:.1f} us"),
    ]
    return Tier(4, "Loihi 2 system anchors", f"{sp.source}; {pn.source}", "[P]", sys_.note, constants, figures)


def estimate_energy(activity: Activity, target: Target, chips: int, steps_per_inference: int,
                    latency: int = 0, counts_source: str = "simulation") -> EnergyReport:
    """All four tiers per inference.

    Args:
        activity: Tier-1 counts of a run.
        target: Where the constants (and their sources) come from.
        chips: Chips the model needs (from :func:`~inflor_deploy.report.resources.place`).
        steps_per_inference: Steps one sample occupies as run (the reset interval).
        latency: Pipeline fill, in steps, added once to a run of many samples.
        counts_source: How the counts were obtained (printed as tier 1's source).
    """
    not_published = [f"Loihi 2 {what}: no published figure" for what in target.energy.loihi2_system.not_published]
    return EnergyReport(
        per="inference (one sample, T timesteps)",
        tiers=[
            _tier1(activity, counts_source),
            _tier2(activity, target),
            _tier3(activity, target),
            _tier4(activity, target, chips, steps_per_inference, latency),
        ],
        not_published=not_published,
    )
