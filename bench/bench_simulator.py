"""The bit-exact fixed-point simulator: speed on a test set, and against the float network.

    python -m bench.bench_simulator

1. The bundled digits model over the whole digits test split (360 images,
   T = 4): the simulator's wall time in both views (fastest of ``ROUNDS``;
   goal: < 5 s), checked bit-exact against the integer reference on the same
   images (whose time is shown too).
2. ResNet19 (32x32, T = 4, batch 64; random weights, randomised tdBN
   statistics so that layers fire; compiled to fixed point by the passes'
   ``run`` functions, contracts skipped) simulated in the aligned view vs the
   float PyTorch forward pass of the same network (``model(images)``, eval,
   ``torch.no_grad``). Goal: simulator <= 1.5 x float.

How it measures: each ResNet19 workload runs in its own fresh subprocess
(same seeds, so the same network and images), ``ROUNDS`` times
alternating; the reported time is the fastest run (all are in the JSON),
after a warm-up call on two images (oneDNN builds its kernels on first
use). Other processes share the 2 cores, so single runs vary a lot. Memory is the process's
peak resident set size during the timed call minus its resident size just
before it: the kernel's high-water mark (``VmHWM``) is reset through
``/proc/self/clear_refs`` before the call, so allocations torch keeps from
the setup do not hide the workload's own peak. Where that file cannot be
written, the ``ru_maxrss`` increase is reported instead (it misses memory
reused from the setup) and ``memory_method`` says so. Both workloads use
``torch.set_num_threads(2)``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import firing_model, peak_rss_mib, write_result

RESNET19 = dict(arch="resnet19", timesteps=4, image_size=32, in_channels=3)
BATCH = 64
ROUNDS = 3
_MEASURED = ("seconds", "peak_rss_increase_mib", "memory_method")


def _compile_without_contracts(model: torch.nn.Module, probe: np.ndarray, target: str = "loihi2-sim"):
    """model -> IR -> every compile pass's ``run`` (the contracts are checked by the compile benchmark)."""
    from inflor_deploy.frontends.fx import trace
    from inflor_deploy.passes.base import PassContext
    from inflor_deploy.passes.pipeline import COMPILE_PIPELINE
    from inflor_deploy.targets import load_target

    graph = trace(model)
    ctx = PassContext(target=load_target(target), probe=probe)
    for p in COMPILE_PIPELINE:
        graph = p.run(graph, ctx)
    return graph


def digits_test_split() -> dict:
    """The bundled model over the whole digits test split; bit-exact against the integer reference."""
    from inflor_deploy.checkpoint import load_checkpoint
    from inflor_deploy.data import load_digits
    from inflor_deploy.pretrained import DEFAULT_MODEL
    from inflor_deploy.backends.sim.fixed_point import simulate
    from inflor_deploy.backends.sim.int_reference import run_aligned

    data = load_digits("test")
    graph = _compile_without_contracts(load_checkpoint(DEFAULT_MODEL).model, data.images[:8])
    simulate(graph, data.images[:2])  # warm-up
    row = {"images": len(data.images), "timesteps": graph.timesteps}
    for view in ("aligned", "pipelined"):
        times = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            run = simulate(graph, data.images, view=view)
            times.append(time.perf_counter() - start)
        row[f"simulator_{view}_s"] = round(min(times), 3)
    start = time.perf_counter()
    reference = run_aligned(graph, data.images)
    row["int_reference_s"] = round(time.perf_counter() - start, 3)
    row["bit_exact_vs_reference"] = bool(
        np.array_equal(run.accumulator, reference.accumulator)
        and run.u_wraps == reference.u_wraps
        and run.v_saturations == reference.v_saturations
    )
    row["accuracy"] = float((run.scores(graph).argmax(1) == data.labels).mean())
    row["spikes_per_image"] = round(sum(run.spike_counts.values()) / len(data.images), 1)
    row["goal"] = "simulator_aligned_s < 5"
    row["goal_met"] = row["simulator_aligned_s"] < 5
    return row


