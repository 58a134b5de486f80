"""The report on the bundled digits model: plausible numbers, independent of the simulator."""

import numpy as np
import pytest

from inflor_deploy.data import load_digits
from inflor_deploy.report import build_report
from inflor_deploy.report.activity import ActivityCounter
from inflor_deploy.report.schema import validate


def test_plausible_numbers(digits_report):
    d = digits_report.to_dict()
    assert validate(d) == []
    tot = d["activity"]["totals"]
    assert tot["samples"] == 96 and tot["timesteps"] == 4
    assert tot["synops"] > 0 and tot["spikes"] > 0
    assert 0 < tot["spikes_per_neuron_per_step"] < 1
    # A non-zero-weight count can only be smaller; the lava-dl formula ignores borders (3x3, padding 1:
    # it charges 9 outputs to edge positions that reach 4 or 6), so here it counts more.
    assert 0 < tot["synops_nonzero"] <= tot["synops"] < tot["synops_lava_formula"]
    for layer in d["activity"]["layers"]:
        if layer["kind"] == "neuron":
            assert all(0 <= r <= 1 for r in layer["rate_per_step"])
            assert layer["spikes"] == sum(layer["spikes_per_step"])
    # Digits CNN: 1x8x8 -> conv 3x3 (16 ch, padding 1): 8*8*16*9 = 9,216 MACs per frame.
    first = d["activity"]["first_layer"]
    assert first["macs_per_sample"] == 9216 and first["macs_per_sample_x_T"] == 4 * 9216
    assert first["graded_values_per_step"] == 64 and 0 < first["graded_nonzero_per_step"] <= 64
    # Every synop of a dense synapse reaches out_features targets: mean fan-out is exact.
    syn = {s["name"]: s for s in d["activity"]["synapses"]}
    assert syn["fc1"]["mean_fanout"] == 64 and syn["fc2"]["mean_fanout"] == 10
    tiers = {t["tier"]: t for t in d["energy"]["tiers"]}
    assert all(f["value"] is not None and f["value"] > 0 for t in (2, 3) for f in tiers[t]["figures"])
    res = d["resources"]
    assert (res["total_cores"], res["chips"], res["status"]) == (4, 1, "ok")


def test_counts_do_not_depend_on_the_simulator(digits_artifact):
    from inflor_deploy.backends.sim.fixed_point import simulate
    from inflor_deploy.backends.sim.int_reference import run_aligned

    graph = digits_artifact.fixed_graph
    images = load_digits("test").images[:24]
    results = []
    for run in (lambda: run_aligned(graph, images, record=True).spikes,
                lambda: simulate(graph, images, view="aligned", record=True).spikes):
        counter = ActivityCounter(graph)
        counter.add_spikes(run(), images)
        results.append(counter.result().to_dict())
    assert results[0] == results[1]


def test_samples_and_bad_data_are_checked(digits_artifact):
    from inflor_deploy.data import Dataset
    from inflor_deploy.errors import InflorError

    report = build_report(digits_artifact, "digits", samples=5)
    assert report.activity.samples == 5
    with pytest.raises(InflorError, match="samples"):
        build_report(digits_artifact, "digits", samples=0)
    wrong = Dataset("rgb", np.zeros((2, 3, 8, 8), dtype=np.float32), np.zeros(2, dtype=np.int64), 10)
    with pytest.raises(InflorError, match=r"\(3, 8, 8\).*\(1, 8, 8\)"):
        build_report(digits_artifact, wrong)


def test_falls_back_to_the_integer_reference_without_the_fast_simulator(monkeypatch):
    import sys

    import inflor_deploy.backends.sim as sim
    from inflor_deploy.report import report_from_graph
    from inflor_deploy.targets import load_target
    from tests.report.hand_net import hand_graph

    monkeypatch.setitem(sys.modules, "inflor_deploy.backends.sim.fixed_point", None)  # import now fails
    monkeypatch.delattr(sim, "fixed_point", raising=False)
    images = np.random.default_rng(0).random((3, 1, 4, 4)).astype(np.float32)
    report = report_from_graph(hand_graph(), images, load_target("loihi2"), data_name="noise")
    d = report.to_dict()
    assert "integer reference" in d["run"]["simulator"] and validate(d) == []
    # No schedule: an inference takes T = 2 steps.
    steps = next(f for f in d["energy"]["tiers"][3]["figures"] if f["name"] == "steps per inference (this model)")
    assert steps["value"] == 2 and d["schedule"] is None


@pytest.fixture(scope="module")
def padded_graph():
    """The bundled model run at T = 5 on loihi2, whose reset interval must be a power of two: R = 8."""
    from inflor_deploy.compiler import compile_checkpoint
    from inflor_deploy.pretrained import DEFAULT_MODEL

    graph = compile_checkpoint(DEFAULT_MODEL, "loihi2", timesteps=5, probe_samples=2).fixed_graph
    assert graph.schedule.reset_interval == 8
    return graph


def test_padding_steps_are_counted_as_the_chip_emits_them(padded_graph):
    from inflor_deploy.backends.sim.fixed_point import simulate
    from inflor_deploy.report import report_from_graph
    from inflor_deploy.targets import load_target

    images = load_digits("test").images[:24]
    report = report_from_graph(padded_graph, images, load_target("loihi2"), data_name="digits")
    tot = report.activity.totals()
    assert tot["steps_per_inference"] == 8 and tot["padding_steps"] == 3 and report.meta["run"]["view"] == "pipelined"
    # The simulator's whole-timeline count (what the chip emits) is the samples' windows plus the
    # pipeline's fill and drain, which see only zero frames and so do not depend on the data: the
    # difference of two runs is exactly the windows of the extra samples.
    chip = [sum(simulate(padded_graph, x, view="pipelined").pipeline_spike_counts.values()) for x in (images, images[:1])]
    first = report_from_graph(padded_graph, images[:1], load_target("loihi2"), data_name="digits").activity.totals()
    assert tot["spikes"] - first["spikes"] == chip[0] - chip[1]
    aligned = simulate(padded_graph, images, view="aligned").spike_counts
    assert tot["spikes"] - sum(aligned.values()) == tot["padding_spikes_per_sample"] * 24 > 0
    assert tot["neuron_updates_per_sample"] == 8 * sum(x.neurons for x in report.activity.layers)


def test_padded_windows_do_not_depend_on_the_simulator(padded_graph, monkeypatch):
    import sys

    import inflor_deploy.backends.sim as sim
    from inflor_deploy.report import report_from_graph
    from inflor_deploy.targets import load_target

    images = load_digits("test").images[:2]
    fast = report_from_graph(padded_graph, images, load_target("loihi2"), data_name="d").activity.to_dict()
    monkeypatch.setitem(sys.modules, "inflor_deploy.backends.sim.fixed_point", None)  # import now fails
    monkeypatch.delattr(sim, "fixed_point", raising=False)
    report = report_from_graph(padded_graph, images, load_target("loihi2"), data_name="d")
    assert "integer reference" in report.meta["run"]["simulator"] and report.activity.to_dict() == fast
