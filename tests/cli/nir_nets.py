"""snnTorch and SpikingJelly digits networks for the NIR tests: built here, trained briefly, exported by their frameworks.

``verify --reference-model tests/cli/nir_nets.py:snntorch_net`` rebuilds them
(the factories take no arguments); :func:`train` fits one on 512 digits in a
few seconds (3 epochs, T = 4, spike counts into cross-entropy).
"""

import numpy as np
import torch
from torch import nn

T = 4


def snntorch_net() -> nn.Module:
    """Conv -> Leaky -> AvgPool -> Linear -> Leaky; snnTorch's default reset is 'subtract'.

    Beta and threshold are per-neuron tensors: snnTorch's exporter writes them as the LIF
    parameters, and nir.LIF needs them all of one shape (a scalar beta fails there).
    """
    import snntorch as snn

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        snn.Leaky(beta=torch.full((8, 8, 8), 0.9), threshold=torch.ones(8, 8, 8), init_hidden=True),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 10),
        snn.Leaky(beta=torch.full((10,), 0.9), threshold=torch.ones(10), init_hidden=True, output=True),
    )


def _spikingjelly_net(v_reset) -> nn.Module:
    from spikingjelly.activation_based import layer, neuron, surrogate

    return nn.Sequential(
        layer.Conv2d(1, 8, 3, padding=1),
        neuron.IFNode(v_reset=v_reset, surrogate_function=surrogate.ATan()),
        layer.AvgPool2d(2),
        layer.Flatten(),
        layer.Linear(128, 10),
        neuron.LIFNode(tau=2.0, v_reset=v_reset, surrogate_function=surrogate.ATan()),
    )


def spikingjelly_hard_net() -> nn.Module:
    """IFNode and LIFNode resetting to 0 (hard reset: what SpikingJelly's exporter accepts)."""
    return _spikingjelly_net(0.0)


def spikingjelly_soft_net() -> nn.Module:
    """IFNode and LIFNode with SpikingJelly's soft reset (v_reset=None), which its exporter refuses."""
    return _spikingjelly_net(None)


def _reset(net: nn.Module) -> None:
    for module in net.modules():
        if callable(getattr(module, "reset_mem", None)):
            module.reset_mem()
        elif hasattr(module, "_memories"):
            module.reset()


def spike_counts(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The output layer's spikes summed over T steps, one call per step (single-step mode)."""
    _reset(net)
    total = 0
    for _ in range(T):
        out = net(images)
        total = total + (out[0] if isinstance(out, tuple) else out)
    return total


def train(factory, images: np.ndarray, labels: np.ndarray, epochs: int = 3, seed: int = 0) -> nn.Module:
    """``factory()`` built and trained from ``seed`` (initial weights included): the same model on every run."""
    torch.manual_seed(seed)
    net = factory()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    x, y = torch.from_numpy(images[:512]), torch.from_numpy(labels[:512]).long()
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            loss = nn.functional.cross_entropy(spike_counts(net, x[i : i + 64]), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    _reset(net)
    return net.eval()


def accuracy(net: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    with torch.no_grad():
        return float((spike_counts(net, torch.from_numpy(images)).argmax(1).numpy() == labels).mean())
