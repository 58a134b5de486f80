"""Max pooling of spikes as an OR neuron layer: equal to F.max_pool2d at every step, in float and fixed point."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inflor_deploy.backends.sim.float_ir import run_float
from inflor_deploy.ir import Accumulator, Graph, Input, Neuron
from inflor_deploy.frontends.spike_max_pool import spike_max_pool, window_kernel


def _pool_graph(shape, T, **pool):
    """Input spikes -> OR layer -> accumulator: the Input carries the spikes as 0/1 frames."""
    window, neuron = spike_max_pool("pool", "spikes", shape[0], **pool)
    readout = Accumulator(name="readout", sources=("pool",))
    # A neuron with vth 1/2 and hard reset passes 0/1 inputs straight through: the spike source.
    source = Neuron(name="spikes", sources=("image",), vth=0.5, reset="zero")
    return Graph((Input(name="image", sources=(), shape=shape), source, window, neuron, readout), timesteps=T)


@pytest.mark.parametrize(
    "kernel, stride, padding, dilation",
    [((2, 2), (2, 2), (0, 0), (1, 1)), ((3, 3), (2, 2), (1, 1), (1, 1)), ((3, 2), (1, 2), (1, 0), (1, 1)),
     ((2, 2), (1, 1), (1, 1), (2, 2))],
)  # fmt: skip
def test_or_layer_equals_max_pool_at_every_step_including_empty_windows(kernel, stride, padding, dilation):
    rng = np.random.default_rng(0)
    T, shape = 6, (3, 9, 9)
    # Sparse spikes: many all-zero windows, and windows that spike at one step and are empty at the next.
    spikes = (rng.random((T, 5, *shape)) < 0.08).astype(np.float32)
    spikes[:, 0] = 0  # one sample never spikes at all
    graph = _pool_graph(shape, T, kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    # The float IR's Input is one frame per sample, so each step's spike frame runs as its own T=1 run;
    # that the OR layer keeps no state across steps is test_state_never_carries_over.
    expected = F.max_pool2d(torch.from_numpy(spikes).flatten(0, 1), kernel, stride, padding, dilation).unflatten(0, (T, 5))
    for t in range(T):
        one = run_float(Graph(graph.nodes, timesteps=1), spikes[t], record=True)
        assert np.array_equal(one.spikes["pool"][0], expected[t].numpy().astype(np.uint8)), t
    assert (expected == 0).any() and (expected == 1).any()


def test_state_never_carries_over():
    """A window that spikes at t and is empty afterwards emits exactly one spike; U stays 0 throughout."""
    from inflor_deploy.backends.sim.float_ir import _neuron

    window, neuron = spike_max_pool("pool", "s", 1, (2, 2), (2, 2), (0, 0))
    counts = torch.tensor([3.0, 0.0, 0.0, 1.0, 0.0, 4.0, 0.0]).reshape(7, 1, 1)
    spikes, membranes = _neuron(neuron, counts, record=True)
    assert spikes.flatten().tolist() == [1, 0, 0, 1, 0, 1, 0]
    assert membranes.flatten().tolist() == counts.flatten().tolist()  # H = X: nothing left from before


def test_dilated_window_kernel():
    weight = window_kernel(2, (2, 3), (2, 1))
    assert weight.shape == (2, 1, 3, 3)
    assert weight[0, 0].tolist() == [[1, 1, 1], [0, 0, 0], [1, 1, 1]]


def test_or_layer_is_exact_in_fixed_point():
    from inflor_deploy.backends.sim.fixed_point import simulate
    from inflor_deploy.compiler import compile_model
    from inflor_deploy.nn import SRIF, TimeDistributed

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.sn = TimeDistributed(nn.Conv2d(1, 4, 3, padding=1)), SRIF()
            self.pool = TimeDistributed(nn.MaxPool2d(2))
            self.fc = TimeDistributed(nn.Linear(64, 3))

        def forward(self, x):
            return self.fc(self.pool(self.sn(self.conv(x))).flatten(2)).mean(0)

    torch.manual_seed(0)
    images = np.random.default_rng(2).random((8, 1, 8, 8), dtype=np.float32)
    fixed = compile_model(Net().eval(), input_shape=(1, 8, 8), timesteps=5, probe_images=images).fixed_graph
    run = simulate(fixed, images, view="aligned", record=True)
    sn = torch.from_numpy(run.spikes["sn"].astype(np.float32))
    expected = F.max_pool2d(sn.flatten(0, 1), 2).unflatten(0, sn.shape[:2]).numpy().astype(run.spikes["pool"].dtype)
    assert np.array_equal(run.spikes["pool"], expected)
    assert 0 < run.spikes["sn"].mean() < 1 and 0 < expected.mean() < 1
