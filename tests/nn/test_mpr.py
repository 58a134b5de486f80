"""Tests for the Membrane Potential Rectifier phi and its inverse (DESIGN.md section 1)."""

import math

import numpy as np
import pytest
import torch

from inflor_deploy.nn.mpr import phi, phi_inverse, phi_inverse_scalar

EPS64 = float(np.finfo(np.float64).eps)
# Dense float64 grid over [-5, 5]: steps of 5e-6 cover all three branches and
# both joins at 0 and 1.
GRID = torch.linspace(-5.0, 5.0, 2_000_001, dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fixed_points_are_exact(dtype):
    # Repeated so both the scalar and the vectorized tanh kernels are used.
    u = torch.tensor([0.0, 0.5, 1.0] * 50, dtype=dtype)
    y = phi(u)
    assert torch.equal(y, u)
    assert torch.equal(phi_inverse(u), u)


def test_strictly_increasing_on_dense_grid():
    y = phi(GRID)
    assert bool((y[1:] > y[:-1]).all())


def test_branch_values_by_hand():
    u = torch.tensor([-7.0, 0.25, 8.0, 27.0], dtype=torch.float64)
    expected = [
        1.0 - 2.0,  # 1 - (1 - (-7))^(1/3) = 1 - 8^(1/3)
        math.tanh(3 * (0.25 - 0.5)) / (2 * math.tanh(1.5)) + 0.5,
        2.0,  # 8^(1/3)
        3.0,  # 27^(1/3)
    ]
    assert phi(u).tolist() == pytest.approx(expected, rel=4 * EPS64, abs=4 * EPS64)


def test_inverse_round_trips_within_a_few_ulps():
    # phi^-1(phi(u)) == u up to rounding: the artanh on [0, 1] amplifies the
    # rounding of phi by at most 1/(1 - tanh(3/2)^2) ~ 5.5, so allow 8 ulps at
    # unit scale (measured max: 5.0 ulps).
    back = phi_inverse(phi(GRID))
    tolerance = 8 * EPS64 * torch.clamp(GRID.abs(), min=1.0)
    assert bool(((back - GRID).abs() <= tolerance).all())

    y = torch.linspace(-2.0, 2.0, 2_000_001, dtype=torch.float64)
    forth = phi(phi_inverse(y))
    assert bool(((forth - y).abs() <= 8 * EPS64 * torch.clamp(y.abs(), min=1.0)).all())


@pytest.mark.parametrize("point", [0.0, 1.0])
def test_continuous_at_branch_joins(point):
    delta = 1e-12
    u = torch.tensor([point - delta, point, point + delta], dtype=torch.float64)
    left, centre, right = phi(u).tolist()
    # The one-sided slopes at the joins are 1/3 and ~0.30, so a jump would
    # show as a difference much larger than delta.
    assert abs(left - centre) < delta
    assert abs(right - centre) < delta
    assert left < centre < right


def test_phi_inverse_scalar_matches_tensor_inverse():
    assert phi_inverse_scalar(0.5) == 0.5  # exact: artanh(0) == 0
    for vth in [-1.5, -0.2, 0.0, 0.05, 0.3, 0.5, 0.8, 1.0, 1.7, 3.0]:
        expected = phi_inverse(torch.tensor(vth, dtype=torch.float64)).item()
        assert phi_inverse_scalar(vth) == pytest.approx(expected, rel=4 * EPS64, abs=4 * EPS64)
        back = phi(torch.tensor(phi_inverse_scalar(vth), dtype=torch.float64)).item()
        assert back == pytest.approx(vth, rel=8 * EPS64, abs=8 * EPS64)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_phi_inverse_scalar_rejects_non_finite(bad):
    with pytest.raises(ValueError, match="vth must be finite"):
        phi_inverse_scalar(bad)


@pytest.mark.parametrize("vth", [0.5, 0.3, 0.8, 1.0, 1.7, 0.05, 2.5])
def test_firing_is_invariant_under_threshold_folding(vth):
    # phi is strictly increasing, so phi(h) >= vth  <=>  h >= phi^-1(vth).
    # Floating point may only disagree for h within an ulp or so of the
    # folded threshold; count those and require them to be rare and close.
    folded = phi_inverse_scalar(vth)
    generator = torch.Generator().manual_seed(1234)
    samples = -5.0 + 10.0 * torch.rand(1_000_000, generator=generator, dtype=torch.float64)
    for h in (GRID, samples, torch.tensor([folded, math.nextafter(folded, -math.inf)], dtype=torch.float64)):
        mismatch = (phi(h) >= vth) != (h >= folded)
        assert int(mismatch.sum()) <= 1
        assert bool(((h[mismatch] - folded).abs() <= 1e-12).all())
    if vth == 0.5:
        # The paper's setting folds exactly: not even boundary disagreements.
        h = torch.tensor([0.5, math.nextafter(0.5, 0.0), math.nextafter(0.5, 1.0)], dtype=torch.float64)
        assert (phi(h) >= 0.5).tolist() == [True, False, True]


def test_mpr_reduces_quantization_error_about_tenfold():
    # DESIGN.md: on N(1/2, 1), mean (u - o)^2 drops ~tenfold after MPR. The
    # exact integrals (quadrature, 2.4e7 points) are 0.45212 before and
    # 0.04791 after; 1e6 seeded samples give 0.4511 and 0.0479 (ratio 9.41).
    generator = torch.Generator().manual_seed(0)
    u = 0.5 + torch.randn(1_000_000, generator=generator, dtype=torch.float64)
    o = (u >= 0.5).to(u.dtype)
    before = ((u - o) ** 2).mean().item()
    after = ((phi(u) - o) ** 2).mean().item()
    assert 0.447 <= before <= 0.457
    assert 0.0465 <= after <= 0.0495
    assert before / after > 9.0


def test_gradients_are_finite_everywhere_and_correct_at_half():
    u = torch.tensor(
        [-1e6, -10.0, -1e-3, 0.0, 1e-3, 0.5, 0.999, 1.0, 1.001, 10.0, 1e6], dtype=torch.float64, requires_grad=True
    )
    phi(u).sum().backward()
    assert bool(torch.isfinite(u.grad).all())
    assert bool((u.grad > 0).all())
    # d/du tanh(3(u - 1/2)) / (2 tanh(3/2)) at u = 1/2 is 3 / (2 tanh(3/2)).
    assert u.grad[5].item() == pytest.approx(3.0 / (2.0 * math.tanh(1.5)), rel=1e-12)

    y = torch.tensor([-10.0, -1e-3, 0.0, 0.5, 1.0, 1.001, 10.0], dtype=torch.float64, requires_grad=True)
    phi_inverse(y).sum().backward()
    assert bool(torch.isfinite(y.grad).all())
    assert bool((y.grad > 0).all())


def test_rejects_integer_tensors():
    with pytest.raises(TypeError):
        phi(torch.tensor([0, 1]))
    with pytest.raises(TypeError):
        phi_inverse(torch.tensor([0, 1]))
