"""SpikingJelly and snnTorch networks for the end-to-end tests, and short trainings with each framework's own
surrogate gradients.

The CLI tests name the factories as ``--model tests/cli/framework_nets.py:FACTORY``; :func:`train` trains a
network for a few epochs on digits (or on event sequences) so that its accuracies mean something.
"""

from __future__ import annotations

import numpy as np
import snntorch
import torch
import torch.nn.functional as F
from snntorch import surrogate as snn_surrogate
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn


class SpikingJellyIFCNN(nn.Module):
    """SpikingJelly's CSNN pattern: conv-BN-IFNode (soft reset)-MaxPool2d over spikes x2, linear, IFNode; step_mode "m".

    Takes ``[B, 1, 8, 8]`` and repeats it T times itself; the score is the firing rate of the last layer
    (``mean(0)`` of its spikes), as in SpikingJelly's tutorials.
    """

    def __init__(self, T: int = 4, width: int = 8) -> None:
        super().__init__()
        self.T = T

        def if_node():
            return neuron.IFNode(v_reset=None, surrogate_function=surrogate.ATan(), step_mode="m")

        self.conv1 = layer.Conv2d(1, width, 3, padding=1, bias=False, step_mode="m")
        self.bn1, self.sn1 = layer.BatchNorm2d(width, step_mode="m"), if_node()
        self.pool1 = layer.MaxPool2d(2, step_mode="m")
        self.conv2 = layer.Conv2d(width, 2 * width, 3, padding=1, bias=False, step_mode="m")
        self.bn2, self.sn2 = layer.BatchNorm2d(2 * width, step_mode="m"), if_node()
        self.pool2 = layer.MaxPool2d(2, step_mode="m")
        self.flat = layer.Flatten(step_mode="m")
        self.fc, self.sn3 = layer.Linear(2 * width * 2 * 2, 10, step_mode="m"), if_node()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        x = self.pool1(self.sn1(self.bn1(self.conv1(x))))
        x = self.pool2(self.sn2(self.bn2(self.conv2(x))))
        return self.sn3(self.fc(self.flat(x))).mean(0)


def sj_if_cnn(T: int = 4, width: int = 8) -> nn.Module:
    return SpikingJellyIFCNN(T, width)


