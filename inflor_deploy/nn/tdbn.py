"""Threshold-dependent batch normalization (tdBN, Zheng et al. 2021).

tdBN normalizes each channel over time, batch and space together and scales
the result to the firing threshold so that pre-activations neither vanish
nor saturate the neurons::

    mu_c, var_c = mean and (biased) variance of x[:, :, c, ...] over (T, B, H, W)
    y = lambda_c * alpha * vth * (x - mu_c) / sqrt(var_c + eps) + beta_c

In eval mode ``mu_c, var_c`` are the running statistics, so tdBN is an affine
map per channel, ``y = scale_c * x + shift_c``, which folds into the
preceding convolution or linear layer (``FoldBatchNorm``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TdBatchNorm"]


class TdBatchNorm(nn.Module):
    """tdBN over time-first input ``[T, B, C, H, W]`` or ``[T, B, C]``.

    Equation (per channel c)::

        y = lambda_c * alpha * vth * (x - mu_c) / sqrt(var_c + eps) + beta_c

    Training uses the statistics of the current input over all ``T*B*H*W``
    elements of a channel and updates the running statistics exactly as
    ``torch.nn.BatchNorm`` does (``running = (1 - momentum) * running +
    momentum * batch``, with the unbiased variance). Implemented by merging
    T into the batch dimension and calling ``F.batch_norm`` with weight
    ``lambda * alpha * vth``.

    Args:
        num_features: Number of channels C.
        alpha: Scale factor of the paper (1 for plain layers; the tdBN paper
            uses 1/sqrt(2) before residual additions).
        vth: Threshold of the neurons this layer feeds.
        eps: Added to the variance for numerical stability.
        momentum: Running-statistics momentum in (0, 1].

    Attributes:
        lambda_: Learnable per-channel scale, initialized to 1 (``lambda`` is
            a Python keyword, hence the underscore).
        beta: Learnable per-channel shift, initialized to 0.
        running_mean, running_var, num_batches_tracked: Buffers as in
            ``torch.nn.BatchNorm2d``.
    """

    def __init__(
        self,
        num_features: int,
        alpha: float = 1.0,
        vth: float = 0.5,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive int; got {num_features!r}")
        for name, value in (("alpha", alpha), ("vth", vth), ("eps", eps)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
        if not (isinstance(momentum, (int, float)) and 0.0 < momentum <= 1.0):
            raise ValueError(f"momentum must be in (0, 1]; got {momentum!r}")
        self.num_features = num_features
        self.alpha = float(alpha)
        self.vth = float(vth)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.lambda_ = nn.Parameter(torch.ones(num_features))
        self.beta = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize time-first input.

        Args:
            x: ``[T, B, C, H, W]`` or ``[T, B, C]``.

        Returns:
            Same shape as ``x``.
        """
        if x.dim() not in (3, 5) or x.shape[2] != self.num_features:
            raise ValueError(
                f"TdBatchNorm({self.num_features}) expects [T, B, {self.num_features}, H, W] or "
                f"[T, B, {self.num_features}]; got shape {tuple(x.shape)}"
            )
        if self.training:
            self.num_batches_tracked.add_(1)
        # Merging T into B makes F.batch_norm's per-channel reduction run over
        # (T, B, H, W), which is exactly tdBN's statistic.
        y = F.batch_norm(
            x.flatten(0, 1),
            self.running_mean,
            self.running_var,
            weight=self.lambda_ * (self.alpha * self.vth),
            bias=self.beta,
            training=self.training,
            momentum=self.momentum,
            eps=self.eps,
        )
        return y.unflatten(0, x.shape[:2])

    @torch.no_grad()
    def inference_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel affine map equal to this layer in eval mode.

        Equations::

            scale_c = lambda_c * alpha * vth / sqrt(running_var_c + eps)
            shift_c = beta_c - running_mean_c * scale_c
            y       = scale_c * x + shift_c

        Returns:
            ``(scale, shift)``, each a detached ``[C]`` tensor.
        """
        scale = self.lambda_ * (self.alpha * self.vth) / torch.sqrt(self.running_var + self.eps)
        shift = self.beta - self.running_mean * scale
        return scale.detach().clone(), shift.detach().clone()

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, alpha={self.alpha}, vth={self.vth}, "
            f"eps={self.eps}, momentum={self.momentum}"
        )
