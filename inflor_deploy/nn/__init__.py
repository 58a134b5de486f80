"""PyTorch side of InfLoR-SNN: MPR, surrogate spikes, neurons, tdBN and models.

The neuron equations live in :mod:`inflor_deploy.nn.neurons` and DESIGN.md
section 1; everything downstream (export, folding, quantization) reads the
plain attributes these modules expose.
"""

from inflor_deploy.nn.layers import TimeDistributed
from inflor_deploy.nn.models import (
    ARCHITECTURES,
    NEURON_KINDS,
    VGG16_LAYOUT,
    BasicBlock,
    DigitsCNN,
    ModelConfig,
    ResNet19,
    ResNet20,
    ResNet8,
    SpikingNetwork,
    SpikingResNet,
    VGG16,
    build_model,
    conv_unit,
    count_parameters,
    make_neuron,
)
from inflor_deploy.nn.mpr import phi, phi_inverse, phi_inverse_scalar
from inflor_deploy.nn.neurons import RESET_MODES, IFNeuron, LIFNeuron, Neuron, OutputAccumulator, SRIF
from inflor_deploy.nn.surrogate import SURROGATE_KINDS, Surrogate, spike_fn, surrogate_gradient
from inflor_deploy.nn.tdbn import TdBatchNorm

__all__ = [
    "ARCHITECTURES",
    "NEURON_KINDS",
    "RESET_MODES",
    "SURROGATE_KINDS",
    "VGG16_LAYOUT",
    "BasicBlock",
    "DigitsCNN",
    "IFNeuron",
    "LIFNeuron",
    "ModelConfig",
    "Neuron",
    "OutputAccumulator",
    "ResNet19",
    "ResNet20",
    "ResNet8",
    "SRIF",
    "SpikingNetwork",
    "SpikingResNet",
    "Surrogate",
    "TdBatchNorm",
    "TimeDistributed",
    "VGG16",
    "build_model",
    "conv_unit",
    "count_parameters",
    "make_neuron",
    "phi",
    "phi_inverse",
    "phi_inverse_scalar",
    "spike_fn",
    "surrogate_gradient",
]
