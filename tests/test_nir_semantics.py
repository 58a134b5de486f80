"""nir_semantics: snnTorch's beta read back from its exported float32 tau and r; what NIR cannot state, named."""

import numpy as np

from inflor_deploy.ir import nodes as n
from inflor_deploy.nir_semantics import describe_unstated, invert_snntorch_beta, nir_parameters


def _exported(beta: np.float32):
    """tau and r as snnTorch's export_nir computes them (float32 arrays, dt = 1e-4)."""
    tau = 1e-4 / (1 - np.array([beta], np.float32))
    return tau, tau / 1e-4


def test_snntorch_beta_is_recovered_exactly_whenever_the_reader_says_so():
    betas = np.random.default_rng(0).random(3000).astype(np.float32)
    exact_claims = 0
    for beta in [*betas, np.float32(0.9), np.float32(0.95), np.float32(0.5)]:
        recovered, unique = invert_snntorch_beta(*_exported(beta))
        if beta > 0.5:  # 1 - beta is exact in float32 (Sterbenz); 0.5 shares its tau with its float32 neighbour
            assert unique and np.float32(recovered) == beta, beta
        if unique:
            exact_claims += 1
            assert np.float32(recovered) == beta, beta
    assert exact_claims > 1000


def test_nir_parameters_state_the_neuron_and_describe_unstated_names_the_rest():
    neuron = n.Neuron("x", ("a",), vth=0.75, tau=0.5, reset="subtract", reset_amount=1.0, gain=2.0, compare=">=",
                      reset_timing="same_step")  # fmt: skip
    kind, params = nir_parameters(neuron, (3,), dt=1e-3)
    assert kind == "LIF"
    # tau_ir = 1 - dt/tau -> tau = 2 ms; gain = dt r / tau -> r = 4
    assert np.allclose(params["tau"], 2e-3, rtol=1e-15) and np.allclose(params["r"], 4.0, rtol=1e-12)
    assert params["v_threshold"].tolist() == [0.75] * 3 and not params["v_reset"].any()
    assert describe_unstated(neuron) == ["subtractive reset (amount 1.0)", "fires on >="]
    kind, params = nir_parameters(n.Neuron("y", ("a",), vth=1.0, tau=1.0, reset="zero", gain=0.5), (2,), dt=1e-4)
    assert kind == "IF" and params["r"].tolist() == [5000.0, 5000.0]
