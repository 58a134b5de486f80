"""Render a report dict (``report.json``) as Markdown and as a self-contained HTML page with plots.

Everything here reads only the JSON dict, so a report can be re-rendered
from ``report.json`` alone. Plots use matplotlib's object API on the Agg
canvas (no pyplot, no display, no global backend change) and are embedded
in the HTML as base64 PNG data URIs. Every number printed carries its
tier, tag and source: tables put them in columns, headings name the tier.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import numpy as np

_PREFIXES = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"),
             (1e-12, "p"), (1e-15, "f")]


def _sig(x: float, digits: int) -> str:
    """``x`` with ``digits`` significant digits, trailing zeros kept (2.00, 471, 0.900)."""
    if x == 0:
        return "0"
    x = float(f"{x:.{digits - 1}e}")  # round first: 0.9996 -> 1.00, not 1.000
    decimals = max(digits - 1 - math.floor(math.log10(abs(x))), 0)
    return f"{x:.{decimals}f}"


def si(value: float | None, unit: str, digits: int = 3, smallest: str = "f") -> str:
    """``1.23e-6, "J"`` -> ``"1.23 uJ"`` (``digits`` significant digits, no prefix below ``smallest``)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if value == 0:
        return f"0 {unit}"
    prefixes = _PREFIXES[: [p for _, p in _PREFIXES].index(smallest) + 1]
    for factor, prefix in prefixes:
        if abs(value) >= factor * 0.9995:
            return f"{_sig(value / factor, digits)} {prefix}{unit}"
    factor, prefix = prefixes[-1]
    return f"{_sig(value / factor, digits)} {prefix}{unit}"


def energy(pj: float | None) -> str:
    """An energy given in pJ, with an SI prefix no smaller than pico (0.9 pJ stays 0.900 pJ)."""
    return "n/a" if pj is None else si(pj * 1e-12, "J", smallest="p")


def num(value: Any) -> str:
    """Integers with thousands separators, floats with 4 significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def figure_value(f: dict[str, Any]) -> str:
    """A figure's value in its unit; energies (pJ) and times (s) with SI prefixes; ranges as low-high."""
    unit = f["unit"]

    def one(v):
        if v is None:
            return "n/a"
        if unit == "pJ":
            return energy(v)
        if unit in ("s", "W"):
            return si(v, unit)
        if unit == "x":
            return f"{v:.3g}x"
        return f"{num(v)} {unit}"

    if f.get("low") is not None and f.get("high") is not None and f["high"] != f["low"]:
        if f["low"] == f["value"]:
            return f"{one(f['low'])} - {one(f['high'])}"
        return f"{one(f['value'])} ({one(f['low'])} - {one(f['high'])})"
    return one(f["value"])


def _tier(d: dict[str, Any], number: int) -> dict[str, Any]:
    return next(t for t in d["energy"]["tiers"] if t["tier"] == number)


def _figure(d: dict[str, Any], tier: int, name: str) -> dict[str, Any]:
    return next(f for f in _tier(d, tier)["figures"] if f["name"] == name)


# --------------------------------------------------------------------------- plots


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _layer_labels(names: list[str], width: int = 28) -> list[str]:
    return [n if len(n) <= width else "..." + n[-(width - 3):] for n in names]


