"""A tiny hand-built fixed-point net and hand-chosen spike trains (counts are checked by hand)."""

import numpy as np

from inflor_deploy.ir import nodes as n
from inflor_deploy.ir.graph import Graph, validate


def _neuron(name, source, shape):
    return n.FixedPointNeuron(name, (source,), shape=shape, vth=10, reset_mant=11,
                              bias_mant=np.zeros(shape, dtype=np.int32))


def hand_graph() -> Graph:
    """image (1x4x4) -c1-> n1 (1x4x4) -c2-> n2 (2x2x2) -fc-> out (3), T = 2.

    * c1: 3x3, padding 1, stride 1, all-ones weight (the first layer, fed by the analog input);
    * c2: 1 -> 2 channels, 3x3, padding 1, stride 2; weight all ones except channel 1's centre tap (0);
    * fc: 8 -> 3, all ones except column 0 = [1, 0, 1] and column 7 = [0, 0, 5].
    """
    c2 = np.ones((2, 1, 3, 3), dtype=np.int32)
    c2[1, 0, 1, 1] = 0
    fc = np.ones((3, 8), dtype=np.int32)
    fc[:, 0] = [1, 0, 1]
    fc[:, 7] = [0, 0, 5]
    graph = Graph(
        nodes=(
            n.Input("image", (), shape=(1, 4, 4), grade_scale=255.0),
            n.FixedPointSynapse("c1", ("image",), kind="conv", weight=np.ones((1, 1, 3, 3), dtype=np.int32),
                                padding=(1, 1)),
            _neuron("n1", "c1", (1, 4, 4)),
            n.FixedPointSynapse("c2", ("n1",), kind="conv", weight=c2, stride=(2, 2), padding=(1, 1)),
            _neuron("n2", "c2", (2, 2, 2)),
            n.FixedPointSynapse("fc", ("n2",), kind="dense", weight=fc),
            n.FixedPointAccumulator("out", ("fc",), shape=(3,), bias_mant=np.zeros(3, dtype=np.int32)),
        ),
        timesteps=2,
        name="hand",
    )
    validate(graph)
    return graph


def hand_spikes() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Hand-chosen spike trains [T=2, B=1, ...] and one image (two non-zero pixels)."""
    n1 = np.zeros((2, 1, 1, 4, 4), dtype=np.uint8)
    for t, y, x in [(0, 0, 0), (0, 1, 1), (1, 3, 3), (1, 1, 2), (1, 2, 0)]:
        n1[t, 0, 0, y, x] = 1
    n2 = np.zeros((2, 1, 2, 2, 2), dtype=np.uint8)
    for t, c, y, x in [(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 1, 0)]:
        n2[t, 0, c, y, x] = 1
    image = np.zeros((1, 1, 4, 4), dtype=np.float32)
    image[0, 0, 0, 0] = 1.0   # graded 255
    image[0, 0, 2, 2] = 0.5   # graded 128 (127.5 rounds half to even)
    return {"n1": n1, "n2": n2}, image
