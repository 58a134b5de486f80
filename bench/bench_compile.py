"""Compile time: the digits model and ResNet19 (32x32, T=4), every contract checked.

    python -m bench.bench_compile

Goal (issue 3): ResNet19 under 30 s on a 2-core machine.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from bench.common import firing_model, write_result
from inflor_deploy.checkpoint import save_checkpoint
from inflor_deploy.compiler import compile_checkpoint
from inflor_deploy.pretrained import DEFAULT_MODEL


def _time_compile(path: Path) -> dict:
    steps: list[tuple[str, float]] = []
    start = time.perf_counter()
    result = compile_checkpoint(path, "loihi2-sim", on_step=lambda name, _: steps.append((name, time.perf_counter())))
    total = time.perf_counter() - start
    marks = [start] + [t for _, t in steps]
    return {
        "seconds": round(total, 2),
        "per_step_seconds": {name: round(t - marks[i], 2) for i, (name, t) in enumerate(steps)},
        "contracts_ok": all(c.ok for c in result.contracts),
        "probe": result.probe_source,
    }


def main() -> dict:
    torch.set_num_threads(2)
    rows = {"digits_cnn (bundled)": _time_compile(DEFAULT_MODEL)}
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "resnet19.pt", firing_model("resnet19", timesteps=4))
        rows["resnet19 32x32 T=4"] = _time_compile(path)
    print(f"{'model':<24} {'compile s':>10}  contracts  slowest steps")
    for name, row in rows.items():
        slow = sorted(row["per_step_seconds"].items(), key=lambda kv: -kv[1])[:3]
        print(f"{name:<24} {row['seconds']:>10.2f}  {'ok' if row['contracts_ok'] else 'FAILED':<9}  "
              + ", ".join(f"{k} {v:.1f}s" for k, v in slow))
    path = write_result("compile", {"goal": "resnet19 < 30 s", "results": rows})
    print(f"written to {path}")
    return rows


if __name__ == "__main__":
    main()
