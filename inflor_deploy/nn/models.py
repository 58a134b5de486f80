"""Spiking network architectures of the InfLoR paper, built from one config.

Every model maps ``(image [B, C, H, W], T)`` to class scores ``[B, classes]``.
Static images use direct encoding: the analog image is the input current
source at every timestep, ``X[t] = image`` for ``t = 0 .. T-1``. The last
layer does not spike: an :class:`OutputAccumulator` sums its input currents
and the score is their mean over T.

Building blocks (all time-first, ``[T, B, ...]``):

* conv unit: ``conv3x3 (no bias) -> tdBN -> neuron``.
* :class:`BasicBlock`: ``conv1 -> bn1 -> neuron1 -> conv2 -> bn2``, plus a
  shortcut (identity, or ``conv1x1 (stride) -> tdBN`` when the shape
  changes). Residual *currents* are added before ``neuron2``::

      O = neuron2( bn2(conv2(neuron1(bn1(conv1(x))))) + shortcut(x) )

The fx front end (:mod:`inflor_deploy.frontends.fx`) reads the data flow
from ``forward`` itself, so these models follow no layout contract beyond
using layers it maps; :func:`direct_encoding` stays one call in its trace.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Optional, Sequence, Union

import torch
import torch.fx
from torch import nn

from inflor_deploy.nn.layers import TimeDistributed
from inflor_deploy.nn.neurons import IFNeuron, LIFNeuron, Neuron, OutputAccumulator, SRIF
from inflor_deploy.nn.surrogate import SURROGATE_KINDS, Surrogate
from inflor_deploy.nn.tdbn import TdBatchNorm

__all__ = [
    "ARCHITECTURES",
    "NEURON_KINDS",
    "BasicBlock",
    "DigitsCNN",
    "ModelConfig",
    "ResNet19",
    "ResNet20",
    "ResNet8",
    "SpikingNetwork",
    "SpikingResNet",
    "VGG16",
    "VGG16_LAYOUT",
    "build_model",
    "conv_unit",
    "count_parameters",
    "direct_encoding",
    "make_neuron",
]

NEURON_KINDS: tuple[str, ...] = ("srif", "if", "lif")

# Architectures whose flattened feature size depends on the input size need
# the image side to be a multiple of their total downsampling factor.
_IMAGE_SIZE_MULTIPLE: dict[str, int] = {"digits_cnn": 2, "vgg16": 32}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored in checkpoints.

    Attributes:
        arch: Architecture name, a key of :data:`ARCHITECTURES`
            (``"digits_cnn"``, ``"resnet8"``, ``"resnet19"``, ``"resnet20"``, ``"vgg16"``).
        num_classes: Number of output classes (>= 1).
        in_channels: Channels of the input image (1 for digits, 3 for CIFAR).
        image_size: Side of the square input image in pixels.
        timesteps: Default number of timesteps T (>= 1) when ``forward`` is
            given a static image without ``T``.
        neuron: ``"srif"`` (InfLoR soft-reset IF), ``"if"`` (hard-reset IF)
            or ``"lif"`` (hard-reset LIF with leak ``tau``).
        vth: Firing threshold (> 0), also the tdBN scale factor; 0.5 in the paper.
        tau: Membrane decay in (0, 1] of the LIF baseline; unused by srif/if.
        mpr: Apply the Membrane Potential Rectifier before the comparison
            (applies to every neuron kind, so the paper's ablations
            IF, IF+MPR, SRIF, SRIF+MPR are all expressible).
        surrogate_kind: ``"rectangular"``, ``"sigmoid"`` or ``"arctan"``.
        surrogate_width: Surrogate window width (> 0); peak gradient 1/width.
        tdbn_alpha: tdBN alpha (> 0); every tdBN scales by ``alpha * vth``.
    """

    arch: str
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32
    timesteps: int = 4
    neuron: Literal["srif", "if", "lif"] = "srif"
    vth: float = 0.5
    tau: float = 0.5
    mpr: bool = True
    surrogate_kind: str = "rectangular"
    surrogate_width: float = 1.0
    tdbn_alpha: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or self.arch not in ARCHITECTURES:
            raise ValueError(
                f"ModelConfig.arch={self.arch!r} is not a known architecture; "
                f"use one of {', '.join(sorted(ARCHITECTURES))}"
            )
        for name in ("num_classes", "in_channels", "image_size", "timesteps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be an int >= 1; got {value!r}")
        multiple = _IMAGE_SIZE_MULTIPLE.get(self.arch, 1)
        if self.image_size % multiple:
            raise ValueError(
                f"ModelConfig.image_size={self.image_size} does not suit arch={self.arch!r}: "
                f"it must be a multiple of {multiple} (its total pooling factor)"
            )
        if self.neuron not in NEURON_KINDS:
            raise ValueError(
                f"ModelConfig.neuron={self.neuron!r} is unknown; use one of {', '.join(NEURON_KINDS)}"
            )
        for name in ("vth", "tau", "surrogate_width", "tdbn_alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"ModelConfig.{name} must be a finite number; got {value!r}")
            # Normalize ints from JSON (vth=1) so to_dict() round-trips with stable types.
            object.__setattr__(self, name, float(value))
        if self.vth <= 0:
            raise ValueError(f"ModelConfig.vth must be > 0 (the paper uses 0.5); got {self.vth!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"ModelConfig.tau must be in (0, 1] (1 means no leak); got {self.tau!r}")
        if self.tdbn_alpha <= 0:
            raise ValueError(f"ModelConfig.tdbn_alpha must be > 0 (usually 1.0); got {self.tdbn_alpha!r}")
        if not isinstance(self.mpr, bool):
            raise ValueError(f"ModelConfig.mpr must be true or false; got {self.mpr!r}")
        if self.surrogate_kind not in SURROGATE_KINDS:
            raise ValueError(
                f"ModelConfig.surrogate_kind={self.surrogate_kind!r} is unknown; "
                f"use one of {', '.join(SURROGATE_KINDS)}"
            )
        if self.surrogate_width <= 0:
            raise ValueError(f"ModelConfig.surrogate_width must be > 0 (usually 1.0); got {self.surrogate_width!r}")

    @property
    def surrogate(self) -> Surrogate:
        """The :class:`Surrogate` described by ``surrogate_kind``/``surrogate_width``."""
        return Surrogate(kind=self.surrogate_kind, width=self.surrogate_width)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; rejects unknown and missing fields.

        Raises:
            ValueError: If ``data`` is not a mapping, has a key that is not a
                field, lacks ``arch``, or holds an invalid value.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"ModelConfig.from_dict needs a mapping; got {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(
                f"unknown ModelConfig field(s) {', '.join(map(repr, unknown))}; "
                f"known fields are {', '.join(known)}"
            )
        if "arch" not in data:
            raise ValueError("ModelConfig needs 'arch'; use one of " + ", ".join(sorted(ARCHITECTURES)))
        return cls(**dict(data))


def make_neuron(config: ModelConfig) -> Neuron:
    """The neuron selected by ``config.neuron``, with the config's vth, MPR and surrogate."""
    if config.neuron == "srif":
        return SRIF(vth=config.vth, mpr=config.mpr, surrogate=config.surrogate)
    if config.neuron == "if":
        return IFNeuron(vth=config.vth, mpr=config.mpr, surrogate=config.surrogate)
    return LIFNeuron(vth=config.vth, tau=config.tau, mpr=config.mpr, surrogate=config.surrogate)


def _tdbn(channels: int, config: ModelConfig) -> TdBatchNorm:
    return TdBatchNorm(channels, alpha=config.tdbn_alpha, vth=config.vth)


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> TimeDistributed:
    # No bias: the following tdBN's shift subsumes it.
    return TimeDistributed(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=False,
        )
    )


