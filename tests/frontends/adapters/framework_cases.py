"""Inputs and seeded weights shared by the SpikingJelly and snnTorch adapter tests."""

import numpy as np
import torch
from torch import nn


def images(count=12, seed=1):
    """``count`` random two-channel 8x8 samples in [0, 1)."""
    return np.random.default_rng(seed).random((count, 2, 8, 8), dtype=np.float32)


def seeded(model, gain=2.5):
    """``model`` with its conv/linear weights re-drawn from seed 0 and scaled by ``gain`` (so the layers fire)."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
            with torch.no_grad():
                m.weight.mul_(gain)
    return model.eval()
