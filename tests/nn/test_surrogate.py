"""Tests for the spike function and its surrogate gradients."""

import math

import pytest
import torch

from inflor_deploy.nn.surrogate import SURROGATE_KINDS, Surrogate, spike_fn, surrogate_gradient


def _grad_of_spike(x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    spike_fn(x, surrogate).sum().backward()
    return x.grad


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "triangle"}, "kind must be one of"),
        ({"width": 0.0}, "width must be finite and > 0"),
        ({"width": -1.0}, "width must be finite and > 0"),
        ({"width": math.nan}, "width must be finite and > 0"),
        ({"width": math.inf}, "width must be finite and > 0"),
        ({"width": True}, "width must be a positive number"),
        ({"width": "1"}, "width must be a positive number"),
    ],
)
def test_surrogate_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Surrogate(**kwargs)


def test_surrogate_is_frozen_with_paper_defaults():
    s = Surrogate()
    assert (s.kind, s.width) == ("rectangular", 1.0)
    with pytest.raises(AttributeError):
        s.width = 2.0  # type: ignore[misc]


@pytest.mark.parametrize("kind", SURROGATE_KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_fires_on_greater_or_equal(kind, dtype):
    x = torch.tensor([-1.0, -1e-30, 0.0, 1e-30, 2.0], dtype=dtype)
    expected = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0], dtype=dtype)
    for requires_grad in (False, True):
        out = spike_fn(x.clone().requires_grad_(requires_grad), Surrogate(kind))
        assert out.dtype == dtype
        assert torch.equal(out.detach(), expected)


def test_no_grad_path_is_a_plain_comparison():
    with torch.no_grad():
        out = spike_fn(torch.tensor([0.5], requires_grad=True), Surrogate())
    assert out.grad_fn is None


@pytest.mark.parametrize("width", [1.0, 0.4])
def test_rectangular_gradient_is_a_unit_box(width):
    # g(x) = 1/width for |x| < width/2, else 0 (the window is open).
    inside = torch.tensor([0.0, 0.49 * width, -0.49 * width], dtype=torch.float64)
    outside = torch.tensor([0.5 * width, -0.5 * width, 0.51 * width, -3.0], dtype=torch.float64)
    surrogate = Surrogate("rectangular", width)
    assert _grad_of_spike(inside, surrogate).tolist() == pytest.approx([1.0 / width] * 3, rel=1e-15)
    assert _grad_of_spike(outside, surrogate).tolist() == [0.0] * 4


@pytest.mark.parametrize("width", [1.0, 0.4, 2.5])
def test_sigmoid_gradient_is_derivative_of_sigmoid_4x_over_width(width):
    x = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64, requires_grad=True)
    torch.sigmoid(4.0 * x / width).sum().backward()
    got = _grad_of_spike(x.detach(), Surrogate("sigmoid", width))
    # autograd's s * (1 - s) loses relative accuracy in the tails, so the
    # comparison is absolute, relative to the peak 1/width.
    assert torch.allclose(got, x.grad, rtol=0.0, atol=1e-13 / width)
    assert got[300].item() == pytest.approx(1.0 / width, rel=1e-12)  # peak at x = 0


@pytest.mark.parametrize("width", [1.0, 0.4, 2.5])
def test_arctan_gradient_is_derivative_of_scaled_arctan(width):
    x = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64, requires_grad=True)
    (0.5 + torch.atan(math.pi * x / width) / math.pi).sum().backward()
    got = _grad_of_spike(x.detach(), Surrogate("arctan", width))
    assert torch.allclose(got, x.grad, rtol=1e-12, atol=1e-15)
    assert got[300].item() == pytest.approx(1.0 / width, rel=1e-12)


@pytest.mark.parametrize("kind", SURROGATE_KINDS)
def test_every_surrogate_has_unit_area_and_is_symmetric(kind):
    width = 0.7
    x = torch.linspace(-2000 * width, 2000 * width, 4_000_001, dtype=torch.float64)
    g = surrogate_gradient(x, Surrogate(kind, width))
    area = torch.trapezoid(g, x).item()
    # arctan's tails are heavy: its area over [-L, L] is (2/pi) atan(pi L / w).
    expected = (2 / math.pi) * math.atan(math.pi * 2000) if kind == "arctan" else 1.0
    assert area == pytest.approx(expected, rel=1e-3)
    g_mirror = surrogate_gradient(-x, Surrogate(kind, width))
    assert torch.allclose(g, g_mirror, rtol=1e-9, atol=0.0)


@pytest.mark.parametrize("kind", SURROGATE_KINDS)
def test_backward_scales_the_upstream_gradient(kind):
    surrogate = Surrogate(kind, 1.0)
    x = torch.tensor([-0.3, 0.0, 0.2], dtype=torch.float64, requires_grad=True)
    upstream = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    spike_fn(x, surrogate).backward(upstream)
    assert torch.allclose(x.grad, upstream * surrogate_gradient(x.detach(), surrogate), rtol=1e-15)


def test_spike_fn_rejects_a_non_surrogate():
    with pytest.raises(TypeError, match="surrogate must be a Surrogate"):
        spike_fn(torch.zeros(2), "rectangular")  # type: ignore[arg-type]
