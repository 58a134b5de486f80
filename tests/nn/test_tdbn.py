"""Tests for threshold-dependent batch normalization."""

import pytest
import torch

from inflor_deploy.nn.tdbn import TdBatchNorm

ALPHA, VTH = 0.7, 0.5


def _input(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    channels = shape[2]
    # Per-channel offset and spread so normalization visibly changes the data.
    view = (1, 1, channels) + (1,) * (len(shape) - 3)
    offset = torch.linspace(-3.0, 5.0, channels, dtype=torch.float64).reshape(view)
    spread = torch.linspace(0.5, 4.0, channels, dtype=torch.float64).reshape(view)
    return offset + spread * torch.randn(*shape, generator=g, dtype=torch.float64)


def _layer(channels, seed=1):
    layer = TdBatchNorm(channels, alpha=ALPHA, vth=VTH, eps=1e-5).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.lambda_.copy_(0.5 + torch.rand(channels, generator=g, dtype=torch.float64))
        layer.beta.copy_(torch.randn(channels, generator=g, dtype=torch.float64))
    return layer


@pytest.mark.parametrize("shape", [(3, 4, 5, 6, 6), (4, 8, 7)])
def test_training_normalizes_over_time_batch_and_space(shape):
    x = _input(shape)
    layer = _layer(shape[2])
    y = layer(x)
    assert y.shape == x.shape
    dims = [d for d in range(x.dim()) if d != 2]  # all of (T, B, H, W)
    var = x.var(dim=dims, unbiased=False)
    expected_std = layer.lambda_.detach() * ALPHA * VTH * torch.sqrt(var / (var + layer.eps))
    assert torch.allclose(y.mean(dim=dims), layer.beta.detach(), atol=1e-12)
    assert torch.allclose(y.std(dim=dims, unbiased=False), expected_std, rtol=1e-10)


def test_statistics_are_shared_across_timesteps():
    # Per-timestep normalization would centre each step; tdBN centres the
    # whole (T, B, H, W) block, so a shift between steps survives.
    x = _input((2, 8, 3, 4, 4))
    x[1] += 10.0
    y = TdBatchNorm(3).double()(x)
    per_step = y.mean(dim=(1, 3, 4))
    assert torch.all(per_step[1] - per_step[0] > 0.4)
    assert torch.allclose(y.mean(dim=(0, 1, 3, 4)), torch.zeros(3, dtype=torch.float64), atol=1e-12)


def test_running_statistics_follow_batchnorm_momentum():
    x = _input((3, 4, 5, 6, 6))
    layer = TdBatchNorm(5, momentum=0.1).double()
    layer(x)
    dims = (0, 1, 3, 4)
    assert int(layer.num_batches_tracked) == 1
    assert torch.allclose(layer.running_mean, 0.1 * x.mean(dim=dims), rtol=1e-12)
    assert torch.allclose(layer.running_var, 0.9 + 0.1 * x.var(dim=dims, unbiased=True), rtol=1e-12)


@pytest.mark.parametrize("shape", [(3, 4, 5, 6, 6), (4, 8, 5)])
def test_eval_mode_is_the_inference_affine_map(shape):
    layer = _layer(shape[2])
    for seed in range(3):  # populate running stats
        layer(_input(shape, seed=seed))
    layer.eval()
    x = _input(shape, seed=7)
    scale, shift = layer.inference_affine()
    assert scale.shape == shift.shape == (shape[2],)
    view = (1, 1, shape[2]) + (1,) * (len(shape) - 3)
    assert torch.allclose(layer(x), scale.reshape(view) * x + shift.reshape(view), rtol=1e-12, atol=1e-12)
    assert int(layer.num_batches_tracked) == 3  # eval does not update


def test_parameters_train_and_initial_values():
    layer = TdBatchNorm(4)
    assert torch.equal(layer.lambda_.detach(), torch.ones(4))
    assert torch.equal(layer.beta.detach(), torch.zeros(4))
    assert {name for name, _ in layer.named_parameters()} == {"lambda_", "beta"}
    assert {name for name, _ in layer.named_buffers()} == {"running_mean", "running_var", "num_batches_tracked"}
    layer(torch.randn(2, 3, 4, 5, 5)).square().sum().backward()
    assert layer.lambda_.grad.abs().sum() > 0 and layer.beta.grad.abs().sum() > 0


def test_rejects_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="num_features"):
        TdBatchNorm(0)
    with pytest.raises(ValueError, match="vth"):
        TdBatchNorm(3, vth=0.0)
    with pytest.raises(ValueError, match="momentum"):
        TdBatchNorm(3, momentum=0.0)
    layer = TdBatchNorm(3)
    with pytest.raises(ValueError, match=r"expects \[T, B, 3, H, W\]"):
        layer(torch.zeros(2, 4, 5, 6, 6))
    with pytest.raises(ValueError, match=r"expects \[T, B, 3, H, W\]"):
        layer(torch.zeros(4, 3, 6, 6))