def _linear(in_features: int, out_features: int) -> TimeDistributed:
    # Bias kept: fully connected layers here have no tdBN after them.
    return TimeDistributed(nn.Linear(in_features, out_features, bias=True))


def conv_unit(in_channels: int, out_channels: int, config: ModelConfig, stride: int = 1) -> nn.Sequential:
    """``conv3x3 (padding 1, no bias) -> tdBN -> neuron`` as ``Sequential(conv, bn, neuron)``."""
    return nn.Sequential(
        OrderedDict(
            conv=_conv(in_channels, out_channels, 3, stride),
            bn=_tdbn(out_channels, config),
            neuron=make_neuron(config),
        )
    )


class BasicBlock(nn.Module):
    """Spiking residual block; currents are added before the second neuron.

    Equations (``x``: input spikes ``[T, B, C_in, H, W]``)::

        s1 = neuron1(bn1(conv1(x)))                      conv1: 3x3, stride
        O  = neuron2(bn2(conv2(s1)) + shortcut(x))       conv2: 3x3, stride 1
        shortcut = identity                              if stride == 1 and C_in == C_out
                 = tdBN(conv1x1 stride(x))               otherwise

    Args:
        in_channels: C_in.
        out_channels: C_out.
        stride: Stride of conv1 and of the projection shortcut.
        config: Supplies the neuron kind, vth, MPR, surrogate and tdBN alpha.

    Attributes:
        conv1, bn1, neuron1, conv2, bn2: The main path.
        shortcut: ``nn.Sequential``; empty for identity, else ``(conv, bn)``.
        neuron2: The output neuron.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, config: ModelConfig) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.conv1 = _conv(in_channels, out_channels, 3, stride)
        self.bn1 = _tdbn(out_channels, config)
        self.neuron1 = make_neuron(config)
        self.conv2 = _conv(out_channels, out_channels, 3, 1)
        self.bn2 = _tdbn(out_channels, config)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                OrderedDict(conv=_conv(in_channels, out_channels, 1, stride), bn=_tdbn(out_channels, config))
            )
        else:
            self.shortcut = nn.Sequential()
        self.neuron2 = make_neuron(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Input spikes ``[T, B, C_in, H, W]`` -> output spikes ``[T, B, C_out, H', W']``."""
        s1 = self.neuron1(self.bn1(self.conv1(x)))
        return self.neuron2(self.bn2(self.conv2(s1)) + self.shortcut(x))


