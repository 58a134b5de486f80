"""Quantization precision: weight levels per layer, float vs fixed accuracy on trained deep residual nets.

    python -m bench.bench_quantization                 # writes bench/results/quantization.json
    python -m bench.bench_quantization --train-only    # (re)train the missing checkpoints only

Trained models (``--data digits32``: scikit-learn's digits upsampled to
32x32, generated in code; 1,437 train / 360 test images). Their checkpoints
live in ``bench/models/`` and are trained here when missing (seeded; minutes
on two cores):

* ``resnet8_digits32_t4.pt``: ResNet8 (8-16-32 channels, identity and
  projection shortcuts), T = 4, SRIF + MPR;
* ``resnet20_digits32_t4.pt``: ResNet20 (16-32-64 channels), T = 4, SRIF + MPR.

For each: float accuracy (PyTorch) and fixed-point accuracy (the bit-exact
simulator) on the whole test split, class agreement and spike agreement per
layer (parity level 4: free-running, and teacher-forced), and the quantization report's weight levels and
RMS relative rounding error per synapse.

Structural models (levels only; random weights with tdBN statistics that
give real activity, :func:`bench.common.firing_model`): ResNet19, ResNet20
and VGG16 at 32x32, T = 4; and the bundled digits model.

``--name NAME`` writes ``bench/results/NAME.json`` instead (the figures
measured before issue 12's quantizer are kept in ``quantization_before.json``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import RESULTS, firing_model, write_result
from inflor_deploy.checkpoint import load_checkpoint, save_checkpoint
from inflor_deploy.compiler import compile_checkpoint
from inflor_deploy.data import load_train_test
from inflor_deploy.nn import ModelConfig
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy.train import TrainConfig, train

MODELS = Path(__file__).resolve().parent / "models"
DATA = "digits32"
#: name -> (ModelConfig arguments, TrainConfig arguments)
TRAINED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "resnet8_digits32_t4": ({"arch": "resnet8", "timesteps": 4}, {"epochs": 20, "seed": 0, "threads": 2}),
    "resnet20_digits32_t4": ({"arch": "resnet20", "timesteps": 4}, {"epochs": 15, "seed": 0, "threads": 2}),
}
STRUCTURAL = {
    "resnet19 32x32 T=4": "resnet19",
    "resnet20 32x32 T=4": "resnet20",
    "vgg16 32x32 T=4": "vgg16",
}
#: Probe inputs of the compile contracts (parity level 4 below runs the whole test split).
PROBE_SAMPLES = 2


def checkpoint_path(name: str) -> Path:
    return MODELS / f"{name}.pt"


def train_missing(retrain: bool = False) -> dict[str, dict[str, Any]]:
    """Train every model of :data:`TRAINED` whose checkpoint is missing; returns what was trained."""
    trained = {}
    train_data, test_data, test_split = load_train_test(DATA)
    for name, (model_args, train_args) in TRAINED.items():
        path = checkpoint_path(name)
        if path.exists() and not retrain:
            continue
        config = ModelConfig(num_classes=10, in_channels=1, image_size=32, **model_args)
        train_config = TrainConfig(**train_args)
        result = train(config, train_data, test_data, train_config)
        MODELS.mkdir(exist_ok=True)
        save_checkpoint(path, result.model, {
            "dataset": DATA, "input_encoding": "direct", "test_accuracy": result.test_accuracy,
            "test_split": test_split, "test_samples": len(test_data), "train_accuracy": result.train_accuracy,
            "train_seconds": round(result.seconds, 1), "epochs": train_config.epochs, "lr": train_config.lr,
            "seed": train_config.seed,
        })  # fmt: skip
        trained[name] = {"test_accuracy": result.test_accuracy, "train_seconds": round(result.seconds, 1)}
        print(f"trained {name}: test accuracy {result.test_accuracy:.4f} in {result.seconds:.0f} s -> {path}")
    return trained


def levels(report: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per synapse: weight levels used, RMS relative error, and what limited its layer's scale."""
    rows = {}
    for layer in report:
        for synapse, err in layer["weight_rounding"].items():
            rows[synapse] = {
                "layer": layer["layer"],
                "levels_used": err["levels_used"],
                "rms_relative_error": err["rms_relative_error"],
                "scale_limited_by": layer["scale_limited_by"],
                **{k: err[k] for k in ("levels_available", "weight_exp", "identity") if k in err},
            }
    return rows


