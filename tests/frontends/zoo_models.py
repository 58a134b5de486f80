"""Test helpers: zoo networks with seeded random weights that really fire, and their inputs."""

import numpy as np
import torch
from torch import nn

from inflor_deploy.nn import ModelConfig, TdBatchNorm, build_model


def randomized_model(config: ModelConfig, images: np.ndarray, seed: int = 0) -> nn.Module:
    """An eval-mode model with random weights and non-trivial tdBN statistics.

    The running statistics are first set to the batch statistics of `images`
    (one train-mode pass with momentum 1, so every layer is normalized and
    fires), then perturbed, as are lambda and beta.
    """
    torch.manual_seed(seed)
    model = build_model(config)
    bns = [m for m in model.modules() if isinstance(m, TdBatchNorm)]
    for bn in bns:
        bn.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(images))
    model.eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in bns:
            c = bn.num_features
            bn.running_var.mul_(torch.empty(c).uniform_(0.5, 2.0, generator=g))
            bn.running_mean.add_(torch.randn(c, generator=g) * 0.2 * bn.running_var.sqrt())
            bn.lambda_.copy_(torch.empty(c).uniform_(0.8, 1.6, generator=g))
            bn.beta.copy_(torch.randn(c, generator=g) * 0.3 + 0.1)
    return model


def images_for(config: ModelConfig, batch: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((batch, config.in_channels, config.image_size, config.image_size), dtype=np.float32)