def direct_encoding(
    image: torch.Tensor, T: Optional[int], arch: str, in_channels: int, image_size: int, default_timesteps: int
) -> torch.Tensor:
    """:meth:`SpikingNetwork.encode` as a plain function of its inputs.

    ``X[t] = image`` for t = 0..T-1 (a ``[T, B, C, H, W]`` view of the
    ``[B, C, H, W]`` batch); a 5-D input is returned as is. A module-level
    function of tensors, ints and strings, so that the fx front end keeps it
    as one call instead of tracing its shape checks (``torch.fx.wrap`` below
    applies in every trace, whichever ``forward`` calls it).
    """
    expected = f"[B, {in_channels}, {image_size}, {image_size}]"
    if image.dim() == 5:
        if T is not None and T != image.shape[0]:
            raise ValueError(f"T={T} contradicts the time-first input with {image.shape[0]} timesteps")
        x_seq = image
    elif image.dim() == 4:
        T = default_timesteps if T is None else T
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be an int >= 1; got {T!r}")
        x_seq = image.unsqueeze(0).expand(T, *image.shape)
    else:
        raise ValueError(
            f"{arch} expects an image batch {expected} or a time-first [T, B, C, H, W] "
            f"input; got shape {tuple(image.shape)}"
        )
    if tuple(x_seq.shape[2:]) != (in_channels, image_size, image_size):
        raise ValueError(
            f"{arch} was configured for images {expected}; got "
            f"[B, {', '.join(str(s) for s in x_seq.shape[2:])}]"
        )
    return x_seq


torch.fx.wrap("direct_encoding")