def plot_firing_rates(d: dict[str, Any]) -> bytes:
    """Mean spikes per neuron per step per layer (bars) and the rate at each timestep (heat map)."""
    layers = [x for x in d["activity"]["layers"] if x["kind"] == "neuron"]
    names = _layer_labels([x["name"] for x in layers])
    rates = np.array([x["rate_per_step"] for x in layers], dtype=float).reshape(len(layers), -1)
    steps, T = rates.shape[1], d["model"]["timesteps"]
    height = max(3.0, 0.28 * len(layers) + 1.6)
    fig = _new_figure(11, height)
    ax_bar, ax_map = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    y = np.arange(len(layers))
    mean = np.array([x["spikes_per_neuron_per_step"] for x in layers], dtype=float)
    ax_bar.barh(y, mean, color="#3b75af")
    for yi, m in zip(y, mean):
        ax_bar.text(m, yi, f" {m:.3f}", va="center", fontsize=8)
    ax_bar.set_yticks(y, names, fontsize=8)
    ax_bar.invert_yaxis()
    ax_bar.set_xlim(0, max(1e-3, mean.max() * 1.25 if len(mean) else 1))
    ax_bar.set_xlabel("spikes per neuron per timestep (mean firing rate)")
    ax_bar.set_title("Mean firing rate per layer")
    image = ax_map.imshow(rates, aspect="auto", cmap="viridis", vmin=0, vmax=max(rates.max(), 1e-3),
                          extent=(-0.5, steps - 0.5, len(layers) - 0.5, -0.5))
    ax_map.set_yticks(y, [""] * len(layers))
    ax_map.set_xticks(range(steps))
    _mark_padding(ax_map, T, steps)
    ax_map.set_xlabel("timestep t" + (f" (t >= {T}: padding of the reset interval)" if steps > T else ""))
    ax_map.set_title("Firing rate at each timestep")
    if len(layers) * steps <= 120:
        for i in range(len(layers)):
            for t in range(steps):
                ax_map.text(t, i, f"{rates[i, t]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if rates[i, t] < 0.6 * rates.max() else "black")
    fig.colorbar(image, ax=ax_map, label="fraction of neurons spiking")
    fig.suptitle(f"Spiking activity over {d['run']['samples']} samples ({d['run']['data']}) [tier 1, exact]")
    return _png(fig)


def _mark_padding(ax, T: int, steps: int) -> None:
    """A dashed line where the padding steps of the reset interval begin."""
    if steps > T:
        ax.axvline(T - 0.5, color="red", lw=1.2, ls="--")


_RASTER_ROWS = {
    "neurons": "one row per neuron (black = spike)",
    "channels": "aggregated: one row per channel\n({g:,} neurons; shade = fraction spiking)",
    "groups": "aggregated: one row per {g:,}\nconsecutive neurons (shade = fraction spiking)",
}


def raster_caption(r: dict[str, Any]) -> str:
    """How a raster panel's rows were formed (sampled, aggregated or whole)."""
    return _RASTER_ROWS[r["mode"]].format(g=r["group_size"])


def plot_raster(d: dict[str, Any]) -> bytes | None:
    """Spike raster of sample 0, one panel per recorded layer; large layers aggregated by channel or group."""
    rasters = d["activity"]["raster"]
    if not rasters:
        return None
    T = d["model"]["timesteps"]
    fig = _new_figure(min(4.0 * len(rasters) + 1, 16), 5.0)
    axes = np.atleast_1d(fig.subplots(1, len(rasters)))
    for ax, r in zip(axes, rasters):
        counts = np.asarray(r["counts"], dtype=float).reshape(len(r["counts"]), -1)
        rows, steps = counts.shape
        sizes = np.full(rows, float(r["group_size"]))
        sizes[-1] = r["neurons"] - r["group_size"] * (rows - 1)  # the last group may be smaller
        fraction = counts / sizes[:, None]
        # Aggregated rows: shade up to the panel's largest fraction (a colour bar gives the scale).
        top = 1.0 if r["mode"] == "neurons" else max(float(fraction.max()), 1e-3)
        image = ax.imshow(fraction, aspect="auto", cmap="Greys", vmin=0, vmax=top, interpolation="nearest",
                          extent=(-0.5, steps - 0.5, rows - 0.5, -0.5))
        if r["mode"] != "neurons":
            fig.colorbar(image, ax=ax, label="fraction of the row's neurons spiking")
        ax.set_xticks(range(steps))
        _mark_padding(ax, T, steps)
        ax.set_xlabel("timestep t" + (f" (dashed: padding from t = {T})" if steps > T else ""))
        ax.set_ylabel({"neurons": "neuron (C-major)", "channels": "channel", "groups": "neuron group (C-major)"}[r["mode"]])
        spikes = int(counts.sum())
        ax.set_title(f"{_layer_labels([r['layer']], 24)[0]}: {r['neurons']:,} neurons, {spikes:,} spikes\n"
                     f"{raster_caption(r)}", fontsize=8)
    fig.suptitle("Spike raster of one sample (sample 0); rows as each panel says")
    return _png(fig)


def plot_energy(d: dict[str, Any]) -> bytes:
    """Per-layer energy for tiers 2 and 3 and the per-inference total of every tier (log scales)."""
    t2, t3 = _tier(d, 2), _tier(d, 3)
    names = [x["layer"] for x in t2["layers"]]
    e2 = np.array([x["snn_pj"] for x in t2["layers"]], dtype=float) * 1e-3  # nJ
    ann = np.array([x["ann_pj"] for x in t2["layers"]], dtype=float) * 1e-3
    e3 = np.array([x["total_pj"] for x in t3["layers"]], dtype=float) * 1e-3
    height = max(3.5, 0.36 * len(names) + 1.8)
    fig = _new_figure(12, height)
    ax_l, ax_t = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.35, 1]})
    y = np.arange(len(names))
    h = 0.27
    positive = np.concatenate([e2, ann, e3])
    positive = positive[positive > 0]
    floor = positive.min() / 3 if positive.size else 1e-3
    # Zero energies (no synops into a layer) draw no bar on the log axis.
    ax_l.barh(y - h, np.where(e2 > 0, e2, np.nan), h, label=f"tier 2: 45 nm SNN ([D] from {t2['tag']})", color="#4c9a5b")
    ax_l.barh(y, np.where(ann > 0, ann, np.nan), h, label=f"tier 2: 45 nm ANN ([D] from {t2['tag']})", color="#b3b3b3")
    ax_l.barh(y + h, np.where(e3 > 0, e3, np.nan), h, label=f"tier 3: Loihi 1 per-op ([D] from {t3['tag']})", color="#d1722f")
    ax_l.set_xlim(floor, positive.max() * 3 if positive.size else 1)
    ax_l.set_yticks(y, _layer_labels(names), fontsize=8)
    ax_l.invert_yaxis()
    ax_l.set_xscale("log")
    ax_l.set_xlabel("energy per inference per layer (nJ, log scale)")
    ax_l.set_title("Energy per layer (synaptic ops into the layer + its neurons)")
    ax_l.legend(fontsize=8, loc="lower right")

    bars = [
        ("T2 SNN (first layer x T)", _figure(d, 2, "E_SNN (first layer x T, as run)"), "#4c9a5b"),
        ("T2 SNN (first layer x 1)", _figure(d, 2, "E_SNN (first layer x 1)"), "#8cc79a"),
        ("T2 ANN (dense MACs)", _figure(d, 2, "E_ANN (same architecture, dense MACs once)"), "#b3b3b3"),
        ("T3 Loihi 1 per-op", _figure(d, 3, "total (Loihi 1 per-op estimate)"), "#d1722f"),
        ("T4 Loihi 2 static only", _figure(d, 4, "static energy per inference"), "#7b5ea7"),
    ]
    yy = np.arange(len(bars))
    for i, (label, f, color) in enumerate(bars):
        value = f["value"] * 1e-6  # uJ
        ax_t.barh(i, value, color=color)
        if f.get("low") is not None and f.get("high") is not None:
            lo, hi = f["low"] * 1e-6, f["high"] * 1e-6
            ax_t.errorbar([value], [i], xerr=[[value - lo], [hi - value]], fmt="none", ecolor="black", capsize=4)
        ax_t.text((f.get("high") or f["value"]) * 1e-6, i, "  " + figure_value(f), va="center", fontsize=8)
    ax_t.set_yticks(yy, [f"{b[0]} {b[1]['tag']}" for b in bars], fontsize=8)
    ax_t.invert_yaxis()
    ax_t.set_xscale("log")
    lo = min(b[1]["value"] for b in bars if b[1]["value"]) * 1e-6
    hi = max((b[1].get("high") or b[1]["value"]) for b in bars) * 1e-6
    ax_t.set_xlim(lo / 3, hi * 30)
    ax_t.set_xlabel("energy per inference (uJ, log scale)")
    ax_t.set_title("Per inference, by tier (never add tiers)")
    fig.suptitle("Energy estimates: tier 2 Horowitz ISSCC 2014 (45 nm); tier 3 Davies 2018 (Loihi 1, pre-silicon); "
                 "tier 4 Loihi 2 static power x PilotNet step time", fontsize=9)
    return _png(fig)


