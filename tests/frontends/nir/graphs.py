"""Small hand-built NIR graphs whose outputs are computed by hand in the tests that use them."""

import nir
import numpy as np

#: One sample: channel 0 of a 1 x 2 x 2 image, C-major: [0.5, 0.25, 1.0, 0.0].
X = np.array([[[[0.5, 0.25], [1.0, 0.0]]]], np.float32)


def chain(*layers, input_shape=(1, 2, 2), output=None):
    """``Input -> layers... -> Output`` named ``input``, ``l0``, ``l1``, ... , ``output``."""
    nodes = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
    names = ["input"]
    for i, layer in enumerate(layers):
        nodes[f"l{i}"] = layer
        names.append(f"l{i}")
    nodes["output"] = nir.Output(output_type={"output": np.array(output or [1])})
    names.append("output")
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])), type_check=False)


def affine(weight, bias=None):
    weight = np.asarray(weight, np.float32)
    if bias is None:
        return nir.Linear(weight=weight)
    return nir.Affine(weight=weight, bias=np.asarray(bias, np.float32))


def if_(n, vth=1.0, r=1.0, v_reset=0.0):
    return nir.IF(r=np.full(n, r), v_threshold=np.full(n, vth), v_reset=np.full(n, v_reset))


def lif(n, tau, r, vth=1.0, v_leak=0.0, v_reset=0.0):
    return nir.LIF(tau=np.full(n, tau), r=np.full(n, r), v_leak=np.full(n, v_leak), v_threshold=np.full(n, vth),
                   v_reset=np.full(n, v_reset))  # fmt: skip


#: Affine picking pixels: neuron 0 gets x0 = 0.5, neuron 1 gets 0.5 * x2 + 0.25 = 0.75.
PICK = affine([[1, 0, 0, 0], [0, 0, 0.5, 0]], [0.0, 0.25])