class SpikingNetwork(nn.Module):
    """Base class: direct encoding, then the children in registration order.

    Subclasses only register their layers, in data-flow order; the last one
    is an :class:`OutputAccumulator`. ``forward`` is the loop over
    ``self.children()``.

    Args:
        config: The model's configuration, kept as ``self.config``.
        arch: The architecture name the subclass implements; must equal
            ``config.arch`` so a stored config always rebuilds this class.
    """

    def __init__(self, config: ModelConfig, arch: str) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig; got {type(config).__name__}")
        if config.arch != arch:
            raise ValueError(f"{type(self).__name__} implements arch={arch!r}; got config.arch={config.arch!r}")
        self.config = config

    def encode(self, image: torch.Tensor, T: Optional[int] = None) -> torch.Tensor:
        """Turn the input into time-first currents ``[T, B, C, H, W]``.

        Args:
            image: A static image batch ``[B, C, H, W]`` (direct encoding:
                repeated at every timestep) or an already time-first input
                ``[T, B, C, H, W]`` (e.g. event data), used as is.
            T: Number of timesteps; defaults to ``config.timesteps`` for a
                static image and to ``image.shape[0]`` for a 5-D input.

        Raises:
            ValueError: On a wrong rank, channel count or image size, a T < 1,
                or a T that contradicts a 5-D input.
        """
        cfg = self.config
        return direct_encoding(image, T, cfg.arch, cfg.in_channels, cfg.image_size, cfg.timesteps)

    def forward(self, image: torch.Tensor, T: Optional[int] = None) -> torch.Tensor:
        """Class scores ``[B, num_classes]``: the readout's mean over T.

        Args:
            image: ``[B, C, H, W]`` static image or ``[T, B, C, H, W]`` input.
            T: Timesteps for a static image (default ``config.timesteps``).
        """
        x = self.encode(image, T)
        for layer in self.children():
            x = layer(x)
        return x


class DigitsCNN(SpikingNetwork):
    """Small CNN for 8x8 greyscale digits (sklearn ``load_digits``).

    Layers: ``unit1`` conv3x3 C->16, ``unit2`` conv3x3 16->32 (both conv ->
    tdBN -> neuron), ``pool`` AvgPool2d(2), ``flatten``, ``fc1`` Linear
    32*(S/2)^2 -> 64, ``neuron_fc1``, ``fc2`` Linear 64 -> classes,
    ``readout``. About 38k parameters at S = 8.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, "digits_cnn")
        side = config.image_size // 2
        self.unit1 = conv_unit(config.in_channels, 16, config)
        self.unit2 = conv_unit(16, 32, config)
        self.pool = TimeDistributed(nn.AvgPool2d(2))
        self.flatten = TimeDistributed(nn.Flatten())
        self.fc1 = _linear(32 * side * side, 64)
        self.neuron_fc1 = make_neuron(config)
        self.fc2 = _linear(64, config.num_classes)
        self.readout = OutputAccumulator()


class SpikingResNet(SpikingNetwork):
    """ResNet of :class:`BasicBlock` stages with a spiking stem.

    Layers: ``stem`` (conv unit), ``layer1..layerN`` (``nn.Sequential`` of
    blocks; the first block of a stage carries its stride), ``pool`` global
    average pool, ``flatten``, then either ``fc`` -> ``readout`` or, with a
    hidden layer, ``fc1`` -> ``neuron_fc1`` -> ``fc2`` -> ``readout``.

    Args:
        config: Model configuration.
        arch: Architecture name (checked against ``config.arch``).
        stem_channels: Output channels of the stem conv.
        stages: ``(channels, blocks, stride)`` per stage.
        hidden_features: Width of the hidden spiking fc layer, or None.
    """

    def __init__(
        self,
        config: ModelConfig,
        arch: str,
        stem_channels: int,
        stages: Sequence[tuple[int, int, int]],
        hidden_features: Optional[int],
    ) -> None:
        super().__init__(config, arch)
        self.stem = conv_unit(config.in_channels, stem_channels, config)
        channels = stem_channels
        for index, (out_channels, blocks, stride) in enumerate(stages, start=1):
            layer = []
            for block in range(blocks):
                layer.append(BasicBlock(channels, out_channels, stride if block == 0 else 1, config))
                channels = out_channels
            self.add_module(f"layer{index}", nn.Sequential(*layer))
        self.pool = TimeDistributed(nn.AdaptiveAvgPool2d(1))
        self.flatten = TimeDistributed(nn.Flatten())
        if hidden_features is None:
            self.fc = _linear(channels, config.num_classes)
        else:
            self.fc1 = _linear(channels, hidden_features)
            self.neuron_fc1 = make_neuron(config)
            self.fc2 = _linear(hidden_features, config.num_classes)
        self.readout = OutputAccumulator()


class ResNet19(SpikingResNet):
    """ResNet19 of the tdBN paper (Zheng et al. 2021), as used by InfLoR.

    stem conv3x3 128 -> [3 blocks x 128, stride 1] -> [3 x 256, stride 2]
    -> [2 x 512, stride 2] -> global avg pool -> fc 512->256 -> neuron
    -> fc 256->classes -> readout.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, "resnet19", 128, [(128, 3, 1), (256, 3, 2), (512, 2, 2)], hidden_features=256)