def plot_occupancy(d: dict[str, Any]) -> bytes:
    """Neurons and memory (by kind) of every core, against the per-core limits."""
    res = d["resources"]
    cores = res["cores"]
    fig = _new_figure(12, 5.2)
    ax_n, ax_m = fig.subplots(2, 1, sharex=True)
    if not cores:
        ax_n.text(0.5, 0.5, "no layer could be placed", ha="center", transform=ax_n.transAxes)
        return _png(fig)
    x = np.arange(len(cores))
    layers = list(dict.fromkeys(c["layer"] for c in cores))
    palette = [f"C{i % 10}" for i in range(len(layers))]
    colors = [palette[layers.index(c["layer"])] for c in cores]
    width = 0.85 if len(cores) > 1 else 0.5
    ax_n.bar(x, [c["neurons_pct"] for c in cores], width, color=colors)
    ax_n.axhline(100, color="red", lw=1, ls="--")
    ax_n.set_ylabel("neurons (% of limit)")
    ax_n.set_ylim(0, 135)
    ax_n.set_yticks(range(0, 101, 20))
    ax_n.set_title(f"Neurons per core (limit {res['limits']['neurons_per_core']:,}); colour = layer")
    mem = res["limits"]["memory_per_core_bytes"]
    syn = np.array([c["synapse_bytes"] for c in cores]) / mem * 100
    state = np.array([c["state_bytes"] for c in cores]) / mem * 100
    route = np.array([c["routing_bytes"] for c in cores]) / mem * 100
    ax_m.bar(x, syn, width, label="synapse weights", color="#3b75af")
    ax_m.bar(x, state, width, bottom=syn, label="neuron state", color="#e3a32b")
    ax_m.bar(x, route, width, bottom=syn + state, label="routing reserve (assumed)", color="#b3b3b3")
    ax_m.axhline(100, color="red", lw=1, ls="--", label="limit")
    ax_m.set_ylim(0, 135)
    ax_m.set_yticks(range(0, 101, 20))
    from matplotlib.ticker import MaxNLocator

    ax_m.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_m.set_ylabel("memory (% of limit)")
    ax_m.set_xlabel("core (placement order; chip boundaries dotted)")
    ax_m.set_title(f"Memory per core (limit {mem / 1024:g} KiB) by kind")
    ax_m.legend(fontsize=8, loc="upper right", ncol=4)
    for chip in range(1, res["chips"]):
        first = next(c["index"] for c in cores if c["chip"] == chip)
        for ax in (ax_n, ax_m):
            ax.axvline(first - 0.5, color="black", lw=1, ls=":")
    if len(layers) <= 12:
        from matplotlib.patches import Patch

        handles = [Patch(color=palette[i], label=_layer_labels([name], 22)[0]) for i, name in enumerate(layers)]
        ax_n.legend(handles=handles, fontsize=7, loc="upper right", ncol=min(6, len(layers)))
    fig.suptitle(f"Core occupancy: {res['total_cores']} cores on {res['chips']} chip(s), target {res['target']} "
                 f"(memory model: see assumptions)")
    return _png(fig)


