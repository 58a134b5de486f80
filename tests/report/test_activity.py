"""Tier-1 counts: synaptic ops equal a hand count on a tiny conv net with padding and stride."""

import numpy as np
import pytest

from inflor_deploy.ir import nodes as n
from inflor_deploy.report.activity import (
    ActivityCounter,
    ActivityError,
    count_activity,
    fanout_exact,
    fanout_nonzero,
    is_identity_like,
    lava_formula_fanout,
    macs_per_sample,
)
from tests.report.hand_net import hand_graph, hand_spikes


def _conv(weight, stride=(1, 1), padding=(0, 0), groups=1):
    return n.FixedPointSynapse("s", ("x",), kind="conv", weight=np.asarray(weight, dtype=np.int32),
                               stride=stride, padding=padding, groups=groups)


def test_conv_fanout_map_by_hand():
    # 1-channel 4x4 input, 3x3 kernel, padding 1, stride 2 -> 2x2 output.
    # Output row i reads input rows y with 0 <= y + 1 - 2i < 3:  i=0 -> y in {0, 1};  i=1 -> y in {1, 2, 3}.
    # So each input row reaches Fy = [1, 2, 1, 1] output rows (columns alike), and a spike at (y, x)
    # reaches Fy[y] * Fx[x] positions in each of the 2 output channels.
    syn = _conv(np.ones((2, 1, 3, 3)), stride=(2, 2), padding=(1, 1))
    per_channel = np.array([[1, 2, 1, 1],
                            [2, 4, 2, 2],
                            [1, 2, 1, 1],
                            [1, 2, 1, 1]])
    assert np.array_equal(fanout_exact(syn, (1, 4, 4))[0], 2 * per_channel)
    # Channel 1's centre tap (a, b) = (1, 1) is zero: only sources landing on another tap reach it.
    w = np.ones((2, 1, 3, 3))
    w[1, 0, 1, 1] = 0
    nonzero = fanout_nonzero(_conv(w, stride=(2, 2), padding=(1, 1)), (1, 4, 4))[0]
    # Source (y, x) meets tap (y + 1 - 2i, x + 1 - 2j); it is the centre tap when y + 1 - 2i = 1,
    # i.e. y = 2i: y in {0, 2} and likewise x in {0, 2} (both even), once each.
    centre = np.zeros((4, 4), dtype=int)
    centre[np.ix_([0, 2], [0, 2])] = 1
    assert np.array_equal(nonzero, 2 * per_channel - centre)


def _brute_fanout(weight, in_shape, stride, padding, groups, nonzero_only):
    """The definition, from the forward direction: walk every output, every tap."""
    out_c, cg, kh, kw = weight.shape
    c_in, h, w = in_shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    fan = np.zeros(in_shape, dtype=np.int64)
    per_group = out_c // groups
    for o in range(out_c):
        g = o // per_group
        for i in range(oh):
            for j in range(ow):
                for c in range(cg):
                    for a in range(kh):
                        for b in range(kw):
                            y, x = sh * i + a - ph, sw * j + b - pw
                            if 0 <= y < h and 0 <= x < w and (not nonzero_only or weight[o, c, a, b] != 0):
                                fan[g * cg + c, y, x] += 1
    return fan


