"""Energy tiers on the hand net: the 45 nm formulas, the Loihi 1 per-op sum, the Loihi 2 anchors."""

import dataclasses

import pytest

from inflor_deploy.report.activity import count_activity
from inflor_deploy.report.energy import estimate_energy, horowitz_45nm, steps_per_second_anchor
from inflor_deploy.targets import TAGS, load_target
from tests.report.hand_net import hand_graph, hand_spikes


@pytest.fixture(scope="module")
def energy():
    spikes, image = hand_spikes()
    activity = count_activity(hand_graph(), [(spikes, image)])
    return estimate_energy(activity, load_target("loihi2"), chips=1, steps_per_inference=2)


def test_horowitz_formulas_by_hand():
    # 1,000 first-layer MACs, 20,000 synops, an ANN of 50,000 MACs:
    # E_SNN = 4.6 * 1000 + 0.9 * 20000 = 4600 + 18000 = 22600 pJ;  E_ANN = 4.6 * 50000 = 230000 pJ.
    out = horowitz_45nm(4.6, 0.9, 1_000, 20_000, 50_000)
    assert out["e_snn_pj"] == pytest.approx(22_600) and out["e_ann_pj"] == pytest.approx(230_000)
    assert out["ann_over_snn"] == pytest.approx(230_000 / 22_600)
    assert horowitz_45nm(4.6, 0.9, 0, 0, 10)["ann_over_snn"] is None


def test_tier2_on_the_hand_net(energy):
    t2 = energy.tier(2)
    # Hand net (tests/report/test_activity.py): first layer 144 MACs x T=2 = 288; synops 18 + 9 = 27;
    # ANN MACs 144 + 72 + 24 = 240.
    assert t2.figure("E_SNN (first layer x T, as run)").value == pytest.approx(4.6 * 288 + 0.9 * 27)  # 1349.1 pJ
    assert t2.figure("E_SNN (first layer x 1)").value == pytest.approx(4.6 * 144 + 0.9 * 27)  # 686.7 pJ
    assert t2.figure("E_SNN (first layer x T, NeuroBench synops)").value == pytest.approx(4.6 * 288 + 0.9 * 22)
    assert t2.figure("E_ANN (same architecture, dense MACs once)").value == pytest.approx(4.6 * 240)  # 1104 pJ
    assert t2.figure("E_ANN / E_SNN (first layer x T)").value == pytest.approx(1104 / 1349.1)
    assert "Memory access is ignored" in t2.note
    layers = {x["layer"]: x for x in t2.layers}
    assert layers["n1"]["snn_pj"] == pytest.approx(4.6 * 288) and layers["n2"]["snn_pj"] == pytest.approx(0.9 * 18)
    assert sum(x["snn_pj"] for x in t2.layers) == pytest.approx(4.6 * 288 + 0.9 * 27)


def test_tier3_on_the_hand_net(energy):
    t3 = energy.tier(3)
    # synops 27 x 23.6 = 637.2; updates (16 + 8 + 3 neurons) x 2 steps = 54, of which 8 produced a spike:
    # 8 x 81 + 46 x 52 = 3040 (bracket 54 x 52 = 2808 .. 54 x 81 = 4374); spikes 8 x 1.7 = 13.6;
    # first-layer graded synops 26 x 23.6 = 613.6. Total 4304.4 pJ.
    assert t3.figure("synaptic ops (binary spikes)").value == pytest.approx(637.2)
    updates = t3.figure("neuron updates (active = produced a spike)")
    assert (updates.value, updates.low, updates.high) == pytest.approx((3040, 2808, 4374))
    assert t3.figure("spikes (one within-tile message each)").value == pytest.approx(13.6)
    assert t3.figure("first layer graded synops").value == pytest.approx(613.6)
    total = t3.figure("total (Loihi 1 per-op estimate)")
    assert (total.value, total.low, total.high) == pytest.approx((4304.4, 4304.4 - 232, 4304.4 + 1334))
    assert sum(x["total_pj"] for x in t3.layers) == pytest.approx(4304.4)


def test_tier4_anchors_are_derived_from_sourced_numbers(energy):
    target = load_target("loihi2")
    # PilotNet LIF: 408.9 inferences/s x 16 steps = 6542.4 steps/s [D].
    assert steps_per_second_anchor(target) == pytest.approx(6542.4)
    t4 = energy.tier(4)
    t_inf = 2 / 6542.4
    assert t4.figure("run time per inference").value == pytest.approx(t_inf)
    static = t4.figure("static energy per inference")
    assert (static.low, static.high) == pytest.approx((0.23 * t_inf * 1e12, 0.28 * t_inf * 1e12))
    assert "not estimated" in static.note
    assert energy.not_published and all("no published figure" in x for x in energy.not_published)
    assert any("synaptic op" in x for x in energy.not_published)


def test_every_number_has_a_tier_a_tag_and_a_source(energy):
    for tier in energy.tiers:
        assert tier.source and tier.tag in ("exact", *TAGS)
        for f in tier.constants + tier.figures:
            assert f.tier == tier.tier and f.source.strip() and f.tag in ("exact", *TAGS), f
            if tier.tier >= 2 and f in tier.figures and f.tag != "exact":
                assert f.tag == "[D]", f"{f.name}: an estimate is derived arithmetic"


def test_constants_come_from_the_target_file():
    spikes, image = hand_spikes()
    activity = count_activity(hand_graph(), [(spikes, image)])
    target = load_target("loihi2")
    h = dataclasses.replace(target.energy.horowitz_45nm, e_mac_pj=1.0, e_ac_pj=0.5)
    changed = dataclasses.replace(target, energy=dataclasses.replace(target.energy, horowitz_45nm=h))
    t2 = estimate_energy(activity, changed, chips=1, steps_per_inference=2).tier(2)
    assert t2.figure("E_SNN (first layer x T, as run)").value == pytest.approx(288 + 0.5 * 27)
