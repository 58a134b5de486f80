"""User-defined networks for the fx front end tests, built from inflor_deploy.nn layers (not build_model).

Each factory returns a fresh nn.Module; ``calibrated`` gives it seeded weights with real activity.
The CLI tests name these factories as ``--model tests/cli/user_nets.py:FACTORY``.
"""

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from inflor_deploy.nn import SRIF, IFNeuron, OutputAccumulator, TdBatchNorm, TimeDistributed


def _conv(cin: int, cout: int, stride: int = 1) -> TimeDistributed:
    return TimeDistributed(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False))


class ThreeConvNet(nn.Module):
    """conv-tdBN-SRIF x3 (the second with stride 2), flatten, linear, readout; takes [T, B, 1, 8, 8]."""

    def __init__(self, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.conv1, self.bn1, self.sn1 = _conv(1, width), TdBatchNorm(width), SRIF()
        self.conv2, self.bn2, self.sn2 = _conv(width, 2 * width, stride=2), TdBatchNorm(2 * width), SRIF()
        self.conv3, self.bn3, self.sn3 = _conv(2 * width, 2 * width), TdBatchNorm(2 * width), SRIF()
        self.flat = TimeDistributed(nn.Flatten())
        self.fc = TimeDistributed(nn.Linear(2 * width * 4 * 4, classes))
        self.readout = OutputAccumulator()

    def forward(self, x_seq):
        x = self.sn1(self.bn1(self.conv1(x_seq)))
        x = self.sn2(self.bn2(self.conv2(x)))
        x = self.sn3(self.bn3(self.conv3(x)))
        return self.readout(self.fc(self.flat(x)))


def three_conv_net(width: int = 8, classes: int = 10) -> nn.Module:
    return ThreeConvNet(width, classes)


class ResidualCatNet(nn.Module):
    """A stem, a residual block (currents added before its neuron), torch.cat of two spike trains,
    a max pool over spikes and a functional readout; repeats its [B, 1, 8, 8] input T times itself."""

    def __init__(self, T: int = 4, width: int = 8) -> None:
        super().__init__()
        self.T = T
        self.stem = nn.Sequential(OrderedDict(conv=_conv(1, width), bn=TdBatchNorm(width), sn=SRIF()))
        self.conv_a, self.bn_a, self.sn_a = _conv(width, width), TdBatchNorm(width), SRIF()
        self.conv_b, self.bn_b = _conv(width, width), TdBatchNorm(width)
        self.sn_res = IFNeuron()
        self.mix = _conv(2 * width, width)
        self.bn_mix, self.sn_mix = TdBatchNorm(width), SRIF()
        self.pool = TimeDistributed(nn.MaxPool2d(2))
        self.fc = nn.Linear(width * 4 * 4, 10)

    def forward(self, image):
        x = image.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        s0 = self.stem(x)
        s1 = self.sn_a(self.bn_a(self.conv_a(s0)))
        s2 = self.sn_res(self.bn_b(self.conv_b(s1)) + s0)  # residual: a current plus the block input's spikes
        s3 = self.sn_mix(self.bn_mix(self.mix(torch.cat([s1, s2], dim=2))))
        pooled = self.pool(s3)
        return self.fc(pooled.flatten(2)).mean(0)


def residual_cat_net(T: int = 4, width: int = 8) -> nn.Module:
    return ResidualCatNet(T, width)


def calibrated(model: nn.Module, images: np.ndarray, seed: int = 0, timesteps: int | None = None) -> nn.Module:
    """Seeded weights; tdBN statistics set from ``images`` (so every layer is normalized and fires), in eval mode.

    ``timesteps``: the model takes ``[T, B, ...]`` (the images are repeated T times for it).
    """
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
    norms = [m for m in model.modules() if isinstance(m, (TdBatchNorm, nn.modules.batchnorm._BatchNorm))]
    for bn in norms:
        bn.momentum = 1.0
    model.train()
    x = torch.from_numpy(images)
    with torch.no_grad():
        model(x if timesteps is None else x.unsqueeze(0).repeat(timesteps, *[1] * x.dim()))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in norms:
            if isinstance(bn, TdBatchNorm):
                bn.lambda_.copy_(torch.empty(bn.num_features).uniform_(0.8, 1.6, generator=g))
                bn.beta.copy_(torch.randn(bn.num_features, generator=g) * 0.3 + 0.1)
            bn.momentum = 0.1
    return model.eval()


# --------------------------------------------------------------------------- factories that go wrong (CLI error tests)


def broken_factory(width: int = 8) -> nn.Module:
    raise RuntimeError(f"cannot build width {width} without the dataset statistics")


def not_a_model() -> dict:
    return {"conv": "not a module"}


NOT_CALLABLE = 3


def relu_net() -> nn.Module:
    """A network with an op the front end does not map (ReLU between a synapse and a neuron)."""
    return nn.Sequential(TimeDistributed(nn.Conv2d(1, 4, 3, padding=1)), TimeDistributed(nn.ReLU()), SRIF())
