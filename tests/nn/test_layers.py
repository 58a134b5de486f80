"""Tests for TimeDistributed."""

import pytest
import torch
from torch import nn

from inflor_deploy.nn.layers import TimeDistributed


@pytest.mark.parametrize(
    "module, shape",
    [
        (nn.Conv2d(3, 4, 3, padding=1), (3, 2, 3, 5, 5)),
        (nn.Linear(6, 2), (4, 3, 6)),
        (nn.AvgPool2d(2), (2, 3, 4, 6, 6)),
        (nn.Flatten(), (2, 3, 4, 2, 2)),
    ],
)
def test_applies_module_independently_per_timestep(module, shape):
    x = torch.randn(*shape)
    wrapped = TimeDistributed(module)
    y = wrapped(x)
    expected = torch.stack([module(x[t]) for t in range(shape[0])])
    assert y.shape == expected.shape
    assert torch.allclose(y, expected, atol=1e-6)
    assert wrapped.module is module


def test_rejects_non_modules_and_missing_time_axis():
    with pytest.raises(TypeError):
        TimeDistributed(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time-first"):
        TimeDistributed(nn.Identity())(torch.zeros(3))
