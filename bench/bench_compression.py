"""Compression for the chip: accuracy against cores, synaptic memory, synaptic ops and energy.

    python -m bench.bench_compression            # writes bench/results/compression.json

Sweeps ``--weight-bits`` 8 / 6 / 4 and ``--prune`` 0 / 0.5 / 0.8 on the
bundled digits model (digits 8x8, whole test split) and on the trained small
residual net of :mod:`bench.bench_quantization` (ResNet8 on digits32, when its
checkpoint exists; ``--samples`` of the test split). Each point is compiled
for ``loihi2`` (resource limits enforced) and run on the fixed-point
simulator: accuracy from its readout, synaptic ops and energy tiers 2-4
from the report built on the same spike trains, cores and synaptic memory
from the placement.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from bench.bench_quantization import checkpoint_path
from bench.common import write_result
from inflor_deploy.backends.sim.fixed_point import simulate
from inflor_deploy.compiler import compile_checkpoint
from inflor_deploy.data import load_dataset
from inflor_deploy.passes.base import QuantizationOptions
from inflor_deploy.pretrained import DEFAULT_MODEL
from inflor_deploy.report import report_from_graph
from inflor_deploy.targets import load_target

TARGET = "loihi2"
WEIGHT_BITS = (8, 6, 4)
PRUNE = (0.0, 0.5, 0.8)
#: Report figures kept per point: (tier, figure name) -> key.
FIGURES = {
    (1, "synaptic ops (exact fan-out)"): "synops",
    (2, "E_SNN (first layer x T, as run)"): "energy_tier2_pj",
    (3, "total (Loihi 1 per-op estimate)"): "energy_tier3_pj",
    (4, "static energy per inference"): "energy_tier4_static_pj",
}


def measure_point(model, data_name: str, images: np.ndarray, labels: np.ndarray, bits: int, prune: float) -> dict[str, Any]:
    """Compile at (bits, prune), then accuracy, resources and energy on ``images``."""
    start = time.perf_counter()
    options = QuantizationOptions(weight_bits=bits, prune=prune)
    result = compile_checkpoint(model, TARGET, quantization=options, probe_samples=2)
    graph = result.graph
    predicted = simulate(graph, images).accumulator.argmax(axis=1)
    report = report_from_graph(graph, images, load_target(TARGET), data_name=data_name).to_dict()
    figures = {key: None for key in FIGURES.values()}
    for tier in report["energy"]["tiers"]:
        for figure in tier["figures"]:
            key = FIGURES.get((tier["tier"], figure["name"]))
            if key:
                figures[key] = figure["value"]
    resources = report["resources"]
    rows = [e for layer in result.quantization_report for e in layer["weight_rounding"].values() if not e["identity"]]
    return {
        "weight_bits": bits,
        "prune": prune,
        "accuracy_fixed": float(np.mean(predicted == labels)),
        "cores": resources["total_cores"],
        "synapse_bytes": sum(layer["synapse_bytes"] for layer in resources["layers"]),
        "max_synapse_bytes_per_core": max(core["synapse_bytes"] for core in resources["cores"]),
        "nonzero_weights": sum(r["nonzero"] for r in rows),
        "max_rms_relative_error": max(r["rms_relative_error"] for r in rows),
        **figures,
        "seconds": round(time.perf_counter() - start, 1),
    }


def sweep(label: str, model, data_name: str, samples: int | None) -> list[dict[str, Any]]:
    data = load_dataset(data_name, "test")
    images, labels = data.images[:samples], data.labels[:samples]
    points = []
    for bits in WEIGHT_BITS:
        for prune in PRUNE:
            row = measure_point(model, data_name, images, labels, bits, prune)
            points.append(row)
            print(f"{label:<22} bits {bits} prune {prune:.1f}: accuracy {row['accuracy_fixed']:.4f} cores {row['cores']} "
                  f"synapse bytes {row['synapse_bytes']} synops {row['synops']:.4g} "
                  f"tier3 {row['energy_tier3_pj']:.4g} pJ")  # fmt: skip
    return points


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None, help="test samples per point [default: the whole split]")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    out: dict[str, Any] = {"target": TARGET, "weight_bits": list(WEIGHT_BITS), "prune": list(PRUNE), "models": {}}
    out["models"]["digits_cnn (bundled)"] = {"data": "digits", "points": sweep("digits_cnn (bundled)", DEFAULT_MODEL, "digits", None)}
    resnet8 = checkpoint_path("resnet8_digits32_t4")
    if resnet8.exists():
        out["models"]["resnet8 (digits32)"] = {
            "data": "digits32", "samples": args.samples, "points": sweep("resnet8 (digits32)", resnet8, "digits32", args.samples),
        }  # fmt: skip
    path = write_result("compression", out)
    print(f"written to {path}")
    return out


if __name__ == "__main__":
    main()