class ResNet20(SpikingResNet):
    """CIFAR ResNet20 (He et al. 2016) with spiking neurons.

    stem conv3x3 16 -> [3 blocks x 16, stride 1] -> [3 x 32, stride 2]
    -> [3 x 64, stride 2] -> global avg pool -> fc 64->classes -> readout.
    Shape-changing shortcuts are 1x1 conv + tdBN projections.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, "resnet20", 16, [(16, 3, 1), (32, 3, 2), (64, 3, 2)], hidden_features=None)


class ResNet8(SpikingResNet):
    """A small residual net for CPU training: ResNet8 at half ResNet20's width.

    stem conv3x3 8 -> [1 block x 8, stride 1] -> [1 x 16, stride 2]
    -> [1 x 32, stride 2] -> global avg pool -> fc 32->classes -> readout.
    About 20k parameters; it has both kinds of shortcut (an identity in the
    first block, 1x1 conv + tdBN projections in the others), so it exercises
    what the deep residual nets need at a size that trains in minutes on
    two cores (digits upsampled to 32x32, ``--data digits32``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, "resnet8", 8, [(8, 1, 1), (16, 1, 2), (32, 1, 2)], hidden_features=None)


# 'A' is a 2x2 average pool: spikes must stay a linear function of the
# input, which max pooling is not (and Loihi has no max pooling).
VGG16_LAYOUT: tuple[Union[int, str], ...] = (
    64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512, "A",
)


class VGG16(SpikingNetwork):
    """VGG16 feature extractor with a single linear classifier.

    ``features``: 13 conv units (``unit1..unit13``) with 2x2 average pools
    (``pool1..pool5``) laid out as :data:`VGG16_LAYOUT`; then ``flatten``,
    ``fc`` Linear 512*(S/32)^2 -> classes (512 for 32x32 input), ``readout``.
    The two 4096-wide hidden fc layers of the ImageNet VGG16 are left out,
    as is common for CIFAR: they add ~20M parameters and little accuracy.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, "vgg16")
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        channels = config.in_channels
        units = pools = 0
        for entry in VGG16_LAYOUT:
            if entry == "A":
                pools += 1
                layers[f"pool{pools}"] = TimeDistributed(nn.AvgPool2d(2))
            else:
                units += 1
                layers[f"unit{units}"] = conv_unit(channels, int(entry), config)
                channels = int(entry)
        side = config.image_size // 2**pools
        self.features = nn.Sequential(layers)
        self.flatten = TimeDistributed(nn.Flatten())
        self.fc = _linear(channels * side * side, config.num_classes)
        self.readout = OutputAccumulator()


ARCHITECTURES: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "digits_cnn": DigitsCNN,
    "resnet19": ResNet19,
    "resnet20": ResNet20,
    "resnet8": ResNet8,
    "vgg16": VGG16,
}


def build_model(config: ModelConfig) -> nn.Module:
    """Build the architecture named by ``config.arch`` (see :data:`ARCHITECTURES`)."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"build_model needs a ModelConfig; got {type(config).__name__}")
    return ARCHITECTURES[config.arch](config)


def count_parameters(model: nn.Module) -> int:
    """Total number of parameter elements (trainable or not) in ``model``."""
    return sum(p.numel() for p in model.parameters())