class SpikingJellyLIFNet(nn.Module):
    """LIFNode with decay_input=True (hard reset to the default v_reset 0.0) and decay_input=False (soft reset).

    ``step_mode="s"`` (default): called once per step on ``[B, 1, 8, 8]``, returns that step's class currents;
    ``"m"``: takes ``[T, B, 1, 8, 8]`` and returns their mean over T.
    """

    def __init__(self, step_mode: str = "s", width: int = 8) -> None:
        super().__init__()
        self.step_mode = step_mode
        self.conv1 = layer.Conv2d(1, width, 3, padding=1, bias=False, step_mode=step_mode)
        self.bn1 = layer.BatchNorm2d(width, step_mode=step_mode)
        self.lif1 = neuron.LIFNode(tau=2.0, decay_input=True, step_mode=step_mode)
        self.conv2 = layer.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False, step_mode=step_mode)
        self.bn2 = layer.BatchNorm2d(2 * width, step_mode=step_mode)
        self.lif2 = neuron.LIFNode(tau=4.0, decay_input=False, v_reset=None, step_mode=step_mode)
        self.flat = layer.Flatten(step_mode=step_mode)
        self.fc = layer.Linear(2 * width * 4 * 4, 10, step_mode=step_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lif1(self.bn1(self.conv1(x)))
        x = self.lif2(self.bn2(self.conv2(x)))
        out = self.fc(self.flat(x))
        return out.mean(0) if self.step_mode == "m" else out


def sj_lif_net(step_mode: str = "s", width: int = 8) -> nn.Module:
    return SpikingJellyLIFNet(step_mode, width)


class SnnTorchCNN(nn.Module):
    """snnTorch's tutorial CNN, with the pooling after the neurons (max pooling spikes, not currents):
    Leaky subtract, Leaky zero with a learned per-channel threshold, and an output Leaky whose spikes are counted.

    ``init_hidden=True``: called once per step on ``[B, 1, 8, 8]``; returns the output layer's spikes. The first
    convolution has no bias: a bias bounds the weight scale by Loihi's bias range (quantization report
    "scale_limited_by": "bias_range"), which left conv1 38 weight levels and cost 3% of lif1's spike agreement.
    """

    def __init__(self, beta: float = 0.9, width: int = 8) -> None:
        super().__init__()
        grad = snn_surrogate.atan()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.lif1 = snntorch.Leaky(beta=beta, spike_grad=grad, init_hidden=True)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.lif2 = snntorch.Leaky(beta=0.8, threshold=torch.ones(2 * width, 1, 1), learn_threshold=True,
                                   reset_mechanism="zero", spike_grad=grad, init_hidden=True)  # fmt: skip
        self.pool2 = nn.MaxPool2d(2)
        self.fc = nn.Linear(2 * width * 2 * 2, 10)
        self.lif3 = snntorch.Leaky(beta=beta, spike_grad=grad, init_hidden=True, output=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.lif1(self.conv1(x)))
        x = self.pool2(self.lif2(self.conv2(x)))
        spk, mem = self.lif3(self.fc(x.flatten(1)))
        return spk


def snntorch_cnn(beta: float = 0.9, width: int = 8) -> nn.Module:
    return SnnTorchCNN(beta, width)


class SpikingJellyEventNet(nn.Module):
    """Event input: takes ``[T, B, 1, 8, 8]`` event frames (a new frame at every step), ParametricLIFNode layers
    (learned tau, decay_input both ways), average pooling of spikes, and the mean over T of a linear readout."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv1 = layer.Conv2d(1, width, 3, padding=1, bias=False, step_mode="m")
        self.bn1 = layer.BatchNorm2d(width, step_mode="m")
        self.plif1 = neuron.ParametricLIFNode(init_tau=2.0, v_reset=None, step_mode="m")
        self.pool = layer.AvgPool2d(2, step_mode="m")
        self.conv2 = layer.Conv2d(width, 2 * width, 3, padding=1, bias=False, step_mode="m")
        self.bn2 = layer.BatchNorm2d(2 * width, step_mode="m")
        self.plif2 = neuron.ParametricLIFNode(init_tau=3.0, decay_input=False, step_mode="m")
        self.head = layer.SeqToANNContainer(nn.Flatten(), nn.Linear(2 * width * 4 * 4, 10))

    def forward(self, events: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.plif1(self.bn1(self.conv1(events))))
        x = self.plif2(self.bn2(self.conv2(x)))
        return self.head(x).mean(0)


def sj_event_net(width: int = 8) -> nn.Module:
    return SpikingJellyEventNet(width)


def events_from_images(images: np.ndarray, timesteps: int, seed: int) -> np.ndarray:
    """A synthetic event dataset ``[N, T, C, H, W]``: a pixel fires at each step with its intensity as probability."""
    rng = np.random.default_rng(seed)
    return (rng.random((images.shape[0], timesteps) + images.shape[1:]) < images[:, None]).astype(np.float32)


RATE_LOGIT_SCALE = 4.0


def _reset(model: nn.Module) -> None:
    functional.reset_net(model)
    for m in model.modules():
        if isinstance(m, snntorch.Leaky):
            m.reset_mem()


def scores(model: nn.Module, x: torch.Tensor, T: int, how: str) -> torch.Tensor:
    """The model's class scores as its framework runs it.

    ``how``: ``"frame"`` (the model takes [B, ...] and encodes it), ``"sequence"`` (it takes ``x`` = [B, T, ...]
    time-first), ``"single"`` (one call per step on ``x`` = [B, ...], scores averaged over the T calls).
    """
    _reset(model)
    if how == "frame":
        return model(x)
    if how == "sequence":
        return model(x.transpose(0, 1).contiguous())
    return torch.stack([model(x) for _ in range(T)]).mean(0)


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, T: int, how: str, *, epochs: int = 3,
          lr: float = 5e-3, seed: int = 0, batch: int = 64, loss: str = "ce") -> nn.Module:  # fmt: skip
    """A few epochs of Adam with the framework's own surrogate gradients; returns the model in eval mode.

    ``loss``: ``"ce"`` (cross-entropy of the scores) or ``"rate"`` (scores are firing rates in [0, 1]:
    cross-entropy of RATE_LOGIT_SCALE * rate, so that a rate gap is a logit gap).
    """
    torch.manual_seed(seed)
    x_all, y_all = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(x_all)).split(batch):
            out = scores(model, x_all[index], T, how)
            target = y_all[index]
            value = F.cross_entropy(out * RATE_LOGIT_SCALE if loss == "rate" else out, target)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
    _reset(model)
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, T: int, how: str) -> float:
    out = scores(model.eval(), torch.from_numpy(np.ascontiguousarray(images)), T, how)
    _reset(model)
    return float((out.argmax(1).numpy() == labels).mean())


class SnnTorchTutorialCNN(nn.Module):
    """snnTorch's tutorial order conv -> MaxPool2d -> Leaky: max pooling of currents, which Loihi cannot compute."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool = nn.Conv2d(1, 8, 3, padding=1), nn.MaxPool2d(2)
        self.lif, self.fc = snntorch.Leaky(beta=0.9, init_hidden=True), nn.Linear(8 * 4 * 4, 10)
        self.out = snntorch.Leaky(beta=0.9, init_hidden=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc(self.lif(self.pool(self.conv(x))).flatten(1)))


class SpikingJellyHalfThreshold(SpikingJellyIFCNN):
    """SpikingJellyIFCNN with a HalfThresholdIFNode (membrane starting at Vth / 2) as its last layer."""

    def __init__(self) -> None:
        super().__init__()
        self.sn3 = neuron.HalfThresholdIFNode(step_mode="m")


class SnnTorchSynaptic(SnnTorchCNN):
    """SnnTorchCNN with a Synaptic neuron (a second state variable) as its second layer."""

    def __init__(self) -> None:
        super().__init__()
        self.lif2 = snntorch.Synaptic(alpha=0.9, beta=0.8, init_hidden=True)


def unsupported(kind: str) -> nn.Module:
    """Networks the adapters refuse: ``"pool_currents"``, ``"half_threshold"``, ``"synaptic"``."""
    return {"pool_currents": SnnTorchTutorialCNN, "half_threshold": SpikingJellyHalfThreshold,
            "synaptic": SnnTorchSynaptic}[kind]()  # fmt: skip