def _summary(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The worst synapse of the model's own (identity shortcuts, 2 levels by nature, excluded)."""
    rows = {k: r for k, r in rows.items() if not (r.get("identity") or k.endswith(".shortcut"))}
    worst = min(rows, key=lambda k: rows[k]["levels_used"])
    rms = max(rows, key=lambda k: rows[k]["rms_relative_error"])
    return {
        "min_levels_used": rows[worst]["levels_used"], "min_levels_synapse": worst,
        "max_rms_relative_error": rows[rms]["rms_relative_error"], "max_rms_synapse": rms,
    }  # fmt: skip


def measure_trained(name: str) -> dict[str, Any]:
    """Compile a trained checkpoint and run parity level 4 on the whole digits32 test split."""
    from inflor_deploy.data import load_dataset
    from inflor_deploy.verify import level4_float_vs_fixed

    path = checkpoint_path(name)
    start = time.perf_counter()
    result = compile_checkpoint(path, "loihi2-sim", probe_samples=PROBE_SAMPLES)
    compile_seconds = time.perf_counter() - start
    data = load_dataset(DATA, "test")
    model = load_checkpoint(path).model
    level4 = level4_float_vs_fixed(model, result.float_graph, result.fixed_graph, data, imported=result.steps[0][1])
    rows = levels(result.quantization_report)
    m = level4.metrics
    return {
        "checkpoint": str(path.relative_to(Path(__file__).resolve().parent.parent)),
        "compile_seconds": round(compile_seconds, 1),
        "samples": m["samples"],
        "accuracy_float": m["accuracy_float"],
        "accuracy_fixed": m["accuracy_fixed"],
        "class_agreement": m["class_agreement"],
        "spike_agreement": m["spike_agreement"],
        "min_spike_agreement": min(m["spike_agreement"].values()),
        # Teacher-forced: each layer fed the float spikes (what level 4's floor judges).
        "spike_agreement_forced": m["spike_agreement_forced"],
        "min_spike_agreement_forced": min(m["spike_agreement_forced"].values()),
        "v_saturations": sum(m["v_saturations"].values()),
        "u_wraps": sum(m["u_wraps"].values()),
        "synapses": rows,
        **_summary(rows),
    }


def measure_structural(arch: str) -> dict[str, Any]:
    """Weight levels of a realistic random model compiled at 32x32, T = 4."""
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / f"{arch}.pt", firing_model(arch, timesteps=4))
        result = compile_checkpoint(path, "loihi2-sim", probe_samples=PROBE_SAMPLES)
    rows = levels(result.quantization_report)
    return {"synapses": rows, **_summary(rows)}


def measure_bundled() -> dict[str, Any]:
    result = compile_checkpoint(DEFAULT_MODEL, "loihi2-sim", probe_samples=PROBE_SAMPLES)
    rows = levels(result.quantization_report)
    return {"synapses": rows, **_summary(rows)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-only", action="store_true", help="train missing checkpoints and stop")
    parser.add_argument("--retrain", action="store_true", help="retrain every checkpoint")
    parser.add_argument("--name", default="quantization", help="results file name (bench/results/NAME.json)")
    parser.add_argument("--no-train", action="store_true", help="measure only the checkpoints already trained")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    trained = {} if args.no_train else train_missing(args.retrain)
    if args.train_only:
        return trained
    out: dict[str, Any] = {"data": DATA, "trained": {}, "structural": {}}
    for name in TRAINED:
        if not checkpoint_path(name).exists():
            print(f"{name}: no checkpoint in {MODELS} (train it: --train-only); skipped")
            continue
        row = out["trained"][name] = measure_trained(name)
        print(f"{name:<24} float {row['accuracy_float']:.4f} fixed {row['accuracy_fixed']:.4f} "
              f"class agreement {row['class_agreement']:.4f} min spike agreement {row['min_spike_agreement']:.4f} "
              f"(forced {row['min_spike_agreement_forced']}) "
              f"min levels {row['min_levels_used']} ({row['min_levels_synapse']}) "
              f"max RMS {100 * row['max_rms_relative_error']:.2f} %")  # fmt: skip
    for label, arch in STRUCTURAL.items():
        row = out["structural"][label] = measure_structural(arch)
        print(f"{label:<24} min levels {row['min_levels_used']} ({row['min_levels_synapse']}) "
              f"max RMS {100 * row['max_rms_relative_error']:.2f} % ({row['max_rms_synapse']})")
    row = out["structural"]["digits_cnn (bundled)"] = measure_bundled()
    print(f"{'digits_cnn (bundled)':<24} min levels {row['min_levels_used']} ({row['min_levels_synapse']}) "
          f"max RMS {100 * row['max_rms_relative_error']:.2f} % ({row['max_rms_synapse']})")
    path = write_result(args.name, out)
    print(f"written to {path}")
    return out


if __name__ == "__main__":
    main()
