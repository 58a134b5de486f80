"""Fine-tuning against the exact integer model (quantization-aware training).

    inflor-deploy finetune model.pt --target loihi2-sim --epochs 5 -o model_ft.pt

What it does (docs/finetune.md has the equations and the measurements):

1. Compile the checkpoint for the target (post-training quantization) and
   take its per-layer scales; round each down to a power of two, and the
   input grade scale to the nearest power of two. That is the *grid*.
   Rounding the scales down only adds headroom (every limit the quantizer
   enforces is an upper bound on the scale); powers of two make
   ``W_int / scale`` exact in float32, so weights stored on the grid give
   their integers back when the compiler rounds them again.
2. Compile again on that grid (``QuantizationOptions.layer_scales``) and
   build the :class:`~inflor_deploy.qat.ExactIntegerNetwork` from the
   compiled nodes; check it against the fixed-point simulator on the
   compile's probe, bit for bit.
3. Train its float weights and biases (Adam, cosine schedule) on the
   cross-entropy of the exact integer forward's scores, plus
   ``activity_weight`` times the mean spike count per neuron-step of every
   spiking layer (the activity regularizer). After each step, outputs whose
   worst-case current would break the quantizer's u headroom are scaled
   back under it (a max-norm constraint), so the grid stays compilable.
4. Write the weights back into the zoo model on the grid: each conv or
   linear gets ``W_int / (unit * scale)``; a tdBN after it becomes the
   identity affine plus the bias (``lambda * alpha * vth = 1``, mean 0,
   ``var = float32(1 - eps)``, which makes ``var + eps`` round to 1), so
   folding it changes no bit. The checkpoint's metadata records the grid
   (:mod:`inflor_deploy.grid`), and a compile of it uses that grid.
5. Compile the result once more and require its integers and its
   simulation on the probe to equal the trained forward's, bit for bit
   (:class:`FinetuneError` otherwise). Float torch, float IR and the
   fixed-point network then compute the same spikes (every float value is
   a dyadic rational whose float32 sums are exact): ``verify`` shows level
   4 at accuracy delta 0 and spike agreement 1.0 when the inputs lie on the
   input grid (digits: ``k / 16``, grade scale 256).

Supported: the zoo's networks (``digits_cnn``, ``vgg16`` and the residual
``resnet8``/``resnet19``/``resnet20``: :mod:`inflor_deploy.qat` lists what
its forward implements) from inflor-deploy checkpoints; event sequences and
``--model MODULE:FACTORY`` models are refused by name.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from inflor_deploy.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from inflor_deploy.data import Dataset
from inflor_deploy.errors import InflorError
from inflor_deploy.grid import GRID_KEY, recorded_grid
from inflor_deploy.ir import nodes as n
from inflor_deploy.passes.base import QuantizationOptions
from inflor_deploy.qat import ExactIntegerNetwork, UnsupportedForFinetune, check_supported
from inflor_deploy.train import evaluate

__all__ = ["FinetuneConfig", "FinetuneError", "FinetuneResult", "choose_grid", "finetune", "save_finetuned"]


class FinetuneError(InflorError):
    """Fine-tuning cannot run, or its result would not compile to what it trained (names the fix)."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Optimizer settings of :func:`finetune`.

    Attributes:
        epochs: Passes over the training split.
        batch_size: Samples per step.
        lr: Adam's initial learning rate (cosine-annealed to 0); smaller than
            training's: the weights start trained.
        activity_weight: Weight of the activity penalty, the mean spike count
            per neuron-step over every spiking layer (0 disables it).
        seed: Seeds torch and the batch order.
        threads: torch intra-op threads.
    """

    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    activity_weight: float = 0.0
    seed: int = 0
    threads: int = 2

    def __post_init__(self):
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise FinetuneError(f"epochs must be an int >= 1, got {self.epochs!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise FinetuneError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise FinetuneError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.activity_weight, (int, float)) and math.isfinite(self.activity_weight)
                and self.activity_weight >= 0):  # fmt: skip
            raise FinetuneError(f"activity weight must be a finite number >= 0, got {self.activity_weight!r}")


@dataclass
class FinetuneResult:
    """What :func:`finetune` produced.

    Attributes:
        model: The zoo model with its weights on the grid (eval mode).
        metadata: The checkpoint metadata to save with it (records the grid).
        network: The trained exact integer forward.
        grid: ``{"target", "input_grade_scale", "layer_scales"}``.
        quantization: The options a compile of the result uses (the grid applied).
        accuracy: Test accuracy of the float model (``float``), of its
            post-training quantization (``fixed_ptq``: the compiler's own
            scales), on the grid before training (``fixed_grid``) and after
            (``fixed_finetuned``; also the fine-tuned float model's).
        spike_rate: Mean spikes per neuron-step on the test split, ``before`` and ``after``.
        history: One dict per epoch (loss, activity, train accuracy).
        seconds: Training wall time.
    """

    model: torch.nn.Module
    metadata: dict[str, Any]
    network: ExactIntegerNetwork
    grid: dict[str, Any]
    quantization: QuantizationOptions
    accuracy: dict[str, float] = field(default_factory=dict)
    spike_rate: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _power_of_two_below(x: float) -> float:
    return float(2.0 ** math.floor(math.log2(x)))


def choose_grid(scales: dict[str, float], grade_scale: float, target: str,
                weight_bits: int | None = None) -> dict[str, Any]:  # fmt: skip
    """The fine-tuning grid from a post-training compile's scales (module docstring, step 1).

    ``weight_bits`` (fewer than the target's: ``--weight-bits``) is recorded with it, so that a
    compile of the fine-tuned checkpoint stores the weights at the width they were trained at.
    """
    bad = {k: v for k, v in scales.items() if not v >= 2}
    if bad:
        raise FinetuneError(f"layer scales {bad} are below 2: a power of two below them leaves no integer threshold")
    grid = {
        "target": target,
        "input_grade_scale": float(2.0 ** round(math.log2(grade_scale))),
        "layer_scales": {name: _power_of_two_below(s) for name, s in scales.items()},
    }
    if weight_bits is not None:
        grid["weight_bits"] = int(weight_bits)
    return grid


def _compile(path: Path, target, quantization: QuantizationOptions):
    from inflor_deploy.compiler import compile_checkpoint

    return compile_checkpoint(path, target, quantization=quantization)


def _check_against_simulator(net: ExactIntegerNetwork, fixed_graph, images: np.ndarray, what: str) -> None:
    """Bit-exact: the exact forward vs the fixed-point simulator (the oracle) on ``images``."""
    from inflor_deploy.backends.sim.compare import first_divergence
    from inflor_deploy.backends.sim.fixed_point import simulate

    with torch.no_grad():
        run = net(images, record=True)
    sim = simulate(fixed_graph, images, view="aligned", record=True)
    for kind, mine, oracle in (("spikes", run.spikes, sim.spikes), ("v", run.voltages, sim.voltages),
                               ("u", run.currents, sim.currents)):  # fmt: skip
        layers = [name for name in oracle if name in mine]
        ours = {k: v.numpy().astype(np.int64) for k, v in mine.items()}
        theirs = {k: np.asarray(v, dtype=np.int64) for k, v in oracle.items()}
        d = first_divergence(theirs, ours, layers)
        if d is not None:
            raise FinetuneError(f"{what}: the exact integer forward differs from the fixed-point simulator ({kind}: "
                                f"{d.to_dict()}); the compiled network has arithmetic finetune does not model")
    if not np.array_equal(run.readout.numpy().astype(np.int64), sim.accumulator):
        raise FinetuneError(f"{what}: the exact integer forward's readout differs from the fixed-point simulator's")


def _exact_accuracy(net: ExactIntegerNetwork, data: Dataset, batch: int = 256) -> tuple[float, float]:
    """Test accuracy and mean spikes per neuron-step of the exact forward."""
    correct, spikes, count = 0, 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data), batch):
            run = net(data.images[start : start + batch])
            correct += int((run.scores.argmax(1).numpy() == data.labels[start : start + batch]).sum())
            spikes += float(sum(s.sum() for s in run.spikes.values()))
            count += sum(s.numel() for s in run.spikes.values())
    return correct / len(data), spikes / max(count, 1)


def _identity_lambda(alpha: float, vth: float) -> torch.Tensor:
    """A float32 lambda with ``lambda * (alpha * vth) == 1`` exactly in float32 (tdBN's gain), or raise."""
    target = torch.tensor(1.0, dtype=torch.float32)
    lam = torch.tensor(1.0 / (alpha * vth), dtype=torch.float32)
    for candidate in (lam, torch.nextafter(lam, lam + 1), torch.nextafter(lam, lam - 1)):
        if torch.equal(candidate * (alpha * vth), target):
            return candidate
    raise FinetuneError(f"no float32 tdBN lambda makes lambda * alpha * vth = 1 for alpha={alpha}, vth={vth}; "
                        "fine-tune a model with vth = 0.5 (the paper's) or alpha * vth a power of two")


def _write_back(model: torch.nn.Module, imported, grid_params: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> None:
    """Put the grid weights into the zoo model (module docstring, step 4)."""
    from inflor_deploy.nn.layers import TimeDistributed
    from inflor_deploy.nn.tdbn import TdBatchNorm

    followers = {bn.sources[0]: bn.name for bn in imported.of_type(n.BatchNorm)}
    with torch.no_grad():
        for name, (weight, bias) in grid_params.items():
            module = model.get_submodule(name)
            if isinstance(module, TimeDistributed):
                module = module.module
            module.weight.copy_(torch.from_numpy(weight))
            if name in followers:
                bn = model.get_submodule(followers[name])
                if not isinstance(bn, TdBatchNorm):
                    raise FinetuneError(f"{followers[name]!r} is a {type(bn).__name__}; finetune writes back tdBN only")
                bn.lambda_.fill_(_identity_lambda(bn.alpha, bn.vth))
                bn.beta.copy_(torch.from_numpy(bias))
                bn.running_mean.zero_()
                # float32(1 - eps) + eps rounds to 1 in float32 (torch) and within 2^-26 of 1 in float64 (the fold).
                bn.running_var.fill_(float(np.float32(1 - bn.eps)))
            elif bias is not None:
                if getattr(module, "bias", None) is None:
                    raise FinetuneError(f"synapse {name!r} learned a bias but its module has none")
                module.bias.copy_(torch.from_numpy(bias))


def finetune(
    checkpoint: str | Path,
    target: str = "loihi2-sim",
    *,
    data: str = "digits",
    config: FinetuneConfig = FinetuneConfig(),
    quantization: QuantizationOptions = QuantizationOptions(),
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune a checkpoint against the exact integer network the target runs (module docstring).

    Args:
        checkpoint: An inflor-deploy checkpoint of a zoo network (chains and
            residual nets); a fine-tuned one continues on its recorded grid.
        target: The hardware target name.
        data: A ``--data`` spec (``digits``, ``cifar10:FOLDER``, ``FILE.npz``).
        config: Optimizer settings and the activity weight.
        quantization: Options of the compile the grid starts from (e.g. a
            ``weight_fill`` below 1 for a reduced weight precision, which the
            fine-tuned weights then keep).
        progress: Show a progress bar.

    Raises:
        InflorError: a foreign or unsupported checkpoint, a bad target or
            data spec, or a result that would not compile to what it trained.
    """
    from inflor_deploy.data import load_train_test
    from inflor_deploy.data.conform import as_unit_pixels
    from inflor_deploy.nn.models import build_model
    from inflor_deploy.targets import load_target

    path = Path(checkpoint)
    if quantization.prune > 0:
        raise FinetuneError(
            "fine-tuning a pruned network is not implemented (the exact forward would have to keep the pruned "
            "connections at zero through training); fine-tune without --prune"
        )
    source = load_checkpoint(path)
    if source.metadata.get("input_encoding", "direct") != "direct":
        raise FinetuneError(f"{path}: finetune supports direct-encoded image models; this one takes event sequences")
    target_obj = load_target(target)
    train_data, test_data, _ = load_train_test(data)
    train_data, test_data = as_unit_pixels(train_data), as_unit_pixels(test_data)
    config_model = source.config
    expected = (config_model.in_channels, config_model.image_size, config_model.image_size)
    if tuple(train_data.images.shape[1:]) != expected or train_data.num_classes != config_model.num_classes:
        raise FinetuneError(
            f"data {data!r} has samples {tuple(train_data.images.shape[1:])} with {train_data.num_classes} classes; "
            f"the model takes {expected} with {config_model.num_classes}: fine-tune on the data it was trained on"
        )
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)

    # 0. Refuse what the exact forward does not implement before any work (a compile up to the folded float graph).
    from inflor_deploy.compiler import compile_checkpoint

    folded = compile_checkpoint(path, target_obj, stop_after="DistributeJoins", probe_samples=2).graph
    try:
        check_supported(folded)
    except UnsupportedForFinetune as err:
        raise FinetuneError(f"{path} ({config_model.arch}): {err}") from err

    # 1. The grid: the recorded one, or the post-training compile's scales rounded to powers of two.
    ptq = _compile(path, target_obj, quantization)
    grid = recorded_grid(source.metadata)
    if grid is None:
        # The grid's starting scales come from the plain layout (weight exponent 0, bias_exp 6, no bias source),
        # the one the exact forward computes; the default layout's larger scales would not fit it.
        plain = _compile(path, target_obj, dataclasses.replace(quantization, plain_layers=True))
        scales = {r["layer"]: float(r["scale"]) for r in plain.quantization_report}
        bits = quantization.weight_bits if quantization.weight_bits != target_obj.numerics.weight_bits else None
        grid = choose_grid(scales, float(plain.fixed_graph.input.grade_scale), target_obj.name, bits)
    elif quantization.weight_bits not in (None, grid.get("weight_bits", target_obj.numerics.weight_bits)):
        raise FinetuneError(f"{path} was fine-tuned for {grid.get('weight_bits', target_obj.numerics.weight_bits)}-bit "
                            f"weights; continuing at {quantization.weight_bits} bits needs the original checkpoint")
    grid_options = dataclasses.replace(quantization, input_grade_scale=grid["input_grade_scale"],
                                       layer_scales=dict(grid["layer_scales"]), plain_layers=True,
                                       weight_bits=grid.get("weight_bits", quantization.weight_bits))  # fmt: skip
    # 2. The compiled network on the grid, and its exact forward (checked against the simulator).
    on_grid = _compile(path, target_obj, grid_options)
    try:
        net = ExactIntegerNetwork(on_grid.graph_after("DistributeJoins"), on_grid.fixed_graph, target_obj,
                                  weight_fill=quantization.weight_fill, surrogate=config_model.surrogate)  # fmt: skip
    except UnsupportedForFinetune as err:
        raise FinetuneError(f"{path} ({config_model.arch}): {err}") from err
    _check_against_simulator(net, on_grid.fixed_graph, on_grid.probe, "before fine-tuning")

    accuracy = {"float": evaluate(source.model, test_data)[0]}
    from inflor_deploy.backends.sim.fixed_point import simulate

    accuracy["fixed_ptq"] = float((simulate(ptq.fixed_graph, test_data.images).scores(ptq.fixed_graph).argmax(1)
                                   == test_data.labels).mean())  # fmt: skip
    accuracy["fixed_grid"], rate_before = _exact_accuracy(net, test_data)

    # 3. Train the exact forward.
    history = _train(net, train_data, config, progress, f"finetune {config_model.arch}")
    accuracy["fixed_finetuned"], rate_after = _exact_accuracy(net, test_data)

    # 4. Back into the zoo model, on the grid.
    model = build_model(config_model)
    model.load_state_dict(source.model.state_dict())
    _write_back(model, on_grid.graph_after("import"), net.grid_parameters())
    model.eval()
    accuracy["float_finetuned"] = evaluate(model, test_data)[0]
    metadata = {
        **source.metadata,
        GRID_KEY: grid,
        "test_accuracy": accuracy["float_finetuned"],
        "finetune": {"epochs": config.epochs, "lr": config.lr, "activity_weight": config.activity_weight,
                     "seed": config.seed, "data": data, "weight_fill": quantization.weight_fill,
                     "weight_bits": grid_options.weight_bits,
                     "accuracy_before": accuracy["fixed_grid"], "accuracy_ptq": accuracy["fixed_ptq"],
                     "spike_rate_before": rate_before, "spike_rate_after": rate_after},
    }  # fmt: skip
    result = FinetuneResult(model=model, metadata=metadata, network=net, grid=grid, quantization=grid_options,
                            accuracy=accuracy, spike_rate={"before": rate_before, "after": rate_after},
                            history=history, seconds=sum(h["seconds"] for h in history))  # fmt: skip
    # 5. The result compiles to exactly what was trained.
    _check_compiles_to(result, on_grid.probe, target_obj)
    return result


def _train(net: ExactIntegerNetwork, data: Dataset, config: FinetuneConfig, progress: bool, label: str):
    generator = torch.Generator().manual_seed(config.seed)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    steps = config.epochs * -(-len(data) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    labels = torch.from_numpy(data.labels)
    history = []
    bar = tqdm(range(config.epochs), desc=label, unit="epoch", disable=not progress)
    for _ in bar:
        start = time.perf_counter()
        order = torch.randperm(len(data), generator=generator)
        total_loss = total_activity = 0.0
        correct = 0
        for first in range(0, len(order), config.batch_size):
            index = order[first : first + config.batch_size]
            run = net(data.images[index.numpy()])
            activity = run.spike_rate()
            loss = torch.nn.functional.cross_entropy(run.scores, labels[index]) + config.activity_weight * activity
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            net.enforce_headroom()  # a recorded scale must keep the target's u headroom (qat.enforce_headroom)
            scheduler.step()
            total_loss += float(loss.detach()) * len(index)
            total_activity += float(activity.detach()) * len(index)
            correct += int((run.scores.argmax(1) == labels[index]).sum())
        row = {"loss": total_loss / len(order), "spike_rate": total_activity / len(order),
               "train_accuracy": correct / len(order), "seconds": time.perf_counter() - start}  # fmt: skip
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", train_acc=f"{row['train_accuracy']:.3f}",
                        rate=f"{row['spike_rate']:.3f}")  # fmt: skip
    return history


def _check_compiles_to(result: FinetuneResult, probe: np.ndarray, target) -> None:
    """Compile the fine-tuned model on its grid; its integers and simulation must be the trained forward's."""
    from inflor_deploy.compiler import compile_model
    from inflor_deploy.frontends.source import ModelSource

    config = result.model.config
    compiled = compile_model(
        result.model, input_shape=(config.in_channels, config.image_size, config.image_size),
        timesteps=config.timesteps, target=target, name=config.arch, quantization=result.quantization,
        source=ModelSource.from_module(result.model), probe_images=probe,
    )  # fmt: skip
    net = result.network
    fixed = compiled.fixed_graph
    synapses = {x.name: x for x in fixed.of_type(n.FixedPointSynapse)}
    with torch.no_grad():
        for key, syn in net.synapses.items():
            # W_int 2^weight_exp: the compile may pick a smaller exponent for weights that shrank (the same currents).
            mine = net.integer_weight(key).numpy().astype(np.int64) << int(syn.fixed.weight_exp)
            theirs = synapses[syn.name].weight.astype(np.int64) << int(synapses[syn.name].weight_exp)
            if mine.shape == theirs.shape and not np.array_equal(mine, theirs):
                raise FinetuneError(f"synapse {syn.name!r}: the compiled weights differ from the fine-tuned integers; "
                                    "the grid did not survive the export (report this as a bug)")
        for name in net.inputs:
            layer = fixed.node(name)
            bias = np.broadcast_to(net.integer_bias(name).numpy().reshape((-1,) + (1,) * (len(layer.shape) - 1)),
                                   layer.shape).astype(np.int64)  # fmt: skip
            if not np.array_equal(bias, layer.bias_mant.astype(np.int64)):
                raise FinetuneError(f"layer {name!r}: the compiled bias differs from the fine-tuned integers")
    _check_against_simulator(net, fixed, probe, "after fine-tuning")


def save_finetuned(result: FinetuneResult, path: str | Path) -> Path:
    """Write the fine-tuned checkpoint (atomically; its metadata records the grid)."""
    return save_checkpoint(path, result.model, result.metadata)