# --------------------------------------------------------------------------- ResNet19 workloads (one per process)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _measure(call) -> dict:
    """Wall time and peak RSS increase of one call (module docstring: how)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        method = "VmHWM after clear_refs - VmRSS before"
        before = _rss_kib("VmRSS")
    except OSError:
        method = "ru_maxrss increase (misses memory reused from the setup)"
        before = None
        peak_before = peak_rss_mib()
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    if before is not None:
        peak_mib = (_rss_kib("VmHWM") - before) / 1024
    else:
        peak_mib = peak_rss_mib() - peak_before
    return {"seconds": seconds, "peak_rss_increase_mib": round(peak_mib, 1), "memory_method": method}


def run_child(kind: str) -> dict:
    """Set up ResNet19 and its images, warm up, and measure one ``kind`` workload."""
    torch.set_num_threads(2)
    from inflor_deploy.backends.sim.fixed_point import simulate

    model = firing_model("resnet19", seed=0, **{k: v for k, v in RESNET19.items() if k != "arch"})
    images = np.random.default_rng(0).random((BATCH, 3, 32, 32), dtype=np.float32)
    if kind == "float":
        x = torch.from_numpy(images)

        def call():
            with torch.no_grad():
                return model(x)

        with torch.no_grad():
            model(x[:2])  # warm-up
        result = _measure(call)
    else:
        setup = time.perf_counter()
        graph = _compile_without_contracts(model, images[:2])
        compile_s = time.perf_counter() - setup
        del model
        simulate(graph, images[:2])  # warm-up
        runs = []
        result = _measure(lambda: runs.append(simulate(graph, images)))
        run = runs[0]
        result.update(
            compile_s=round(compile_s, 2),
            kernels=sorted({lp.kernel for lp in run.plan.layers.values()}),
            synapse_dtypes=sorted({sp.dtype for sp in run.plan.synapses.values()}),
            spikes_per_image=round(sum(run.spike_counts.values()) / BATCH),
            u_wraps=sum(run.u_wraps.values()),
            v_saturations=sum(run.v_saturations.values()),
        )
    return result


def resnet19_side_by_side() -> dict:
    root = Path(__file__).resolve().parent.parent
    results: dict[str, list[dict]] = {"float": [], "sim": []}
    for _ in range(ROUNDS):
        for kind in ("float", "sim"):
            out = subprocess.run(
                [sys.executable, "-m", "bench.bench_simulator", "--child", kind],
                cwd=root, capture_output=True, text=True, check=True,
            )  # fmt: skip
            results[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = {kind: min(rows, key=lambda r: r["seconds"]) for kind, rows in results.items()}
    ratio = best["sim"]["seconds"] / best["float"]["seconds"]
    return {
        "config": {**RESNET19, "batch": BATCH, "target": "loihi2-sim", "view": "aligned"},
        "float_forward_s": round(best["float"]["seconds"], 2),
        "simulator_s": round(best["sim"]["seconds"], 2),
        "all_runs_s": {kind: [round(r["seconds"], 2) for r in rows] for kind, rows in results.items()},
        "ratio_simulator_over_float": round(ratio, 3),
        "goal": "ratio <= 1.5",
        "goal_met": ratio <= 1.5,
        "float_peak_rss_increase_mib": best["float"]["peak_rss_increase_mib"],
        "simulator_peak_rss_increase_mib": best["sim"]["peak_rss_increase_mib"],
        "memory_method": best["sim"]["memory_method"],
        "simulator": {k: v for k, v in best["sim"].items() if k not in _MEASURED},
    }


def main() -> dict:
    torch.set_num_threads(2)
    digits = digits_test_split()
    resnet = resnet19_side_by_side()
    print(f"{'workload':<44} {'seconds':>9}  notes")
    print(f"{'digits test split, simulator (aligned)':<44} {digits['simulator_aligned_s']:>9.3f}  "
          f"{digits['images']} images, goal < 5 s: {'met' if digits['goal_met'] else 'MISSED'}")
    print(f"{'digits test split, simulator (pipelined)':<44} {digits['simulator_pipelined_s']:>9.3f}")
    print(f"{'digits test split, integer reference':<44} {digits['int_reference_s']:>9.3f}  "
          f"bit-exact: {digits['bit_exact_vs_reference']}, accuracy {digits['accuracy']:.4f}")
    print(f"{'resnet19 32x32 T=4 x64, float forward':<44} {resnet['float_forward_s']:>9.2f}  "
          f"peak RSS +{resnet['float_peak_rss_increase_mib']:.0f} MiB")
    print(f"{'resnet19 32x32 T=4 x64, simulator':<44} {resnet['simulator_s']:>9.2f}  "
          f"peak RSS +{resnet['simulator_peak_rss_increase_mib']:.0f} MiB, ratio "
          f"{resnet['ratio_simulator_over_float']:.2f} (goal <= 1.5: {'met' if resnet['goal_met'] else 'MISSED'})")
    print(f"memory: {resnet['memory_method']}")
    path = write_result("simulator", {"digits_test_split": digits, "resnet19": resnet})
    print(f"written to {path}")
    return {"digits_test_split": digits, "resnet19": resnet}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=("float", "sim"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child)))
    else:
        main()