def make_plots(d: dict[str, Any]) -> dict[str, bytes]:
    """Every plot as PNG bytes, keyed by name (the raster is absent without recorded trains)."""
    plots = {
        "firing_rates": plot_firing_rates(d),
        "raster": plot_raster(d),
        "energy": plot_energy(d),
        "occupancy": plot_occupancy(d),
    }
    return {k: v for k, v in plots.items() if v is not None}


# --------------------------------------------------------------------------- tables


_READOUT_LABELS = {
    "mean_current": "mean input current over T",
    "mean_membrane": "mean membrane over T",
    "spike_count": "spike count",
}


def _layer_rows(d: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    n = d["run"]["samples"]
    head = ["layer", "shape", "neurons", "spikes / inference", "spikes / neuron / step", "rate per step",
            "synops in (exact)", "synops in (NeuroBench)", "synops in (lava-dl formula)", "first-layer MACs x T"]
    T = d["model"]["timesteps"]
    rows = []
    for x in d["activity"]["layers"]:
        spiking = x["kind"] == "neuron"
        rows.append([
            x["name"] + ("" if spiking else f" (readout: {_READOUT_LABELS.get(x.get('readout'), 'accumulator')})"),
            "x".join(str(s) for s in x["shape"]),
            num(x["neurons"]),
            num(x["spikes"] / n) if spiking else "-",
            f"{x['spikes_per_neuron_per_step']:.4f}" if spiking else "-",
            " ".join(f"{r:.3f}" for r in x["rate_per_step"]) if spiking else "-",
            num(x["synops"] / n),
            num(x["synops_nonzero"] / n),
            num(x["synops_lava_formula"] / n),
            num(x["first_layer_macs"] * T) if x["first_layer_macs"] else "-",
        ])
    return head, rows


def _first_layer_rows(d: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the analog first layer's counts (shared by Markdown and HTML)."""
    first = d["activity"]["first_layer"]
    return ["quantity", "per inference"], [
        ["MACs x 1", num(first["macs_per_sample"])],
        ["MACs x T (as run)", num(first["macs_per_sample_x_T"])],
        ["graded values sent per step", num(first["graded_values_per_step"])],
        ["graded messages (x T)", num(first["graded_messages_per_sample"])],
        ["non-zero graded messages (x T)", num(first["graded_nonzero_messages_per_sample"])],
        ["graded synops on Loihi (non-zero values x fan-out x T)", num(first["graded_synops_per_sample"])],
    ]


def _synapse_rows(d: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    n = d["run"]["samples"]
    head = ["synapse", "source -> target", "kind", "events / inference", "mean fan-out", "synops (exact)",
            "synops (NeuroBench)", "synops (lava-dl)", "ANN MACs", "note"]
    rows = []
    for s in d["activity"]["synapses"]:
        note = []
        if s["from_input"]:
            note.append("first layer: graded input, counted as MACs")
        if s["identity_like"]:
            note.append("identity shortcut compiled as 1x1/diagonal: full structural fan-out charged")
        rows.append([s["name"], f"{s['source']} -> {s['target']}", s["kind"], num(s["events"] / n),
                     f"{s['mean_fanout']:.1f}", num(s["synops"] / n), num(s["synops_nonzero"] / n),
                     num(s["synops_lava_formula"] / n), num(s["macs_per_sample"]), "; ".join(note)])
    return head, rows


def _figure_rows(figures: list[dict[str, Any]], with_formula: bool = True) -> tuple[list[str], list[list[str]]]:
    head = ["quantity", "value", "tier", "tag", "source"] + (["how"] if with_formula else [])
    rows = []
    for f in figures:
        row = [f["name"] + (f" ({f['note']})" if f.get("note") else ""), figure_value(f), str(f["tier"]), f["tag"],
               f["source"]]
        if with_formula:
            row.append(f.get("formula", ""))
        rows.append(row)
    return head, rows


def _energy_layer_rows(d: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    t2, t3 = _tier(d, 2), _tier(d, 3)
    d2, d3 = f"[D] from {t2['tag']}", f"[D] from {t3['tag']}"
    head = ["layer", f"tier 2 SNN {d2}", f"tier 2 ANN {d2}", f"tier 3 synops {d3}", f"tier 3 updates {d3}",
            f"tier 3 spikes {d3}", f"tier 3 graded synops {d3}", f"tier 3 total {d3}"]
    rows = []
    for a, b in zip(t2["layers"], t3["layers"]):
        rows.append([a["layer"], energy(a["snn_pj"]), energy(a["ann_pj"]), energy(b["synop_pj"]),
                     energy(b["update_pj"]), energy(b["spike_pj"]), energy(b["graded_synop_pj"]),
                     energy(b["total_pj"])])
    return head, rows


def _resource_rows(d: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    res = d["resources"]
    by_layer: dict[str, list[dict]] = {}
    for c in res["cores"]:
        by_layer.setdefault(c["layer"], []).append(c)
    head = ["layer", "neurons", "cores", "split by", "fan-in weights / neuron", "weights (all cores)",
            "max neurons / core", "max memory / core"]
    rows = []
    for lp in res["layers"]:
        cores = by_layer.get(lp["layer"], [])
        rows.append([
            lp["layer"], num(lp["neurons"]), num(lp["cores"]) if lp["cores"] is not None else "CANNOT PLACE",
            lp["limited_by"] or "-", num(lp["fanin_weights"]), si(lp["synapse_bytes"], "B"),
            f"{max(c['neurons_pct'] for c in cores):.1f}%" if cores else "-",
            f"{max(c['memory_pct'] for c in cores):.1f}%" if cores else "-",
        ])
    return head, rows


def _core_rows(d: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["core", "chip", "layer", "neurons", "neurons %", "synapse bytes", "state bytes", "routing bytes", "memory %"]
    rows = [[str(c["index"]), str(c["chip"]), c["layer"], num(c["neurons"]), f"{c['neurons_pct']:.1f}",
             num(c["synapse_bytes"]), num(c["state_bytes"]), num(c["routing_bytes"]), f"{c['memory_pct']:.1f}"]
            for c in d["resources"]["cores"]]
    return head, rows


# --------------------------------------------------------------------------- markdown


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    def cell(text):
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _headline(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, value, tier/tag/source) rows of the summary."""
    tot = d["activity"]["totals"]
    t1 = _tier(d, 1)["source"]
    rows = [
        ("spikes per neuron per step", f"{tot['spikes_per_neuron_per_step']:.4f}", f"tier 1, exact: {t1}"),
        ("synaptic ops per inference (exact fan-out)", num(tot["synops_per_sample"]), f"tier 1, exact: {t1}"),
        ("first-layer MACs per inference (x T, as run)", num(d["activity"]["first_layer"]["macs_per_sample_x_T"]),
         "tier 1, exact: from the graph"),
    ]
    for tier, name in [(2, "E_SNN (first layer x T, as run)"), (2, "E_ANN (same architecture, dense MACs once)"),
                       (2, "E_ANN / E_SNN (first layer x T)"), (3, "total (Loihi 1 per-op estimate)"),
                       (4, "static energy per inference")]:
        f = _figure(d, tier, name)
        label = name if name.endswith("per inference") or f["unit"] != "pJ" else f"{name} per inference"
        rows.append((label, figure_value(f),
                     f"tier {tier}, {f['tag']}: {_tier(d, tier)['title']}"))
    res = d["resources"]
    rows.append(("cores / chips", f"{res['total_cores']} / {res['chips']}", f"placement on {res['target']} limits "
                 "(memory model with stated assumptions)"))
    return rows


def title(d: dict[str, Any]) -> str:
    """``digits_srif_t4 (digits_cnn, T = 4) on loihi2-sim``: the architecture only when it says more than the name."""
    m = d["model"]
    details = [m["arch"]] if m.get("arch") and m["arch"] != m["name"] else []
    details.append(f"T = {m['timesteps']}")
    return f"{m['name']} ({', '.join(details)}) on {d['target']['name']}"


def _tag_rows(d: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    return ["tag", "meaning"], [[tag, meaning] for tag, meaning in d["tags"].items()]


def _padding_note(d: dict[str, Any]) -> str:
    tot = d["activity"]["totals"]
    if not tot.get("padding_steps"):
        return ""
    return (f"Each inference occupies {tot['steps_per_inference']} steps on the chip (the reset interval): T = "
            f"{d['model']['timesteps']} plus {tot['padding_steps']} padding steps, whose spikes "
            f"({num(tot['padding_spikes_per_sample'])} per inference), synops and neuron updates are counted.")


def render_markdown(d: dict[str, Any]) -> str:
    """The report as Markdown (tables only; the plots are in report.html)."""
    m, run, res = d["model"], d["run"], d["resources"]
    out = [
        f"# Report: {title(d)}",
        "",
        f"- status: **{d['status']}** (resource limits {'enforced' if res['enforced'] else 'reported only'})",
        f"- data: {run['data']}, {run['samples']} samples, T = {m['timesteps']}; simulator: {run['simulator']}",
        f"- artifact: {m.get('artifact') or '-'}; created {d['created']}; schema {d['schema']} v{d['schema_version']}",
        "- plots: see report.html",
        "",
        "## Summary",
        "",
        _md_table(["quantity", "value", "tier / tag / source"], [list(r) for r in _headline(d)]),
        "",
        "Loihi 2 per-operation energy: **not published** — "
        + "; ".join(d["energy"]["not_published"]) + ". Tiers are separate estimates: never add them.",
        "",
        "## How to read the tags",
        "",
        "Every number carries a tag saying where it comes from:",
        "",
        _md_table(*_tag_rows(d)),
        "",
    ]
    if res["violations"]:
        out += ["## Violations", ""]
        for v in res["violations"]:
            out.append(f"- **{v['severity'].upper()}** ({v['kind']}, `{v['limit']}`): {v['message']}. Fix: {v['fix']}.")
        out.append("")
    out += ["## Activity (tier 1: exact counts, per inference)", ""]
    if _padding_note(d):
        out += [_padding_note(d), ""]
    out += [f"- **{k}**: {v}" for k, v in d["activity"]["conventions"].items()]
    out += ["", _md_table(*_layer_rows(d)), "", "### Synapses", "", _md_table(*_synapse_rows(d)), ""]
    out += ["### First layer (analog input, direct encoding)", "", _md_table(*_first_layer_rows(d)), ""]
    out += [f"## Energy (per {d['energy']['per']})", ""]
    for t in d["energy"]["tiers"]:
        out += [f"### Tier {t['tier']}: {t['title']} {t['tag']}", "", f"Source: {t['source']}", ""]
        if t["note"]:
            out += [f"Note: {t['note']}", ""]
        if t["constants"]:
            out += ["Constants:", "", _md_table(*_figure_rows(t["constants"], with_formula=False)), ""]
        out += [_md_table(*_figure_rows(t["figures"])), ""]
    out += ["### Energy per layer (tiers 2 and 3)", "", _md_table(*_energy_layer_rows(d)), ""]
    out += ["## Resources", "",
            f"{res['total_cores']} cores on {res['chips']} chip(s) of {res['limits']['usable_cores_per_chip']} usable "
            f"cores; {res['limits']['neurons_per_core']:,} neurons and {res['limits']['memory_per_core_bytes']:,} bytes "
            f"per core; status **{res['status']}**.", "",
            "Memory model:", "",
            _md_table(["what", "value", "basis", "tag"],
                      [[a["what"], a["value"], a["basis"], a["tag"]] for a in res["memory_model"]["assumptions"]]),
            "", _md_table(*_resource_rows(d)), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- html

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1250px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .85em; }
th, td { border: 1px solid #ddd; padding: .25em .55em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
.status-ok { color: #1b7f3b; font-weight: bold; } .status-warning { color: #b36b00; font-weight: bold; }
.status-error { color: #b00020; font-weight: bold; }
.violation { background: #fdecea; border-left: 4px solid #b00020; padding: .4em .8em; margin: .4em 0; }
.violation.warning { background: #fff4e0; border-left-color: #b36b00; }
.note { color: #555; font-size: .9em; } img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
code { background: #f3f3f3; padding: 0 .25em; }
"""


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    return ("<table><thead><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
            + "</tbody></table>")


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_html(d: dict[str, Any], plots: dict[str, bytes] | None = None) -> str:
    """The report as one self-contained HTML page: tables plus plots embedded as PNG data URIs."""
    e = html.escape
    plots = make_plots(d) if plots is None else plots
    m, run, res = d["model"], d["run"], d["resources"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>inflor-deploy report: {e(title(d))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Report: {e(title(d))}</h1>",
        f"<p>Status: <span class='status-{e(d['status'])}'>{e(d['status'])}</span> "
        f"(resource limits {'enforced' if res['enforced'] else 'reported only'}) &middot; data {e(run['data'])}, "
        f"{run['samples']} samples, T = {m['timesteps']} &middot; simulator: {e(run['simulator'])} &middot; "
        f"created {e(d['created'])} &middot; schema {e(d['schema'])} v{d['schema_version']}</p>",
        "<h2>Summary</h2>",
        _html_table(["quantity", "value", "tier / tag / source"], [list(r) for r in _headline(d)]),
        "<p class='note'>Loihi 2 per-operation energy: <b>not published</b> ("
        + e("; ".join(d["energy"]["not_published"]))
        + "). The tiers are separate estimates with different assumptions: never add them.</p>",
        "<h2>How to read the tags</h2><p>Every number carries a tag saying where it comes from:</p>",
        _html_table(*_tag_rows(d)),
    ]
    if res["violations"]:
        parts.append("<h2>Violations</h2>")
        for v in res["violations"]:
            parts.append(f"<div class='violation {e(v['severity'])}'><b>{e(v['severity'].upper())}</b> "
                         f"({e(v['kind'])}, <code>{e(v['limit'])}</code>): {e(v['message'])}.<br>"
                         f"<b>Fix:</b> {e(v['fix'])}.</div>")
    parts.append("<h2>Activity (tier 1: exact counts, per inference)</h2>")
    if _padding_note(d):
        parts.append(f"<p>{e(_padding_note(d))}</p>")
    if "firing_rates" in plots:
        parts.append(_img(plots["firing_rates"], "firing rate per layer and timestep"))
    if "raster" in plots:
        parts.append(_img(plots["raster"], "spike raster of one sample"))
    parts.append("<ul class='note'>" + "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>"
                                              for k, v in d["activity"]["conventions"].items()) + "</ul>")
    parts.append(_html_table(*_layer_rows(d)))
    parts.append("<h3>Synapses</h3>" + _html_table(*_synapse_rows(d)))
    parts.append("<h3>First layer (analog input, direct encoding)</h3>" + _html_table(*_first_layer_rows(d)))
    parts.append(f"<h2>Energy (per {e(d['energy']['per'])})</h2>")
    if "energy" in plots:
        parts.append(_img(plots["energy"], "energy per layer and per tier"))
    for t in d["energy"]["tiers"]:
        parts.append(f"<h3>Tier {t['tier']}: {e(t['title'])} {e(t['tag'])}</h3><p class='note'>Source: {e(t['source'])}"
                     + (f"<br>Note: {e(t['note'])}" if t["note"] else "") + "</p>")
        if t["constants"]:
            parts.append("<p>Constants:</p>" + _html_table(*_figure_rows(t["constants"], with_formula=False)))
        parts.append(_html_table(*_figure_rows(t["figures"])))
    parts.append("<h3>Energy per layer (tiers 2 and 3)</h3>" + _html_table(*_energy_layer_rows(d)))
    parts.append("<h2>Resources</h2>")
    if "occupancy" in plots:
        parts.append(_img(plots["occupancy"], "core occupancy"))
    parts.append(f"<p>{res['total_cores']} cores on {res['chips']} chip(s) of {res['limits']['usable_cores_per_chip']} "
                 f"usable cores; {res['limits']['neurons_per_core']:,} neurons and "
                 f"{res['limits']['memory_per_core_bytes']:,} bytes per core; status "
                 f"<span class='status-{e(res['status'])}'>{e(res['status'])}</span>.</p>")
    parts.append("<p>Memory model:</p>" + _html_table(
        ["what", "value", "basis", "tag"], [[a["what"], a["value"], a["basis"], a["tag"]] for a in res["memory_model"]["assumptions"]]))
    parts.append(_html_table(*_resource_rows(d)))
    parts.append(f"<details><summary>Every core ({res['total_cores']})</summary>{_html_table(*_core_rows(d))}</details>")
    parts.append("</body></html>")
    return "\n".join(parts)
