"""Lava's Loihi 2 simulator against the project's own fixed-point simulators, side by side, all bit-exact.

    python -m bench.bench_lava [--samples-digits 32] [--samples-cifar 8]

Workloads (each compiled to fixed point by the compile passes' ``run``
functions, contracts skipped):

1. ``digits``: the bundled digits model (T = 4) on the first digits test images.
2. ``cifar_cnn``: the digits architecture sized for CIFAR (3 x 32 x 32
   input: conv 3->16 and 16->32 on 32 x 32, fc 8192 -> 64 -> 10; random
   weights with randomised tdBN statistics so that layers fire), T = 4, on
   seeded random images.

Backends, all on the same samples:

* ``lava fixed_pt``: :func:`inflor_deploy.backends.lava.network.run_lava` (one Lava
  run, samples back to back, one accumulator read per sample). steps/s
  counts the ``RunSteps`` run alone; ``incl. startup`` adds compiling and
  starting Lava's worker processes.
* ``int_reference``: ``run_pipelined`` (the oracle; one global step at a time).
* ``simulator``: :func:`inflor_deploy.backends.sim.fixed_point.simulate` in the
  pipelined view (the same global timeline) and the aligned view; skipped
  when that module is absent.

Bit-exact means: the accumulator of every sample equals the integer
reference's (and for the simulator also every u-wrap and v-saturation
count). Lava's full traces are compared in tests/backends/lava, not here: reading
them back costs ~20 us per value.

Results go to ``bench/results/lava.json``; a table is printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np
import torch

from bench.bench_simulator import _compile_without_contracts
from bench.common import firing_model, write_result

CIFAR_CNN = dict(arch="digits_cnn", timesteps=4, image_size=32, in_channels=3)
#: Samples the simulator's throughput is measured on for the CIFAR-shaped net (Lava runs a prefix).
THROUGHPUT_CIFAR = 512


def _workloads(samples_digits: int, samples_cifar: int):
    from inflor_deploy.checkpoint import load_checkpoint
    from inflor_deploy.data import load_digits
    from inflor_deploy.pretrained import DEFAULT_MODEL

    split = load_digits("test").images
    images = split[:samples_digits]
    # Throughput sets: the whole test split, and the split x10 (3,600 samples, the
    # scale of verifying a CIFAR-10 test split) to show how batching scales.
    throughput = [split, np.concatenate([split] * 10)]
    yield "digits", _compile_without_contracts(load_checkpoint(DEFAULT_MODEL).model, images[:8]), images, throughput
    model = firing_model(CIFAR_CNN["arch"], seed=0, **{k: v for k, v in CIFAR_CNN.items() if k != "arch"})
    many = np.random.default_rng(0).random((THROUGHPUT_CIFAR, 3, 32, 32), dtype=np.float32)
    images = many[:samples_cifar]
    yield "cifar_cnn", _compile_without_contracts(model, images[:2]), images, [many]


def _row(workload, backend, samples, steps, seconds, bit_exact, **extra) -> dict:
    return {
        "workload": workload,
        "backend": backend,
        "samples": samples,
        "steps": steps,
        "seconds": round(seconds, 4),
        "steps_per_s": round(steps / seconds, 1),
        "samples_per_s": round(samples / seconds, 2),
        "bit_exact": bit_exact,
        **extra,
    }


def bench(samples_digits: int, samples_cifar: int) -> dict:
    from inflor_deploy.ir import nodes as n
    from inflor_deploy.backends.lava.network import run_lava
    from inflor_deploy.backends.sim.int_reference import run_pipelined

    has_simulator = importlib.util.find_spec("inflor_deploy.backends.sim.fixed_point") is not None
    rows, networks = [], {}
    ratios = {}
    for name, graph, images, throughput_images in _workloads(samples_digits, samples_cifar):
        s, S = graph.schedule, len(images)
        trace_steps = S * s.reset_interval + s.latency + 1
        networks[name] = {
            "input": list(graph.input.shape),
            "timesteps": graph.timesteps,
            "reset_interval": s.reset_interval,
            "latency": s.latency,
            "neurons": int(sum(np.prod(x.shape) for x in graph.of_type(n.FixedPointNeuron, n.FixedPointAccumulator))),
            "synapses": len(graph.of_type(n.FixedPointSynapse)),
        }

        start = time.perf_counter()
        reference, _ = run_pipelined(graph, images)
        rows.append(_row(name, "int_reference (pipelined)", S, trace_steps, time.perf_counter() - start, True))

        lava = run_lava(graph, images)
        exact = bool(np.array_equal(lava.accumulator, reference.accumulator))
        rows.append(_row(name, "lava fixed_pt", S, lava.steps, lava.run_seconds, exact, lava_processes=lava.processes))
        rows.append(_row(name, "lava fixed_pt incl. startup", S, lava.steps, lava.compile_seconds + lava.run_seconds, exact,
                         startup_s=round(lava.compile_seconds, 3)))  # fmt: skip

        if has_simulator:
            from inflor_deploy.backends.sim.fixed_point import simulate

            simulate(graph, images[:1], view="pipelined")  # warm-up (oneDNN builds kernels on first use)
            for view, steps in (("pipelined", trace_steps), ("aligned", S * graph.timesteps)):
                start = time.perf_counter()
                run = simulate(graph, images, view=view)
                seconds = time.perf_counter() - start
                exact = bool(np.array_equal(run.accumulator, reference.accumulator))
                if view == "pipelined":
                    exact = exact and run.u_wraps == reference.u_wraps and run.v_saturations == reference.v_saturations
                rows.append(_row(name, f"simulator ({view})", S, steps, seconds, exact))
            # Lava's samples/s does not grow with the sample count (it steps one global step
            # after another); the simulator batches samples. Its throughput is measured on a
            # whole split, and its first S readouts must equal Lava's.
            for batch in throughput_images:
                big = len(batch)
                start = time.perf_counter()
                run = simulate(graph, batch, view="pipelined")
                seconds = time.perf_counter() - start
                exact = bool(np.array_equal(run.accumulator[:S], lava.accumulator))
                big_steps = big * s.reset_interval + s.latency + 1
                rows.append(_row(name, "simulator (pipelined, throughput)", big, big_steps, seconds, exact))
                ratios[f"{name} ({big} samples)"] = round((big / seconds) / (S / lava.run_seconds), 1)
    return {"networks": networks, "rows": rows, "simulator_available": has_simulator,
            "simulator_vs_lava_samples_per_s": ratios, "goal": ">= 1000x Lava's samples/s, both bit-exact"}


def _print(result: dict) -> None:
    head = f"{'workload':<10} {'backend':<28} {'samples':>7} {'steps':>6} {'seconds':>9} {'steps/s':>10} {'samples/s':>10}  bit-exact"
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        print(
            f"{r['workload']:<10} {r['backend']:<28} {r['samples']:>7} {r['steps']:>6} {r['seconds']:>9.3f} "
            f"{r['steps_per_s']:>10.1f} {r['samples_per_s']:>10.2f}  {'yes' if r['bit_exact'] else 'NO'}"
        )
    if not result["simulator_available"]:
        print("(inflor_deploy.backends.sim.fixed_point not found: simulator rows skipped)")
    for name, ratio in result.get("simulator_vs_lava_samples_per_s", {}).items():
        print(f"{name}: simulator throughput / Lava fixed_pt samples/s = {ratio}x (goal >= 1000x)")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples-digits", type=int, default=32)
    parser.add_argument("--samples-cifar", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    result = bench(args.samples_digits, args.samples_cifar)
    path = write_result("lava", result)
    _print(result)
    print(f"\nwritten to {path}")
    if not all(r["bit_exact"] for r in result["rows"]):
        raise SystemExit("a backend is not bit-exact against the integer reference")
    return result


if __name__ == "__main__":
    main()