@pytest.mark.parametrize("in_shape, out_c, k, stride, padding, groups", [
    ((2, 5, 6), 3, (3, 3), (1, 1), (1, 1), 1),
    ((4, 7, 7), 4, (3, 2), (2, 3), (1, 0), 2),
    ((3, 6, 6), 2, (6, 6), (2, 2), (2, 2), 1),   # the shape pooling-folded VGG convs have
    ((2, 4, 4), 2, (1, 1), (2, 2), (0, 0), 1),   # strided 1x1 shortcut
])
def test_fanout_maps_match_the_forward_definition(in_shape, out_c, k, stride, padding, groups):
    rng = np.random.default_rng(0)
    weight = rng.integers(-2, 3, (out_c, in_shape[0] // groups, *k))  # ~40% zeros
    syn = _conv(weight, stride, padding, groups)
    assert np.array_equal(fanout_exact(syn, in_shape), _brute_fanout(weight, in_shape, stride, padding, groups, False))
    assert np.array_equal(fanout_nonzero(syn, in_shape), _brute_fanout(weight, in_shape, stride, padding, groups, True))


def test_dense_fanout_and_identity_detection():
    w = np.array([[1, 0, 2], [0, 0, 3]], dtype=np.int32)
    dense = n.FixedPointSynapse("d", ("x",), kind="dense", weight=w)
    assert fanout_exact(dense, (3,)).tolist() == [2, 2, 2]
    assert fanout_nonzero(dense, (3,)).tolist() == [1, 0, 2]
    assert lava_formula_fanout(dense) == 2 and macs_per_sample(dense, (3,)) == 6
    assert is_identity_like(_conv(np.eye(3).reshape(3, 3, 1, 1) * 7))
    assert not is_identity_like(_conv(np.ones((3, 3, 1, 1))))
    assert not is_identity_like(dense)


def test_activity_of_the_hand_net_equals_the_hand_count():
    spikes, image = hand_spikes()
    act = count_activity(hand_graph(), [(spikes, image)])
    syn = {s.name: s for s in act.synapses}
    # c2 (stride 2, padding 1, 2 output channels), fan-out 2 * per_channel (test above):
    #   t=0: (0,0) -> 2*1 = 2,  (1,1) -> 2*4 = 8                       = 10
    #   t=1: (3,3) -> 2*1 = 2,  (1,2) -> 2*2 = 4,  (2,0) -> 2*1 = 2     =  8
    assert syn["c2"].synops_per_step == [10, 8] and syn["c2"].synops == 18 and syn["c2"].events == 5
    # NeuroBench: channel 1's centre tap is zero; of the 5 spikes only (0,0) and (2,0) land on it
    # (y, x both even): 18 - 2 = 16.
    assert syn["c2"].synops_nonzero == 16
    # lava-dl formula: 5 events x 2 channels x 9 taps / (2*2) = 22.5 (borders ignored).
    assert syn["c2"].synops_lava_formula == pytest.approx(22.5)
    # fc (8 -> 3): n2 spikes at flat indices 0 (t=0), 7 and 2 (t=1): 3 spikes x 3 targets = 9;
    # non-zero weights: column 0 has 2, column 7 has 1, column 2 has 3 -> 6.
    assert (syn["fc"].synops, syn["fc"].synops_nonzero, syn["fc"].synops_per_step) == (9, 6, [3, 6])
    # First layer c1 (3x3, padding 1, stride 1 on 4x4): Fy = [2, 3, 3, 2]. Non-zero pixels (0,0) and
    # (2,2) reach 2*2 = 4 and 3*3 = 9 outputs: 13 graded synops per step, x T = 2 -> 26.
    assert syn["c1"].from_input and syn["c1"].events == 4 and syn["c1"].synops == 26
    first = act.first_layer
    # MACs per sample: 4*4 positions x 1 out x 1 in x 3*3 = 144; x T = 288.
    assert (first.macs_per_sample, first.macs_per_sample_x_T) == (144, 288)
    assert (first.graded_values_per_step, first.graded_nonzero_per_step) == (16, 2.0)
    assert (first.graded_messages_per_sample, first.graded_synops_per_sample) == (32, 26.0)
    tot = act.totals()
    # Synop totals exclude the first layer: 18 + 9.
    assert (tot["synops"], tot["synops_nonzero"]) == (27, 22)
    # Spikes 5 + 3 over (16 + 8) neurons x 2 steps; updates (16 + 8 + 3) x 2 = 54.
    assert tot["spikes"] == 8 and tot["spikes_per_neuron_per_step"] == pytest.approx(8 / 48)
    assert tot["neuron_updates"] == 54 and tot["active_updates_per_sample"] == 8
    # ANN MACs: c1 144 + c2 (2x2 positions x 2 out x 1 in x 9 = 72) + fc 24 = 240.
    assert tot["ann_macs_per_sample"] == 240
    layers = {x.name: x for x in act.layers}
    assert layers["n1"].rate_per_step == [2 / 16, 3 / 16] and layers["n2"].spikes_per_step == [1, 2]
    assert layers["out"].kind == "accumulator" and layers["out"].spikes is None and layers["out"].synops == 9
    assert layers["n1"].first_layer_macs == 144 and layers["n2"].synops == 18


def test_counts_and_trains_give_the_same_activity_and_batches_add_up():
    spikes, image = hand_spikes()
    graph = hand_graph()
    by_trains = ActivityCounter(graph)
    by_trains.add_spikes(spikes, image)
    by_trains.add_spikes(spikes, image)
    by_counts = ActivityCounter(graph)
    by_counts.add_counts({k: v.sum(axis=1) for k, v in spikes.items()}, image)
    by_counts.add_counts({k: v.sum(axis=1) for k, v in spikes.items()}, image)
    a, b = by_trains.result().to_dict(), by_counts.result().to_dict()
    assert a["totals"] == b["totals"] and a["synapses"] == b["synapses"] and a["layers"] == b["layers"]
    assert a["totals"]["synops"] == 2 * 27 and a["totals"]["synops_per_sample"] == 27
    # The raster keeps sample 0's spikes, one row per neuron (16 neurons): n1 has 5 of them.
    raster = {r["layer"]: r for r in a["raster"]}
    assert raster["n1"]["mode"] == "neurons" and raster["n1"]["group_size"] == 1
    rows = np.array(raster["n1"]["counts"])
    assert rows.shape == (16, 2) and sorted(zip(*np.nonzero(rows.T))) == [(0, 0), (0, 5), (1, 6), (1, 8), (1, 15)]


def test_bad_trains_are_refused_with_the_layer_named():
    spikes, image = hand_spikes()
    counter = ActivityCounter(hand_graph())
    with pytest.raises(ActivityError, match="n2"):
        counter.add_spikes({"n1": spikes["n1"]}, image)
    with pytest.raises(ActivityError, match=r"n1.*shape"):
        counter.add_spikes({"n1": spikes["n1"][:, :, 0], "n2": spikes["n2"]}, image)
    with pytest.raises(ActivityError, match="no samples"):
        counter.result()


def test_padding_steps_of_the_reset_interval_are_counted():
    # T = 2 run in windows of R = 4: n1 keeps firing at t = 2, 3 (zero input, membrane above threshold).
    spikes, image = hand_spikes()
    padded = {k: np.concatenate([v, np.zeros_like(v)]) for k, v in spikes.items()}
    padded["n1"][2, 0, 0, 0, 0] = padded["n1"][3, 0, 0, 0, 0] = 1  # n1 (0, 0): fan-out Fy[0]*Fx[0] = 1 x 2 channels
    padded["n2"][3, 0, 1, 1, 1] = 1  # fan-out 3 into fc
    counter = ActivityCounter(hand_graph(), steps=4)
    counter.add_spikes(padded, image)
    act = counter.result()
    tot = act.totals()
    assert tot["steps_per_inference"] == 4 and tot["padding_steps"] == 2
    assert tot["spikes"] == 8 + 3 and tot["padding_spikes_per_sample"] == 3
    layers = {x.name: x for x in act.layers}
    assert layers["n1"].spikes_per_step == [2, 3, 1, 1] and layers["n1"].padding_spikes == 2
    # Every neuron updates at every step of the window: (16 + 8 + 3) x 4.
    assert tot["neuron_updates"] == 27 * 4 and tot["spikes_per_neuron_per_step"] == pytest.approx(11 / (24 * 4))
    synapses = {s.name: s for s in act.synapses}
    assert synapses["c2"].synops_per_step[2:] == [2, 2] and synapses["fc"].synops_per_step[2:] == [0, 3]
    assert tot["synops"] == 27 + 2 + 2 + 3
    # The padding frames are zero: the analog first layer sends nothing there.
    assert synapses["c1"].synops_per_step[2:] == [0, 0] and act.first_layer.macs_per_sample_x_T == 144 * 2
    with pytest.raises(ActivityError, match="shorter than T"):
        ActivityCounter(hand_graph(), steps=1)


def test_large_layers_are_aggregated_in_the_raster_and_say_how():
    from inflor_deploy.ir.graph import Graph

    conv_shape, dense = (3, 10, 10), 300  # 300 and 300 neurons, both above RASTER_MAX_ROWS = 128
    graph = Graph(nodes=(
        n.Input("image", (), shape=(1, 10, 10), grade_scale=255.0),
        n.FixedPointSynapse("c", ("image",), kind="conv", weight=np.ones((3, 1, 1, 1), dtype=np.int32)),
        n.FixedPointNeuron("conv", ("c",), shape=conv_shape, vth=1, reset_mant=2, bias_mant=np.zeros(conv_shape, np.int32)),
        n.FixedPointSynapse("d", ("conv",), kind="dense", weight=np.ones((dense, 300), dtype=np.int32)),
        n.FixedPointNeuron("dense", ("d",), shape=(dense,), vth=1, reset_mant=2, bias_mant=np.zeros(dense, np.int32)),
        n.FixedPointSynapse("o", ("dense",), kind="dense", weight=np.ones((2, dense), dtype=np.int32)),
        n.FixedPointAccumulator("out", ("o",), shape=(2,), bias_mant=np.zeros(2, np.int32)),
    ), timesteps=2)
    conv = np.zeros((2, 1, *conv_shape), np.uint8)
    conv[0, 0, 1] = 1  # all 100 neurons of channel 1 at t = 0
    conv[1, 0, 2, 0, :7] = 1  # 7 neurons of channel 2 at t = 1
    fc = np.zeros((2, 1, dense), np.uint8)
    fc[1, 0, 299] = 1  # the last neuron: the last, smaller group
    counter = ActivityCounter(graph)
    counter.add_spikes({"conv": conv, "dense": fc}, np.zeros((1, 1, 10, 10), np.float32))
    raster = {r.layer: r for r in counter.result().raster}
    assert raster["conv"].mode == "channels" and raster["conv"].group_size == 100
    assert raster["conv"].counts == [[0, 0], [100, 0], [0, 7]]
    assert raster["dense"].mode == "groups" and raster["dense"].group_size == 3 and len(raster["dense"].counts) == 100
    assert raster["dense"].counts[-1] == [0, 1] and sum(map(sum, raster["dense"].counts)) == 1
