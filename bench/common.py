"""Shared pieces of the benchmarks: machine facts, random-but-firing models, result files."""

from __future__ import annotations

import json
import os
import platform
import resource
from pathlib import Path

import torch

from inflor_deploy.nn import ModelConfig, build_model

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }


def firing_model(arch: str, seed: int = 0, **config) -> torch.nn.Module:
    """A randomly initialised model whose tdBN statistics are randomised so that layers fire.

    Untrained models in eval mode with default BN statistics are almost
    silent, which would make spike-driven costs look unrealistically low.
    """
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch=arch, **config))
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "lambda_") and hasattr(module, "running_var"):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.lambda_.uniform_(0.5, 1.5)
                module.beta.normal_(0.3, 0.2)
    return model.eval()


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    return path
